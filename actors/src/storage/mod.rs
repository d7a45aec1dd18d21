//! StorageActor: owns the data directories and every block file in them.
//!
//! State: the configured data dirs (where the trees are, their capacities, which are
//! read-only), each dir's counts and health, the [`StorageStats`] counters, and one
//! *lane* per hash that has work in progress. Messages: [`WriteBlock`], [`ReadBlock`],
//! [`VerifyBlock`], [`BlockExists`], [`BlockLength`], [`StatBlock`], [`DeleteIfUnwritten`],
//! [`ListBlocks`], [`GetStorageStats`], [`SetDiskFailureListener`]. It answers the
//! resync actor, the peer handlers and the HTTP API, and tells one listener (the resync
//! actor) when a data dir fails ([`DiskFailed`]).
//!
//! Several data dirs: each block belongs in one, chosen from its hash and the dirs'
//! capacities (`dirs.rs`, weighted rendezvous); reads go there first and fall back to the
//! others (`disks.rs`). A background mover (`rebalance.rs`) moves blocks whose dir
//! changed (capacities edited, a dir added or made read-only), one at a time, throttled.
//! A dir with repeated I/O errors, or whose root is gone, is marked failed (`health.rs`):
//! it is no longer read or written, its blocks look missing, and the listener's sweep
//! fetches the referenced ones from peers onto the other dirs.
//!
//! Verification: every write is checked by BLAKE2 unless it comes as a
//! [`crate::block::VerifiedBlock`] (already hashed on this node), and stores a fast
//! checksum of the file's bytes in an extended attribute (`checksum.rs`); a
//! [`ReadBlock`] is served on a matching checksum, else decided by BLAKE2; a
//! [`VerifyBlock`] (scrub) always uses BLAKE2.
//!
//! File I/O, hashing and zstd never wait on the actor's thread: each operation is a plain
//! function of [`disk`] run with `spawn_blocking`. One exception that cannot wait: a
//! [`ReadBlock`] of a block of at most 32 KiB whose path and bytes are all in the
//! kernel's caches is read and verified on the actor's thread (`disk/nowait.rs`:
//! `openat2(RESOLVE_CACHED)`, `preadv2(RWF_NOWAIT)`), when the hash has no job queued or
//! running; anything else (would wait, missing, rotten, larger) takes the lane. Operations on one hash are serialised by
//! its lane (a queue of jobs; the next one starts when the running one ends), so a read
//! never sees half of a replace and two writes of one block do not race; operations on
//! different hashes run concurrently. No lock is involved: the lane map belongs to the
//! actor and is touched only on its thread. Counters change on the actor's thread too,
//! before the reply is sent, so a later [`GetStorageStats`] sees them.
//!
//! Start-up does not wait for the tree: the actor answers at once and counts the stored
//! blocks in the background, one top-level directory at a time, while operations run
//! (`census.rs` keeps the counts exact; [`StorageStats::counting`] says when they are not
//! final yet). The same walk deletes the temp files a crashed run left behind (this run's
//! temp files carry its tag, see [`crate::fsutil::run_tag`]).
//!
//! The GC fence on this side: the actor remembers, per hash, when its last write finished
//! (an `AlreadyPresent` answer included), for [`WRITE_MEMORY`]; [`DeleteIfUnwritten`]
//! runs on the hash's lane and deletes only if no write finished since the GC decision
//! (`gc.rs`, [`crate::gc::unwritten_since`]). There is no unconditional delete.
//!
//! When the actor stops, replies still pending resolve to [`StorageError::Dropped`]; a blocking
//! task already running finishes on its own (every write is atomic, so none is left half
//! done).

mod census;
pub mod checksum;
mod config;
pub mod dirs;
#[cfg(test)]
mod dirs_tests;
mod disk;
mod disks;
mod health;
mod lanes;
mod messages;
mod rebalance;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{error, info, warn};

use self::census::{Census, Tally};
pub use self::config::StorageConfig;
pub use self::dirs::{DataDir, DiskState};
use self::disks::Disks;
use self::health::DirHealth;
use self::lanes::Job;
pub use self::messages::{
    BlockExists, BlockLength, DeleteIfUnwritten, DeleteOutcome, DiskFailed, DiskStatus,
    GetStorageStats, KeepIfPresent, ListBlocks, ReadBlock, RebalanceStatus, SetDiskFailureListener,
    StatBlock, StorageError, StorageStats, VerifyBlock, WriteBlock, WriteOutcome,
};
use self::rebalance::Mover;
use crate::block::DataBlock;
use crate::gc::unwritten_since;
use crate::hash::Hash;

