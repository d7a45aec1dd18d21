//! The sweep: re-derive lost schedules from what is stored and queue each, once soon
//! after the actor starts and then every [`SWEEP_INTERVAL`]:
//!
//! - "referenced here but missing" (an rc entry `Present`, no block file): a fetch now;
//! - "released" (an rc entry `Deletable`): a GC look at its deadline plus the usual
//!   extra delay (at once when that is past), as the drop scheduled it;
//! - "orphan" (a block file with no rc entry, e.g. a crash between a PUT's write and its
//!   ref): a GC look once the file is `gc_delay` old (the look's own rules decide).
//!
//! Why a sweep and not the queue entry in the refcount actor's batch: the resync entry
//! that follows a durable rc change is written by this actor after the change is
//! announced, unsynced (the queue is synced every few seconds), so a crash in that window
//! leaves the rc entry (or the orphan file) without its entry. Putting the entry in the
//! refcount batch would have the refcount actor write this actor's keyspaces (the queue,
//! its index and its in-memory counters), which the one-owner rule forbids. A schedule
//! is lost only when the process dies, and every death ends in a start, so the sweep at
//! start finds every lost schedule; the periodic pass is a backstop for anything else (a
//! fetch abandoned in the errors table is retried by its own backoff, not by the sweep:
//! it is already queued). Queueing a hash that already waits is harmless: the earlier
//! time wins, and every look re-checks its rules.
//!
//! A failed data dir ([`DiskFailed`] from the storage actor) starts a pass at once:
//! that is how its referenced blocks are refetched onto the other dirs, and a data dir
//! replaced by an empty one while the node was stopped is refilled by the pass at start.
//! A copy quarantined by storage ([`BlockQuarantined`]: a read, scrub or the mover found
//! it rotten) is looked at at once.
//!
//! Cost: one pass reads every rc entry (pages of [`PAGE`]) and stats the block file of
//! each referenced one, then lists every block file and reads the rc entry of each
//! (stating the file of each orphan); memory stays one page. It runs beside the workers
//! and only queues (the work itself goes through the usual workers and tranquility).

use std::time::Duration;

use actix::prelude::*;

use super::{ResyncActor, PAGE};
use crate::hash::Hash;
use crate::rc::now_msec;
use crate::rc::RcEntry;
use crate::refcount::{GetRc, ListRcHashes, RefcountActor};
use crate::storage::{
    BlockExists, BlockQuarantined, DiskFailed, ListBlocks, StatBlock, StorageActor,
};

/// Time between two sweeps after the one at start: a backstop, so slow.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Wait after the start before the first sweep: lets the node finish starting (its
/// peers connect on demand, so a fetch may run at once after it).
pub const SWEEP_START_DELAY: Duration = Duration::from_millis(200);

/// What the sweep found a schedule for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Referenced here, no file: fetch now.
    Missing,
    /// Released (`Deletable`) or an orphan: a GC look at this time (ms).
    Collectable(u64),
}

/// Queue the schedules the sweep re-derived.
#[derive(Message)]
#[rtype(result = "()")]
struct EnqueueFound(Vec<(Hash, Found)>);

impl Handler<EnqueueFound> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: EnqueueFound, ctx: &mut Context<Self>) {
        let now = now_msec();
        for (h, found) in msg.0 {
            match found {
                Found::Missing => {
                    tracing::info!(hash = %h.short(), "sweep: referenced here but missing; fetching");
                    self.enqueue(h, now);
                }
                Found::Collectable(at) => {
                    // Only a lost schedule is re-derived: a waiting one (a backoff
                    // after an error included) keeps its time.
                    if self.busy.contains(&h) || self.queue.is_waiting(&h).unwrap_or(true) {
                        continue;
                    }
                    tracing::debug!(hash = %h.short(), "sweep: unreferenced; GC look scheduled");
                    self.enqueue(h, at.max(now));
                }
            }
        }
        self.pump(ctx);
    }
}

/// A copy was quarantined: fetch it again now (a look finds it missing and referenced),
/// rather than at the next sweep.
impl Handler<BlockQuarantined> for ResyncActor {
    type Result = ();

    fn handle(&mut self, m: BlockQuarantined, ctx: &mut Context<Self>) {
        tracing::info!(hash = %m.hash.short(), "a rotten copy was quarantined; resyncing it now");
        self.enqueue(m.hash, now_msec());
        self.pump(ctx);
    }
}

/// A data dir failed: the blocks it held now look missing to the storage actor, so a
/// sweep now queues a fetch for every referenced one (they land on the other dirs).
impl Handler<DiskFailed> for ResyncActor {
    type Result = ();

