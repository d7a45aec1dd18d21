//! The sweep: re-derive "referenced here but missing" from the `rc` keyspace and queue a
//! fetch for each such block, once soon after the actor starts and then every
//! [`SWEEP_INTERVAL`].
//!
//! Why a sweep and not the queue entry in the refcount actor's batch: the resync entry
//! that follows a durable rc 0→1 is written by this actor after the change is announced,
//! unsynced (the queue is synced every few seconds), so a crash in that window leaves
//! rc = 1, no block and no entry. Putting the entry in the refcount batch would have the
//! refcount actor write this actor's keyspaces (the queue, its index and its in-memory
//! counters), which the one-owner rule forbids. A schedule is lost only when the process
//! dies, and every death ends in a start, so the sweep at start finds every lost fetch;
//! the periodic pass is a backstop for anything else (a fetch abandoned in the errors
//! table is retried by its own backoff, not by the sweep: it is already queued).
//!
//! A failed data dir ([`DiskFailed`] from the storage actor) starts a pass at once:
//! that is how its referenced blocks are refetched onto the other dirs, and a data dir
//! replaced by an empty one while the node was stopped is refilled by the pass at start.
//!
//! Cost: one pass reads every rc entry (pages of [`PAGE`]) and stats the block file of
//! each referenced one; memory stays one page. It runs beside the workers and only
//! queues (the fetches themselves go through the usual workers and tranquility).

use std::time::Duration;

use actix::prelude::*;

use super::{ResyncActor, PAGE};
use crate::hash::Hash;
use crate::rc::now_msec;
use crate::refcount::{GetRc, ListRcHashes};
use crate::storage::{BlockExists, DiskFailed};

/// Time between two sweeps after the one at start: a backstop, so slow.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Wait after the start before the first sweep: lets the node finish starting (its
/// peers connect on demand, so a fetch may run at once after it).
pub const SWEEP_START_DELAY: Duration = Duration::from_millis(200);

/// Queue a fetch now for blocks the sweep found referenced and missing.
#[derive(Message)]
#[rtype(result = "()")]
struct EnqueueMissing(Vec<Hash>);

impl Handler<EnqueueMissing> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: EnqueueMissing, ctx: &mut Context<Self>) {
        let now = now_msec();
        for h in msg.0 {
            tracing::info!(hash = %h.short(), "sweep: referenced here but missing; fetching");
            self.enqueue(h, now);
        }
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

    /// One pass over the rc keyspace, off the actor's thread (it only sends messages).
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let storage = self.deps.storage.clone();
        let refcount = self.deps.refcount.clone();
        actix_rt::spawn(async move {
            let mut after = None;
            let (mut seen, mut missing) = (0u64, 0u64);
            loop {
                let page = match refcount.send(ListRcHashes { after, limit: PAGE }).await {
                    Ok(Ok(page)) if !page.is_empty() => page,
                    Ok(Ok(_)) => break,
                    other => {
                        tracing::warn!("sweep: listing rc entries failed: {other:?}");
                        return;
                    }
                };
                after = page.last().copied();
                seen += page.len() as u64;
                let checks = page.into_iter().map(|hash| {
                    let (storage, refcount) = (storage.clone(), refcount.clone());
                    async move {
                        let needed = matches!(
                            refcount.send(GetRc { hash }).await,
                            Ok(Ok(rc)) if rc.is_needed()
                        );
                        if !needed {
                            return None;
                        }
                        match storage.send(BlockExists { hash }).await {
                            Ok(Ok(false)) => Some(hash),
                            _ => None,
                        }
                    }
                });
                let lost: Vec<Hash> = futures::future::join_all(checks)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                if !lost.is_empty() {
                    missing += lost.len() as u64;
                    if me.send(EnqueueMissing(lost)).await.is_err() {
                        return;
                    }
                }
            }
            tracing::info!(rc_entries = seen, missing, "sweep done");
        });
    }
}
