//! StorageActor: owns the data directory and every block file in it.
//!
//! State owned: the block tree `<data_dir>/<hh>/<hh>/<64-hex>[.zst]`, the per-hash lanes
//! that keep operations on one block in order, and the storage counters.
//! Messages: [`WriteBlock`], [`ReadBlock`], [`BlockExists`], [`DeleteBlock`],
//! [`ListBlocks`], [`GetStorageStats`]. It talks to nobody: callers (the RPC dispatcher,
//! the resync actor, the API) send it messages and schedule resyncs from its answers.
//!
//! File I/O, hashing and zstd run on tokio's blocking pool, so a slow disk write never
//! stalls the actor's mailbox. Operations on the *same* hash are serialised by a lane
//! (a queue per busy hash, kept in the actor); different hashes run concurrently.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use actix::prelude::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::block::{DataBlock, VerifiedBlock};
use crate::fsutil::{is_disk_full, is_temp_file_name, sync_dir, write_atomic};
use crate::hash::{Hash, HASH_LEN};

/// Settings of a [`StorageActor`].
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Root of the block tree: `<data_dir>/<hh>/<hh>/<64-hex>[.zst]`.
    pub data_dir: PathBuf,
    /// fsync each block file and its directory before acknowledging a write.
    pub data_fsync: bool,
    /// Most bytes of block files this node may hold (a quota below the filesystem's
    /// own limit); a write past it is refused with [`StorageError::DiskFull`].
    pub capacity: Option<u64>,
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

