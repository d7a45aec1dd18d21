//! RefcountActor: owns the `refs` and `rc` keyspaces of the metadata store.
//!
//! INTERFACE SKELETON — the implementation replaces every `unimplemented!` below.

use std::time::Duration;

use actix::prelude::*;

use crate::hash::Hash;
use crate::rc::{RcEntry, RcParseError};
use crate::ref_id::RefId;

/// Settings of a [`RefcountActor`].
#[derive(Debug, Clone)]
pub struct RefcountConfig {
    /// Grace period between the last ref dropped and the block becoming deletable.
    pub gc_delay: Duration,
    /// Most mutations grouped into one journal sync.
    pub max_batch_ops: usize,
}

impl Default for RefcountConfig {
    fn default() -> Self {
        RefcountConfig {
            gc_delay: Duration::from_secs(600),
            max_batch_ops: 1024,
        }
    }
}

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
        "ref {ref_id} of block {hash} was dropped and cannot be added again; use a new ref id"
    )]
    RefDropped { hash: Hash, ref_id: RefId },
    #[error("metadata store error: {0}")]
    Store(String),
}

/// State of one named reference. Dropped wins over live when replicas merge.
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

/// Add the named reference (idempotent). Replies once the change is in the journal.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct AddRef {
    pub hash: Hash,
    pub ref_id: RefId,
}

/// Drop the named reference (idempotent).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct DropRef {
    pub hash: Hash,
    pub ref_id: RefId,
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

/// What [`RebuildRc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// rc entries examined.
    pub entries: u64,
    /// rc entries rewritten because they were wrong or corrupt.
    pub fixed: u64,
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
}

/// The actor.
pub struct RefcountActor {
    #[allow(dead_code)]
    config: RefcountConfig,
}

impl RefcountActor {
    /// Open the `refs` and `rc` keyspaces in `db`.
    pub fn new(
        _db: fjall::Database,
        config: RefcountConfig,
        _on_change: Option<Recipient<RcChanged>>,
    ) -> Result<Self, RefcountError> {
        Ok(RefcountActor { config })
    }
}

impl Actor for RefcountActor {
    type Context = Context<Self>;
}

macro_rules! skeleton_handler {
    ($m:ty, $r:ty) => {
        impl Handler<$m> for RefcountActor {
            type Result = ResponseFuture<$r>;
            fn handle(&mut self, _m: $m, _ctx: &mut Context<Self>) -> Self::Result {
                unimplemented!("refcount skeleton")
            }
        }
    };
}
skeleton_handler!(AddRef, Result<RefUpdate, RefcountError>);
skeleton_handler!(DropRef, Result<RefUpdate, RefcountError>);
skeleton_handler!(GetRc, Result<RcEntry, RefcountError>);
skeleton_handler!(ListRefs, Result<Vec<(RefId, RefState)>, RefcountError>);
skeleton_handler!(ClearIfDeletable, Result<bool, RefcountError>);
skeleton_handler!(RebuildRc, Result<RebuildReport, RefcountError>);
skeleton_handler!(ListRcHashes, Result<Vec<Hash>, RefcountError>);
