//! The cap on hints per member: past [`AntiEntropyConfig::max_hints_per_member`] hints
//! for one member, new missed writes to it are not stored one by one any more; the member
//! is marked for a full sync instead (persisted in the keyspace [`OVERFLOW_KEYSPACE`], so
//! a restart keeps the mark), and status lists it (`full_sync_needed`).
//!
//! A full sync is anti-entropy of every partition this node shares with the member,
//! queued when it is seen up (even with rounds off) and at every round; each partition
//! that syncs cleanly after the mark is ticked off, and when none is left the mark goes.
//! A write that misses a marked member puts its partition back on the list, so the mark
//! is cleared only once everything missed has been carried over: a partition is ticked
//! off only by a sync that started after its last (re-)mark, since one that started
//! before may have read the partition before the missed write reached it. The hints stored before
//! the cap are replayed as usual (they push block copies, which a ref sync does not).
//!
//! key = member node id (32 bytes); value = when it was marked (ms since the epoch, u64
//! big-endian).

use std::collections::{BTreeMap, BTreeSet};

use actix::prelude::*;

use super::{AntiEntropyActor, AntiEntropyConfig};
use crate::hash::{Hash, NodeId};
use crate::rc::now_msec;

/// Name of the keyspace of the members marked for a full sync.
pub const OVERFLOW_KEYSPACE: &str = "hints_overflow";

/// Default of [`AntiEntropyConfig::max_hints_per_member`]: past this many missed writes,
/// syncing the shared partitions is cheaper than replaying each (and the hints keyspace
/// stays within some tens of MB per member).
pub const DEFAULT_MAX_HINTS_PER_MEMBER: u64 = 100_000;

impl AntiEntropyActor {
    /// Whether `node` takes no more hints: it is marked, or reaches the cap now (then it
    /// is marked). `hash` is the write that missed it.
    pub(super) fn hint_refused(
        &mut self,
        node: NodeId,
        hash: Hash,
        ctx: &mut Context<Self>,
    ) -> bool {
        if let Some(pending) = self.full_sync.get_mut(&node) {
            // Missed after the mark: its partition must be synced (again) before the
            // mark may go.
            let seq = self.full_sync_seq + 1;
            if let Some(p) = pending {
                p.mark(hash.as_bytes()[0], seq);
                self.full_sync_seq = seq;
            }
            return true;
        }
        let count = self.hint_counts.get(&node).copied().unwrap_or(0);
        if count < self.config.max_hints_per_member {
            return false;
        }
        if let Err(e) = self.overflow.insert(node.0, now_msec().to_be_bytes()) {
            self.hints_write_failed("marking a member for a full sync", e);
        }
        tracing::warn!(node = %node.short(), hints = count, cap = self.config.max_hints_per_member,
            "too many hints for a member: it is marked for a full anti-entropy sync instead");
        self.full_sync.insert(node, None);
        if self.peers_up.get(&node).copied().unwrap_or(false) {
            self.start_full_sync(node, ctx);
        }
        true
    }

    /// Queue every partition shared with the marked `node` (it is up).
    pub(super) fn start_full_sync(&mut self, node: NodeId, ctx: &mut Context<Self>) {
        let me = self.config.self_id;
        let shared: BTreeSet<u8> = (0..=255u8)
            .filter(|p| {
                let h = self.holders(*p);
                h.contains(&node) && h.contains(&me)
            })
            .collect();
        tracing::info!(node = %node.short(), partitions = shared.len(), "full anti-entropy sync with a member whose hints overflowed");
        self.queue.extend(shared.iter().copied());
        let seq = self.next_full_sync_seq();
        let mut pending = PendingPartitions::default();
        for p in shared {
            pending.mark(p, seq);
        }
        self.full_sync.insert(node, Some(pending));
        self.pump(ctx);
    }

    /// The next number of [`Self::full_sync_seq`] (marks and sync starts, in order).
    pub(super) fn next_full_sync_seq(&mut self) -> u64 {
        self.full_sync_seq += 1;
        self.full_sync_seq
    }

    /// Partition `p` synced cleanly by a sync that started at `started` (a number of
    /// [`Self::next_full_sync_seq`]): tick it off every full sync that marked it before
    /// then; clear the marks done.
    pub(super) fn full_sync_progress(&mut self, p: u8, started: u64) {
        let mut done = Vec::new();
        for (node, pending) in self.full_sync.iter_mut() {
            if let Some(set) = pending {
                set.synced(p, started);
                if set.is_empty() {
                    done.push(*node);
                }
            }
        }
        for node in done {
            self.full_sync.remove(&node);
            if let Err(e) = self.overflow.remove(node.0) {
                self.hints_write_failed("clearing a member's full-sync mark", e);
            }
            tracing::info!(node = %node.short(), "full anti-entropy sync done: hints are kept for it again");
        }
    }
}

/// The partitions a marked member still needs synced, each with the number (in the
/// order of marks and sync starts) of its last (re-)mark.
#[derive(Debug, Default)]
pub(super) struct PendingPartitions(BTreeMap<u8, u64>);

impl PendingPartitions {
    /// Partition `p` (again) needs a sync, marked at `seq`.
    pub fn mark(&mut self, p: u8, seq: u64) {
        self.0.insert(p, seq);
    }

    /// Partition `p` synced cleanly by a sync started at `started`: ticked off only if
    /// that sync started after its last mark (else the missed write may not be in it).
    pub fn synced(&mut self, p: u8, started: u64) {
        if self.0.get(&p).is_some_and(|marked| *marked < started) {
            self.0.remove(&p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AntiEntropyConfig {
    /// Hints kept per member before it is marked for a full sync instead.
    pub fn with_max_hints_per_member(mut self, cap: u64) -> Self {
        self.max_hints_per_member = cap;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::PendingPartitions;

    /// A write missed while partition 5's sync ran re-marks it; that sync (started before
    /// the re-mark) does not tick it off, the next one does.
    #[test]
    fn a_sync_started_before_a_re_mark_does_not_tick_the_partition_off() {
        let mut p = PendingPartitions::default();
        p.mark(5, 1);
        let started = 2;
        p.mark(5, 3);
        p.synced(5, started);
        assert!(
            !p.is_empty(),
            "ticked off by a sync older than its last mark"
        );
        p.synced(5, 4);
        assert!(p.is_empty());
    }
}