fn io_err(path: &Path, e: io::Error) -> StorageError {
    if is_disk_full(&e) {
        StorageError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        StorageError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
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
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StorageError>")]
pub struct WriteBlock {
    pub hash: Hash,
    pub data: DataBlock,
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

    /// Whether the data was already verified.
    pub fn is_verified(&self) -> bool {
        self.verified
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

/// Delete every stored copy of the block; replies whether one was there.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct DeleteBlock {
    pub hash: Hash,
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
    /// Blocks stored (counted at start, then kept up to date).
    pub blocks: u64,
    /// Bytes of block files stored.
    pub bytes: u64,
    /// Bytes written to block files since start.
    pub bytes_written: u64,
    /// Bytes read from block files since start.
    pub bytes_read: u64,
    /// Rotten copies found (and quarantined) since start.
    pub corruptions_found: u64,
}

/// Ask for [`StorageStats`].
#[derive(Message, Debug)]
#[rtype(result = "StorageStats")]
pub struct GetStorageStats;

/// The paths of one block's files.
#[derive(Debug, Clone)]
struct BlockPaths {
    dir: PathBuf,
    plain: PathBuf,
    zst: PathBuf,
}

impl BlockPaths {
    fn new(root: &Path, hash: &Hash) -> Self {
        let hex = hash.to_hex();
        let dir = root.join(&hex[0..2]).join(&hex[2..4]);
        BlockPaths {
            plain: dir.join(&hex),
            zst: dir.join(format!("{hex}.zst")),
            dir,
        }
    }
}

/// Changes to the counters made by one finished job.
#[derive(Debug, Default, Clone, Copy)]
struct StatsDelta {
    blocks: i64,
    bytes: i64,
    written: u64,
    read: u64,
    corrupted: u64,
    /// Bytes reserved against the capacity by this job, released when it ends.
    unreserve: u64,
}

/// One job's work, run on the blocking pool, and what it did to the counters.
type JobFuture = BoxFuture<'static, StatsDelta>;

/// The actor.
pub struct StorageActor {
    config: StorageConfig,
    stats: StorageStats,
    /// Hashes with a job running; each holds the jobs waiting behind it, in order.
    lanes: HashMap<Hash, VecDeque<JobFuture>>,
    /// Bytes of writes in flight, counted against the capacity before they land.
    reserved: u64,
}

impl StorageActor {
    /// Create the data directory if needed, remove temp files a crash left behind and
    /// count the blocks stored. Walks the tree one directory at a time.
    pub fn new(config: StorageConfig) -> Result<Self, StorageError> {
        fs::create_dir_all(&config.data_dir).map_err(|e| io_err(&config.data_dir, e))?;
        let mut stats = StorageStats::default();
        let mut temps = 0u64;
        for l1 in sorted_subdirs(&config.data_dir)? {
            for l2 in sorted_subdirs(&l1)? {
                let rd = fs::read_dir(&l2).map_err(|e| io_err(&l2, e))?;
                for entry in rd.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if is_temp_file_name(&name) {
                        if fs::remove_file(entry.path()).is_ok() {
                            temps += 1;
                        }
                    } else if parse_block_name(&name).is_some() {
                        if let Ok(md) = entry.metadata() {
                            stats.blocks += 1;
                            stats.bytes += md.len();
                        }
                    }
                }
            }
        }
        if temps > 0 {
            tracing::info!(count = temps, dir = %config.data_dir.display(), "removed stale temp files left by a crash");
        }
        tracing::info!(blocks = stats.blocks, bytes = stats.bytes, "storage opened");
        Ok(StorageActor {
            config,
            stats,
            lanes: HashMap::new(),
            reserved: 0,
        })
    }

    /// Run `job` in the lane of `hash`: now if the hash is idle, else after the jobs
    /// already queued for it.
    fn enqueue(&mut self, hash: Hash, job: JobFuture, ctx: &mut Context<Self>) {
        match self.lanes.get_mut(&hash) {
            Some(queue) => queue.push_back(job),
            None => {
                self.lanes.insert(hash, VecDeque::new());
                self.run(hash, job, ctx);
            }
        }
    }

    fn run(&mut self, hash: Hash, job: JobFuture, ctx: &mut Context<Self>) {
        ctx.spawn(job.into_actor(self).map(move |delta, act, ctx| {
            act.apply(delta);
            let next = act.lanes.get_mut(&hash).and_then(|q| q.pop_front());
            match next {
                Some(job) => act.run(hash, job, ctx),
                None => {
                    act.lanes.remove(&hash);
                }
            }
        }));
    }

    fn apply(&mut self, d: StatsDelta) {
        let s = &mut self.stats;
        s.blocks = (s.blocks as i64 + d.blocks).max(0) as u64;
        s.bytes = (s.bytes as i64 + d.bytes).max(0) as u64;
        s.bytes_written += d.written;
        s.bytes_read += d.read;
        s.corruptions_found += d.corrupted;
        self.reserved = self.reserved.saturating_sub(d.unreserve);
    }

    /// Wrap blocking work `f` into a lane job answering on a oneshot channel.
    fn job<T: Send + 'static>(
        &mut self,
        hash: Hash,
        ctx: &mut Context<Self>,
        f: impl FnOnce() -> (Result<T, StorageError>, StatsDelta) + Send + 'static,
    ) -> ResponseFuture<Result<T, StorageError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fut = async move {
            match tokio::task::spawn_blocking(f).await {
                Ok((res, delta)) => {
                    let _ = tx.send(res);
                    delta
                }
                Err(e) => {
                    let _ = tx.send(Err(StorageError::Task(e.to_string())));
                    StatsDelta::default()
                }
            }
        }
        .boxed();
        self.enqueue(hash, fut, ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(StorageError::Task("storage job dropped".into())))
        })
    }
}

impl Actor for StorageActor {
    type Context = Context<Self>;
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() == 2 && n.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        })
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

/// The hash of a block file name (`<64-hex>` or `<64-hex>.zst`), `None` for anything else.
fn parse_block_name(name: &str) -> Option<Hash> {
    let hex = name.strip_suffix(".zst").unwrap_or(name);
    if hex.len() != HASH_LEN * 2 {
        return None;
    }
    hex.parse().ok()
}

fn file_len(p: &Path) -> Option<u64> {
    fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Move a rotten file (or directory) aside as `<name>.corrupted[.N]`; never deletes.
fn quarantine(path: &Path) -> Result<PathBuf, StorageError> {
    let base = format!("{}.corrupted", path.display());
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|e| io_err(path, e))?;
    tracing::warn!(file = %path.display(), quarantined = %target.display(), "quarantined a rotten block file");
    Ok(target)
}

