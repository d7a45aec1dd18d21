//! The blocking half of the storage actor: plain functions over the block tree, run on
//! the blocking pool by [`super::StorageActor`], never on its event loop.
//!
//! On-disk layout (kept from Garage 0.6, so a Garage data directory reads the same):
//! `<data_dir>/<hex of byte 0>/<hex of byte 1>/<64-hex>` holds a block's plain bytes,
//! `...<64-hex>.zst` the zstd frame of [`DataBlock::Compressed`] as is. A copy that failed
//! verification is renamed `<name>.corrupted` (then `<name>.1.corrupted`, ... so an older
//! quarantined copy is never overwritten). Temp files of [`fsutil::write_atomic`] sit
//! beside their target until renamed; one left by a crash is deleted by the background
//! sweep ([`list_top_dir`], [`sweep_dir`]).
//!
//! Each block file carries its stored checksum in an extended attribute
//! ([`super::checksum`]), set before the file is fsynced and renamed. A local read whose
//! checksum matches is served without BLAKE2 ([`Verify::Checksum`]); anything else (no
//! attribute, one not understood, a mismatch) is decided by BLAKE2 of the plain bytes as
//! before, and a copy BLAKE2 accepts gets its attribute (re)written. Scrub asks for
//! [`Verify::Blake2`]: BLAKE2 on every copy, whatever the attribute says.
//!
//! Every function here assumes the actor's per-hash lane: no other call on the same hash
//! runs at the same time, so "check then act" on one hash's files is race-free.

mod nowait;
mod walk;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::charged::Payer;
use super::checksum::{self, Check};
use super::{StorageError, WriteOutcome};
use crate::block::{zstd_declared_len, DataBlock, ZSTD_MAX_FRAME_HEADER};
use crate::fsutil;
use crate::hash::Hash;
pub(super) use walk::{list_top_dir, sweep_dir};

/// Suffix of a compressed block file.
const ZST_SUFFIX: &str = ".zst";
/// Suffix given to a quarantined copy.
const CORRUPTED_SUFFIX: &str = ".corrupted";
/// Most `.N.corrupted` names tried for one file before giving up (an operator has left
/// that many rotten copies of one block unexamined; something else is wrong).
const MAX_QUARANTINE_SLOTS: u32 = 1000;

/// How a read checks a copy before serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// The stored checksum when it matches, BLAKE2 otherwise (every local read).
    Checksum,
    /// BLAKE2 always (scrub, and a copy about to be moved to another dir).
    Blake2,
}

/// Where blocks live and how they are written; cheap to clone into blocking tasks.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub data_dir: PathBuf,
    pub fsync: bool,
}

/// Changes to [`super::StorageStats`] made by one operation, applied by the actor on
/// its own thread once the blocking task is done.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatsDelta {
    pub blocks: i64,
    pub bytes: i64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub corruptions: u64,
    /// A write of the block finished (any outcome, `AlreadyPresent` included): the
    /// actor remembers when, so a GC delete decided before it is refused.
    pub wrote: bool,
}

/// What sits at a block file's path.
enum Probe {
    Absent,
    /// A regular file of this many bytes.
    File(u64),
    /// A directory, symlink or other non-file: never a valid copy.
    NotAFile,
}

fn io_err(path: &Path, source: io::Error) -> StorageError {
    if fsutil::is_disk_full(&source) {
        StorageError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What opening a block file for reading found: [`Probe`] with the open file.
enum Opened {
    Absent,
    /// A regular file, open, with its size from `fstat` of the same descriptor.
    File(fs::File, u64),
    NotAFile,
}

/// Open a block file for reading and `fstat` the descriptor, instead of a path `statx`
/// before the open and another after it (the 4 KiB GET profile's `statx` share).
/// `O_NOFOLLOW` keeps a symlink a non-file as [`probe`] sees it, and `O_NONBLOCK` keeps a
/// FIFO at a block path from blocking the open (it has no effect on regular files). Any
/// other failure to open (a socket's `ENXIO`, a symlink's `ELOOP`, permission denied) is
/// classified by [`probe`], so the answers are [`probe`]'s.
fn open_copy(path: &Path) -> Result<Opened, StorageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(file) => {
            let meta = file.metadata().map_err(|e| io_err(path, e))?;
            if meta.is_file() {
                Ok(Opened::File(file, meta.len()))
            } else {
                Ok(Opened::NotAFile)
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Absent),
        Err(e) => match probe(path)? {
            Probe::Absent => Ok(Opened::Absent),
            Probe::NotAFile => Ok(Opened::NotAFile),
            // A file that would not open for us: reported, the copy may be fine.
            Probe::File(_) => Err(io_err(path, e)),
        },
    }
}

fn probe(path: &Path) -> Result<Probe, StorageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Probe::File(m.len())),
        Ok(_) => Ok(Probe::NotAFile),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Probe::Absent),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Set a block file's modification time to now: a write that found the block already
