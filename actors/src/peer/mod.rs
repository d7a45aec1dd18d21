//! PeerActor: owns the QUIC endpoint, every connection, and peer health.
//!
//! State owned: one quinn [`Endpoint`] (server and client), the outgoing connection to
//! each cluster member with its health (up/down, last seen, RTT, layout digest), and the
//! reconnect timers. Messages: [`Call`], [`CallMany`], [`GetPeerStatus`]. Incoming
//! requests are handed to the [`HandleRpc`] recipient given at start (the node's
//! dispatcher), so this actor knows nothing of storage or refcounts; it answers `Hello`
//! and `Ping` itself.
//!
//! Every request opens one bidirectional stream and carries one frame each way (see
//! `frame.rs`). Connections are mutual TLS 1.3 (see `tls.rs`); since a client learns
//! that the server refused its certificate only on the first stream, a peer is marked
//! up only after an application-level `Hello` round trip. A lost connection is retried
//! with capped exponential backoff; a ping every `ping_interval` measures liveness.

mod wire;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, TransportConfig};

use crate::frame::{BlockRpc, ErrorCode, FrameLimits, Hello};
use crate::hash::{Hash, NodeId};
use crate::tls::{TlsError, TlsIdentity, NODE_SERVER_NAME};

/// Default timeout of a block read or write between nodes.
pub const BLOCK_RW_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of a `NeedBlockQuery`.
pub const NEED_BLOCK_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most concurrent request streams one peer may open on a connection: a flood from
/// one peer queues at its own flow control instead of starving others.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Time an incoming stream gets to deliver its request frame.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Client traffic goes before background traffic (resync, offload, scrub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Client,
    Background,
}

impl Priority {
    /// quinn stream priority: higher is sent first.
    fn stream_priority(self) -> i32 {
        match self {
            Priority::Client => 1,
            Priority::Background => 0,
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("peer {node:?} did not answer within {after:?}")]
    Timeout { node: NodeId, after: Duration },
    #[error("peer {node:?} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    #[error("peer {node:?} answered {code:?}: {message}")]
    Remote {
        node: NodeId,
        code: ErrorCode,
        message: String,
    },
    #[error("protocol error with peer {node:?}: {reason}")]
    Protocol { node: NodeId, reason: String },
    #[error("{node:?} is not a cluster member")]
    UnknownNode { node: NodeId },
    #[error("peer actor is gone")]
    Gone,
}

/// One request to one node (this node included: then the local handler answers).
/// An `Error` reply is returned as [`RpcError::Remote`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<BlockRpc, RpcError>")]
pub struct Call {
    pub node: NodeId,
    pub rpc: BlockRpc,
    pub timeout: Duration,
    pub priority: Priority,
}

/// Quorum failure: every error seen, by node.
#[derive(Debug, Clone, thiserror::Error)]
#[error("quorum of {quorum} not reached: {} ok, errors: {}", oks, errors.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct QuorumError {
    pub quorum: usize,
    pub oks: usize,
    pub errors: Vec<(NodeId, RpcError)>,
}

/// The same request to several nodes, as the seed's `try_call_many`: succeeds as soon
/// as `quorum` replies are not errors; fails as soon as that has become impossible.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<(NodeId, BlockRpc)>, QuorumError>")]
pub struct CallMany {
    pub nodes: Vec<NodeId>,
    pub rpc: BlockRpc,
    pub quorum: usize,
    pub timeout: Duration,
    pub priority: Priority,
    /// Cancel the calls still running once the quorum is reached (else they finish in
    /// the background, so every holder still gets the write).
    pub interrupt_after_quorum: bool,
}

/// A request received from a peer (or from this node), for the handler given at start.
/// The handler's reply is sent back on the same stream.
#[derive(Message, Debug)]
#[rtype(result = "BlockRpc")]
pub struct HandleRpc {
    pub from: NodeId,
    pub rpc: BlockRpc,
}

/// One peer's health.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub up: bool,
    pub last_seen: Option<Instant>,
    pub rtt: Option<Duration>,
    /// The peer's layout digest from its hello, when known.
    pub layout_digest: Option<Hash>,
}

/// Ask for every peer's [`PeerInfo`].
#[derive(Message, Debug)]
#[rtype(result = "Vec<PeerInfo>")]
pub struct GetPeerStatus;