fn do_write(
    cfg: &StorageConfig,
    msg: WriteBlock,
) -> (Result<WriteOutcome, StorageError>, StatsDelta) {
    let hash = msg.hash;
    let mut delta = StatsDelta::default();
    if !msg.verified && VerifiedBlock::verify(hash, msg.data.clone()).is_err() {
        return (Err(StorageError::CorruptData { hash }), delta);
    }
    let p = BlockPaths::new(&cfg.data_dir, &hash);
    let has_zst = file_len(&p.zst).is_some();
    let plain_len = file_len(&p.plain);
    if has_zst || (plain_len.is_some() && !msg.data.is_compressed()) {
        return (Ok(WriteOutcome::AlreadyPresent), delta);
    }
    let target = if msg.data.is_compressed() {
        &p.zst
    } else {
        &p.plain
    };
    if let Err(e) = fs::create_dir_all(&p.dir) {
        return (Err(io_err(&p.dir, e)), delta);
    }
    let buf = msg.data.inner_buffer();
    if let Err(e) = write_atomic(target, &[buf], cfg.data_fsync) {
        return (Err(io_err(target, e)), delta);
    }
    delta.written = buf.len() as u64;
    delta.blocks = 1;
    delta.bytes = buf.len() as i64;
    match plain_len {
        Some(old) => {
            // The compressed copy is durable; the plain one is now redundant.
            if let Err(e) = fs::remove_file(&p.plain) {
                tracing::warn!(file = %p.plain.display(), "could not remove plain copy: {e}");
            } else {
                delta.blocks -= 1;
                delta.bytes -= old as i64;
                if cfg.data_fsync {
                    let _ = sync_dir(&p.dir);
                }
            }
            (Ok(WriteOutcome::ReplacedPlain), delta)
        }
        None => (Ok(WriteOutcome::Written), delta),
    }
}

fn do_read(cfg: &StorageConfig, hash: Hash) -> (Result<DataBlock, StorageError>, StatsDelta) {
    let mut delta = StatsDelta::default();
    let p = BlockPaths::new(&cfg.data_dir, &hash);
    let (path, compressed) = if p.zst.exists() {
        (p.zst.clone(), true)
    } else if p.plain.exists() {
        (p.plain.clone(), false)
    } else {
        return (Err(StorageError::NotFound { hash }), delta);
    };
    let md = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) => return (Err(io_err(&path, e)), delta),
    };
    let rotten = |delta: &mut StatsDelta, size: u64| {
        delta.corrupted = 1;
        delta.blocks = -1;
        delta.bytes = -(size as i64);
        match quarantine(&path) {
            Ok(q) => Err(StorageError::Corrupted {
                hash,
                quarantined: q,
            }),
            Err(e) => Err(e),
        }
    };
    if !md.is_file() {
        // A directory (or anything else) where a block file should be.
        return (rotten(&mut delta, 0), delta);
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    if let Err(e) = fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut buf)) {
        return (Err(io_err(&path, e)), delta);
    }
    delta.read = buf.len() as u64;
    let len = buf.len() as u64;
    let bytes = Bytes::from(buf);
    let data = if compressed {
        DataBlock::Compressed(bytes)
    } else {
        DataBlock::Plain(bytes)
    };
    match data.verify(&hash) {
        Ok(()) => (Ok(data), delta),
        Err(e) => {
            tracing::warn!(hash = %hash.short(), "stored copy fails verification: {e}");
            (rotten(&mut delta, len), delta)
        }
    }
}