/// How long the actor remembers when a hash was last written. A GC run (decision to
/// delete) never takes this long (its calls time out in seconds); a delete decided
/// before the horizon is refused rather than guessed about.
pub const WRITE_MEMORY: Duration = Duration::from_secs(3600);

/// The actor: see the module documentation.
pub struct StorageActor {
    /// The configured dirs, in config order.
    dirs: Vec<DataDir>,
    fsync: bool,
    /// What jobs see of the dirs; replaced when one fails.
    disks: Arc<Disks>,
    /// Per dir: its counts, bytes reserved by writes in flight, failure state.
    health: Vec<DirHealth>,
    stats: StorageStats,
    /// Present for a hash while one of its jobs runs; holds the jobs waiting behind it.
    lanes: HashMap<Hash, VecDeque<Job>>,
    /// The background count of the stored blocks (see `census.rs`).
    census: Census,
    /// Stale temp files the count's walk deleted, and when it started (for its log line).
    census_temp_removed: u64,
    census_started: Instant,
    /// Pause between two directories of the walk (tests widen the window with it).
    census_pause: Duration,
    /// When the last write of each recently written hash finished (for [`WRITE_MEMORY`]).
    last_write: HashMap<Hash, Instant>,
    /// Writes that finished before this are no longer in `last_write`.
    forgotten_before: Instant,
    /// Hears of failed dirs.
    failure_listener: Option<Recipient<DiskFailed>>,
    /// The background mover's walk (see `rebalance.rs`).
    mover: Mover,
}

impl StorageActor {
    /// Create the data directories if needed (a missing one at start is created, so an
    /// empty replacement disk just works). The stored blocks are counted, and the temp
    /// files of a crashed run deleted, in the background once the actor runs: start-up
    /// takes the same time for no block as for millions.
    pub fn new(config: StorageConfig) -> Result<Self, StorageError> {
        if config.dirs.is_empty() {
            return Err(StorageError::NoDataDir);
        }
        for d in &config.dirs {
            std::fs::create_dir_all(&d.path).map_err(|source| StorageError::Io {
                path: d.path.clone(),
                source,
            })?;
        }
        let n = config.dirs.len();
        Ok(StorageActor {
            disks: Disks::new(&config.dirs, config.data_fsync, &vec![false; n]),
            health: (0..n).map(|_| DirHealth::default()).collect(),
            dirs: config.dirs,
            fsync: config.data_fsync,
            stats: StorageStats {
                counting: true,
                ..StorageStats::default()
            },
            lanes: HashMap::new(),
            census: Census::start(),
            census_temp_removed: 0,
            census_started: Instant::now(),
            census_pause: Duration::ZERO,
            last_write: HashMap::new(),
            forgotten_before: Instant::now(),
            failure_listener: None,
            mover: Mover::default(),
        })
    }

    /// Pause `pause` between two directories of the start-up count (tests use it to let
    /// operations interleave with the walk).
    pub fn with_census_pause(mut self, pause: Duration) -> Self {
        self.census_pause = pause;
        self
    }

