//! The crash-safe write, used for every file blocknode creates: write a temp file beside
//! the target, fsync it, rename it over the target, fsync the directory. A temp file left
//! by an error is deleted by a drop guard; one left by a crash is found by its name
//! ([`is_stale_temp_file_name`]: another run's tag) and deleted by the storage actor's
//! background sweep after the next start.
//!
//! With fsync on, a large part in aligned memory (a pooled block buffer, see `bufpool`)
//! is written with `O_DIRECT`: the disk reads it from our buffer instead of the kernel
//! copying it into the page cache first. That copy was the largest item of a 1 MiB
//! PUT's profile (`copy_folio_from_iter_atomic`, once per copy of the block), and a
//! block that is fsynced at once gains nothing from being cached dirty. The pages are
//! then not cached: the next read of the block goes to the disk. A filesystem that
//! refuses `O_DIRECT` (tmpfs) is written through the page cache as before.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::info;

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

/// Smallest part written with `O_DIRECT`: below it the page-cache copy costs less than
/// the direct I/O's set-up, and small blocks are not in aligned buffers anyway.
pub const DIRECT_MIN: usize = 256 << 10;

/// Alignment `O_DIRECT` is given: of the memory, the length and the file offset (4 KiB
/// covers 512-byte and 4 KiB sectors).
pub const DIRECT_ALIGN: usize = 4096;

/// Cleared when a filesystem refuses `O_DIRECT` (`EINVAL` on the first direct write of
/// a file), so the process stops trying and says so once.
static DIRECT_OK: AtomicBool = AtomicBool::new(true);

/// Whether `O_DIRECT` writes are still tried in this process.
pub fn direct_writes_enabled() -> bool {
    DIRECT_OK.load(Ordering::Relaxed)
}

