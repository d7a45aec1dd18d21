//! The blocking operations of the storage actor over several data directories: each
//! routes to the directory a block belongs in (`dirs.rs`) and falls back to the others,
//! so a block placed under an older set of directories, or caught between the two halves
//! of a move, is always found.
//!
//! A [`Disks`] is a snapshot of the directories and of which are usable (not failed),
//! shared by the jobs in flight; the actor makes a new one when a directory fails, so a
//! job never touches a directory that was failed when it started. Every operation
//! reports its effect per directory in a [`JobDelta`], and every I/O error with the
//! directory it came from (the actor counts them to decide that a disk failed).

use std::sync::Arc;

use tracing::warn;

use super::census::Tally;
use super::charged::Payer;
use super::dirs::{read_order, DataDir, PlacedDir};
use super::disk::{Layout, StatsDelta, Verify};
use super::{StorageError, WriteOutcome};
use crate::block::DataBlock;
use crate::hash::Hash;

/// The data directories as one job sees them.
#[derive(Debug)]
pub(super) struct Disks {
    /// One per configured directory, in config order.
    pub dirs: Vec<Layout>,
    /// Placement's view (writable = configured writable and not failed).
    pub placed: Vec<PlacedDir>,
    /// Not failed: may be read at all.
    pub usable: Vec<bool>,
}

/// The effect of one job, per directory, applied by the actor on its thread.
#[derive(Debug, Default)]
pub(super) struct JobDelta {
    /// What the job changed on each directory it touched.
    pub per_disk: Vec<(usize, StatsDelta)>,
    /// I/O errors met (not "not found", not "disk full"), with their directory.
    pub io_errors: Vec<(usize, String)>,
    /// Set by the census's probe only: what the block counts for now on each directory.
    pub census_probe: Option<Vec<(usize, Tally)>>,
    /// Bytes this job reserved against a directory's capacity, released when it ends.
    pub unreserve: Option<(usize, u64)>,
    /// Bytes a relocation moved (the mover's progress).
    pub moved: Option<u64>,
    /// A bare ref's presence check found a copy ([`super::KeepIfPresent`]): for the GC
    /// fence it counts as a write.
    pub kept: bool,
}

impl JobDelta {
    /// A write of the block finished on some directory, or a ref's presence check found
    /// a copy: either way a GC decision taken before must not delete it.
    pub fn wrote(&self) -> bool {
        self.kept || self.per_disk.iter().any(|(_, d)| d.wrote)
    }
}

impl Disks {
    /// The snapshot for `dirs` where `failed[i]` says which are failed.
    pub fn new(config: &[DataDir], fsync: bool, failed: &[bool]) -> Arc<Disks> {
        Arc::new(Disks {
            dirs: config
                .iter()
                .map(|d| Layout {
                    data_dir: d.path.clone(),
                    fsync,
                })
                .collect(),
            placed: config
                .iter()
                .enumerate()
                .map(|(i, d)| PlacedDir::of(d, failed[i]))
                .collect(),
            usable: failed.iter().map(|f| !f).collect(),
        })
    }

    /// Run `f` on directory `i`, recording its effect (and an I/O error) in `delta`.
    fn on<T>(
        &self,
        i: usize,
        delta: &mut JobDelta,
        f: impl FnOnce(&Layout, &mut StatsDelta) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut d = StatsDelta::default();
        let res = f(&self.dirs[i], &mut d);
        // One error per dir and job: a job that meets a bad file through several
        // calls is one sign of trouble, not several.
        let seen = delta.io_errors.iter().any(|(j, _)| *j == i);
        if let (Err(StorageError::Io { path, source }), false) = (&res, seen) {
            delta
                .io_errors
                .push((i, format!("{}: {source}", path.display())));
        }
        if d != StatsDelta::default() {
            delta.per_disk.push((i, d));
        }
        res
    }

    /// Where to look for `hash`, best first (failed directories left out).
    fn order(&self, hash: &Hash) -> Vec<usize> {
        read_order(hash, &self.placed, &self.usable)
    }

    /// The first directory (in read order) holding a copy; an I/O error on one directory
    /// is skipped, and returned only if no other directory has the block.
    pub fn locate(&self, hash: Hash, delta: &mut JobDelta) -> Result<Option<usize>, StorageError> {
        let mut err = None;
        for i in self.order(&hash) {
            match self.on(i, delta, |l, _| l.exists(hash)) {
                Ok(true) => return Ok(Some(i)),
                Ok(false) => {}
                Err(e) => err = Some(e),
            }
        }
        err.map_or(Ok(None), Err)
    }

    /// Read and verify (as `verify` says) the block from the first directory that has an
    /// intact copy.
    pub fn read(
        &self,
        hash: Hash,
        verify: Verify,
        delta: &mut JobDelta,
        pay: &mut Payer,
    ) -> Result<DataBlock, StorageError> {
        let (mut corrupted, mut err) = (None, None);
        for i in self.order(&hash) {
            match self.on(i, delta, |l, d| l.read(hash, verify, d, pay)) {
                Ok(b) => return Ok(b),
                Err(StorageError::NotFound { .. }) => {}
                Err(e @ StorageError::Corrupted { .. }) => corrupted = Some(e),
                Err(e) => err = Some(e),
            }
        }
        Err(corrupted.or(err).unwrap_or(StorageError::NotFound { hash }))
    }

    /// A verified copy read without waiting for the disk from the block's first
    /// directory ([`Layout::read_no_wait`]), or `None`: then [`Self::read`] decides.
    pub fn read_no_wait(
        &self,
        hash: Hash,
        delta: &mut JobDelta,
        pay: &mut Payer,
    ) -> Option<DataBlock> {
        let i = *self.order(&hash).first()?;
        let mut d = StatsDelta::default();
        let block = self.dirs[i].read_no_wait(hash, &mut d, pay)?;
        delta.per_disk.push((i, d));
        Some(block)
    }

