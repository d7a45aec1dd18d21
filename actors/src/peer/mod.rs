//! PeerActor: owns the quinn endpoint, every connection, and peer health.
//!
//! INTERFACE SKELETON — the implementation replaces every `unimplemented!` below.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::frame::{BlockRpc, ErrorCode, FrameLimits};
use crate::hash::{Hash, NodeId};

/// Default timeout of a block read or write between nodes.
pub const BLOCK_RW_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of a `NeedBlockQuery`.
pub const NEED_BLOCK_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Client traffic goes before background traffic (resync, offload, scrub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Client,
    Background,
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
#[error("quorum of {quorum} not reached: {} ok, errors: {errors:?}", oks)]
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
    /// Cancel the calls still running once the quorum is reached.
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
    pub listen: SocketAddr,
    pub members: Vec<PeerAddr>,
    pub limits: FrameLimits,
    pub layout_digest: Hash,
}

/// The actor.
pub struct PeerActor {
    #[allow(dead_code)]
    config: PeerConfig,
}

impl Actor for PeerActor {
    type Context = Context<Self>;
}
