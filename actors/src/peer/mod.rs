//! PeerActor: owns the quinn endpoint, every connection, and peer health.
//!
//! State it owns: one quinn [`Endpoint`] (server and client on one UDP socket), one
//! outgoing connection per cluster member (used for *our* calls to it), and each
//! member's health (up/down, last seen, RTT, layout digest, reconnect backoff).
//! Incoming connections are only served: each stream a peer opens carries one request,
//! dispatched to the handler `Recipient<HandleRpc>` given at start (the node's storage
//! and refcount side), whose reply goes back on the stream. `Hello` and `Ping` are
//! answered here. Trust is mutual TLS ([`crate::tls`]): the peer's certificate must
//! chain to the cluster CA and its node id must be a member.
//!
//! Messages: [`Call`], [`CallMany`], [`HedgedCall`], [`PlanRead`], [`GetPeerStatus`],
//! [`SetMembers`], [`Shutdown`].
//!
//! Health on the client path (`health.rs`): each peer's recent read latencies give the
//! order in which a block's holders are asked and the hedge delay ([`PlanRead`]); a
//! client call to a peer that is down fails at once (`Unreachable`) and the peer is
//! redialled in the background, never while a client waits. A peer that connects to us
//! while we see it down is redialled at once, so a node coming back is used again in
//! well under a second instead of after the reconnect backoff.
//! Everything runs on the actor's thread (one System/Arbiter): a cross-thread actix
//! message costs ~90 µs on the 2-core development VM, so requests are never bounced between threads;
//! each call or served stream is its own task, never awaited one after another.

mod backoff;
mod call_many;
mod config;
mod conn;
pub mod health;
mod layout;
mod messages;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::{self, LocalBoxFuture};
use quinn::{Connection, Endpoint, VarInt};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

pub use backoff::backoff;
pub use config::{
    PeerAddr, PeerConfig, PeerTuning, BLOCK_RW_TIMEOUT, DEFAULT_ACK_ELICITING_THRESHOLD,
    DEFAULT_MTU_UPPER_BOUND, DEFAULT_STREAM_RECEIVE_WINDOW, GSO_MAX_MTU, LOOPBACK_MTU_UPPER_BOUND,
    PEER_RPC_TIMEOUT,
};
use health::{HolderHealth, LatencyWindow};
pub use messages::{
    Call, CallMany, CallsFailed, GetPeerStatus, HandleRpc, HedgedCall, PlanRead, Priority,
    QuorumError, ReadPlan, RpcError, SetMembers, Shutdown,
};
pub use status::PeerInfo;

use crate::frame::{BlockRpc, Hello};
use crate::hash::{Hash, NodeId};
use crate::layout::{LayoutStamp, PeerLayoutSeen};
use crate::tls::{TlsError, TlsIdentity};

/// Why a [`PeerActor`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the local address of the UDP socket: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The quinn server config a [`PeerActor`] uses: mutual TLS accepting `members`, plus
/// its transport settings. Public for benchmarks and tools that speak to nodes directly.
pub fn quic_server_config(
    identity: &TlsIdentity,
    members: impl IntoIterator<Item = NodeId>,
    tuning: &PeerTuning,
) -> Result<quinn::ServerConfig, PeerError> {
    conn::server_config(identity, members, tuning)
}

/// The quinn client config a [`PeerActor`] uses to reach `expected` (pinned node id).
pub fn quic_client_config(
    identity: &TlsIdentity,
    expected: NodeId,
    tuning: &PeerTuning,
) -> Result<quinn::ClientConfig, PeerError> {
    conn::client_config(identity, expected, tuning)
}

/// The quinn endpoint config a [`PeerActor`] uses (UDP payload limit from `tuning`).
pub fn quic_endpoint_config(tuning: &PeerTuning) -> quinn::EndpointConfig {
    conn::endpoint_config(tuning)
}

/// Bind a UDP socket as a [`PeerActor`] does (buffers sized by `tuning`).
pub fn bind_udp(listen: SocketAddr, tuning: &PeerTuning) -> Result<UdpSocket, PeerError> {
    conn::bind_socket(listen, tuning.socket_buffer)
}

