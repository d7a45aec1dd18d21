//! The refcount actor's messages and their replies: [`AddRef`], [`DropRef`], [`GetRc`],
//! [`ListRefs`], [`ClearIfDeletable`], [`FenceForDelete`], [`EndGcFence`], [`RebuildRc`],
//! [`ListRcHashes`], and [`RcChanged`] (sent by it); the reply types [`RefUpdate`],
//! [`RefState`] and the error [`RefcountError`]. (The partition-sync messages are in
//! `sync.rs`.)

use actix::prelude::*;

use super::pending::PersistError;
use super::status::RebuildReport;
use crate::hash::Hash;
use crate::rc::{RcEntry, RcParseError};
use crate::ref_id::RefId;

/// Errors of the refcount actor.
#[derive(Debug, thiserror::Error)]
pub enum RefcountError {
    #[error("rc entry of block {hash} is corrupt: {source}")]
    CorruptEntry {
        hash: Hash,
        #[source]
        source: RcParseError,
    },
    #[error(
        "ref {ref_id} of block {hash} was dropped in incarnation {incarnation} meanwhile; add it again"
    )]
    RefDropped {
        hash: Hash,
        ref_id: RefId,
        incarnation: u64,
    },
    #[error("metadata store error: {0}")]
    Store(#[from] fjall::Error),
    #[error("metadata store error: {0}")]
    NotPersisted(#[source] PersistError),
    #[error("metadata store error: refcount actor stopped {during}")]
    Stopped { during: &'static str },
    #[error("metadata store error: rebuild task failed: {0}")]
    RebuildTask(#[source] tokio::task::JoinError),
}

/// State of one named reference. Within one incarnation, dropped wins over live when
/// replicas merge (`record.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefState {
    Live,
    Dropped,
}

/// Result of a ref mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefUpdate {
    /// Whether anything changed (false for a repeated add/drop).
    pub changed: bool,
    /// The block's rc entry after the change.
    pub rc: RcEntry,
}

/// Add the named reference in `incarnation` (idempotent). Replies once the change is in
/// the journal. A record of a higher incarnation here wins (nothing changes, `Ok`); a
/// tombstone of this incarnation or a higher one answers [`RefcountError::RefDropped`]
/// when it leaves the name dropped.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct AddRef {
    pub hash: Hash,
    pub ref_id: RefId,
    pub incarnation: u64,
}

/// [`AddRef`] from a holder that has just stored the block durably (a `PutBlockRef`):
/// the same change, but a move of the count from zero is not announced to resync, which
/// would only find the block present and needed ([`RcChanged`] still goes out when the
/// ref met a GC fence: the delete under way may remove the copy just written).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct AddStoredRef {
    pub hash: Hash,
    pub ref_id: RefId,
    pub incarnation: u64,
}

/// Drop incarnation `incarnation` of the named reference (idempotent): a record of a
/// higher incarnation is left alone.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct DropRef {
    pub hash: Hash,
    pub ref_id: RefId,
    pub incarnation: u64,
}

/// Purge the tombstones dropped `tombstone_retention` before `now_ms` or earlier, at
/// most `limit` per message (a tombstone of unknown drop time gets `now_ms` as its
/// drop time). Replies how many were removed, once durable.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, RefcountError>")]
pub struct PurgeTombstones {
    pub now_ms: u64,
    pub limit: usize,
}

/// Read a block's rc entry.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RcEntry, RefcountError>")]
pub struct GetRc {
    pub hash: Hash,
}

/// List a block's refs with their state.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<(RefId, RefState)>, RefcountError>")]
pub struct ListRefs {
    pub hash: Hash,
}

/// Turn a passed `Deletable` entry into `Absent`; replies whether it did.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, RefcountError>")]
pub struct ClearIfDeletable {
    pub hash: Hash,
}

/// GC, before deleting: durably mark the hash as being deleted, if its rc entry is still
/// deletable ([`crate::gc::may_fence`]). Replies whether the fence was set (once durable);
/// `false` means keep the block. Until [`EndGcFence`], an `AddRef` of the hash asks resync
/// for an immediate fetch ([`RcChanged::fenced`]).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, RefcountError>")]
pub struct FenceForDelete {
    pub hash: Hash,
}

/// GC, after storage answered: lift the fence. When the block was `deleted` and its rc
/// entry is still deletable, the entry becomes `Absent` (replies `true`); when a ref came
/// back meanwhile, resync is told to fetch the block at once. Replies whether it cleared
/// the entry.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, RefcountError>")]
pub struct EndGcFence {
    pub hash: Hash,
    pub deleted: bool,
}

/// A bare ref of `hash` is being added ([`crate::present_ref`]): until the matching
/// [`EndRefAdd`], [`FenceForDelete`] of the hash is refused. Counted per hash (several
/// adds may be under way); held in memory only (a restart ends every add under way).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BeginRefAdd {
    pub hash: Hash,
}

/// How many [`BeginRefAdd`] of `hash` are not yet ended. Also a barrier: the mailbox is
/// in order, so its answer comes after every message sent to the actor before it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "u32")]
pub struct CountRefAdds {
    pub hash: Hash,
}

/// The end of one [`BeginRefAdd`] of `hash`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct EndRefAdd {
    pub hash: Hash,
}

/// Recompute every rc entry from the `refs` keyspace.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RebuildReport, RefcountError>")]
pub struct RebuildRc;

/// Up to `limit` hashes having an rc entry, strictly after `after`, ascending.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Hash>, RefcountError>")]
pub struct ListRcHashes {
    pub after: Option<Hash>,
    pub limit: usize,
}

/// Sent to the change recipient when a block's count moves between zero and non-zero.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct RcChanged {
    pub hash: Hash,
    pub old: RcEntry,
    pub new: RcEntry,
    /// A GC delete of the block was under way (fenced) when the count moved: the block
    /// may be gone a moment later, so a new ref must fetch it now, not after the usual
    /// wait for the writer.
    pub fenced: bool,
}
