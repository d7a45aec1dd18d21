//! Purging tombstones: a dropped ref's record is removed `tombstone_retention` (the
//! node's `max_offline`) after its drop. Until then it beats, within its incarnation,
//! any live record a replica, a hint or a retried request may still bring; past it, a
//! node that was offline longer must be resynced in full before it rejoins (its stale
//! live records would otherwise come back). A tombstone whose drop time is unknown
//! (written before drop times were kept) is stamped with the time it is first seen here.
//!
//! The walk is incremental: each step scans a bounded number of records from a cursor,
//! so the actor is never busy for long however many refs it holds, and steps follow each
//! other until the whole keyspace has been walked; then the next pass waits.

use std::ops::Bound;
use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::keys::decode_rec;
use super::overlay::{overlay, Merged};
use super::record::RefRec;
use super::{store_err, PurgeTombstones, RefcountActor, RefcountError};
use crate::rc::now_msec;

/// Records scanned in one step of the periodic walk.
const SCAN_STEP: usize = 20_000;
/// Pause between two steps of one pass.
const STEP_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between two passes.
const PASS_INTERVAL_MAX: Duration = Duration::from_secs(3600);

/// What one step found.
struct Step {
    removed: usize,
    /// The last key scanned when the step stopped early (the walk goes on after it).
    next: Option<Vec<u8>>,
}

impl RefcountActor {
    /// Scan at most `scan_max` records after `from` (from the start when `None`), remove
    /// the tombstones past the retention (at most `remove_max`) and stamp the ones of
    /// unknown drop time.
    fn purge_scan(
        &mut self,
        from: Option<&[u8]>,
        now_ms: u64,
        scan_max: usize,
        remove_max: usize,
    ) -> Result<Step, RefcountError> {
        let retention = self.config.tombstone_retention.as_millis() as u64;
        let lower = match from {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Unbounded,
        };
        let pending = self.pending.all_refs();
        let pending = pending
            .range((lower.clone(), Bound::Unbounded))
            .map(|(k, s)| (k.clone(), *s));
        let stored = match &lower {
            Bound::Excluded(k) => self
                .refs
                .range::<&[u8], _>((Bound::Excluded(&k[..]), Bound::Unbounded)),
            _ => self.refs.iter(),
        };
        let mut remove = Vec::new();
        let mut stamp = Vec::new();
        let mut scanned = 0;
        let mut last: Option<Vec<u8>> = None;
        for m in overlay(stored.map(|g| g.into_inner()), pending) {
            let (k, r) = match m.map_err(store_err)? {
                Merged::Stored(k, v) => (k.to_vec(), decode_rec(&k, &v)),
                Merged::Pending(k, r) => (k, r),
            };
            scanned += 1;
            if !r.is_live() {
                if r.dropped_at == 0 {
                    stamp.push((k.clone(), RefRec::dropped(r.incarnation, now_ms)));
                } else if now_ms.saturating_sub(r.dropped_at) >= retention {
                    remove.push(k.clone());
                }
            }
            last = Some(k);
            if scanned >= scan_max || remove.len() >= remove_max {
                break;
            }
        }
        let more = scanned >= scan_max || remove.len() >= remove_max;
        let removed = remove.len();
        if !remove.is_empty() || !stamp.is_empty() {
            let g = self.pending.open_generation();
            for k in remove {
                g.refs.insert(k, None);
            }
            for (k, r) in stamp {
                g.refs.insert(k, Some(r));
            }
        }
        Ok(Step {
            removed,
            next: if more { last } else { None },
        })
    }

    /// Start the periodic walk (from `started`).
    pub(super) fn schedule_purge(&mut self, ctx: &mut Context<Self>) {
        let every = (self.config.tombstone_retention / 8)
            .min(PASS_INTERVAL_MAX)
            .max(Duration::from_secs(1));
        ctx.run_later(every, |act, ctx| act.purge_step(ctx));
    }

    /// One step of the periodic walk; schedules the next.
    fn purge_step(&mut self, ctx: &mut Context<Self>) {
        let from = self.purge_cursor.take();
        match self.purge_scan(from.as_deref(), now_msec(), SCAN_STEP, SCAN_STEP) {
            Ok(step) => {
                if step.removed > 0 {
                    info!(removed = step.removed, "purged tombstones past max_offline");
                }
                self.start_persist(ctx);
                match step.next {
                    Some(k) => {
                        self.purge_cursor = Some(k);
                        ctx.run_later(STEP_PAUSE, |act, ctx| act.purge_step(ctx));
                    }
                    None => self.schedule_purge(ctx),
                }
            }
            Err(e) => {
                warn!(error = %e, "tombstone purge failed; retried at the next pass");
                self.schedule_purge(ctx);
            }
        }
    }
}

impl Handler<PurgeTombstones> for RefcountActor {
    type Result = ResponseFuture<Result<usize, RefcountError>>;

    fn handle(&mut self, m: PurgeTombstones, ctx: &mut Context<Self>) -> Self::Result {
        let res = self
            .purge_scan(None, m.now_ms, usize::MAX, m.limit.max(1))
            .map(|s| s.removed);
        self.reply_when_durable(res, ctx)
    }
}
