//! A block read that never waits for the disk, for the storage actor's own thread.
//!
//! A small block whose directory entries and bytes are in the kernel's caches is read
//! with `openat2(RESOLVE_CACHED)` (the path walk fails with `EAGAIN` instead of reading a
//! directory from disk) and `preadv2(RWF_NOWAIT)` (fails with `EAGAIN` instead of reading
//! the file from disk). That saves the two cross-thread wake-ups of a blocking-pool job
//! (~33 µs each on the development VM), which were most of a 4 KiB GET's server CPU.
//! Only a complete, verified copy is an answer: anything else (a miss, a would-block, a
//! non-file, a rotten copy, an error, a block over [`MAX_NO_WAIT_LEN`]) is [`None`], and
//! the caller queues the ordinary read on the hash's lane, which reports, quarantines
//! and falls back as before. Nothing here writes, renames or deletes.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

/// Largest block file read on the actor's thread. Verifying it there costs its stored
/// checksum (XXH3, about a microsecond at 32 KiB) or, for a file without one, a BLAKE2
/// pass (~1.5 GB/s with AVX2: ~20 µs at 32 KiB), which stays below the two thread
/// wake-ups it saves; larger blocks go to the blocking pool, where hashing them does
/// not hold up the other actors sharing the thread.
pub(crate) const MAX_NO_WAIT_LEN: u64 = 32 << 10;

/// Cleared the first time the kernel or filesystem says it cannot do this (`ENOSYS`:
/// no `openat2` before Linux 5.6; `EINVAL`: no `RESOLVE_CACHED` before 5.12;
/// `EOPNOTSUPP`: a filesystem without `RWF_NOWAIT` reads), so such a node pays one
/// failed call per process, not one per read.
static SUPPORTED: AtomicBool = AtomicBool::new(true);

/// What opening a block file without waiting found.
pub(super) enum NoWaitOpen {
    /// No such file (the path walk ended on a cached negative entry).
    Absent,
    /// A regular file, open, with its size from `fstat` of the descriptor.
    File(File, u64),
    /// Anything else: the walk would block, not a regular file, an error.
    GiveUp,
}

/// The kernel's `struct open_how` (`linux/openat2.h`); `libc::open_how` is
/// non-exhaustive, so it cannot be built field by field.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// Open `path` read-only if every step of its walk is in the dentry cache.
pub(super) fn open(path: &Path) -> NoWaitOpen {
    if !SUPPORTED.load(Ordering::Relaxed) {
        return NoWaitOpen::GiveUp;
    }
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return NoWaitOpen::GiveUp;
    };
    let how = OpenHow {
        // O_NOFOLLOW: a symlink is not a block copy; O_NONBLOCK: a FIFO does not block
        // the open (no effect on regular files).
        flags: (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_CACHED,
    };
    // SAFETY: `c_path` is a NUL-terminated string and `how` an initialised `open_how`
    // whose size is passed with it; both outlive the call, which only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return NoWaitOpen::Absent;
        }
        if unsupported(&e) {
            SUPPORTED.store(false, Ordering::Relaxed);
        }
        return NoWaitOpen::GiveUp;
    }
    let Ok(fd) = i32::try_from(fd) else {
        return NoWaitOpen::GiveUp;
    };
    // SAFETY: `fd` was just returned by a successful `openat2` and is owned by nothing
    // else; the `File` closes it.
    let file = unsafe { File::from_raw_fd(fd) };
    match file.metadata() {
        Ok(m) if m.is_file() => NoWaitOpen::File(file, m.len()),
        _ => NoWaitOpen::GiveUp,
    }
}

