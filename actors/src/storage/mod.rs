//! StorageActor: owns the data directories and every block file in them.
//!
//! State: the configured data dirs (where the trees are, their capacities, which are
//! read-only), each dir's counts and health, the [`StorageStats`] counters, and one
//! *lane* per hash that has work in progress. Messages: [`WriteBlock`], [`ReadBlock`],
//! [`BlockExists`], [`BlockLength`], [`StatBlock`], [`DeleteIfUnwritten`],
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
//! File I/O, hashing and zstd never run on the actor's thread: each operation is a plain
//! function of [`disk`] run with `spawn_blocking`. Operations on one hash are serialised by
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
//! When the actor stops, replies still pending resolve to [`StorageError::Task`]; a blocking
//! task already running finishes on its own (every write is atomic, so none is left half
//! done).

mod census;
pub mod dirs;
#[cfg(test)]
mod dirs_tests;
mod disk;
mod disks;
mod health;
mod rebalance;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug_span, error, info, warn};

use self::census::{Census, Tally};
pub use self::dirs::{DataDir, DiskState};
use self::disks::{Disks, JobDelta};
use self::health::DirHealth;
use self::rebalance::Mover;
use crate::block::{DataBlock, VerifiedBlock};
use crate::gc::unwritten_since;
use crate::hash::Hash;

/// How long the actor remembers when a hash was last written. A GC run (decision to
/// delete) never takes this long (its calls time out in seconds); a delete decided
/// before the horizon is refused rather than guessed about.
pub const WRITE_MEMORY: Duration = Duration::from_secs(3600);

/// Settings of a [`StorageActor`].
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The data directories, each a block tree `<path>/<hh>/<hh>/<64-hex>[.zst]`; each
    /// block lives in one of them (`dirs.rs`). At least one.
    pub dirs: Vec<DataDir>,
    /// fsync each block file and its directory before acknowledging a write.
    pub data_fsync: bool,
}

impl StorageConfig {
    /// One data directory with an optional quota on block bytes (a write past it is
    /// refused with [`StorageError::DiskFull`]).
    pub fn one_dir(path: PathBuf, data_fsync: bool, capacity: Option<u64>) -> Self {
        StorageConfig {
            dirs: vec![DataDir {
                path,
                capacity,
                read_only: false,
            }],
            data_fsync,
        }
    }
}

/// Errors of the storage actor; each names the block or path involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("block {hash} is not stored here")]
    NotFound { hash: Hash },
    #[error("block {hash} failed verification; its file was quarantined as {}", quarantined.display())]
    Corrupted { hash: Hash, quarantined: PathBuf },
    #[error("data sent for block {hash} does not match its hash; nothing was written")]
    CorruptData { hash: Hash },
    #[error("no space left on the device holding {}", path.display())]
    DiskFull { path: PathBuf },
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage task failed: {0}")]
    Task(String),
}

/// What a [`WriteBlock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new file was written.
    Written,
    /// An equivalent copy was already there; nothing was written.
    AlreadyPresent,
    /// A compressed copy replaced a plain one.
    ReplacedPlain,
}

/// Store a block. Unverified data is hashed first and refused with
/// [`StorageError::CorruptData`] on mismatch; a [`VerifiedBlock`] is written as is.
/// The fields are private so that no write made from a `VerifiedBlock` can have its
/// bytes or hash swapped afterwards.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StorageError>")]
pub struct WriteBlock {
    hash: Hash,
    data: DataBlock,
    verified: bool,
}

impl WriteBlock {
    /// A write whose data will be verified against `hash` before anything is written.
    pub fn new(hash: Hash, data: DataBlock) -> Self {
        WriteBlock {
            hash,
            data,
            verified: false,
        }
    }

    /// A write of a block already verified on this node (not hashed again).
    pub fn verified(block: VerifiedBlock) -> Self {
        WriteBlock {
            hash: block.hash(),
            data: block.into_data(),
            verified: true,
        }
    }

    /// The block written.
    pub fn hash(&self) -> Hash {
        self.hash
    }
}

/// Read and verify a block. A copy that fails verification is renamed `.corrupted` and
/// reported as [`StorageError::Corrupted`].
#[derive(Message, Debug)]
#[rtype(result = "Result<DataBlock, StorageError>")]
pub struct ReadBlock {
    pub hash: Hash,
}

/// Whether a copy of the block is stored (not verified).
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct BlockExists {
    pub hash: Hash,
}

/// The plain length of the stored copy, `None` when none is stored: from the file size
/// or the zstd frame header, without reading or hashing the block (HTTP `HEAD`). Says
/// nothing about the copy being sound: only a [`ReadBlock`] verifies.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<u64>, StorageError>")]
pub struct BlockLength {
    pub hash: Hash,
}

/// The modification time of a stored block (ms since the epoch; a write that found the
/// block already stored touches it), or `None` when no copy is stored.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<u64>, StorageError>")]
pub struct StatBlock {
    pub hash: Hash,
}

/// GC's delete: remove every stored copy of the block, unless a write of it (an
/// `AlreadyPresent` answer included) finished at or after `since`, the instant the GC
/// look at it began. Runs on the hash's lane, so a write queued before it is counted.
#[derive(Message, Debug)]
#[rtype(result = "Result<DeleteOutcome, StorageError>")]
pub struct DeleteIfUnwritten {
    pub hash: Hash,
    pub since: Instant,
}

