//! The worker loop of the resync actor: [`ResyncActor::pump`] starts workers on due
//! queue items, each resyncs one block (`work.rs`) and then rests `tranquility × time
//! taken` before its slot is free again; the pace in force comes from
//! [`decision::pace`] (full speed while clients are idle). Blocks that failed on a full
//! disk wait in `space_waiters`, probed one at a time every [`SPACE_PROBE_INTERVAL`]
//! and all released once one succeeds. No timer runs while the queue is empty.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::deps::ResyncBlockError;
use super::queue::Item;
use super::work::{self, Outcome};
use super::{decision, ResyncActor, MAX_WORKERS, SPACE_PROBE_INTERVAL};
use crate::rc::now_msec;
use crate::storage::StorageError;

/// A worker's (or the scrub's) rest after a block: when it began, how long the block
/// took (the rest is `tranquility × took`), and the timer that ends it.
pub(super) struct Rest {
    pub(super) since: Instant,
    pub(super) took: Duration,
    pub(super) timer: SpawnHandle,
}

impl Rest {
    /// What is left of this rest under `tranquility` (zero: it is over).
    pub(super) fn left(&self, tranquility: u32) -> Duration {
        self.took
            .saturating_mul(tranquility)
            .saturating_sub(self.since.elapsed())
    }
}

impl ResyncActor {
    /// Start workers on due items while there are free workers; then sleep until the
    /// earliest item not yet due (a new schedule or a freed worker pumps again earlier).
    /// Nothing polls: with an empty queue no timer runs at all.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.wake.take() {
            ctx.cancel_future(h);
        }
        // A dead store takes no writes: a worker could neither take nor finish an item
        // and would run the same one again at once (seen at 550 errors/s). The node has
        // been told and exits; until then, nothing runs.
        if self.store_failure.failed() {
            return;
        }
        let (workers, _) = self.pace();
        let free = workers.saturating_sub(self.active);
        let busy = &self.busy;
        let (items, next_due) = self.queue.due(now_msec(), free, |h| busy.contains(h));
        let started = items.len();
        for item in items {
            self.start_worker(item, ctx);
        }
        // With every worker busy, the next pump comes from a worker finishing.
        if started < free {
            if let Some(due) = next_due {
                let wait = Duration::from_millis(due.saturating_sub(now_msec()).max(1));
                self.wake = Some(ctx.run_later(wait, |act, ctx| {
                    act.wake = None;
                    act.pump(ctx)
                }));
            }
        }
    }

    pub(super) fn start_worker(&mut self, item: Item, ctx: &mut Context<Self>) {
        let hash = item.hash;
        if let Err(e) = self.queue.take(item) {
            self.store_write_failed("taking a resync queue item", Some(hash), e);
        }
        self.active += 1;
        self.busy.insert(hash);
        let start = Instant::now();
        ctx.spawn(
            work::resync_block(self.deps.clone(), hash)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let took = start.elapsed();
                    act.busy.remove(&hash);
                    act.dirty = true;
                    if act.space_probe == Some(hash) {
                        act.space_probe = None;
                    }
                    let disk_full = matches!(
                        &res,
                        Err(ResyncBlockError::Storage(StorageError::DiskFull { .. }))
                    );
                    if disk_full {
                        act.space_waiters.insert(hash);
                        act.arm_space_probe(ctx);
                    } else if act.space_waiters.remove(&hash) && res.is_ok() {
                        tracing::info!(
                            waiting = act.space_waiters.len(),
                            "disk space available again: retrying the blocks that waited for it"
                        );
                        act.release_space_waiters();
                    }
                    match res {
                        Ok(Outcome::Done) => {
                            act.ops_ok += 1;
                            if let Err(e) = act.queue.clear_error(&hash) {
                                act.store_write_failed("clearing a resync error", Some(hash), e);
                            }
                        }
                        Ok(Outcome::Later(at)) => {
                            act.ops_ok += 1;
                            let after = act.config.after_gc_delay.as_millis() as u64;
                            act.enqueue(hash, at.saturating_add(after));
                        }
                        Err(e) => {
                            act.ops_error += 1;
                            act.record_error(hash, e.to_string());
                        }
                    }
                    // Removed only now, after any retry is queued: a crash in between
                    // leaves the item to be run again, never lost.
                    if let Err(e) = act.queue.finish(item) {
                        act.store_write_failed("removing a resync queue item", Some(hash), e);
                    }
                    if act.repair.running || act.repair.done < act.repair.queued {
                        act.repair.done += 1;
                    }
                    act.rest(took, ctx);
                }),
        );
    }

    /// A worker finished a block that took `took`: it keeps its slot for
    /// `tranquility × took`, then frees it. A new tranquility re-times the rest.
    pub(super) fn rest(&mut self, took: Duration, ctx: &mut Context<Self>) {
        let pause = took.saturating_mul(self.pace().1);
        if pause.is_zero() {
            self.active -= 1;
            self.pump(ctx);
            return;
        }
        let id = self.next_rest;
        self.next_rest += 1;
        let timer = ctx.run_later(pause, move |act, ctx| act.end_rest(id, ctx));
        self.resting.insert(
            id,
            Rest {
                since: Instant::now(),
                took,
                timer,
            },
        );
    }

    pub(super) fn end_rest(&mut self, id: u64, ctx: &mut Context<Self>) {
        if self.resting.remove(&id).is_some() {
            self.active -= 1;
            self.pump(ctx);
        }
    }

    /// The tranquility changed: every resting worker rests `new × took` in all, so a
    /// rest already that long ends now and a long one is shortened.
    pub(super) fn retime_rests(&mut self, ctx: &mut Context<Self>) {
        let tranquility = self.pace().1;
        let ids: Vec<u64> = self.resting.keys().copied().collect();
        for id in ids {
            let Some(rest) = self.resting.get_mut(&id) else {
                continue;
            };
            ctx.cancel_future(rest.timer);
            let left = rest.left(tranquility);
            rest.timer = ctx.run_later(left, move |act, ctx| act.end_rest(id, ctx));
        }
    }

    /// Workers and tranquility in effect now ([`decision::pace`]).
    pub(super) fn pace(&self) -> (usize, u32) {
        decision::pace(
            self.workers,
            self.tranquility,
            self.client_idle,
            MAX_WORKERS,
        )
    }

    /// Make sure a space probe is due while blocks wait for disk space.
    pub(super) fn arm_space_probe(&mut self, ctx: &mut Context<Self>) {
        if self.space_timer.is_some() || self.space_waiters.is_empty() {
            return;
        }
        self.space_timer = Some(ctx.run_later(SPACE_PROBE_INTERVAL, |act, ctx| {
            act.space_timer = None;
            if act.space_probe.is_none() {
                // The first waiter not being resynced right now.
                let probe = act
                    .space_waiters
                    .iter()
                    .find(|h| !act.busy.contains(*h))
                    .copied();
                if let Some(h) = probe {
                    act.space_probe = Some(h);
                    act.retry_now(h, now_msec());
                    act.pump(ctx);
                }
            }
            act.arm_space_probe(ctx);
        }));
    }

    /// Move every block waiting for space to the front of the queue.
    pub(super) fn release_space_waiters(&mut self) {
        let now = now_msec();
        for h in std::mem::take(&mut self.space_waiters) {
            self.retry_now(h, now);
        }
    }
}