/// A member's connection and health, as this node sees it.
struct PeerState {
    addr: SocketAddr,
    client_config: quinn::ClientConfig,
    /// Our outgoing connection, once the hellos were exchanged.
    conn: Option<Connection>,
    /// A dial is in flight.
    connecting: bool,
    /// Consecutive failed dials (0 when up).
    failures: u32,
    last_failure: Option<(Instant, RpcError)>,
    /// The timer of the next reconnect attempt.
    retry: Option<SpawnHandle>,
    /// Calls waiting for the dial in flight.
    waiters: Vec<oneshot::Sender<Result<Connection, RpcError>>>,
    last_seen: Option<Instant>,
    rtt: Option<Duration>,
    layout_digest: Option<Hash>,
    /// It has been up at least once since it was added (so no connection means down).
    ever_up: bool,
    /// Recent latencies of [`HedgedCall`]s to it.
    reads: LatencyWindow,
    /// Start times of its [`HedgedCall`]s in flight, by sequence number.
    reads_in_flight: BTreeMap<u64, Instant>,
}

impl PeerState {
    /// No connection, and it was up before or its last dial failed: a client call must
    /// not wait for a redial (a hung or partitioned peer makes a dial take the whole
    /// connect timeout).
    fn is_down(&self) -> bool {
        self.conn.is_none() && (self.ever_up || self.failures > 0)
    }

    fn health(&self) -> HolderHealth {
        if self.conn.is_none() {
            return HolderHealth::Down;
        }
        let stalled = self
            .reads_in_flight
            .values()
            .next()
            .is_some_and(|t| t.elapsed() > health::STALL_AFTER);
        if stalled {
            HolderHealth::Stalled
        } else {
            HolderHealth::Up {
                typical: self.reads.typical(self.rtt),
            }
        }
    }
}

/// The actor. Build it with [`PeerActor::new`] (which binds the UDP socket, so
/// [`PeerActor::local_addr`] is known before start), then `start()` it inside a System.
pub struct PeerActor {
    config: PeerConfig,
    tuning: PeerTuning,
    identity: TlsIdentity,
    self_id: NodeId,
    handler: Recipient<HandleRpc>,
    local_addr: SocketAddr,
    /// Bound in `new`, handed to quinn in `started` (quinn needs the runtime).
    socket: Option<UdpSocket>,
    endpoint: Option<Endpoint>,
    peers: HashMap<NodeId, PeerState>,
    /// Connections peers opened to us, oldest first, by peer id (capped per peer).
    incoming: HashMap<NodeId, Vec<Connection>>,
    /// Incoming handshakes in progress.
    handshakes: usize,
    ping_nonce: u64,
    observer: Option<RpcObserver>,
    /// Sequence number of the next [`HedgedCall`].
    read_seq: u64,
    /// This node's layout stamp, announced in `Hello` and `Ping`.
    layout: LayoutStamp,
    /// The layout does not name this node yet: incoming connections from any node of the
    /// cluster CA are served (they may bring the layout that names it).
    joining: bool,
    /// Where peers' announced layout stamps go (the layout actor).
    layout_watcher: Option<Recipient<PeerLayoutSeen>>,
    /// While joining, the only hosts whose Initials are answered (empty: any).
    bootstrap: Vec<SocketAddr>,
}