    /// List the next top-level directory of the start-up count, on every usable data
    /// dir, on the blocking pool; when it is back, reconcile it with the operations that
    /// ran meanwhile.
    fn census_step(&mut self, ctx: &mut Context<Self>) {
        let Some(dir) = self.census.begin_next() else {
            return;
        };
        let disks = self.disks.clone();
        let pause = self.census_pause;
        let task = actix_rt::task::spawn_blocking(move || {
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            let mut merged: BTreeMap<Hash, Vec<(usize, Tally)>> = BTreeMap::new();
            let mut temp_removed = 0;
            for (i, l) in disks.dirs.iter().enumerate() {
                if !disks.usable[i] {
                    continue;
                }
                let listing = disk::list_top_dir(&l.data_dir, dir);
                temp_removed += listing.temp_removed;
                if dir == 0 {
                    temp_removed += disk::sweep_dir(&l.data_dir);
                }
                for (hash, bytes) in listing.found {
                    merged
                        .entry(hash)
                        .or_default()
                        .push((i, Tally { blocks: 1, bytes }));
                }
            }
            (merged.into_iter().collect::<Vec<_>>(), temp_removed)
        });
        ctx.spawn(task.into_actor(self).map(move |res, act, ctx| {
            let (found, temp_removed) = res.unwrap_or_else(|e| {
                error!(dir, error = %e, "start-up count task failed; directory not counted");
                Default::default()
            });
            act.census_temp_removed += temp_removed;
            let busy: Vec<Hash> = act.lanes.keys().copied().collect();
            let listed = act.census.listed(dir, found, busy);
            for (i, t) in listed.add.into_iter().flatten() {
                act.health[i].count(t.blocks as i64, t.bytes as i64);
            }
            for hash in listed.probe {
                // Queued behind the operations on that lane; its count is taken in
                // `apply`, on this thread, before the next operation of the lane starts.
                let probe = act.submit(hash, ctx, move |disks, d, _| {
                    d.census_probe = Some(disks.tally(hash, d));
                    Ok(())
                });
                drop(probe);
            }
            act.census_check_done(ctx);
            act.census_step(ctx);
        }));
    }

    fn census_check_done(&mut self, ctx: &mut Context<Self>) {
        if self.stats.counting && self.census.complete() {
            self.stats.counting = false;
            let (blocks, bytes) = self.totals();
            info!(
                data_dirs = self.dirs.len(),
                blocks,
                bytes,
                stale_temp_files_removed = self.census_temp_removed,
                took_ms = self.census_started.elapsed().as_millis() as u64,
                "stored blocks counted"
            );
            // The mover's room checks need the counts, so its first pass waits for them.
            self.start_rebalance(ctx);
        }
    }

    /// Blocks and bytes over the dirs that are not failed.
    fn totals(&self) -> (u64, u64) {
        self.health
            .iter()
            .filter(|h| h.failure.is_none())
            .fold((0, 0), |(b, n), h| (b + h.blocks, n + h.bytes))
    }

    /// Whether dir `i` has room for `len` more bytes (its quota against what is counted
    /// and reserved).
    fn has_room(&self, i: usize, len: u64) -> bool {
        match self.dirs[i].capacity {
            None => true,
            Some(cap) => {
                let h = &self.health[i];
                h.bytes + h.reserved + len <= cap
            }
        }
    }
}

impl Actor for StorageActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.census_started = Instant::now();
        self.census_step(ctx);
        self.watch_dirs(ctx);
        // Forget old writes so the map stays bounded by the writes of one horizon.
        ctx.run_interval(WRITE_MEMORY / 4, |act, _ctx| {
            if let Some(cutoff) = Instant::now().checked_sub(WRITE_MEMORY) {
                act.last_write.retain(|_, t| *t >= cutoff);
                act.forgotten_before = act.forgotten_before.max(cutoff);
            }
        });
    }
}

impl Handler<WriteBlock> for StorageActor {
    type Result = ResponseFuture<Result<WriteOutcome, StorageError>>;
    fn handle(&mut self, m: WriteBlock, ctx: &mut Context<Self>) -> Self::Result {
        let WriteBlock {
            hash,
            data,
            verified,
        } = m;
        let len = data.inner_buffer().len() as u64;
        // Chosen here, where the counts are: the first dir in the block's order with
        // room. A block already stored somewhere is handled where it is (the job looks).
        let target = dirs::target(&hash, &self.disks.placed, |i| self.has_room(i, len));
        if let Some(t) = target {
            self.health[t].reserved += len;
        } else {
            warn!(hash = %hash.short(), "no data dir has room for a new block");
        }
        self.submit(hash, ctx, move |disks, d, _| {
            d.unreserve = target.map(|t| (t, len));
            disks.write(hash, data, verified, target, d)
        })
    }
}

