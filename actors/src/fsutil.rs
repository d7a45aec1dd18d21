//! The crash-safe write, used for every file blocknode creates: write a temp file beside
//! the target, fsync it, rename it over the target, fsync the directory. A temp file left
//! by an error is deleted by a drop guard; one left by a crash is found by its name
//! ([`is_stale_temp_file_name`]: another run's tag) and deleted by the storage actor's
//! background sweep after the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Marker in a temp file's name: `<final name>.tmp.<8 hex: run tag><8 hex: random>`.
pub const TEMP_MARKER: &str = ".tmp.";

/// A random tag drawn once per process and put in the name of every temp file it
/// makes, so that a background sweep can tell a live write's temp file (this run's tag)
/// from one a crashed run left behind, without stopping writes. A constant once drawn.
pub fn run_tag() -> u32 {
    static TAG: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *TAG.get_or_init(rand::random::<u32>)
}

/// Whether a file name is one of our temp files.
pub fn is_temp_file_name(name: &str) -> bool {
    name.contains(TEMP_MARKER)
}

/// Whether a file name is a temp file that no write of this process can still be
/// using: a temp file whose run tag is not this run's (or that has no readable tag).
pub fn is_stale_temp_file_name(name: &str) -> bool {
    let Some(i) = name.rfind(TEMP_MARKER) else {
        return false;
    };
    let suffix = &name[i + TEMP_MARKER.len()..];
    let tag = suffix
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok());
    tag != Some(run_tag())
}

/// Deletes the temp file unless [`TempGuard::disarm`] was called.
struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Atomically replace `path` with the concatenation of `parts`.
///
/// With `fsync`, the data is on disk before the rename and the rename is on disk before
/// this returns; without it, a crash may leave the old file or nothing, but never a
/// partial new one under the final name (rename is atomic).
pub fn write_atomic(path: &Path, parts: &[&[u8]], fsync: bool) -> io::Result<()> {
    write_atomic_with(path, parts, fsync, |_| Ok(()))
}

/// [`write_atomic`], with `before_sync` called on the temp file once its bytes are
/// written and before it is fsynced and renamed: what it sets on the file (an extended
/// attribute) is then durable and visible with the bytes. Its error fails the write.
pub fn write_atomic_with(
    path: &Path,
    parts: &[&[u8]],
    fsync: bool,
    before_sync: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        "{name}{TEMP_MARKER}{:08x}{:08x}",
        run_tag(),
        rand::random::<u32>()
    ));
    let mut guard = TempGuard {
        path: Some(tmp.clone()),
    };
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    for p in parts {
        f.write_all(p)?;
    }
    before_sync(&f)?;
    if fsync {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&tmp, path)?;
    guard.disarm();
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsync a directory, so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether an I/O error means "no space left" (ENOSPC or EDQUOT).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, &[b"ab", b"cd"], true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"abcd");
        write_atomic(&p, &[b"x"], false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["f".to_string()]);
    }

    #[test]
    fn an_error_before_the_sync_fails_the_write_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let err = write_atomic_with(&p, &[b"ab"], true, |_| Err(io::Error::other("refused")))
            .expect_err("the hook's error must fail the write");
        assert_eq!(err.to_string(), "refused");
        let left: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "no file or temp file may be left: {left:?}"
        );
        let mut seen = 0;
        write_atomic_with(&p, &[b"ab", b"cd"], false, |f| {
            seen = f.metadata()?.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 4, "the hook sees every byte already written");
        assert_eq!(fs::read(&p).unwrap(), b"abcd");
    }

    #[test]
    fn failed_write_removes_its_temp_file() {
        let d = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp file is written.
        let target = d.path().join("t");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inner"), b"1").unwrap();
        assert!(write_atomic(&target, &[b"data"], false).is_err());
        let temps = fs::read_dir(d.path())
            .unwrap()
            .filter(|e| is_temp_file_name(&e.as_ref().unwrap().file_name().to_string_lossy()))
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn only_other_runs_temp_files_are_stale() {
        // A write of this run leaves a temp name with this run's tag while it runs.
        let live = format!("x{TEMP_MARKER}{:08x}0000abcd", run_tag());
        assert!(is_temp_file_name(&live));
        assert!(!is_stale_temp_file_name(&live));
        let other = format!("x{TEMP_MARKER}{:08x}0000abcd", run_tag().wrapping_add(1));
        assert!(is_stale_temp_file_name(&other));
        assert!(is_stale_temp_file_name(&format!("x{TEMP_MARKER}zz")));
        assert!(!is_stale_temp_file_name("0123abcd"));
    }
}
