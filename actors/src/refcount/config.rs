//! Settings of the refcount actor: [`RefcountConfig`] and its defaults, [`SyncMode`].

use std::time::Duration;

use crate::gc::DEFAULT_GC_DELAY;
use crate::upload_ref::UPLOAD_REF_TTL;

/// When a mutation's journal sync happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Mutations arriving while a sync runs share the next one (group commit).
    #[default]
    Batched,
    /// Every mutation gets its own commit and sync (slow; for comparison).
    PerOp,
}

/// Settings of a [`RefcountActor`](super::RefcountActor).
#[derive(Debug, Clone)]
pub struct RefcountConfig {
    /// Grace period between the last ref dropped and the block becoming deletable
    /// ([`DEFAULT_GC_DELAY`] by default).
    pub gc_delay: Duration,
    /// Most mutations grouped into one journal sync.
    pub max_batch_ops: usize,
    /// Group commit or one sync per mutation.
    pub sync: SyncMode,
    /// Lifetime of an upload ref after its upload started ([`UPLOAD_REF_TTL`]).
    pub upload_ref_ttl: Duration,
    /// Time between two passes that drop expired upload refs (`expire.rs`).
    pub expire_interval: Duration,
    /// How long a tombstone (a dropped ref) is kept after its drop: the longest a node
    /// may stay offline and still rejoin by anti-entropy alone (the node's `max_offline`,
    /// [`DEFAULT_TOMBSTONE_RETENTION`] by default).
    pub tombstone_retention: Duration,
}

/// Default [`RefcountConfig::tombstone_retention`]: 30 days.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for RefcountConfig {
    fn default() -> Self {
        RefcountConfig {
            gc_delay: DEFAULT_GC_DELAY,
            max_batch_ops: 1024,
            sync: SyncMode::Batched,
            upload_ref_ttl: UPLOAD_REF_TTL,
            expire_interval: super::expire::EXPIRE_INTERVAL,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
        }
    }
}
