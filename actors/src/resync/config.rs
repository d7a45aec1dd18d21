//! Settings of the resync actor: [`ResyncConfig`] with its defaults and delays per
//! [`ScheduleReason`], the limits ([`MAX_WORKERS`], [`MAX_TRANQUILITY`]) and default
//! tranquilities. (The checks of operator-set values against the limits are with the
//! error they return, in `messages.rs`.)

use std::time::Duration;

use serde::Serialize;

use crate::gc::DEFAULT_GC_DELAY;
use crate::hash::NodeId;
use crate::peer::{BLOCK_RW_TIMEOUT, PEER_RPC_TIMEOUT};

/// Default first retry delay of a failed resync (doubles per failure): long enough that a
/// peer that is down is not hammered, short enough that a transient error heals in minutes.
pub const DEFAULT_RESYNC_BACKOFF: Duration = Duration::from_secs(60);
/// Default time between two full scrubs: a month, like Garage's, so scrub's reads stay a
/// small share of the disk's time.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(30 * 86400);

/// Most resync workers (each runs one block at a time).
pub const MAX_WORKERS: usize = 8;
/// Extra wait after a grace period before resync looks at a dropped block, as Garage does:
/// lets the last ref's `Deletable` deadline pass on every holder.
pub const AFTER_GC_DELAY: Duration = Duration::from_secs(10);
/// While blocks wait for disk space, one of them is retried this often: a cheap probe
/// (one fetch) that notices freed space within seconds instead of after the backoff.
pub const SPACE_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Default resync tranquility: after each block, sleep twice the time it took, so
/// background work takes at most a third of a worker's time (Garage's default).
pub const DEFAULT_TRANQUILITY: u32 = 2;
/// Default scrub tranquility: reading every block is long and rarely urgent.
pub const DEFAULT_SCRUB_TRANQUILITY: u32 = 4;
/// Largest resync or scrub tranquility: a worker then rests 100× the time its block took
/// (1% duty), about 50 min after a block that hit the 30 s timeout. Larger values only
/// park workers for days (4,000,000,000 was once set by mistake).
pub const MAX_TRANQUILITY: u32 = 100;

/// Why a block was scheduled (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ScheduleReason {
    /// Its rc went from 0 to 1.
    NewRef,
    /// Its rc dropped to 0.
    Dropped,
    /// A read found it missing or rotten.
    ReadFailed,
    /// A `PutBlock` arrived for a block with no refs here.
    OrphanPut,
    /// Repair.
    Repair,
    /// Anti-entropy merged a live ref for it from another replica (looked at now: the
    /// block is referenced here and may not be stored yet).
    MergedRef,
    /// Scrub found it rotten.
    Scrub,
    /// An operator asked.
    Manual,
    /// A previous attempt failed.
    Retry,
}

/// Settings of a [`ResyncActor`](super::ResyncActor).
#[derive(Debug, Clone)]
pub struct ResyncConfig {
    /// This node.
    pub self_id: NodeId,
    /// Timeout of a block read/write to a peer; a new ref is looked at after twice this
    /// (to let the writer deliver the block first).
    pub block_timeout: Duration,
    /// Timeout of a `NeedBlockQuery`.
    pub need_block_timeout: Duration,
    /// The refcount grace period (a dropped block is looked at after it + 10 s).
    pub gc_delay: Duration,
    /// First retry delay after an error (then doubling, capped at 64×). Default 60 s.
    pub backoff_base: Duration,
    /// Automatic scrub interval (randomised ±5 days when at least 10 days). Default 30 days.
    pub scrub_interval: Duration,
    /// Extra wait after `gc_delay` before a dropped block is looked at ([`AFTER_GC_DELAY`]).
    pub after_gc_delay: Duration,
}

impl ResyncConfig {
    /// Defaults for `self_id`: timeouts 30 s / 5 s, gc_delay 10 min, backoff 60 s,
    /// scrub every 30 days.
    pub fn new(self_id: NodeId) -> Self {
        ResyncConfig {
            self_id,
            block_timeout: BLOCK_RW_TIMEOUT,
            need_block_timeout: PEER_RPC_TIMEOUT,
            gc_delay: DEFAULT_GC_DELAY,
            backoff_base: DEFAULT_RESYNC_BACKOFF,
            scrub_interval: DEFAULT_SCRUB_INTERVAL,
            after_gc_delay: AFTER_GC_DELAY,
        }
    }

    /// How long each scheduling source waits (docs/ARCHITECTURE.md, "The GC path", and docs/operations.md):
    /// - a new ref (rc 0→1): 2 × block timeout, to let the writer deliver the block;
    /// - a dropped block (rc→0): gc_delay + after_gc_delay, its grace period and a margin;
    /// - a `PutBlock` for a block with no refs: gc_delay, so the ref that usually follows
    ///   the block arrives first and the orphan is collected only if none does;
    /// - a failed read, repair, scrub, an operator: now. (Retries use the backoff.)
    pub fn delay_for(&self, reason: ScheduleReason) -> Duration {
        match reason {
            ScheduleReason::NewRef => self.block_timeout.saturating_mul(2),
            ScheduleReason::Dropped => self.gc_delay.saturating_add(self.after_gc_delay),
            ScheduleReason::OrphanPut => self.gc_delay,
            ScheduleReason::ReadFailed
            | ScheduleReason::Repair
            | ScheduleReason::MergedRef
            | ScheduleReason::Scrub
            | ScheduleReason::Manual
            | ScheduleReason::Retry => Duration::ZERO,
        }
    }
}