/// What a [`DeleteIfUnwritten`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The copies were removed.
    Deleted,
    /// No copy was stored.
    Absent,
    /// Kept: a write finished since the decision (or the decision is older than what
    /// the actor remembers).
    WrittenSince,
}

/// Up to `limit` stored hashes strictly after `after`, in ascending order, read from the
/// tree one directory at a time (so memory stays bounded and a walk can resume).
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<Hash>, StorageError>")]
pub struct ListBlocks {
    pub after: Option<Hash>,
    pub limit: usize,
}

/// Counters of the storage actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Blocks stored on the data dirs that are not failed (a block caught mid-move on
    /// two dirs counts on each).
    pub blocks: u64,
    /// Bytes of block files on the data dirs that are not failed.
    pub bytes: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub corruptions_found: u64,
    /// The start-up count is still running: `blocks` and `bytes` only cover what it has
    /// reached, and the capacity quotas are checked against that.
    pub counting: bool,
    /// Each data dir, in config order.
    pub disks: Vec<DiskStatus>,
    /// The background mover (blocks whose dir changed).
    pub rebalance: RebalanceStatus,
}

/// One data dir in [`StorageStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStatus {
    pub path: PathBuf,
    /// Configured capacity in bytes (`None`: a lone `data_dir` without quota).
    pub capacity: Option<u64>,
    /// Bytes of block files counted on it (its last count once failed).
    pub used: u64,
    pub blocks: u64,
    pub state: DiskState,
    /// Why it was marked failed.
    pub failure: Option<String>,
}

/// Progress of the mover in [`StorageStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebalanceStatus {
    /// A pass over the dirs is under way.
    pub running: bool,
    /// Passes finished since start.
    pub passes: u64,
    /// Block files looked at in the current (or last) pass.
    pub scanned: u64,
    /// Blocks moved to the dir they belong in, and their bytes, since start.
    pub moved: u64,
    pub bytes_moved: u64,
    /// Moves that failed (the block stays where it was).
    pub errors: u64,
}

/// Ask for [`StorageStats`].
#[derive(Message, Debug)]
#[rtype(result = "StorageStats")]
pub struct GetStorageStats;

/// Told to the listener when a data dir is marked failed: every referenced block that
/// was on it should be fetched again (onto the other dirs).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DiskFailed {
    pub path: PathBuf,
    pub reason: String,
}

/// Who hears of a failed data dir (the resync actor, whose sweep fetches what it lost).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDiskFailureListener {
    pub listener: Recipient<DiskFailed>,
}

/// A queued operation on one hash: run on the blocking pool with what the actor knew of
/// the hash when the job started, it returns the counters it changed and the reply to
/// send once they are applied.
type Job = Box<dyn FnOnce(LaneFacts) -> JobDone + Send>;

/// What the actor knows of a hash when one of its jobs starts (the jobs before it on the
/// lane have ended and been applied).
#[derive(Debug, Clone, Copy)]
struct LaneFacts {
    /// When the last write of the hash finished, if it is remembered.
    last_write: Option<Instant>,
    /// Writes before this instant are forgotten (start, or the last pruning).
    forgotten_before: Instant,
}

/// The end of a [`Job`], back on the actor's thread.
struct JobDone {
    delta: JobDelta,
    reply: Box<dyn FnOnce() + Send>,
}

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
            return Err(StorageError::Task("no data dir configured".into()));
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

    /// Queue `op` on the lane of `hash` and return a future of its result.
    fn submit<T, F>(
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
            rx.await.unwrap_or_else(|_| {
                Err(StorageError::Task(format!(
                    "operation on block {hash} was dropped before it finished"
                )))
            })
        })
    }

    /// Run a job on the blocking pool; when it ends, apply its counters, reply, and start
    /// the next job of the same lane (or close the lane).
    fn start(&mut self, hash: Hash, job: Job, ctx: &mut Context<Self>) {
        let facts = LaneFacts {
            last_write: self.last_write.get(&hash).copied(),
            forgotten_before: self.forgotten_before,
        };
        let fut = actix_rt::task::spawn_blocking(move || job(facts));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(done) => {
                    if done.delta.wrote() {
                        // Recorded before the reply and before the lane's next job
                        // starts: a delete queued behind this write sees it.
                        act.last_write.insert(hash, Instant::now());
                    }
                    act.apply(hash, done.delta, ctx);
                    (done.reply)();
                }
                // The reply sender died with the task: the asker gets `Task`.
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
    fn apply(&mut self, hash: Hash, d: JobDelta, ctx: &mut Context<Self>) {
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
        self.submit(hash, ctx, move |disks, d, _| disks.read(hash, d))
    }
}

impl Handler<BlockExists> for StorageActor {
    type Result = ResponseFuture<Result<bool, StorageError>>;
    fn handle(&mut self, m: BlockExists, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        self.submit(hash, ctx, move |disks, d, _| disks.exists(hash, d))
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
                .unwrap_or_else(|e| Err(StorageError::Task(format!("listing blocks: {e}"))))
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