/// stored re-starts its GC grace (see `gc.rs`). A failure is only logged: the write
/// itself succeeded, and the storage actor's memory of the write still fences a delete
/// decided before it.
fn touch(path: &Path) {
    let res = fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = res {
        warn!(path = %path.display(), error = %e, "cannot touch a re-written block file");
    }
}

/// The crash-safe write of a block file, its stored checksum set before the fsync.
fn write_block_file(
    path: &Path,
    hash: Hash,
    data: &DataBlock,
    fsync: bool,
) -> Result<(), StorageError> {
    let stored = data.inner_buffer();
    let value = checksum::value(&hash, data.is_compressed(), stored);
    fsutil::write_atomic_with(path, &[stored], fsync, |f| checksum::set(f, &value))
        .map_err(|e| io_err(path, e))
}

/// Give a copy BLAKE2 just accepted the attribute it lacks (a file from before stored
/// checksums, or one not understood) or whose value disagreed with its sound bytes, so
/// its next reads skip BLAKE2. Not fsynced: an attribute lost in a crash only costs a
/// BLAKE2 read. A failure is logged and the read still served.
fn restore_checksum(file: &fs::File, path: &Path, hash: Hash, block: &DataBlock, found: Check) {
    if found == Check::Mismatch {
        warn!(%hash, path = %path.display(), "stored checksum disagreed with a copy BLAKE2 accepts; rewriting it");
    }
    let value = checksum::value(&hash, block.is_compressed(), block.inner_buffer());
    if let Err(e) = checksum::set(file, &value) {
        debug!(%hash, path = %path.display(), error = %e, "cannot store a block file's checksum; its reads keep BLAKE2");
    }
}

impl Layout {
    fn block_dir(&self, hash: &Hash) -> PathBuf {
        let b = hash.as_bytes();
        self.data_dir
            .join(format!("{:02x}", b[0]))
            .join(format!("{:02x}", b[1]))
    }

    /// (plain path, compressed path) of a block.
    fn block_paths(&self, hash: &Hash) -> (PathBuf, PathBuf) {
        let dir = self.block_dir(hash);
        let hex = hash.to_hex();
        (dir.join(&hex), dir.join(format!("{hex}{ZST_SUFFIX}")))
    }

    fn sync_dir_of(&self, path: &Path) -> Result<(), StorageError> {
        if self.fsync {
            if let Some(dir) = path.parent() {
                fsutil::sync_dir(dir).map_err(|e| io_err(dir, e))?;
            }
        }
        Ok(())
    }