impl Handler<ReadBlock> for StorageActor {
    type Result = ResponseFuture<Result<DataBlock, StorageError>>;
    fn handle(&mut self, m: ReadBlock, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        // A small block in the kernel's caches is read here, on the actor's thread,
        // without waiting for the disk: the blocking pool's two thread wake-ups were most
        // of a 4 KiB GET's CPU. Only when no job of the hash is queued or running (its
        // lane is closed), so the lane's order still holds; anything but a verified copy
        // goes to the lane as before.
        if !self.lanes.contains_key(&hash) {
            let mut delta = disks::JobDelta::default();
            if let Some(block) = self.disks.read_no_wait(hash, &mut delta) {
                self.apply(hash, delta, ctx);
                return Box::pin(std::future::ready(Ok(block)));
            }
        }
        self.submit(hash, ctx, move |disks, d, _| {
            disks.read(hash, disk::Verify::Checksum, d)
        })
    }
}

impl Handler<VerifyBlock> for StorageActor {
    type Result = ResponseFuture<Result<(), StorageError>>;
    /// Always on the lane: the cached path trusts the stored checksum.
    fn handle(&mut self, m: VerifyBlock, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        self.submit(hash, ctx, move |disks, d, _| {
            disks.read(hash, disk::Verify::Blake2, d).map(drop)
        })
    }
}

impl Handler<BlockExists> for StorageActor {
    type Result = ResponseFuture<Result<bool, StorageError>>;
    fn handle(&mut self, m: BlockExists, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        self.submit(hash, ctx, move |disks, d, _| disks.exists(hash, d))
    }
}

impl Handler<KeepIfPresent> for StorageActor {
    type Result = ResponseFuture<Result<bool, StorageError>>;
    fn handle(&mut self, m: KeepIfPresent, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        self.submit(hash, ctx, move |disks, d, _| {
            let present = disks.exists(hash, d)?;
            // Noted as a write when the job ends (before a delete queued behind it
            // starts): a GC decision taken before now no longer deletes this copy.
            d.kept = present;
            Ok(present)
        })
    }
}

impl Handler<BlockLength> for StorageActor {
    type Result = ResponseFuture<Result<Option<u64>, StorageError>>;
    fn handle(&mut self, m: BlockLength, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        self.submit(hash, ctx, move |disks, d, _| disks.plain_len(hash, d))
    }
}

impl Handler<StatBlock> for StorageActor {
    type Result = ResponseFuture<Result<Option<u64>, StorageError>>;
    fn handle(&mut self, m: StatBlock, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        self.submit(hash, ctx, move |disks, d, _| disks.modified_ms(hash, d))
    }
}

impl Handler<DeleteIfUnwritten> for StorageActor {
    type Result = ResponseFuture<Result<DeleteOutcome, StorageError>>;
    fn handle(&mut self, m: DeleteIfUnwritten, ctx: &mut Context<Self>) -> Self::Result {
        let DeleteIfUnwritten { hash, since } = m;
        self.submit(hash, ctx, move |disks, d, facts| {
            if !unwritten_since(facts.last_write, facts.forgotten_before, since) {
                tracing::debug!(%hash, "GC delete refused: the block was written since the decision");
                return Ok(DeleteOutcome::WrittenSince);
            }
            Ok(if disks.delete(hash, d)? {
                DeleteOutcome::Deleted
            } else {
                DeleteOutcome::Absent
            })
        })
    }
}

impl Handler<ListBlocks> for StorageActor {
    type Result = ResponseFuture<Result<Vec<Hash>, StorageError>>;
    /// Not on a lane: a listing spans many hashes and only reads directory names, so it
    /// runs beside writes (a block written meanwhile may or may not appear).
    fn handle(&mut self, m: ListBlocks, _ctx: &mut Context<Self>) -> Self::Result {
        let disks = self.disks.clone();
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || disks.list(m.after, m.limit))
                .await
                .unwrap_or_else(|source| {
                    Err(StorageError::Join {
                        what: "listing blocks",
                        source,
                    })
                })
        })
    }
}

impl Handler<GetStorageStats> for StorageActor {
    type Result = MessageResult<GetStorageStats>;
    fn handle(&mut self, _m: GetStorageStats, _ctx: &mut Context<Self>) -> Self::Result {
        let mut s = self.stats.clone();
        (s.blocks, s.bytes) = self.totals();
        s.disks = self.disk_statuses();
        s.rebalance = self.mover.status();
        MessageResult(s)
    }
}

impl Handler<SetDiskFailureListener> for StorageActor {
    type Result = ();
    fn handle(&mut self, m: SetDiskFailureListener, _ctx: &mut Context<Self>) {
        self.failure_listener = Some(m.listener);
    }
}