fn do_delete(cfg: &StorageConfig, hash: Hash) -> (Result<bool, StorageError>, StatsDelta) {
    let mut delta = StatsDelta::default();
    let p = BlockPaths::new(&cfg.data_dir, &hash);
    let mut existed = false;
    for path in [&p.plain, &p.zst] {
        if let Some(len) = file_len(path) {
            match fs::remove_file(path) {
                Ok(()) => {
                    existed = true;
                    delta.blocks -= 1;
                    delta.bytes -= len as i64;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return (Err(io_err(path, e)), delta),
            }
        }
    }
    if existed && cfg.data_fsync {
        if let Err(e) = sync_dir(&p.dir) {
            return (Err(io_err(&p.dir, e)), delta);
        }
    }
    (Ok(existed), delta)
}

fn do_list(root: &Path, after: Option<Hash>, limit: usize) -> Result<Vec<Hash>, StorageError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let after_hex = after.map(|h| h.to_hex());
    for l1 in sorted_subdirs(root)? {
        let n1 = l1
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if after_hex.as_ref().is_some_and(|a| n1.as_str() < &a[0..2]) {
            continue;
        }
        for l2 in sorted_subdirs(&l1)? {
            let n2 = l2
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if after_hex
                .as_ref()
                .is_some_and(|a| (n1.as_str(), n2.as_str()) < (&a[0..2], &a[2..4]))
            {
                continue;
            }
            let rd = fs::read_dir(&l2).map_err(|e| io_err(&l2, e))?;
            let mut hashes: Vec<Hash> = rd
                .flatten()
                .filter_map(|e| parse_block_name(&e.file_name().to_string_lossy()))
                .filter(|h| {
                    let hex = h.to_hex();
                    hex.starts_with(&n1) && hex[2..4] == n2
                })
                .filter(|h| after.is_none_or(|a| *h > a))
                .collect();
            hashes.sort();
            hashes.dedup();
            for h in hashes {
                out.push(h);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

impl Handler<WriteBlock> for StorageActor {
    type Result = ResponseFuture<Result<WriteOutcome, StorageError>>;

    fn handle(&mut self, msg: WriteBlock, ctx: &mut Context<Self>) -> Self::Result {
        let cfg = self.config.clone();
        let hash = msg.hash;
        let len = msg.data.inner_buffer().len() as u64;
        if let Some(cap) = self.config.capacity {
            if self.stats.bytes + self.reserved + len > cap {
                tracing::warn!(hash = %hash.short(), capacity = cap, used = self.stats.bytes, "refusing a write: data_dir capacity reached");
                let path = self.config.data_dir.clone();
                return Box::pin(async move { Err(StorageError::DiskFull { path }) });
            }
        }
        self.reserved += len;
        self.job(hash, ctx, move || {
            let (res, mut delta) = do_write(&cfg, msg);
            delta.unreserve = len;
            (res, delta)
        })
    }
}

impl Handler<ReadBlock> for StorageActor {
    type Result = ResponseFuture<Result<DataBlock, StorageError>>;

    fn handle(&mut self, msg: ReadBlock, ctx: &mut Context<Self>) -> Self::Result {
        let cfg = self.config.clone();
        self.job(msg.hash, ctx, move || do_read(&cfg, msg.hash))
    }
}

impl Handler<BlockExists> for StorageActor {
    type Result = ResponseFuture<Result<bool, StorageError>>;

    fn handle(&mut self, msg: BlockExists, ctx: &mut Context<Self>) -> Self::Result {
        let p = BlockPaths::new(&self.config.data_dir, &msg.hash);
        self.job(msg.hash, ctx, move || {
            (
                Ok(file_len(&p.plain).is_some() || file_len(&p.zst).is_some()),
                StatsDelta::default(),
            )
        })
    }
}

impl Handler<DeleteBlock> for StorageActor {
    type Result = ResponseFuture<Result<bool, StorageError>>;

    fn handle(&mut self, msg: DeleteBlock, ctx: &mut Context<Self>) -> Self::Result {
        let cfg = self.config.clone();
        self.job(msg.hash, ctx, move || do_delete(&cfg, msg.hash))
    }
}

impl Handler<ListBlocks> for StorageActor {
    type Result = ResponseFuture<Result<Vec<Hash>, StorageError>>;

    fn handle(&mut self, msg: ListBlocks, _ctx: &mut Context<Self>) -> Self::Result {
        // Listing reads directories only; it needs no lane (a racing write or delete
        // shows or not, as with any directory walk).
        let root = self.config.data_dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || do_list(&root, msg.after, msg.limit))
                .await
                .unwrap_or_else(|e| Err(StorageError::Task(e.to_string())))
        })
    }
}

impl Handler<GetStorageStats> for StorageActor {
    type Result = MessageResult<GetStorageStats>;

    fn handle(&mut self, _msg: GetStorageStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats.clone())
    }
}

#[cfg(test)]
mod tests;
