//! The layout actor's messages: [`GetLayout`], [`StageChange`], [`ApplyLayout`],
//! [`RevertLayout`], [`OfferLayout`], [`PeerLayoutSeen`], [`SubscribeLayout`],
//! [`EndTransition`]; the notification [`LayoutChanged`] it sends; the replies
//! [`LayoutView`] and [`Applied`]; and the error [`LayoutError`].

use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use super::model::{Layout, LayoutChange, LayoutInvalid, LayoutStamp, MoveSummary};
use super::placement::LayoutPlacement;
use crate::hash::NodeId;
use crate::peer::RpcError;

/// Errors of the layout actor.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("metadata store error: {0}")]
    Store(#[from] fjall::Error),
    #[error("layout keyspace key {key} is corrupt: {reason}")]
    Corrupt { key: &'static str, reason: String },
    #[error("layout could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("layout could not be encoded: {0}")]
    Compress(#[source] std::io::Error),
    #[error("invalid layout: {0}")]
    Invalid(#[from] LayoutInvalid),
    #[error("nothing is staged")]
    NothingStaged,
    #[error("apply --version {got} refused: the next version is {expected} (current + 1)")]
    WrongVersion { expected: u64, got: u64 },
    #[error("node {0} is not in the layout")]
    NotAMember(NodeId),
    #[error("layout offered by {from} refused: it is not a member of this node's layout")]
    UntrustedSender { from: NodeId },
    #[error("layout version {offered} offered by {from} refused: this node has {current}")]
    NotNewer {
        from: NodeId,
        offered: u64,
        current: u64,
    },
    #[error("layout offered by {from} refused: its digest {got} is not the announced {want}")]
    DigestMismatch {
        from: NodeId,
        want: crate::hash::Hash,
        got: crate::hash::Hash,
    },
    #[error("layout offer refused: {0}")]
    BadOffer(#[from] BadOffer),
    #[error("version {got} is not the current layout ({current})")]
    NotCurrent { current: u64, got: u64 },
    #[error("the layout actor is busy writing the previous change; try again")]
    Busy,
    #[error("the layout actor stopped")]
    Stopped,
}

/// Why a layout fetched from a peer (a `LayoutReply`) was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BadOffer {
    #[error("layout bytes do not decompress: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("layout does not decode: {0}")]
    Decode(#[source] rmp_serde::decode::Error),
    #[error("answered LayoutQuery with {0}")]
    UnexpectedReply(&'static str),
    #[error("{0}")]
    Rpc(#[source] RpcError),
}

/// The current layout, what is staged and what applying it would do.
#[derive(Debug, Clone)]
pub struct LayoutView {
    pub current: Arc<Layout>,
    pub staged: Vec<LayoutChange>,
    /// The layout the staged changes lead to and what it moves; `None` when nothing is
    /// staged.
    pub preview: Option<(Layout, MoveSummary)>,
    /// Peers' announced stamps that differ from ours (agreement is their absence).
    pub disagreeing: Vec<(NodeId, LayoutStamp)>,
    /// The running transition as last polled (`None`: none runs, or not polled yet).
    pub transition: Option<super::handover::TransitionStatus>,
}

/// Show the layout.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "LayoutView")]
pub struct GetLayout;

/// Stage a change (kept apart from the current layout until applied). Refused, and not
/// kept, when the layout it leads to cannot be computed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<LayoutView, LayoutError>")]
pub struct StageChange {
    pub change: LayoutChange,
}

/// Apply the staged changes as layout `version`, which must be current + 1.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Applied, LayoutError>")]
pub struct ApplyLayout {
    pub version: u64,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub version: u64,
    pub moves: MoveSummary,
}

/// Drop the staged changes; answers how many there were.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<usize, LayoutError>")]
pub struct RevertLayout;

/// A layout a peer handed over (its `LayoutReply`), with the stamp it announced.
/// Accepted when `from` is trusted (a member of this node's layout, or of the offered
/// one while this node is not named by its own), the version is newer and the digest
/// is the announced one. Answers whether this node switched.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, LayoutError>")]
pub struct OfferLayout {
    pub from: NodeId,
    pub announced: LayoutStamp,
    pub layout: Layout,
}

/// A peer announced its layout stamp (`Hello` or `Ping`, seen by the peer actor). A
/// newer version is fetched from it; any difference counts against agreement.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct PeerLayoutSeen {
    pub peer: NodeId,
    pub stamp: LayoutStamp,
}

/// Send `to` a [`LayoutChanged`] now and on every switch or agreement change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeLayout {
    pub to: Recipient<LayoutChanged>,
}

/// The transition to `version` is over (every old holder handed over): drop the
/// previous table and the retiring members.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), LayoutError>")]
pub struct EndTransition {
    pub version: u64,
}

/// What subscribers get: the layout in force, its placement, and whether every peer
/// announces the same layout (deletions and hand-overs wait while it is false).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LayoutChanged {
    pub layout: Arc<Layout>,
    pub placement: Arc<LayoutPlacement>,
    pub agreed: bool,
    /// The peers announcing another layout (empty when `agreed`).
    pub disagreeing: Vec<NodeId>,
}