    /// Create `<hh>/<hh>` if missing; with fsync, make the new entries durable too, or a
    /// crash could lose a directory holding acknowledged blocks.
    fn ensure_block_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if dir.is_dir() {
            return Ok(());
        }
        // The root is made once at start, never here: a data dir that vanished (a disk
        // unmounted or renamed away) must fail its writes, not grow a new tree on the
        // filesystem below it.
        if !self.data_dir.is_dir() {
            return Err(io_err(
                &self.data_dir,
                io::Error::new(io::ErrorKind::NotFound, "the data dir is gone"),
            ));
        }
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        if self.fsync {
            let mut d = dir;
            while let Some(parent) = d.parent() {
                fsutil::sync_dir(parent).map_err(|e| io_err(parent, e))?;
                if parent == self.data_dir {
                    break;
                }
                d = parent;
            }
        }
        Ok(())
    }

    /// Rename a rotten copy out of the way, never over an older quarantined one.
    fn quarantine(&self, path: &Path, delta: &mut StatsDelta) -> Result<PathBuf, StorageError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for i in 0..MAX_QUARANTINE_SLOTS {
            let target = if i == 0 {
                path.with_file_name(format!("{name}{CORRUPTED_SUFFIX}"))
            } else {
                path.with_file_name(format!("{name}.{i}{CORRUPTED_SUFFIX}"))
            };
            match fs::symlink_metadata(&target) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::rename(path, &target).map_err(|e| io_err(path, e))?;
                    delta.corruptions += 1;
                    self.sync_dir_of(path)?;
                    warn!(path = %path.display(), quarantined = %target.display(), "quarantined a rotten block copy");
                    return Ok(target);
                }
                Err(e) => return Err(io_err(&target, e)),
            }
        }
        Err(StorageError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(format!(
                "{MAX_QUARANTINE_SLOTS} quarantined copies already exist"
            )),
        })
    }

    /// Quarantine a non-file at a block path (it was never counted as a copy).
    fn quarantine_non_file(
        &self,
        hash: Hash,
        path: &Path,
        delta: &mut StatsDelta,
    ) -> Result<PathBuf, StorageError> {
        warn!(%hash, path = %path.display(), "found a non-file where a block file belongs");
        self.quarantine(path, delta)
    }

    /// Store a block following Garage's rules: a compressed copy wins over everything, a
    /// plain copy wins over plain data, compressed data replaces a plain copy.
    pub fn write(
        &self,
        hash: Hash,
        data: DataBlock,
        verified: bool,
        delta: &mut StatsDelta,
    ) -> Result<WriteOutcome, StorageError> {
        if !verified {
            if let Err(e) = data.verify(&hash) {
                debug!(%hash, error = %e, "refused a write of mismatched data");
                return Err(StorageError::CorruptData { hash });
            }
        }
        let dir = self.block_dir(&hash);
        self.ensure_block_dir(&dir)?;
        let (plain, zst) = self.block_paths(&hash);

        let mut zst_state = probe(&zst)?;
        if let Probe::NotAFile = zst_state {
            self.quarantine_non_file(hash, &zst, delta)?;
            zst_state = Probe::Absent;
        }
        if let Probe::File(_) = zst_state {
            touch(&zst);
            delta.wrote = true;
            return Ok(WriteOutcome::AlreadyPresent);
        }
        let mut plain_state = probe(&plain)?;
        if let Probe::NotAFile = plain_state {
            self.quarantine_non_file(hash, &plain, delta)?;
            plain_state = Probe::Absent;
        }
        let new_len = data.inner_buffer().len() as u64;
        delta.wrote = true;
        match (plain_state, data.is_compressed()) {
            (Probe::File(_), false) => {
                touch(&plain);
                Ok(WriteOutcome::AlreadyPresent)
            }
            (Probe::File(old_len), true) => {
                write_block_file(&zst, hash, &data, self.fsync)?;
                delta.bytes += new_len as i64;
                delta.bytes_written += new_len;
                // The compressed copy is durable before the plain one goes, so a crash in
                // between leaves two copies, never none.
                fs::remove_file(&plain).map_err(|e| io_err(&plain, e))?;
                delta.bytes -= old_len as i64;
                self.sync_dir_of(&plain)?;
                Ok(WriteOutcome::ReplacedPlain)
            }
            (_, compressed) => {
                let target = if compressed { &zst } else { &plain };
                write_block_file(target, hash, &data, self.fsync)?;
                delta.blocks += 1;
                delta.bytes += new_len as i64;
                delta.bytes_written += new_len;
                Ok(WriteOutcome::Written)
            }
        }
    }

    /// Read and verify the compressed copy if there is one, else the plain one: by its
    /// stored checksum when `verify` allows and it matches, else by BLAKE2 (which alone
    /// decides whether a copy is rotten: a mismatched attribute on sound bytes is
    /// rewritten, not a reason to throw the copy away).
    /// `pay` is asked to pay for the copy once its length is known, before it is read.
    pub fn read(
        &self,
        hash: Hash,
        verify: Verify,
        delta: &mut StatsDelta,
        pay: &mut Payer,
    ) -> Result<DataBlock, StorageError> {
        let (plain, zst) = self.block_paths(&hash);
        let plain_is_file = || matches!(probe(&plain), Ok(Probe::File(_)));
        for (path, compressed) in [(&zst, true), (&plain, false)] {
            let (mut file, len) = match open_copy(path)? {
                Opened::Absent => continue,
                Opened::NotAFile => {
                    let quarantined = self.quarantine_non_file(hash, path, delta)?;
                    return Err(StorageError::Corrupted { hash, quarantined });
                }
                Opened::File(file, len) => (file, len),
            };
            pay.pay(&file, len, compressed)?;
            // A read error (EIO and the like): the copy may be fine, so it is reported,
            // not quarantined.
            let bytes = crate::bufpool::read_open_file(&mut file, len as usize)
                .map_err(|e| io_err(path, e))?;
            delta.bytes_read += bytes.len() as u64;
            let check = checksum::check(&file, &hash, compressed, &bytes);
            let block = if compressed {
                DataBlock::Compressed(bytes)
            } else {
                DataBlock::Plain(bytes)
            };
            if verify == Verify::Checksum && check == Check::Match {
                return Ok(block);
            }
            match block.verify(&hash) {
                Ok(()) => {
                    if check != Check::Match {
                        restore_checksum(&file, path, hash, &block, check);
                    }
                    return Ok(block);
                }
                Err(e) => {
                    drop(file);
                    warn!(%hash, path = %path.display(), error = %e, stored_checksum = ?check, "block copy failed verification");
                    let quarantined = self.quarantine(path, delta)?;
                    delta.bytes -= len as i64;
                    if !(compressed && plain_is_file()) {
                        delta.blocks -= 1;
                    }
                    return Err(StorageError::Corrupted { hash, quarantined });
                }
            }
        }
        Err(StorageError::NotFound { hash })
    }

    /// [`Self::read`] for a small block whose entries and bytes are all in the kernel's
    /// caches, done without waiting for the disk (see [`nowait`]): a copy verified by its
    /// stored checksum (or by BLAKE2 when that says nothing), or `None` when any step
    /// would wait or anything is not as it should be (the caller then does the ordinary
    /// read, which reports, quarantines and rewrites attributes: this path writes
    /// nothing, since setting an attribute may wait on the filesystem's journal).
    pub fn read_no_wait(
        &self,
        hash: Hash,
        delta: &mut StatsDelta,
        pay: &mut Payer,
    ) -> Option<DataBlock> {
        let (plain, zst) = self.block_paths(&hash);
        for (path, compressed) in [(&zst, true), (&plain, false)] {
            let (file, len) = match nowait::open(path) {
                nowait::NoWaitOpen::Absent => continue,
                nowait::NoWaitOpen::GiveUp => return None,
                nowait::NoWaitOpen::File(file, len) => (file, len),
            };
            // A GET of a compressed copy is charged for its plain size, read from its
            // zstd header, which may not be cached: such a read goes to the lane.
            if compressed && pay.wants_plain() {
                return None;
            }
            pay.pay(&file, len, compressed).ok()?;
            let bytes = nowait::read(&file, len)?;
            // The attribute sits in the inode just read (9 bytes fit in-inode on ext4
            // and XFS), so asking for it does not wait for the disk either.
            let check = checksum::check(&file, &hash, compressed, &bytes);
            let block = if compressed {
                DataBlock::Compressed(bytes)
            } else {
                DataBlock::Plain(bytes)
            };
            if check != Check::Match {
                block.verify(&hash).ok()?;
            }
            delta.bytes_read += len;
            return Some(block);
        }
        None
    }

    /// Whether a regular file holds a copy (not verified).
    pub fn exists(&self, hash: Hash) -> Result<bool, StorageError> {
        let (plain, zst) = self.block_paths(&hash);
        Ok(matches!(probe(&zst)?, Probe::File(_)) || matches!(probe(&plain)?, Probe::File(_)))
    }

    /// The modification time (ms since the epoch) of the block's newest copy, `None` if
    /// no copy is stored. A write that finds the block already there touches it, so this
    /// is when the block was last written or re-written: the GC grace of an orphan.
    pub fn modified_ms(&self, hash: Hash) -> Result<Option<u64>, StorageError> {
        let (plain, zst) = self.block_paths(&hash);
        let mut newest = None;
        for path in [&zst, &plain] {
            let m = match fs::symlink_metadata(path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(path, e)),
            };
            // A filesystem without mtimes gives "now": the block then looks young and is
            // kept (keeping too long is recoverable, deleting too early is not).
            let ms = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(crate::rc::now_msec, |d| d.as_millis() as u64);
            newest = Some(newest.map_or(ms, |n: u64| n.max(ms)));
        }
        Ok(newest)
    }

    /// Set the modification time of every stored copy to `ms` (since the epoch): a block
    /// moved to another dir keeps its age, so its GC grace is not restarted by the move.
    pub fn set_modified_ms(&self, hash: Hash, ms: u64) -> Result<(), StorageError> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let (plain, zst) = self.block_paths(&hash);
        for path in [&zst, &plain] {
            if let Probe::File(_) = probe(path)? {
                fs::File::options()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_modified(t))
                    .map_err(|e| io_err(path, e))?;
            }
        }
        Ok(())
    }

    /// The plain length of the stored copy, from the file's size (plain copy) or its
    /// zstd frame header (compressed copy), without reading or verifying the data; `None`
    /// when no copy is stored. A compressed copy whose header declares no length is
    /// decompressed to count it (never the case for frames this node wrote).
    pub fn plain_len(
        &self,
        hash: Hash,
        delta: &mut StatsDelta,
    ) -> Result<Option<u64>, StorageError> {
        use std::io::Read;
        let (plain, zst) = self.block_paths(&hash);
        if let Probe::File(_) = probe(&zst)? {
            let mut head = Vec::with_capacity(ZSTD_MAX_FRAME_HEADER);
            fs::File::open(&zst)
                .and_then(|f| f.take(ZSTD_MAX_FRAME_HEADER as u64).read_to_end(&mut head))
                .map_err(|e| io_err(&zst, e))?;
            if let Some(n) = zstd_declared_len(&head) {
                return Ok(Some(n));
            }
            // A read verifies (and quarantines a rotten copy), so its length is right.
            let block = self.read(hash, Verify::Checksum, delta, &mut Payer::none(hash))?;
            return Ok(Some(
                block
                    .into_plain_verified(&hash)
                    .map(|b| b.len() as u64)
                    .map_err(|source| StorageError::Decompress { hash, source })?,
            ));
        }
        match probe(&plain)? {
            Probe::File(len) => Ok(Some(len)),
            _ => Ok(None),
        }
    }

    /// Remove both copies; whether one was there.
    pub fn delete(&self, hash: Hash, delta: &mut StatsDelta) -> Result<bool, StorageError> {
        let (plain, zst) = self.block_paths(&hash);
        let mut existed = false;
        for path in [&zst, &plain] {
            if let Probe::File(len) = probe(path)? {
                fs::remove_file(path).map_err(|e| io_err(path, e))?;
                if !existed {
                    delta.blocks -= 1;
                }
                delta.bytes -= len as i64;
                existed = true;
            }
        }
        if existed {
            self.sync_dir_of(&plain)?;
        }
        Ok(existed)
    }

    /// What one block contributes to the counts now: both copies' bytes, one block if
    /// either is there (the census's probe; on the hash's lane).
    pub fn tally(&self, hash: Hash) -> Result<super::census::Tally, StorageError> {
        let (plain, zst) = self.block_paths(&hash);
        let mut t = super::census::Tally::default();
        for path in [&zst, &plain] {
            if let Probe::File(len) = probe(path)? {
                t.blocks = 1;
                t.bytes += len;
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests;