/// The whole file of `len` bytes if the page cache holds all of it, else `None`.
pub(super) fn read(file: &File, len: u64) -> Option<Bytes> {
    if len > MAX_NO_WAIT_LEN {
        return None;
    }
    let len = len as usize;
    // One byte more than `fstat` said: a read that fills it means the file is longer
    // than its size said (it changed under us), and the lane's read takes over.
    let mut buf = vec![0u8; len + 1];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` points into `buf`, which lives past the call and has `iov_len`
    // writable bytes; the descriptor is open for the call's duration.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    if n < 0 {
        if unsupported(&io::Error::last_os_error()) {
            SUPPORTED.store(false, Ordering::Relaxed);
        }
        return None;
    }
    // A short read under RWF_NOWAIT may be a partly cached file: only the exact length
    // (end of file right after it) is a whole copy.
    if n as usize != len {
        return None;
    }
    buf.truncate(len);
    Some(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_synced(path: &Path, data: &[u8]) {
        let mut f = File::create(path).expect("create");
        f.write_all(data).expect("write");
        f.sync_all().expect("sync");
    }

    #[test]
    fn a_cached_file_is_read_whole_and_an_absent_one_is_absent() {
        let d = tempfile::tempdir().expect("temp dir");
        let path = d.path().join("f");
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        write_synced(&path, &data);
        let NoWaitOpen::File(file, len) = open(&path) else {
            panic!("a file just written should open without waiting");
        };
        assert_eq!(len, 4096);
        let got = read(&file, len).expect("its pages are cached");
        assert!(got[..] == data[..], "bytes read back differ");
        // A name never looked up has no negative entry yet: the walk would have to read
        // the directory, so it gives up (or, on a kernel that had it cached, is absent).
        for name in ["absent", "no/such/file"] {
            let path = d.path().join(name);
            assert!(!matches!(open(&path), NoWaitOpen::File(..)), "{name}");
            assert!(std::fs::metadata(&path).is_err(), "{name} is absent");
            assert!(
                matches!(open(&path), NoWaitOpen::Absent),
                "{name}: looked up once, its negative entry answers without waiting"
            );
        }
    }

    #[test]
    fn non_files_and_large_files_give_up_without_blocking() {
        let d = tempfile::tempdir().expect("temp dir");
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).expect("mkdir");
        assert!(matches!(open(&dir), NoWaitOpen::GiveUp), "a directory");
        let target = d.path().join("target");
        write_synced(&target, b"abc");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(matches!(open(&link), NoWaitOpen::GiveUp), "a symlink");
        let fifo = d.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(open(&fifo), NoWaitOpen::GiveUp), "a FIFO");
        let big = d.path().join("big");
        write_synced(&big, &vec![7u8; MAX_NO_WAIT_LEN as usize + 1]);
        let NoWaitOpen::File(file, len) = open(&big) else {
            panic!("a large regular file still opens");
        };
        assert!(
            read(&file, len).is_none(),
            "over the limit: the pool reads it"
        );
    }

    #[test]
    fn a_file_whose_pages_were_dropped_is_not_read_without_waiting() {
        // On a disk filesystem, not a tmpfs `/tmp` whose pages are its only copy.
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&target).expect("target dir");
        let d = tempfile::tempdir_in(&target).expect("temp dir");
        let path = d.path().join("f");
        write_synced(&path, &[9u8; 8192]);
        let f = File::open(&path).expect("open");
        // SAFETY: an open descriptor; the call only advises the kernel.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "fadvise");
        let NoWaitOpen::File(file, len) = open(&path) else {
            panic!("its directory entry is still cached");
        };
        let (resident, _) = crate::fsutil::resident_pages(&file);
        if resident == 2 {
            // A filesystem that keeps its pages whatever the advice (tmpfs, some overlay
            // set-ups): nothing was dropped, so there is no uncached read to refuse.
            eprintln!(
                "skipped: the filesystem under {} kept the pages after DONTNEED",
                target.display()
            );
            return;
        }
        let got = read(&file, len);
        assert!(
            got.is_none(),
            "{resident} of 2 pages cached after DONTNEED: RWF_NOWAIT must not read the file"
        );
        std::fs::read(&path).expect("an ordinary read brings them back");
        assert_eq!(read(&file, len).map(|b| b.len()), Some(8192));
    }
}
