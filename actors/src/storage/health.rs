//! Each data dir's counts and health: when a dir is marked failed, and what status says
//! of it.
//!
//! A dir fails on [`IO_ERRORS_TO_FAIL`] I/O errors within [`IO_ERROR_WINDOW`] (one
//! error may be a transient glitch of one file; several in a short time are a disk), or
//! at once when its root is no longer a readable directory (a disk unmounted, renamed
//! away, or dead), which a check every [`DIR_CHECK_INTERVAL`] looks at. A failed dir
//! stays failed until the node restarts: a disk that came back half-working is what the
//! operator should look at, and its blocks are refetched onto the other dirs meanwhile.
//! "Not found" and "disk full" are not I/O errors here: they say nothing about the disk.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::error;

use super::dirs::DiskState;
use super::disks::Disks;
use super::{DiskFailed, DiskStatus, StorageActor};

/// I/O errors on one dir within [`IO_ERROR_WINDOW`] that mark it failed.
pub const IO_ERRORS_TO_FAIL: usize = 3;
/// The window over which I/O errors are counted.
pub const IO_ERROR_WINDOW: Duration = Duration::from_secs(60);
/// How often each dir's root is checked (a vanished dir fails no operation when no
/// block of it is asked for; this finds it anyway within a second or two).
pub const DIR_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What the actor keeps per data dir.
#[derive(Debug, Default)]
pub(super) struct DirHealth {
    pub blocks: u64,
    pub bytes: u64,
    /// Bytes of writes in flight, counted against the capacity before they land.
    pub reserved: u64,
    /// When the recent I/O errors happened.
    errors: VecDeque<Instant>,
    /// Why it failed, once it did.
    pub failure: Option<String>,
    /// The id in its marker at start (`marker.rs`), checked with its root; `None`
    /// without markers.
    pub dir_id: Option<String>,
}

impl DirHealth {
    /// Apply a change of the counts.
    pub fn count(&mut self, blocks: i64, bytes: i64) {
        self.blocks = self.blocks.saturating_add_signed(blocks);
        self.bytes = self.bytes.saturating_add_signed(bytes);
    }
}

/// Why `root` is not usable as a data dir, if it is not: gone, unreadable, or no longer
/// holding the marker it had at start (`dir_id`: an unmounted disk leaves an empty
/// directory of the root filesystem behind, which must not be written to).
fn check_root(root: &Path, dir_id: Option<&str>) -> Option<String> {
    match std::fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Some("the data dir is no longer a directory".into()),
        Err(e) => return Some(format!("the data dir is gone: {e}")),
    }
    if let Err(e) = std::fs::read_dir(root) {
        return Some(format!("the data dir cannot be read: {e}"));
    }
    dir_id.and_then(|id| super::marker::check(root, id))
}

impl StorageActor {
    /// Count an I/O error on dir `i`; enough of them in the window mark it failed.
    pub(super) fn note_io_error(&mut self, i: usize, error: String, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let h = &mut self.health[i];
        if h.failure.is_some() {
            return;
        }
        h.errors.push_back(now);
        while h
            .errors
            .front()
            .is_some_and(|t| now.duration_since(*t) > IO_ERROR_WINDOW)
        {
            h.errors.pop_front();
        }
        tracing::warn!(path = %self.dirs[i].path.display(), %error, recent_errors = h.errors.len(), "I/O error on a data dir");
        if h.errors.len() >= IO_ERRORS_TO_FAIL {
            let reason = format!(
                "{} I/O errors within {} s, the last: {error}",
                h.errors.len(),
                IO_ERROR_WINDOW.as_secs()
            );
            self.fail_dir(i, reason, ctx);
        }
    }

    /// Mark dir `i` failed: no job started from now on reads or writes it, its blocks
    /// leave the counts, and the listener hears of it.
    pub(super) fn fail_dir(&mut self, i: usize, reason: String, _ctx: &mut Context<Self>) {
        if self.health[i].failure.is_some() {
            return;
        }
        let path = self.dirs[i].path.clone();
        error!(path = %path.display(), %reason, blocks = self.health[i].blocks, "data dir failed; serving from the other dirs and refetching its blocks");
        self.health[i].failure = Some(reason.clone());
        let failed: Vec<bool> = self.health.iter().map(|h| h.failure.is_some()).collect();
        self.disks = Disks::new(&self.dirs, self.fsync, &failed);
        if let Some(l) = &self.failure_listener {
            l.do_send(DiskFailed { path, reason });
        }
    }

    /// Check every usable dir's root every [`DIR_CHECK_INTERVAL`], off the actor's thread.
    pub(super) fn watch_dirs(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(DIR_CHECK_INTERVAL, |act, ctx| {
            let disks = act.disks.clone();
            let ids: Vec<Option<String>> = act.health.iter().map(|h| h.dir_id.clone()).collect();
            let task = actix_rt::task::spawn_blocking(move || {
                (0..disks.dirs.len())
                    .filter(|i| disks.usable[*i])
                    .filter_map(|i| {
                        check_root(&disks.dirs[i].data_dir, ids[i].as_deref()).map(|r| (i, r))
                    })
                    .collect::<Vec<_>>()
            });
            ctx.spawn(task.into_actor(act).map(|res, act, ctx| {
                for (i, reason) in res.unwrap_or_default() {
                    act.fail_dir(i, reason, ctx);
                }
            }));
        });
    }

    /// Each dir as status shows it.
    pub(super) fn disk_statuses(&self) -> Vec<DiskStatus> {
        self.dirs
            .iter()
            .zip(&self.health)
            .map(|(d, h)| DiskStatus {
                path: d.path.clone(),
                capacity: d.capacity,
                used: h.bytes,
                blocks: h.blocks,
                state: match (&h.failure, d.read_only) {
                    (Some(_), _) => DiskState::Failed,
                    (None, true) if h.blocks > 0 => DiskState::Draining,
                    (None, true) => DiskState::ReadOnly,
                    (None, false) => DiskState::Ok,
                },
                failure: h.failure.clone(),
            })
            .collect()
    }
}