/// A cluster member as the peer actor needs it.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Settings of a [`PeerActor`].
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// UDP address to listen on (port 0: chosen by the OS, see [`PeerActor::local_addr`]).
    pub listen: SocketAddr,
    /// Every cluster member (this node may be listed; it is skipped).
    pub members: Vec<PeerAddr>,
    /// Frame size limits for received frames.
    pub limits: FrameLimits,
    /// Digest of this node's member list, sent in `Hello`.
    pub layout_digest: Hash,
    /// Interval of liveness pings (and QUIC keep-alives).
    pub ping_interval: Duration,
    /// Longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// A connection with no packet for this long is closed.
    pub idle_timeout: Duration,
}

impl PeerConfig {
    /// A config with default timers: ping every 2 s, reconnect backoff 100 ms .. 5 s,
    /// idle timeout 10 s (a silent peer is noticed within a few seconds).
    pub fn new(listen: SocketAddr, members: Vec<PeerAddr>, layout_digest: Hash) -> Self {
        PeerConfig {
            listen,
            members,
            limits: FrameLimits::default(),
            layout_digest,
            ping_interval: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Errors starting a peer actor.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot bind QUIC socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC configuration failed: {0}")]
    Quic(String),
}

/// Called after every outgoing RPC: message kind, peer, latency, success.
pub type RpcObserver = Arc<dyn Fn(&'static str, NodeId, Duration, bool) + Send + Sync>;

/// The connection state of one member.
struct Peer {
    addr: SocketAddr,
    client_cfg: quinn::ClientConfig,
    conn: Option<Connection>,
    connecting: bool,
    failures: u32,
    last_seen: Option<Instant>,
    layout_digest: Option<Hash>,
}

/// The actor.
pub struct PeerActor {
    self_id: NodeId,
    config: PeerConfig,
    socket: Option<UdpSocket>,
    server_cfg: Option<quinn::ServerConfig>,
    endpoint: Option<Endpoint>,
    local_addr: SocketAddr,
    peers: HashMap<NodeId, Peer>,
    handler: Recipient<HandleRpc>,
    observer: Option<RpcObserver>,
}

/// Close the endpoint (peers are told) and stop the actor.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for PeerActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A peer said hello on an incoming connection.
#[derive(Message)]
#[rtype(result = "()")]
struct PeerHello {
    from: NodeId,
    layout_digest: Hash,
}

/// A request on the outgoing connection to `id` failed at the connection level.
#[derive(Message)]
#[rtype(result = "()")]
struct ConnBroken {
    id: NodeId,
    stable_id: usize,
}

fn transport(config: &PeerConfig) -> Result<Arc<TransportConfig>, PeerError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(config.ping_interval));
    t.max_idle_timeout(Some(
        config
            .idle_timeout
            .try_into()
            .map_err(|e| PeerError::Quic(format!("idle timeout: {e}")))?,
    ));
    Ok(Arc::new(t))
}

impl PeerActor {
    /// Bind the UDP socket and build the TLS configurations. The endpoint itself is
    /// created when the actor starts (quinn needs the runtime of the actor's System).
    pub fn new(
        config: PeerConfig,
        identity: TlsIdentity,
        handler: Recipient<HandleRpc>,
    ) -> Result<Self, PeerError> {
        let socket = UdpSocket::bind(config.listen).map_err(|source| PeerError::Bind {
            addr: config.listen,
            source,
        })?;
        Self::with_socket(config, socket, identity, handler)
    }

