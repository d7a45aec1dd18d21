//! The mover: moves blocks whose data dir changed to the dir they now belong in.
//!
//! A pass walks every usable dir, one page of hashes at a time, and asks placement
//! (`dirs.rs`) where each block belongs given the dirs' capacities, read-only flags and
//! room. A block already where it belongs costs nothing but its name in a listing; one
//! that is not is moved on its hash's lane (`Disks::relocate`: crash-safe copy, read
//! back and verified, old file removed last), so reads and writes of that block wait for
//! the move and never see it half done, and every other block is served meanwhile.
//! One move at a time, each followed by a rest of [`REBALANCE_TRANQUILITY`] × its
//! duration, like resync's tranquility: background work takes about a third of one
//! disk's time at most.
//!
//! A move holds the block in memory: with a budget (`with_move_budget`), its bytes are
//! charged before they are read. A move the pool cannot pay for now waits for that
//! much of it, holding nothing and at most [`MOVE_BUDGET_WAIT`] at a time, then tries
//! the same block again.
//!
//! A pass runs once the start-up count is done (its room checks need the counts):
//! capacities, dirs and read-only flags change only with the config, so a restart is
//! when blocks may have to move. A block whose target has no room stays where it is.

use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use super::charged::Payer;
use super::dirs;
use super::{ReadCharge, RebalanceStatus, StorageActor, StorageError};
use crate::budget::{Charge, Pool};
use crate::hash::Hash;

/// Rest after each move, as a multiple of the time it took.
pub const REBALANCE_TRANQUILITY: u32 = 2;
/// Longest wait for the RAM budget before a move is tried again.
pub const MOVE_BUDGET_WAIT: Duration = Duration::from_secs(10);
/// Hashes listed at once from one dir.
const PAGE: usize = 256;

/// The mover's walk and its counters.
#[derive(Debug, Default)]
pub(super) struct Mover {
    running: bool,
    passes: u64,
    scanned: u64,
    pub moved: u64,
    pub bytes_moved: u64,
    errors: u64,
    /// The dir being walked, the last hash taken from it, and the rest of its page
    /// (reversed: the next hash is popped from the end).
    disk: usize,
    after: Option<Hash>,
    page: Vec<Hash>,
    /// Another pass was asked for while one ran.
    rerun: bool,
    /// The pool a move's bytes are charged to (`None`: uncharged).
    budget: Option<Pool>,
    /// A charge waited for after a move found the pool short, and the hash it is for.
    /// It is spent only on that hash's next move; whenever the walk goes on without
    /// moving that hash (it no longer moves, its dir failed, the pass ends) it is
    /// dropped at once, so a pool shared with client work is never pinned by the mover.
    held: Option<(Hash, Charge)>,
}

impl Mover {
    /// The mover's part of the storage status.
    pub fn status(&self) -> RebalanceStatus {
        RebalanceStatus {
            running: self.running,
            passes: self.passes,
            scanned: self.scanned,
            moved: self.moved,
            bytes_moved: self.bytes_moved,
            errors: self.errors,
        }
    }
}

impl StorageActor {
    /// Charge the mover's block bytes to `pool` before they are read.
    pub fn with_move_budget(mut self, pool: Pool) -> Self {
        self.mover.budget = Some(pool);
        self
    }

    /// Start a pass of the mover (or another one after the current pass).
    pub(super) fn start_rebalance(&mut self, ctx: &mut Context<Self>) {
        if self.mover.running {
            self.mover.rerun = true;
            return;
        }
        let m = &mut self.mover;
        m.running = true;
        m.scanned = 0;
        m.disk = 0;
        m.after = None;
        m.page.clear();
        self.mover_step(ctx);
    }