/// Called after every call to a peer (not to this node): message kind, peer, latency,
/// success. The node feeds its RPC latency histogram with it.
pub type RpcObserver = std::sync::Arc<dyn Fn(&'static str, NodeId, Duration, bool) + Send + Sync>;

impl PeerActor {
    /// Bind `config.listen` and prepare the TLS configs; nothing is dialled before start.
    pub fn new(
        config: PeerConfig,
        identity: TlsIdentity,
        handler: Recipient<HandleRpc>,
    ) -> Result<PeerActor, PeerError> {
        PeerActor::with_tuning(config, PeerTuning::default(), identity, handler)
    }

    /// As [`PeerActor::new`], with explicit timers and transport knobs.
    pub fn with_tuning(
        config: PeerConfig,
        tuning: PeerTuning,
        identity: TlsIdentity,
        handler: Recipient<HandleRpc>,
    ) -> Result<PeerActor, PeerError> {
        let socket = conn::bind_socket(config.listen, tuning.socket_buffer)?;
        let local_addr = socket.local_addr().map_err(PeerError::LocalAddr)?;
        let layout = LayoutStamp {
            version: 0,
            digest: config.layout_digest,
        };
        let mut actor = PeerActor {
            self_id: identity.node_id(),
            config,
            tuning,
            identity,
            handler,
            local_addr,
            socket: Some(socket),
            endpoint: None,
            peers: HashMap::new(),
            incoming: HashMap::new(),
            handshakes: 0,
            ping_nonce: 0,
            observer: None,
            read_seq: 0,
            layout,
            joining: false,
            layout_watcher: None,
            bootstrap: Vec::new(),
        };
        // Check the server config builds now, so a TLS problem fails `new`, not `started`.
        actor.server_config()?;
        for m in actor.config.members.clone() {
            actor.add_peer(m)?;
        }
        Ok(actor)
    }

    /// The bound UDP address (with the port the OS chose for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.self_id
    }

    fn server_config(&self) -> Result<quinn::ServerConfig, PeerError> {
        let members = self.config.members.iter().map(|m| m.id);
        if self.joining {
            return conn::open_server_config(&self.identity, &self.tuning);
        }
        conn::server_config(&self.identity, members, &self.tuning)
    }

    fn add_peer(&mut self, m: PeerAddr) -> Result<(), PeerError> {
        if m.id == self.self_id {
            return Ok(());
        }
        let client_config = conn::client_config(&self.identity, m.id, &self.tuning)?;
        self.peers.insert(
            m.id,
            PeerState {
                addr: m.addr,
                client_config,
                conn: None,
                connecting: false,
                failures: 0,
                last_failure: None,
                retry: None,
                waiters: Vec::new(),
                last_seen: None,
                rtt: None,
                layout_digest: None,
                ever_up: false,
                reads: LatencyWindow::default(),
                reads_in_flight: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn hello(&self) -> Hello {
        Hello {
            layout_digest: self.layout.digest,
            layout_version: self.layout.version,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Dial `id` unless connected or already dialling.
    fn start_connect(&mut self, id: NodeId, ctx: &mut Context<Self>) {
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        let hello = self.hello();
        let (limits, timeout) = (self.config.limits, self.tuning.connect_timeout);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.connecting || p.conn.is_some() {
            return;
        }
        if let Some(h) = p.retry.take() {
            ctx.cancel_future(h);
        }
        p.connecting = true;
        debug!(peer = %id.short(), addr = %p.addr, "dialling");
        let dial = conn::dial(
            endpoint,
            p.client_config.clone(),
            id,
            p.addr,
            hello,
            limits,
            timeout,
        );
        ctx.spawn(
            dial.into_actor(self)
                .map(move |res, act, ctx| act.dial_done(id, res, ctx)),
        );
    }

    fn dial_done(
        &mut self,
        id: NodeId,
        res: Result<conn::Dialed, RpcError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            // Removed from the cluster while we dialled.
            if let Ok(d) = res {
                d.conn
                    .close(VarInt::from_u32(conn::CLOSE_REMOVED), b"not a member");
            }
            return;
        };
        p.connecting = false;
        match res {
            Ok(d) => {
                info!(peer = %id.short(), addr = %p.addr, rtt = ?d.rtt, "peer up");
                let stamp = LayoutStamp {
                    version: d.hello.layout_version,
                    digest: d.hello.layout_digest,
                };
                if stamp != self.layout {
                    info!(peer = %id.short(), theirs = stamp.version, ours = self.layout.version,
                        "peer has another cluster layout");
                }
                if let Some(w) = &self.layout_watcher {
                    w.do_send(PeerLayoutSeen { peer: id, stamp });
                }
                p.failures = 0;
                p.ever_up = true;
                p.last_failure = None;
                p.last_seen = Some(Instant::now());
                p.rtt = Some(d.rtt);
                p.layout_digest = Some(d.hello.layout_digest);
                for w in p.waiters.drain(..) {
                    let _ = w.send(Ok(d.conn.clone()));
                }
                let stable_id = d.conn.stable_id();
                let watched = d.conn.clone();
                p.conn = Some(d.conn);
                ctx.spawn(
                    async move { watched.closed().await }
                        .into_actor(self)
                        .map(move |reason, act, ctx| act.conn_closed(id, stable_id, reason, ctx)),
                );
            }
            Err(e) => {
                p.failures += 1;
                if p.failures == 1 {
                    warn!(peer = %id.short(), addr = %p.addr, error = %e, "cannot reach peer");
                } else {
                    debug!(peer = %id.short(), failures = p.failures, error = %e, "still cannot reach peer");
                }
                for w in p.waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
                p.last_failure = Some((Instant::now(), e));
                let delay = backoff(p.failures, self.tuning.backoff_min, self.tuning.backoff_max);
                p.retry = Some(ctx.run_later(delay, move |act, ctx| {
                    if let Some(p) = act.peers.get_mut(&id) {
                        p.retry = None;
                    }
                    act.start_connect(id, ctx);
                }));
            }
        }
    }

    fn conn_closed(
        &mut self,
        id: NodeId,
        stable_id: usize,
        reason: quinn::ConnectionError,
        ctx: &mut Context<Self>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.conn.as_ref().map(|c| c.stable_id()) != Some(stable_id) {
            return;
        }
        p.conn = None;
        info!(peer = %id.short(), reason = %reason, "peer down");
        self.start_connect(id, ctx);
    }

    /// The future of one call; it holds no borrow of the actor, so many run at once.
    fn call_future(
        &mut self,
        node: NodeId,
        rpc: BlockRpc,
        timeout: Duration,
        priority: Priority,
        ctx: &mut Context<Self>,
    ) -> LocalBoxFuture<'static, Result<BlockRpc, RpcError>> {
        let timed_out = RpcError::Timeout {
            node,
            after: timeout,
        };
        if node == self.self_id {
            // The local handler answers directly: no network, no serialisation.
            let handler = self.handler.clone();
            return Box::pin(async move {
                match tokio::time::timeout(timeout, handler.send(HandleRpc { from: node, rpc }))
                    .await
                {
                    Err(_) => Err(timed_out),
                    Ok(Err(_)) => Err(RpcError::Unreachable {
                        node,
                        reason: "the local handler is gone".into(),
                    }),
                    Ok(Ok(reply)) => conn::reply_to_result(node, reply),
                }
            });
        }
        let redial_after = self.tuning.redial_after;
        let Some(p) = self.peers.get_mut(&node) else {
            return Box::pin(future::ready(Err(RpcError::UnknownNode { node })));
        };
        let connection: LocalBoxFuture<'static, Result<Connection, RpcError>> =
            if let Some(c) = &p.conn {
                Box::pin(future::ready(Ok(c.clone())))
            } else {
                if priority == Priority::Client && p.is_down() {
                    // Never redial on the client path: fail now, reconnect in the
                    // background (a timer may already be set by the backoff).
                    if !p.connecting && p.retry.is_none() {
                        self.start_connect(node, ctx);
                    }
                    return Box::pin(future::ready(Err(RpcError::Unreachable {
                        node,
                        reason: "peer is down (reconnecting in the background)".into(),
                    })));
                }
                if !p.connecting {
                    if let Some((at, e)) = &p.last_failure {
                        if at.elapsed() < redial_after {
                            return Box::pin(future::ready(Err(e.clone())));
                        }
                    }
                }
                let (tx, rx) = oneshot::channel();
                p.waiters.push(tx);
                self.start_connect(node, ctx);
                Box::pin(async move {
                    rx.await.unwrap_or_else(|_| {
                        Err(RpcError::Unreachable {
                            node,
                            reason: "connection attempt abandoned".into(),
                        })
                    })
                })
            };
        let limits = self.config.limits;
        let replies = self.tuning.ram_budget.as_ref().map(|b| b.client.clone());
        Box::pin(async move {
            let exchange = async {
                let conn = connection.await?;
                conn::request(&conn, node, &rpc, priority, &limits, replies.as_ref()).await
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(timed_out))
        })
    }

    fn ping_all(&mut self, ctx: &mut Context<Self>) {
        for (&id, p) in &self.peers {
            let Some(conn) = p.conn.clone() else {
                continue;
            };
            self.ping_nonce = self.ping_nonce.wrapping_add(1);
            let nonce = self.ping_nonce;
            let (limits, timeout) = (self.config.limits, self.tuning.ping_interval);
            let layout = self.layout;
            let ping = async move {
                let start = Instant::now();
                let res = tokio::time::timeout(
                    timeout,
                    conn::request(
                        &conn,
                        id,
                        &BlockRpc::Ping { nonce, layout },
                        Priority::Client,
                        &limits,
                        None,
                    ),
                )
                .await;
                (res, start.elapsed())
            };
            ctx.spawn(ping.into_actor(self).map(move |(res, rtt), act, _ctx| {
                let Some(p) = act.peers.get_mut(&id) else {
                    return;
                };
                match res {
                    Ok(Ok(BlockRpc::Pong(n))) if n == nonce => {
                        p.rtt = Some(rtt);
                        p.last_seen = Some(Instant::now());
                    }
                    Ok(Ok(other)) => {
                        warn!(peer = %id.short(), kind = other.kind(), "unexpected answer to ping")
                    }
                    Ok(Err(e)) => debug!(peer = %id.short(), error = %e, "ping failed"),
                    Err(_) => debug!(peer = %id.short(), "ping timed out"),
                }
            }));
        }
    }

    fn close_endpoint(&mut self) {
        if let Some(ep) = self.endpoint.take() {
            ep.close(VarInt::from_u32(conn::CLOSE_SHUTDOWN), b"shutdown");
        }
        for p in self.peers.values_mut() {
            p.conn = None;
            for w in p.waiters.drain(..) {
                let _ = w.send(Err(RpcError::Gone));
            }
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let endpoint = self
            .socket
            .take()
            .ok_or_else(|| "socket already used".to_string())
            .and_then(|socket| {
                let server = self.server_config().map_err(|e| e.to_string())?;
                Endpoint::new(
                    conn::endpoint_config(&self.tuning),
                    Some(server),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(|e| e.to_string())
            });
        let endpoint = match endpoint {
            Ok(ep) => ep,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the QUIC endpoint");
                ctx.stop();
                return;
            }
        };
        info!(node = %self.self_id.short(), addr = %self.local_addr, "QUIC endpoint listening");
        let incoming = futures::stream::unfold(endpoint.clone(), |ep| async move {
            ep.accept().await.map(|inc| (inc, ep))
        });
        ctx.add_stream(incoming);
        self.endpoint = Some(endpoint);
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.start_connect(id, ctx);
        }
        ctx.run_interval(self.tuning.ping_interval, |act, ctx| act.ping_all(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.close_endpoint();
    }
}

/// Incoming connections. Before a handshake is spent on it, an Initial must come from a
/// member's IP (others are dropped without an answer), from a validated address (else
/// a QUIC Retry is sent) and within the cap on handshakes in progress. The TLS verifier
/// then checks CA and membership; each peer id keeps at most
/// `max_connections_per_peer` connections; each connection's streams are served in
/// their own tasks.
impl StreamHandler<quinn::Incoming> for PeerActor {
    fn handle(&mut self, incoming: quinn::Incoming, ctx: &mut Context<Self>) {
        let remote = incoming.remote_address();
        match admit_incoming(
            self.is_member_ip(remote.ip()),
            incoming.remote_address_validated(),
            self.handshakes,
            self.tuning.max_handshakes,
        ) {
            Admission::Ignore => {
                debug!(%remote, "dropped an Initial (stranger or too many handshakes)");
                incoming.ignore();
                return;
            }
            Admission::Retry => {
                if let Err(e) = incoming.retry() {
                    debug!(%remote, error = %e, "cannot send a Retry");
                }
                return;
            }
            Admission::Handshake => {}
        }
        self.handshakes += 1;
        ctx.spawn(
            async move { incoming.await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.handshakes = act.handshakes.saturating_sub(1);
                    match res {
                        Ok(c) => match conn::peer_id(&c) {
                            Some(from) => {
                                // A peer that connects to us is up: redial it at once.
                                ctx.notify(PeerKnocked { from });
                                act.serve_incoming(from, c, ctx)
                            }
                            None => {
                                warn!(%remote, "incoming connection without a readable certificate");
                                c.close(VarInt::from_u32(conn::CLOSE_REMOVED), b"no certificate");
                            }
                        },
                        Err(e) => debug!(%remote, error = %e, "incoming handshake failed"),
                    }
                }),
        );
    }

    /// The endpoint was closed: nothing more will come, but the actor may still be
    /// answering local calls, so it is not stopped here.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// What to do with an incoming Initial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Drop it without an answer.
    Ignore,
    /// Answer with a QUIC Retry (address validation).
    Retry,
    /// Spend a handshake on it.
    Handshake,
}

/// The rule for an incoming Initial: strangers and Initials beyond the handshake cap are
/// dropped; a member's unvalidated address is asked to prove itself first.
pub(crate) fn admit_incoming(
    member_ip: bool,
    validated: bool,
    in_progress: usize,
    cap: usize,
) -> Admission {
    if !member_ip || in_progress >= cap {
        Admission::Ignore
    } else if !validated {
        Admission::Retry
    } else {
        Admission::Handshake
    }
}

impl PeerActor {
    /// Whether `ip` is the address of a cluster member or of this host (ports are not
    /// compared: a member dials from its one QUIC socket, but a NAT may change the port).
    fn is_member_ip(&self, ip: std::net::IpAddr) -> bool {
        // This host's own address counts: other nodes of a test or dev cluster share it.
        // A joining node knows no member yet: whoever dials it may bring its layout.
        (self.joining && (self.bootstrap.is_empty() || self.bootstrap.iter().any(|b| b.ip() == ip)))
            || ip == self.local_addr.ip()
            || self.config.members.iter().any(|m| m.addr.ip() == ip)
            || self.peers.values().any(|p| p.addr.ip() == ip)
    }

    /// Serve an established incoming connection from `from`, closing its oldest one
    /// beyond the per-peer cap.
    fn serve_incoming(&mut self, from: NodeId, c: Connection, ctx: &mut Context<Self>) {
        debug!(peer = %from.short(), remote = %c.remote_address(), "incoming connection");
        let conns = self.incoming.entry(from).or_default();
        conns.push(c.clone());
        while conns.len() > self.tuning.max_connections_per_peer.max(1) {
            let old = conns.remove(0);
            debug!(peer = %from.short(), "closing an older incoming connection of this peer");
            old.close(VarInt::from_u32(conn::CLOSE_SHUTDOWN), b"superseded");
        }
        let serve = conn::ServeCtx {
            handler: self.handler.clone(),
            hello: self.hello(),
            limits: self.config.limits,
            read_timeout: self.tuning.request_read_timeout,
            reply_timeout: self.tuning.reply_write_timeout,
            budget: self.tuning.ram_budget.clone(),
            announced: ctx.address().recipient(),
        };
        let stable_id = c.stable_id();
        ctx.spawn(conn::serve_connection(c, from, serve).into_actor(self).map(
            move |(), act, _ctx| {
                if let Some(conns) = act.incoming.get_mut(&from) {
                    conns.retain(|c| c.stable_id() != stable_id);
                    if conns.is_empty() {
                        act.incoming.remove(&from);
                    }
                }
            },
        ));
    }
}

impl Handler<Call> for PeerActor {
    type Result = ResponseFuture<Result<BlockRpc, RpcError>>;

    fn handle(&mut self, msg: Call, ctx: &mut Context<Self>) -> Self::Result {
        self.observed_call(msg.node, msg.rpc, msg.timeout, msg.priority, ctx)
    }
}

impl PeerActor {
    /// Report every outgoing call's latency to `observer`.
    pub fn with_observer(mut self, observer: RpcObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observed_call(
        &mut self,
        node: NodeId,
        rpc: BlockRpc,
        timeout: Duration,
        priority: Priority,
        ctx: &mut Context<Self>,
    ) -> LocalBoxFuture<'static, Result<BlockRpc, RpcError>> {
        let kind = rpc.kind();
        let fut = self.call_future(node, rpc, timeout, priority, ctx);
        match self.observer.clone() {
            Some(obs) if node != self.self_id => Box::pin(async move {
                let start = std::time::Instant::now();
                let r = fut.await;
                obs(kind, node, start.elapsed(), r.is_ok());
                r
            }),
            _ => fut,
        }
    }
}

/// A member connected to us: if we see it down, redial it now instead of at the end of
/// the reconnect backoff (it is evidently back).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
struct PeerKnocked {
    from: NodeId,
}

impl Handler<PeerKnocked> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: PeerKnocked, ctx: &mut Context<Self>) {
        let Some(p) = self.peers.get_mut(&msg.from) else {
            return;
        };
        if p.conn.is_none() && !p.connecting {
            debug!(peer = %msg.from.short(), "down peer connected to us: redialling now");
            p.last_failure = None;
            self.start_connect(msg.from, ctx);
        }
    }
}

impl Handler<HedgedCall> for PeerActor {
    type Result = ResponseActFuture<Self, Result<BlockRpc, RpcError>>;

    fn handle(&mut self, msg: HedgedCall, ctx: &mut Context<Self>) -> Self::Result {
        let Call {
            node,
            rpc,
            timeout,
            priority,
        } = msg.call;
        let seq = self.read_seq;
        self.read_seq = self.read_seq.wrapping_add(1);
        let start = Instant::now();
        let hedge = match self.peers.get_mut(&node) {
            Some(p) => {
                p.reads_in_flight.insert(seq, start);
                p.reads.hedge_delay()
            }
            None => health::MAX_HEDGE_DELAY,
        };
        let call = self.observed_call(node, rpc, timeout, priority, ctx);
        let cancel = msg.cancel;
        let raced = async move {
            match future::select(call, cancel).await {
                future::Either::Left((r, _)) => Some(r),
                future::Either::Right(_) => None,
            }
        };
        Box::pin(raced.into_actor(self).map(move |res, act, _ctx| {
            let took = start.elapsed();
            if let Some(p) = act.peers.get_mut(&node) {
                p.reads_in_flight.remove(&seq);
                match &res {
                    // An answer, a refusal or a timeout: how long this peer takes.
                    Some(Ok(_))
                    | Some(Err(RpcError::Remote { .. }))
                    | Some(Err(RpcError::Timeout { .. })) => p.reads.record(took),
                    // Cancelled after its hedge delay: a lower bound worth keeping.
                    None if took >= hedge => p.reads.record(took),
                    _ => {}
                }
            }
            res.unwrap_or(Err(RpcError::Unreachable {
                node,
                reason: "read cancelled: another holder answered first".into(),
            }))
        }))
    }
}

impl Handler<PlanRead> for PeerActor {
    type Result = MessageResult<PlanRead>;

    fn handle(&mut self, msg: PlanRead, _ctx: &mut Context<Self>) -> Self::Result {
        let known: Vec<(NodeId, HolderHealth)> = msg
            .holders
            .iter()
            .map(|&n| {
                let h = if n == self.self_id {
                    HolderHealth::Local
                } else {
                    self.peers
                        .get(&n)
                        .map_or(HolderHealth::Down, PeerState::health)
                };
                (n, h)
            })
            .collect();
        let order = health::order_holders(&known)
            .into_iter()
            .map(|n| {
                let hedge = self
                    .peers
                    .get(&n)
                    .map_or(health::MIN_HEDGE_DELAY, |p| p.reads.hedge_delay());
                (n, hedge)
            })
            .collect();
        MessageResult(ReadPlan { order })
    }
}

impl Handler<CallMany> for PeerActor {
    type Result = ResponseFuture<Result<Vec<(NodeId, BlockRpc)>, QuorumError>>;

    fn handle(&mut self, msg: CallMany, ctx: &mut Context<Self>) -> Self::Result {
        let calls: Vec<_> = msg
            .nodes
            .iter()
            .map(|&n| {
                let f = self.observed_call(n, msg.rpc.clone(), msg.timeout, msg.priority, ctx);
                (n, f)
            })
            .collect();
        let report = msg.report_failures.map(|r| {
            let rpc = msg.rpc;
            Box::new(move |failed: Vec<(NodeId, RpcError)>| {
                r.do_send(CallsFailed { rpc, failed });
            }) as Box<dyn FnOnce(Vec<(NodeId, RpcError)>)>
        });
        Box::pin(call_many::gather_quorums(
            calls,
            msg.quorum,
            msg.also,
            msg.interrupt_after_quorum,
            report,
        ))
    }
}

impl Handler<GetPeerStatus> for PeerActor {
    type Result = MessageResult<GetPeerStatus>;

    /// Every member but this node, in no particular order.
    fn handle(&mut self, _msg: GetPeerStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.peers
                .iter()
                .map(|(&id, p)| PeerInfo {
                    id,
                    addr: p.addr,
                    up: p.conn.is_some(),
                    last_seen: p.last_seen,
                    rtt: p.rtt,
                    layout_digest: p.layout_digest,
                })
                .collect(),
        )
    }
}

impl Handler<SetMembers> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: SetMembers, ctx: &mut Context<Self>) {
        self.apply_members(msg.members, ctx);
    }
}

impl Handler<Shutdown> for PeerActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        info!(node = %self.self_id.short(), "peer actor shutting down");
        self.close_endpoint();
        ctx.stop();
    }
}