    /// As [`PeerActor::new`], on a socket the caller already bound (tests bind every
    /// node's socket first to learn the ports, then write the member lists).
    pub fn with_socket(
        config: PeerConfig,
        socket: UdpSocket,
        identity: TlsIdentity,
        handler: Recipient<HandleRpc>,
    ) -> Result<Self, PeerError> {
        let self_id = identity.node_id();
        let local_addr = socket.local_addr().map_err(|source| PeerError::Bind {
            addr: config.listen,
            source,
        })?;
        let transport = transport(&config)?;
        let members: HashSet<NodeId> = config.members.iter().map(|m| m.id).collect();
        let server_tls = identity.server_config(members)?;
        let server_quic =
            QuicServerConfig::try_from(server_tls).map_err(|e| PeerError::Quic(e.to_string()))?;
        let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
        server_cfg.transport_config(transport.clone());
        let mut peers = HashMap::new();
        for m in &config.members {
            if m.id == self_id {
                continue;
            }
            let tls = identity.client_config(m.id)?;
            let quic =
                QuicClientConfig::try_from(tls).map_err(|e| PeerError::Quic(e.to_string()))?;
            let mut client_cfg = quinn::ClientConfig::new(Arc::new(quic));
            client_cfg.transport_config(transport.clone());
            peers.insert(
                m.id,
                Peer {
                    addr: m.addr,
                    client_cfg,
                    conn: None,
                    connecting: false,
                    failures: 0,
                    last_seen: None,
                    layout_digest: None,
                },
            );
        }
        Ok(PeerActor {
            self_id,
            config,
            socket: Some(socket),
            server_cfg: Some(server_cfg),
            endpoint: None,
            local_addr,
            peers,
            handler,
            observer: None,
        })
    }

    /// Report every outgoing RPC's latency to `observer` (metrics).
    pub fn with_observer(mut self, observer: RpcObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The bound UDP address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.self_id
    }