    /// Walk on until a block has to move (then move it and rest), a page has to be
    /// listed, or the pass is over.
    fn mover_step(&mut self, ctx: &mut Context<Self>) {
        loop {
            let from = self.mover.disk;
            if from >= self.dirs.len() {
                return self.finish_pass(ctx);
            }
            if !self.disks.usable[from] {
                self.next_dir();
                continue;
            }
            let Some(hash) = self.mover.page.pop() else {
                return self.list_page(from, ctx);
            };
            // The held charge serves this hash only; any other hash (or this one not
            // moving after all, below) drops it here.
            let held = match self.mover.held.take() {
                Some((h, c)) if h == hash => Some(c),
                _ => None,
            };
            self.mover.scanned += 1;
            self.mover.after = Some(hash);
            // Its own dir always has room for it; others are checked against their quota.
            let target = dirs::target(&hash, &self.disks.placed, |i| {
                i == from || self.has_room(i, 0)
            });
            let Some(to) = target.filter(|t| *t != from) else {
                continue;
            };
            let started = Instant::now();
            let charge = self.mover.budget.clone().map(|pool| ReadCharge {
                pool,
                held,
                plain: false,
            });
            let job = self.submit(hash, ctx, move |disks, d, _| {
                disks.relocate(hash, from, to, d, &mut Payer::new(hash, charge))
            });
            ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
                if let (Err(StorageError::OverBudget { needed, .. }), Some(pool)) =
                    (&res, act.mover.budget.clone())
                {
                    // Nothing was read: wait for the memory, then move this block again.
                    act.mover.page.push(hash);
                    act.mover.scanned -= 1;
                    let needed = *needed;
                    let wait = async move { pool.charge_within(needed, MOVE_BUDGET_WAIT).await };
                    ctx.spawn(wait.into_actor(act).map(move |charge, act, ctx| {
                        act.mover.held = charge.ok().map(|c| (hash, c));
                        act.mover_step(ctx);
                    }));
                    return;
                }
                if let Err(e) = res {
                    act.mover.errors += 1;
                    warn!(hash = %hash.short(), error = %e, "could not move a block to its data dir; it stays where it is");
                }
                let rest = started.elapsed().saturating_mul(REBALANCE_TRANQUILITY);
                ctx.run_later(rest, |act, ctx| act.mover_step(ctx));
            }));
            return;
        }
    }

    fn next_dir(&mut self) {
        // The page is dropped, and with it the hash a held charge was for.
        self.mover.held = None;
        self.mover.disk += 1;
        self.mover.after = None;
        self.mover.page.clear();
    }

    /// List the next page of dir `i` on the blocking pool, then walk on.
    fn list_page(&mut self, i: usize, ctx: &mut Context<Self>) {
        let disks = self.disks.clone();
        let after = self.mover.after;
        let task = actix_rt::task::spawn_blocking(move || disks.dirs[i].list(after, PAGE));
        ctx.spawn(task.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Ok(page)) if !page.is_empty() => {
                    act.mover.page = page;
                    act.mover.page.reverse();
                }
                Ok(Ok(_)) => act.next_dir(),
                Ok(Err(e)) => {
                    warn!(path = %act.dirs[i].path.display(), error = %e, "mover cannot list a data dir; skipping it this pass");
                    act.next_dir();
                }
                Err(e) => {
                    warn!(error = %e, "mover listing task failed; skipping the dir this pass");
                    act.next_dir();
                }
            }
            // A short breath between pages keeps a pass over millions of files gentle.
            ctx.run_later(Duration::from_millis(1), |act, ctx| act.mover_step(ctx));
        }));
    }

    fn finish_pass(&mut self, ctx: &mut Context<Self>) {
        let m = &mut self.mover;
        m.running = false;
        m.passes += 1;
        m.held = None;
        info!(
            scanned = m.scanned,
            moved_total = m.moved,
            bytes_moved_total = m.bytes_moved,
            errors = m.errors,
            "data dir rebalance pass done"
        );
        if std::mem::take(&mut m.rerun) {
            self.start_rebalance(ctx);
        }
    }
}
