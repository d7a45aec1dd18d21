//! Lane scheduling: operations on one hash run one after another on the blocking pool
//! (a queue per hash with work in progress); operations on different hashes run
//! concurrently. When a job ends, its counters are applied on the actor's thread before
//! its reply is sent and the lane's next job starts.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug_span, error};

use super::disks::{Disks, JobDelta};
use super::gc_looks::WriteWatch;
use super::{BlockQuarantined, StorageActor, StorageError};
use crate::hash::Hash;

/// A queued operation on one hash: run on the blocking pool with what the actor knew of
/// the hash when the job started, it returns the counters it changed and the reply to
/// send once they are applied.
pub(super) type Job = Box<dyn FnOnce(LaneFacts) -> JobDone + Send>;

/// What the actor knows of a hash when one of its jobs starts (the jobs before it on the
/// lane have ended and been applied).
#[derive(Debug, Clone, Copy)]
pub(super) struct LaneFacts {
    /// The hash's writes as watched for an open GC look (nothing without one).
    pub(super) writes: WriteWatch,
}

/// The end of a [`Job`], back on the actor's thread.
pub(super) struct JobDone {
    delta: JobDelta,
    reply: Box<dyn FnOnce() + Send>,
}

impl StorageActor {
    /// Queue `op` on the lane of `hash` and return a future of its result.
    pub(super) fn submit<T, F>(
        &mut self,
        hash: Hash,
        ctx: &mut Context<Self>,
        op: F,
    ) -> ResponseFuture<Result<T, StorageError>>
    where
        T: Send + 'static,
        F: FnOnce(&Disks, &mut JobDelta, LaneFacts) -> Result<T, StorageError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let disks = self.disks.clone();
        let job: Job = Box::new(move |facts| {
            let _span = debug_span!("storage", hash = %hash.short()).entered();
            let mut delta = JobDelta::default();
            let res = op(&disks, &mut delta, facts);
            JobDone {
                delta,
                reply: Box::new(move || {
                    // The asker may have gone away; nothing to do then.
                    let _ = tx.send(res);
                }),
            }
        });
        match self.lanes.entry(hash) {
            Entry::Occupied(mut lane) => lane.get_mut().push_back(job),
            Entry::Vacant(lane) => {
                lane.insert(VecDeque::new());
                self.start(hash, job, ctx);
            }
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(StorageError::Dropped { hash }))
        })
    }

    /// Run a job on the blocking pool; when it ends, apply its counters, reply, and start
    /// the next job of the same lane (or close the lane).
    pub(super) fn start(&mut self, hash: Hash, job: Job, ctx: &mut Context<Self>) {
        let facts = LaneFacts {
            writes: self.gc_looks.watch(&hash),
        };
        let fut = actix_rt::task::spawn_blocking(move || job(facts));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(done) => {
                    if done.delta.wrote() {
                        // Recorded before the reply and before the lane's next job
                        // starts: a delete queued behind this write sees it.
                        act.gc_looks.wrote(hash);
                    }
                    act.apply(hash, done.delta, ctx);
                    (done.reply)();
                }
                // The reply sender died with the task: the asker gets `Dropped`.
                Err(e) => error!(%hash, error = %e, "storage task failed"),
            }
            let next = act.lanes.get_mut(&hash).and_then(|q| q.pop_front());
            match next {
                Some(job) => act.start(hash, job, ctx),
                None => {
                    act.lanes.remove(&hash);
                }
            }
        }));
    }

    /// Apply the counters an operation on `hash` changed. Whether its change of the
    /// block and byte counts is applied is the census's call while the start-up count
    /// runs (every operation is reported, reads included: a read may quarantine).
    pub(super) fn apply(&mut self, hash: Hash, d: JobDelta, ctx: &mut Context<Self>) {
        let counted = match d.census_probe {
            Some(tallies) => {
                if self.census.probed(&hash) {
                    for (i, t) in tallies {
                        self.health[i].count(t.blocks as i64, t.bytes as i64);
                    }
                }
                self.census_check_done(ctx);
                false
            }
            None => self.census.on_change(&hash),
        };
        if d.per_disk.iter().any(|(_, sd)| sd.corruptions > 0) {
            // A quarantined copy (the mover's check of its source included) is fetched
            // again at once rather than at the next sweep.
            if let Some(l) = &self.quarantine_listener {
                l.do_send(BlockQuarantined { hash });
            }
        }
        for (i, sd) in d.per_disk {
            if counted {
                self.health[i].count(sd.blocks, sd.bytes);
            }
            let s = &mut self.stats;
            s.bytes_written += sd.bytes_written;
            s.bytes_read += sd.bytes_read;
            s.corruptions_found += sd.corruptions;
        }
        if let Some((i, n)) = d.unreserve {
            self.health[i].reserved = self.health[i].reserved.saturating_sub(n);
        }
        if let Some(n) = d.moved {
            self.mover.moved += 1;
            self.mover.bytes_moved += n;
        }
        for (i, error) in d.io_errors {
            self.note_io_error(i, error, ctx);
        }
    }
}