    fn hello(&self) -> BlockRpc {
        BlockRpc::Hello(Hello {
            layout_digest: self.config.layout_digest,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    /// Open the connection to `id` (TLS handshake, then Hello) unless one exists or is
    /// being opened.
    fn connect(&mut self, id: NodeId, ctx: &mut Context<Self>) {
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        let hello = self.hello();
        let limits = self.config.limits;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.connecting || peer.conn.is_some() {
            return;
        }
        peer.connecting = true;
        let (cfg, addr) = (peer.client_cfg.clone(), peer.addr);
        let fut = async move {
            let connecting = endpoint
                .connect_with(cfg, addr, NODE_SERVER_NAME)
                .map_err(|e| e.to_string())?;
            let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
                .await
                .map_err(|_| "handshake timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                wire::request(&conn, &hello, &limits, Priority::Client),
            )
            .await
            .map_err(|_| "hello timed out".to_string())?
            .map_err(|e| e.to_string())?;
            match reply {
                BlockRpc::Hello(h) => Ok((conn, h)),
                other => Err(format!("answered {} to hello", other.kind())),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let ours = act.config.layout_digest;
            let Some(peer) = act.peers.get_mut(&id) else {
                return;
            };
            peer.connecting = false;
            match res {
                Ok((conn, hello)) => {
                    tracing::info!(peer = %id.short(), addr = %peer.addr, version = %hello.version, "peer up");
                    if hello.layout_digest != ours {
                        tracing::error!(peer = %id.short(), "peer has a different member list (layout digest differs): placement disagrees until configs match");
                    }
                    peer.failures = 0;
                    peer.last_seen = Some(Instant::now());
                    peer.layout_digest = Some(hello.layout_digest);
                    let stable_id = conn.stable_id();
                    peer.conn = Some(conn.clone());
                    ctx.spawn(async move { conn.closed().await }.into_actor(act).map(
                        move |reason, act, ctx| act.on_closed(id, stable_id, reason.to_string(), ctx),
                    ));
                }
                Err(e) => {
                    if peer.failures == 0 {
                        tracing::warn!(peer = %id.short(), addr = %peer.addr, "cannot connect to peer: {e}");
                    } else {
                        tracing::debug!(peer = %id.short(), "reconnect failed: {e}");
                    }
                    peer.failures = peer.failures.saturating_add(1);
                    act.schedule_reconnect(id, ctx);
                }
            }
        }));
    }

    fn on_closed(&mut self, id: NodeId, stable_id: usize, reason: String, ctx: &mut Context<Self>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.conn.as_ref().map(|c| c.stable_id()) == Some(stable_id) {
            tracing::info!(peer = %id.short(), "peer down: {reason}");
            peer.conn = None;
            peer.failures = peer.failures.saturating_add(1);
            self.schedule_reconnect(id, ctx);
        }
    }

    fn schedule_reconnect(&mut self, id: NodeId, ctx: &mut Context<Self>) {
        let failures = self.peers.get(&id).map_or(0, |p| p.failures);
        // 100 ms, 200 ms, 400 ms ... capped at reconnect_max.
        let delay = Duration::from_millis(100)
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.config.reconnect_max);
        ctx.run_later(delay, move |act, ctx| act.connect(id, ctx));
    }

    fn ping_all(&mut self, ctx: &mut Context<Self>) {
        let limits = self.config.limits;
        let timeout = self.config.ping_interval.max(Duration::from_secs(1)) * 2;
        for (id, peer) in &self.peers {
            let Some(conn) = peer.conn.clone() else {
                continue;
            };
            let id = *id;
            let nonce = rand::random::<u64>();
            let fut = async move {
                let r = tokio::time::timeout(
                    timeout,
                    wire::request(&conn, &BlockRpc::Ping(nonce), &limits, Priority::Client),
                )
                .await;
                (conn, r)
            };
            ctx.spawn(fut.into_actor(self).map(move |(conn, r), act, _ctx| match r {
                Ok(Ok(BlockRpc::Pong(n))) if n == nonce => {
                    if let Some(p) = act.peers.get_mut(&id) {
                        p.last_seen = Some(Instant::now());
                    }
                }
                other => {
                    tracing::warn!(peer = %id.short(), "ping failed ({}); closing the connection to reconnect",
                        match other { Ok(Ok(r)) => format!("answered {}", r.kind()), Ok(Err(e)) => e.to_string(), Err(_) => "timeout".into() });
                    conn.close(0u32.into(), b"ping failed");
                }
            }));
        }
    }

    /// The future of one call; `'static` so it can run outside the actor.
    fn call_future(
        &mut self,
        msg: Call,
        ctx: &mut Context<Self>,
    ) -> BoxFuture<'static, Result<BlockRpc, RpcError>> {
        let Call {
            node,
            rpc,
            timeout,
            priority,
        } = msg;
        let observer = self.observer.clone();
        let kind = rpc.kind();
        if node == self.self_id {
            let handler = self.handler.clone();
            let from = self.self_id;
            return async move {
                match tokio::time::timeout(timeout, handler.send(HandleRpc { from, rpc })).await {
                    Err(_) => Err(RpcError::Timeout {
                        node,
                        after: timeout,
                    }),
                    Ok(Err(_)) => Err(RpcError::Gone),
                    Ok(Ok(reply)) => wire::reply_to_result(node, reply),
                }
            }
            .boxed();
        }
        let Some(peer) = self.peers.get(&node) else {
            return futures::future::ready(Err(RpcError::UnknownNode { node })).boxed();
        };
        let Some(conn) = peer.conn.clone() else {
            let reason = if peer.connecting {
                "connecting".to_string()
            } else {
                "not connected".to_string()
            };
            if !peer.connecting {
                self.connect(node, ctx);
            }
            return futures::future::ready(Err(RpcError::Unreachable { node, reason })).boxed();
        };
        let limits = self.config.limits;
        let me = ctx.address();
        async move {
            let start = Instant::now();
            let res =
                match tokio::time::timeout(timeout, wire::request(&conn, &rpc, &limits, priority))
                    .await
                {
                    Err(_) => Err(RpcError::Timeout {
                        node,
                        after: timeout,
                    }),
                    Ok(Err(wire::RequestError::Connection(reason))) => {
                        me.do_send(ConnBroken {
                            id: node,
                            stable_id: conn.stable_id(),
                        });
                        Err(RpcError::Unreachable { node, reason })
                    }
                    Ok(Err(wire::RequestError::Protocol(reason))) => {
                        Err(RpcError::Protocol { node, reason })
                    }
                    Ok(Ok(reply)) => wire::reply_to_result(node, reply),
                };
            if let Some(obs) = observer {
                obs(kind, node, start.elapsed(), res.is_ok());
            }
            res
        }
        .boxed()
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (Some(socket), Some(server_cfg)) = (self.socket.take(), self.server_cfg.take()) else {
            return;
        };
        let endpoint = match Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_cfg),
            socket,
            Arc::new(quinn::TokioRuntime),
        ) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(addr = %self.local_addr, "cannot start the QUIC endpoint: {e}");
                ctx.stop();
                return;
            }
        };
        tracing::info!(node = %self.self_id, addr = %self.local_addr, "QUIC endpoint listening");
        self.endpoint = Some(endpoint.clone());
        let ctx_serve = wire::ServeContext {
            handler: self.handler.clone(),
            limits: self.config.limits,
            hello: self.hello(),
            actor: ctx.address().recipient(),
        };
        actix_rt::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                actix_rt::spawn(wire::serve_connection(incoming, ctx_serve.clone()));
            }
        });
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.connect(id, ctx);
        }
        ctx.run_interval(self.config.ping_interval, |act, ctx| act.ping_all(ctx));
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        if let Some(e) = &self.endpoint {
            // Tell peers now, so they mark this node down at once instead of on timeout.
            e.close(0u32.into(), b"shutdown");
        }
        Running::Stop
    }
}

