//! The peer actor's messages and their replies: [`Call`] (with its [`Priority`]),
//! [`CallMany`], [`HedgedCall`], [`PlanRead`] (answered by a [`ReadPlan`]),
//! [`GetPeerStatus`], [`SetMembers`], [`Shutdown`]; [`HandleRpc`] (sent by it to the
//! node's handler) and [`CallsFailed`] (sent by it to anti-entropy); the errors
//! [`RpcError`] and [`QuorumError`].

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::config::PeerAddr;
use super::status::PeerInfo;
use crate::frame::{BlockRpc, ErrorCode};
use crate::hash::NodeId;

/// Client traffic goes before background traffic (resync, offload, scrub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Client,
    Background,
}

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("peer {} did not answer within {}", node.short(), humanize(*after))]
    Timeout { node: NodeId, after: Duration },
    #[error("peer {} is unreachable: {reason}", node.short())]
    Unreachable { node: NodeId, reason: String },
    #[error("peer {} answered {code}: {message}", node.short())]
    Remote {
        node: NodeId,
        code: ErrorCode,
        message: String,
    },
    #[error("protocol error with peer {}: {reason}", node.short())]
    Protocol { node: NodeId, reason: String },
    #[error("{} is not a cluster member", node.short())]
    UnknownNode { node: NodeId },
    #[error("peer actor is gone")]
    Gone,
}

/// A timeout as a person reads it: whole seconds when it is, else milliseconds.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
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
#[error(
    "quorum of {quorum} not reached: {oks} ok; {}",
    errors.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; ")
)]
pub struct QuorumError {
    pub quorum: usize,
    pub oks: usize,
    pub errors: Vec<(NodeId, RpcError)>,
}

/// The same request to several nodes, as Garage's `try_call_many`: succeeds as soon
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
    /// Further conditions: each `(nodes, q)` needs `q` successes among `nodes` too
    /// (during a layout transition, the quorum of the old and of the new holder set).
    /// Empty: only `quorum`.
    pub also: Vec<(Vec<NodeId>, usize)>,
    /// Told, once every call has ended, which nodes failed (also those that failed after
    /// the quorum was reached); not told when none did. Hinted handoff hangs off this.
    pub report_failures: Option<Recipient<CallsFailed>>,
}

/// The calls of one [`CallMany`] that failed, sent once all of them ended.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CallsFailed {
    pub rpc: BlockRpc,
    pub failed: Vec<(NodeId, RpcError)>,
}

/// A request received from a peer (or from this node), for the handler given at start.
/// The handler's reply is sent back on the same stream.
#[derive(Message, Debug)]
#[rtype(result = "BlockRpc")]
pub struct HandleRpc {
    pub from: NodeId,
    pub rpc: BlockRpc,
}
/// A [`Call`] on the client read path: it ends (the stream is reset) as soon as the
/// sender of `cancel` is dropped, and its latency feeds the peer's read health (see
/// [`PlanRead`]). The hedged read drops the losers' senders once it has its answer.
#[derive(Message, Debug)]
#[rtype(result = "Result<BlockRpc, RpcError>")]
pub struct HedgedCall {
    pub call: Call,
    pub cancel: oneshot::Receiver<()>,
}

/// In which order to ask `holders` (placement order) for a block, and how long to wait
/// for each before asking the next one too.
#[derive(Message, Debug, Clone)]
#[rtype(result = "ReadPlan")]
pub struct PlanRead {
    pub holders: Vec<NodeId>,
}

/// The answer to [`PlanRead`]: this node first (when a holder), then up peers fastest
/// first, then peers with a read outstanding for long, then down peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// Each holder with its hedge delay (about its recent p95 read latency).
    pub order: Vec<(NodeId, Duration)>,
}

/// Ask for every peer's [`PeerInfo`].
#[derive(Message, Debug)]
#[rtype(result = "Vec<PeerInfo>")]
pub struct GetPeerStatus;
/// Replace the member list at runtime: new members are dialled, removed ones
/// disconnected and refused from now on. Members whose id and address are unchanged keep
/// their connection.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SetMembers {
    pub members: Vec<PeerAddr>,
}

/// Close every connection (peers see it at once, not after an idle timeout) and stop
/// the actor. The UDP port is released shortly after.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Shutdown;
