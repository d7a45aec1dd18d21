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
//! [`SetMembers`], [`SetLocalStats`], [`Shutdown`].
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
mod calls;
mod config;
mod conn;
mod dial;
pub mod health;
mod incoming;
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
use quinn::{Connection, Endpoint};
use tokio::sync::oneshot;
use tracing::info;

pub use backoff::backoff;
pub use config::{
    PeerAddr, PeerConfig, PeerTuning, BLOCK_RW_TIMEOUT, DEFAULT_ACK_ELICITING_THRESHOLD,
    DEFAULT_MTU_UPPER_BOUND, DEFAULT_STREAM_RECEIVE_WINDOW, GSO_MAX_MTU, LOOPBACK_MTU_UPPER_BOUND,
    PEER_RPC_TIMEOUT,
};
use health::{HolderHealth, LatencyWindow};
#[cfg(test)]
use incoming::{admit_incoming, Admission};
pub use messages::{
    Call, CallMany, CallsFailed, GetPeerStatus, HandleRpc, HedgedCall, PlanRead, Priority,
    QuorumError, ReadPlan, RpcError, SetMembers, Shutdown,
};
pub use status::{PeerInfo, SetLocalStats};

use crate::frame::{Hello, NodeStats};
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
    /// The storage counts it last announced, with when it sampled them.
    stats: Option<(NodeStats, Instant)>,
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
    /// This node's storage counts as last pushed ([`SetLocalStats`]), and when.
    local_stats: Option<(NodeStats, Instant)>,
    /// The `blocknode layout assign ...` line that adds this node, logged while it waits
    /// to be assigned.
    assign_command: Option<String>,
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
            local_stats: None,
            assign_command: None,
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
                stats: None,
                ever_up: false,
                reads: LatencyWindow::default(),
                reads_in_flight: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// The hello this node opens a connection with (its storage counts included).
    fn hello(&self) -> Hello {
        Hello {
            layout_digest: self.layout.digest,
            layout_version: self.layout.version,
            version: env!("CARGO_PKG_VERSION").to_string(),
            stats: self.announced_stats(),
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
                    stats: p.stats,
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
