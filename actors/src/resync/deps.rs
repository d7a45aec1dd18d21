//! What resyncing one block needs and may fail with, shared by the resync of a block
//! (`work.rs`) and its GC offload (`offload.rs`): the actors' addresses ([`Deps`]), the
//! error ([`ResyncBlockError`]), the points a test may pause at ([`GcStep`]) and the
//! helpers to call a peer ([`call`]) and to name a stopped actor ([`gone`]).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::budget::Pool;
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, Priority, RpcError};
use crate::placement::Placement;
use crate::refcount::{RefcountActor, RefcountError};
use crate::storage::{StorageActor, StorageError};

/// What the workers need to resync a block: cheap to clone into a `'static` future.
#[derive(Clone)]
pub(super) struct Deps {
    pub(super) self_id: NodeId,
    pub(super) storage: Addr<StorageActor>,
    pub(super) refcount: Addr<RefcountActor>,
    pub(super) peers: Recipient<Call>,
    pub(super) placement: Arc<dyn Placement>,
    pub(super) block_timeout: Duration,
    pub(super) need_block_timeout: Duration,
    /// False while this node's member list differs from a peer's: no block is deleted
    /// then (an offload is put off), since the holders are not agreed on.
    pub(super) may_delete: bool,
    /// The refcount grace period; also the grace a block gets from its file's age.
    pub(super) gc_delay: Duration,
    /// Test hook: a pause before each GC step (interleaving tests); `None` in a node.
    pub(super) pause: Option<PauseHook>,
    /// The pool a block read here to be sent (GC offload) is charged to before it is
    /// read; `None`: uncharged (tests of other things).
    pub(super) budget: Option<Pool>,
}

impl Deps {
    /// Sleep for what the test hook asks before `step` of the look at `hash` (nothing
    /// without a hook).
    pub(super) async fn pause(&self, step: GcStep, hash: Hash) {
        if let Some(hook) = &self.pause {
            let d = hook(step, hash);
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// A point between two steps of a GC look, where an interleaving test may pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GcStep {
    /// Before the look is opened (its instant taken, the file looked at).
    Look,
    /// Before the rc entry is read.
    ReadRc,
    /// Before the other holders are asked.
    NeedQuery,
    /// Before the fence.
    Fence,
    /// Before the conditional delete.
    Delete,
    /// Before the fence is lifted.
    EndFence,
}

/// The test hook: how long to pause before a step of the look at a hash.
pub(super) type PauseHook = Arc<dyn Fn(GcStep, Hash) -> Duration + Send + Sync>;

/// Why resyncing one block failed; its text is what the errors table keeps.
#[derive(Debug, thiserror::Error)]
pub enum ResyncBlockError {
    #[error("block {hash}: the {actor} actor is gone: {source}")]
    ActorGone {
        hash: Hash,
        actor: &'static str,
        #[source]
        source: MailboxError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Refcount(#[from] RefcountError),
    #[error("block {hash} is referenced here but no other holder could provide it ({tried})")]
    NotFound { hash: Hash, tried: String },
    #[error("block {hash}: its fetch is still under way after {waited_ms} ms; retry")]
    FetchPending { hash: Hash, waited_ms: u64 },
    #[error("{message}")]
    FetchFailed { message: String },
    #[error("block {hash} kept: cannot ask {node} whether it needs the block: {source}")]
    NeedQuery {
        hash: Hash,
        node: NodeId,
        #[source]
        source: RpcError,
    },
    #[error("block {hash} kept: {node} answered {kind} to NeedBlockQuery")]
    BadNeedReply {
        hash: Hash,
        node: NodeId,
        kind: &'static str,
    },
    #[error("block {hash} kept: offload to {node} failed: {source}")]
    Offload {
        hash: Hash,
        node: NodeId,
        #[source]
        source: RpcError,
    },
}

/// Maps an actix mailbox error (the actor stopped) to [`ResyncBlockError::ActorGone`].
pub(super) fn gone(
    hash: Hash,
    actor: &'static str,
) -> impl FnOnce(MailboxError) -> ResyncBlockError {
    move |source| ResyncBlockError::ActorGone {
        hash,
        actor,
        source,
    }
}

/// A background-priority call of `rpc` to `node`.
pub(super) fn call(node: NodeId, rpc: BlockRpc, timeout: Duration) -> Call {
    Call {
        node,
        rpc,
        timeout,
        priority: Priority::Background,
    }
}