impl Handler<Call> for PeerActor {
    type Result = ResponseFuture<Result<BlockRpc, RpcError>>;

    fn handle(&mut self, msg: Call, ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.call_future(msg, ctx))
    }
}

impl Handler<CallMany> for PeerActor {
    type Result = ResponseFuture<Result<Vec<(NodeId, BlockRpc)>, QuorumError>>;

    fn handle(&mut self, msg: CallMany, ctx: &mut Context<Self>) -> Self::Result {
        let CallMany {
            nodes,
            rpc,
            quorum,
            timeout,
            priority,
            interrupt_after_quorum,
        } = msg;
        let total = nodes.len();
        let mut calls: futures::stream::FuturesUnordered<_> = nodes
            .into_iter()
            .map(|node| {
                self.call_future(
                    Call {
                        node,
                        rpc: rpc.clone(),
                        timeout,
                        priority,
                    },
                    ctx,
                )
                .map(move |r| (node, r))
            })
            .collect();
        Box::pin(async move {
            let mut oks = Vec::new();
            let mut errors = Vec::new();
            if quorum > total {
                return Err(QuorumError {
                    quorum,
                    oks: 0,
                    errors,
                });
            }
            while let Some((node, r)) = calls.next().await {
                match r {
                    Ok(reply) => oks.push((node, reply)),
                    Err(e) => errors.push((node, e)),
                }
                if oks.len() >= quorum {
                    if !interrupt_after_quorum && !calls.is_empty() {
                        // The other holders still get the request; nobody waits for them.
                        actix_rt::spawn(async move { while calls.next().await.is_some() {} });
                    }
                    return Ok(oks);
                }
                if errors.len() > total - quorum {
                    return Err(QuorumError {
                        quorum,
                        oks: oks.len(),
                        errors,
                    });
                }
            }
            Err(QuorumError {
                quorum,
                oks: oks.len(),
                errors,
            })
        })
    }
}

impl Handler<GetPeerStatus> for PeerActor {
    type Result = MessageResult<GetPeerStatus>;

    fn handle(&mut self, _msg: GetPeerStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(id, p)| PeerInfo {
                id: *id,
                addr: p.addr,
                up: p.conn.is_some(),
                last_seen: p.last_seen,
                rtt: p.conn.as_ref().map(|c| c.rtt()),
                layout_digest: p.layout_digest,
            })
            .collect();
        v.sort_by_key(|p| p.id);
        MessageResult(v)
    }
}

impl Handler<PeerHello> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: PeerHello, ctx: &mut Context<Self>) {
        let ours = self.config.layout_digest;
        if let Some(p) = self.peers.get_mut(&msg.from) {
            if msg.layout_digest != ours && p.layout_digest != Some(msg.layout_digest) {
                tracing::error!(peer = %msg.from.short(), "peer has a different member list (layout digest differs)");
            }
            p.layout_digest = Some(msg.layout_digest);
            // A peer that dials us is alive: if we thought it down, reconnect now.
            if p.conn.is_none() && !p.connecting {
                p.failures = 0;
                self.connect(msg.from, ctx);
            }
        }
    }
}

impl Handler<ConnBroken> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: ConnBroken, ctx: &mut Context<Self>) {
        if let Some(p) = self.peers.get(&msg.id) {
            if let Some(c) = &p.conn {
                if c.stable_id() == msg.stable_id {
                    c.close(0u32.into(), b"connection error");
                    self.on_closed(
                        msg.id,
                        msg.stable_id,
                        "request failed on the connection".into(),
                        ctx,
                    );
                }
            }
        }
    }
}