    /// Store a block: where a copy already is (Garage's rules apply there), else in
    /// `target`, the directory placement chose with room for it (`None`: none has room).
    pub fn write(
        &self,
        hash: Hash,
        data: DataBlock,
        verified: bool,
        target: Option<usize>,
        delta: &mut JobDelta,
    ) -> Result<WriteOutcome, StorageError> {
        if !verified && data.verify(&hash).is_err() {
            return Err(StorageError::CorruptData { hash });
        }
        // A directory that errors here is counted; the block then goes to the target.
        let at = self.locate(hash, delta).unwrap_or(None);
        let Some(i) = at.or(target) else {
            return Err(self.no_room());
        };
        self.on(i, delta, |l, d| l.write(hash, data, true, d))
    }

    /// The error of a write no directory can take.
    pub fn no_room(&self) -> StorageError {
        match self.placed.iter().position(|p| p.writable) {
            Some(i) => StorageError::DiskFull {
                path: self.dirs[i].data_dir.clone(),
            },
            None => StorageError::Io {
                path: self
                    .dirs
                    .first()
                    .map(|l| l.data_dir.clone())
                    .unwrap_or_default(),
                source: std::io::Error::other(
                    "no data dir can take new blocks (all failed or read-only)",
                ),
            },
        }
    }

    /// Whether some usable directory holds a copy (not verified).
    pub fn exists(&self, hash: Hash, delta: &mut JobDelta) -> Result<bool, StorageError> {
        self.locate(hash, delta).map(|at| at.is_some())
    }

    /// The newest modification time (ms) of the block's copies, `None` if none.
    pub fn modified_ms(
        &self,
        hash: Hash,
        delta: &mut JobDelta,
    ) -> Result<Option<u64>, StorageError> {
        let mut newest: Option<u64> = None;
        for i in self.order(&hash) {
            if let Some(ms) = self.on(i, delta, |l, _| l.modified_ms(hash))? {
                newest = Some(newest.map_or(ms, |n| n.max(ms)));
            }
        }
        Ok(newest)
    }

    /// The plain length of the first copy found.
    pub fn plain_len(&self, hash: Hash, delta: &mut JobDelta) -> Result<Option<u64>, StorageError> {
        match self.locate(hash, delta)? {
            Some(i) => self.on(i, delta, |l, d| l.plain_len(hash, d)),
            None => Ok(None),
        }
    }

    /// Remove every copy on every usable directory; whether one was there.
    pub fn delete(&self, hash: Hash, delta: &mut JobDelta) -> Result<bool, StorageError> {
        let mut existed = false;
        for i in self.order(&hash) {
            existed |= self.on(i, delta, |l, d| l.delete(hash, d))?;
        }
        Ok(existed)
    }

    /// What the block counts for on each usable directory (the census's probe).
    pub fn tally(&self, hash: Hash, delta: &mut JobDelta) -> Vec<(usize, Tally)> {
        let mut out = Vec::new();
        for i in self.order(&hash) {
            match self.on(i, delta, |l, _| l.tally(hash)) {
                Ok(t) => out.push((i, t)),
                Err(e) => warn!(%hash, error = %e, "cannot count a block file; not counted"),
            }
        }
        out
    }

    /// Up to `limit` hashes after `after` stored on any usable directory, ascending.
    pub fn list(&self, after: Option<Hash>, limit: usize) -> Result<Vec<Hash>, StorageError> {
        let mut all = Vec::new();
        for (i, l) in self.dirs.iter().enumerate() {
            if self.usable[i] {
                all.extend(l.list(after, limit)?);
            }
        }
        all.sort_unstable();
        all.dedup();
        all.truncate(limit);
        Ok(all)
    }

    /// Move the block from directory `from` to `to`: copy (crash-safe write, with its
    /// stored checksum), read the new copy back and verify it, keep the old file's age,
    /// and only then remove the old file. The old copy is checked with BLAKE2, not its
    /// checksum: the new copy is written as verified, so it must not inherit less trust
    /// than a write from the network gets; the read-back only has to show that the new
    /// file holds what was written, which its checksum does. A crash at any point leaves at least one intact copy (two at worst, which
    /// the next pass of the mover resolves). `None` when `from` no longer has the block.
    pub fn relocate(
        &self,
        hash: Hash,
        from: usize,
        to: usize,
        delta: &mut JobDelta,
        pay: &mut Payer,
    ) -> Result<Option<u64>, StorageError> {
        if !self.on(from, delta, |l, _| l.exists(hash))? {
            return Ok(None);
        }
        let mtime = self.on(from, delta, |l, _| l.modified_ms(hash))?;
        // Verifies the old copy (and quarantines it if rotten: then nothing moves).
        let block = self.on(from, delta, |l, d| l.read(hash, Verify::Blake2, d, pay))?;
        let len = block.inner_buffer().len() as u64;
        self.on(to, delta, |l, d| l.write(hash, block, true, d))?;
        // The old copy's bytes went with the write: the charge `pay` took for them (held
        // until the job ends) covers the read-back.
        self.on(to, delta, |l, d| {
            l.read(hash, Verify::Checksum, d, &mut Payer::none(hash))
        })?;
        if let Some(ms) = mtime {
            self.on(to, delta, |l, _| l.set_modified_ms(hash, ms))?;
        }
        self.on(from, delta, |l, d| l.delete(hash, d))?;
        delta.moved = Some(len);
        Ok(Some(len))
    }
}