/// Set or clear `O_DIRECT` on an open file.
fn set_direct(f: &File, on: bool) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor this `File` keeps open; no memory passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Write all of `data` at the file's position, `data` at offset `pos`: its aligned
/// prefix with `O_DIRECT` when it qualifies, the rest (and everything, when the
/// filesystem refuses) through the page cache.
fn write_part(f: &mut File, data: &[u8], pos: u64, direct: bool) -> io::Result<()> {
    let prefix = data.len() & !(DIRECT_ALIGN - 1);
    let qualifies = direct
        && data.len() >= DIRECT_MIN
        && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
        && pos.is_multiple_of(DIRECT_ALIGN as u64)
        && DIRECT_OK.load(Ordering::Relaxed);
    let mut done = 0;
    if qualifies {
        match set_direct(f, true) {
            Ok(()) => {
                let res = write_direct(f, &data[..prefix], &mut done);
                set_direct(f, false)?;
                match res {
                    Ok(()) => {}
                    // Refused before a byte was written: this filesystem does not do it.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) && done == 0 => {
                        refuse_direct(&e)
                    }
                    // Refused after a short write left an unaligned position: the rest
                    // goes through the page cache.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => refuse_direct(&e),
            Err(e) => return Err(e),
        }
    }
    f.write_all(&data[done..])
}

/// The `O_DIRECT` writes of `data`, counting what was written in `done`.
fn write_direct(f: &mut File, data: &[u8], done: &mut usize) -> io::Result<()> {
    while *done < data.len() {
        match f.write(&data[*done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn refuse_direct(e: &io::Error) {
    if DIRECT_OK.swap(false, Ordering::Relaxed) {
        info!(error = %e, "the filesystem refuses O_DIRECT; block files are written through the page cache");
    }
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
    let mut pos = 0u64;
    for p in parts {
        // Direct only when the bytes are synced at once anyway: without fsync, the
        // page cache lets the write return before the disk has it.
        write_part(&mut f, p, pos, fsync)?;
        pos += p.len() as u64;
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

/// How many of a file's pages the page cache holds (`mincore` on a mapping of it), of
/// how many it has: for tests of what was or was not cached.
#[cfg(test)]
pub(crate) fn resident_pages(file: &File) -> (usize, usize) {
    let len = file.metadata().expect("fstat").len() as usize;
    if len == 0 {
        return (0, 0);
    }
    // SAFETY: a read-only shared mapping of an open descriptor, unmapped below; the
    // pages are never touched, only asked about.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        addr,
        libc::MAP_FAILED,
        "mmap: {}",
        io::Error::last_os_error()
    );
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` is the mapping just made, `vec` has a byte per 4 KiB page of it.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above, of `len` bytes, no longer used.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(rc, 0, "mincore: {err}");
    (vec.iter().filter(|b| *b & 1 == 1).count(), pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bufpool::PooledBuf;

    #[test]
    fn large_aligned_parts_are_written_direct_and_read_back_whole() {
        // On the checkout's disk (not a tmpfs /tmp, which refuses O_DIRECT).
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        fs::create_dir_all(&target).unwrap();
        let d = tempfile::tempdir_in(&target).unwrap();
        let mut direct_seen = false;
        for (i, len) in [1 << 20, (1 << 20) + 100, (600 << 10) + 3, 4096, 2 << 20]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let mut buf = PooledBuf::with_capacity(len);
            buf.extend_from_slice(&data);
            let bytes = buf.freeze();
            let p = d.path().join(format!("f{i}"));
            write_atomic(&p, &[&bytes], true).unwrap();
            let f = File::open(&p).unwrap();
            let (cached, pages) = resident_pages(&f);
            if len >= DIRECT_MIN && direct_writes_enabled() {
                // The aligned prefix went past the page cache; at most the tail's page
                // (written through it) is cached.
                assert!(
                    cached <= 1,
                    "{len} bytes: {cached} of {pages} pages cached after a direct write"
                );
                direct_seen = true;
            }
            assert!(
                fs::read(&p).unwrap() == data,
                "{len} bytes read back differ"
            );
        }
        // Two parts: the second starts unaligned in the file, so it is written buffered.
        let head = vec![1u8; 10];
        let mut body = PooledBuf::with_capacity(1 << 20);
        body.extend_from_slice(&vec![2u8; 1 << 20]);
        let body = body.freeze();
        let p = d.path().join("two");
        write_atomic(&p, &[&head, &body], true).unwrap();
        let got = fs::read(&p).unwrap();
        assert_eq!(got.len(), 10 + (1 << 20), "two parts: length");
        assert!(
            got[..10] == head[..] && got[10..] == body[..],
            "two parts: bytes"
        );
        if !direct_seen {
            eprintln!(
                "the filesystem under {} refuses O_DIRECT: only the buffered path ran",
                target.display()
            );
        }
    }

    #[test]
    fn without_fsync_or_alignment_writes_go_through_the_page_cache() {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        fs::create_dir_all(&target).unwrap();
        let d = tempfile::tempdir_in(&target).unwrap();
        let mut buf = PooledBuf::with_capacity(1 << 20);
        buf.extend_from_slice(&vec![3u8; 1 << 20]);
        let aligned = buf.freeze();
        // The same bytes one byte off alignment.
        let mut v = vec![0u8; (1 << 20) + 1];
        v[1..].copy_from_slice(&aligned);
        let unaligned = &v[1..];
        assert_ne!(unaligned.as_ptr() as usize % DIRECT_ALIGN, 0);
        for (name, data, fsync) in [
            ("nosync", &aligned[..], false),
            ("unaligned", unaligned, true),
        ] {
            let p = d.path().join(name);
            write_atomic(&p, &[data], fsync).unwrap();
            let (cached, pages) = resident_pages(&File::open(&p).unwrap());
            assert_eq!(
                cached, pages,
                "{name}: written through the page cache, all cached"
            );
            assert!(fs::read(&p).unwrap() == data, "{name}: bytes differ");
        }
    }

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