    fn handle(&mut self, m: DiskFailed, ctx: &mut Context<Self>) {
        tracing::warn!(path = %m.path.display(), reason = %m.reason, "a data dir failed; sweeping for the referenced blocks it held");
        self.sweep(ctx);
    }
}

impl ResyncActor {
    /// Start the sweep at start and every [`SWEEP_INTERVAL`] (called from `started`).
    pub(super) fn schedule_sweeps(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(SWEEP_START_DELAY, |act, ctx| act.sweep(ctx));
        ctx.run_interval(SWEEP_INTERVAL, |act, ctx| act.sweep(ctx));
    }

    /// One pass over the rc keyspace, then over the block files, off the actor's thread
    /// (it only sends messages).
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let storage = self.deps.storage.clone();
        let refcount = self.deps.refcount.clone();
        let after_gc_delay = self.config.after_gc_delay.as_millis() as u64;
        let gc_delay = self.config.gc_delay.as_millis() as u64;
        actix_rt::spawn(async move {
            let Some((seen, missing, released)) =
                sweep_rc(&me, &storage, &refcount, after_gc_delay).await
            else {
                return;
            };
            let Some((files, orphans)) = sweep_files(&me, &storage, &refcount, gc_delay).await
            else {
                return;
            };
            tracing::info!(
                rc_entries = seen,
                missing,
                released,
                block_files = files,
                orphans,
                "sweep done"
            );
        });
    }
}

/// The rc pass: a fetch for each referenced block missing here, a GC look for each
/// released one. `None` when it could not finish (logged).
async fn sweep_rc(
    me: &Addr<ResyncActor>,
    storage: &Addr<StorageActor>,
    refcount: &Addr<RefcountActor>,
    after_gc_delay: u64,
) -> Option<(u64, u64, u64)> {
    let mut after = None;
    let (mut seen, mut missing, mut released) = (0u64, 0u64, 0u64);
    loop {
        let page = match refcount.send(ListRcHashes { after, limit: PAGE }).await {
            Ok(Ok(page)) if !page.is_empty() => page,
            Ok(Ok(_)) => return Some((seen, missing, released)),
            Ok(Err(e)) => {
                tracing::warn!("sweep: listing rc entries failed: {e}");
                return None;
            }
            Err(_) => return None,
        };
        after = page.last().copied();
        seen += page.len() as u64;
        let checks = page.into_iter().map(|hash| async move {
            // Referenced: lost if missing. Released: a look is due only while a copy is
            // here (a released entry without a copy needs no look).
            let released_at = match refcount.send(GetRc { hash }).await {
                Ok(Ok(RcEntry::Present { .. })) => None,
                Ok(Ok(RcEntry::Deletable { at_time })) => Some(at_time),
                _ => return None,
            };
            match (storage.send(BlockExists { hash }).await, released_at) {
                (Ok(Ok(false)), None) => Some((hash, Found::Missing)),
                (Ok(Ok(true)), Some(at)) => {
                    Some((hash, Found::Collectable(at.saturating_add(after_gc_delay))))
                }
                _ => None,
            }
        });
        let found: Vec<(Hash, Found)> = futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if !found.is_empty() {
            let lost = found.iter().filter(|(_, f)| *f == Found::Missing).count() as u64;
            missing += lost;
            released += found.len() as u64 - lost;
            me.send(EnqueueFound(found)).await.ok()?;
        }
    }
}

/// The file pass: a GC look for each block file without an rc entry, once it is
/// `gc_delay` old. `None` when it could not finish (logged).
async fn sweep_files(
    me: &Addr<ResyncActor>,
    storage: &Addr<StorageActor>,
    refcount: &Addr<RefcountActor>,
    gc_delay: u64,
) -> Option<(u64, u64)> {
    let mut after = None;
    let (mut files, mut orphans) = (0u64, 0u64);
    loop {
        let page = match storage.send(ListBlocks { after, limit: PAGE }).await {
            Ok(Ok(page)) if !page.is_empty() => page,
            Ok(Ok(_)) => return Some((files, orphans)),
            Ok(Err(e)) => {
                tracing::warn!("sweep: listing block files failed: {e}");
                return None;
            }
            Err(_) => return None,
        };
        after = page.last().copied();
        files += page.len() as u64;
        let checks = page.into_iter().map(|hash| async move {
            if !matches!(refcount.send(GetRc { hash }).await, Ok(Ok(RcEntry::Absent))) {
                return None;
            }
            match storage.send(StatBlock { hash }).await {
                Ok(Ok(Some(written))) => {
                    Some((hash, Found::Collectable(written.saturating_add(gc_delay))))
                }
                _ => None,
            }
        });
        let found: Vec<(Hash, Found)> = futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if !found.is_empty() {
            orphans += found.len() as u64;
            me.send(EnqueueFound(found)).await.ok()?;
        }
    }
}
