//! Reused buffers for block bytes of 1 MiB and more.
//!
//! The node pins glibc's mmap threshold at 1 MiB (so freed block buffers go back to the
//! OS, see `src/main.rs`), which makes every buffer of a large block a fresh mmap: the
//! kernel faults in and zeroes each of its pages on first touch and unmaps them on free.
//! A profile of 1 MiB GETs showed a fifth of the node's CPU there (`clear_page_erms`,
//! `exc_page_fault`, `unmap_page_range`). The buffers that are allocated once per block
//! (a file read, a PUT body, a payload received from a peer) are taken from here
//! instead, and a freed one is kept for the next block while the idle ones total at
//! most [`IDLE_MAX_BYTES`], so the process keeps at most that much more resident than
//! without the pool. Buffers are grouped by capacity, a power of two from
//! [`MIN_POOLED`] to [`MAX_POOLED`]; smaller and larger ones are plain allocations.
//!
//! The pool is process-wide (a mutex per size class, held only to push or pop a
//! buffer): buffers are freed on whatever thread drops the last `Bytes` of a block.
//!
//! A pooled buffer's bytes start at a [`ALIGN`]-aligned address (the allocation has
//! [`ALIGN`] bytes of room for a leading pad), so the crash-safe write can hand them
//! to the disk with `O_DIRECT`, which needs aligned memory (see `fsutil`).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::{BufMut, Bytes};

/// Smallest pooled capacity: below the mmap threshold glibc's arenas already reuse
/// memory without faulting it in again.
pub const MIN_POOLED: usize = 1 << 20;
/// Largest pooled capacity: the largest `max_block_size` accepted.
pub const MAX_POOLED: usize = 16 << 20;
/// Most bytes of idle buffers kept: 16 one-MiB blocks (the bench's default
/// concurrency) or one 16 MiB block, each with its aligning room. This is what the pool
/// may add to the RSS.
pub const IDLE_MAX_BYTES: usize = 16 * (MIN_POOLED + ALIGN);

/// Alignment of a pooled buffer's first byte: the 4 KiB that `O_DIRECT` asks of memory
/// on every common disk (512-byte sectors need less).
pub const ALIGN: usize = 4096;

/// Size classes: 1, 2, 4, 8 and 16 MiB.
const CLASSES: usize = (MAX_POOLED.trailing_zeros() - MIN_POOLED.trailing_zeros() + 1) as usize;

/// The idle buffers of each class and their total capacity.
struct Pool {
    classes: [Mutex<Vec<Vec<u8>>>; CLASSES],
    idle_bytes: AtomicUsize,
}

/// The node's pool.
static POOL: Pool = Pool::new();

/// The class of a buffer of exactly `cap` bytes of capacity, if it is pooled.
fn class_of_capacity(cap: usize) -> Option<usize> {
    (cap.is_power_of_two() && (MIN_POOLED..=MAX_POOLED).contains(&cap))
        .then(|| (cap.trailing_zeros() - MIN_POOLED.trailing_zeros()) as usize)
}

/// The class of an allocation of `cap` bytes: a class's capacity plus the room for
/// the aligning pad.
fn class_of_allocation(cap: usize) -> Option<usize> {
    cap.checked_sub(ALIGN).and_then(class_of_capacity)
}

/// The pad that puts the first byte of `buf`'s data at an [`ALIGN`]-aligned address.
fn pad_of(buf: &[u8]) -> usize {
    buf.as_ptr().align_offset(ALIGN)
}

/// The capacity a buffer for `len` bytes is given: the next pooled class when `len`
/// needs an mmapped buffer anyway, else `len` itself.
fn capacity_for(len: usize) -> usize {
    if len > MIN_POOLED / 2 && len <= MAX_POOLED {
        len.next_power_of_two().max(MIN_POOLED)
    } else {
        len
    }
}

/// Bytes of idle buffers the node's pool holds now.
pub fn idle_bytes() -> usize {
    POOL.idle_bytes.load(Ordering::Relaxed)
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            classes: [const { Mutex::new(Vec::new()) }; CLASSES],
            idle_bytes: AtomicUsize::new(0),
        }
    }

    /// An empty buffer with room for at least `len` bytes, reused when one is idle, and
    /// the length of its leading pad (its data starts aligned; 0 for unpooled sizes).
    fn take(&self, len: usize) -> (Vec<u8>, usize) {
        let cap = capacity_for(len);
        let Some(class) = class_of_capacity(cap) else {
            return (Vec::with_capacity(cap), 0);
        };
        let reused = self.classes[class]
            .lock()
            .map(|mut idle| idle.pop())
            .unwrap_or(None);
        let mut buf = match reused {
            Some(mut buf) => {
                self.idle_bytes.fetch_sub(buf.capacity(), Ordering::Relaxed);
                buf.clear();
                buf
            }
            None => Vec::with_capacity(cap + ALIGN),
        };
        let pad = pad_of(&buf);
        buf.resize(pad, 0);
        (buf, pad)
    }

    /// Keep `buf` for a later [`Pool::take`] if it is of a pooled class and the idle
    /// buffers stay within [`IDLE_MAX_BYTES`]; else free it.
    fn give_back(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        let Some(class) = class_of_allocation(cap) else {
            return;
        };
        let reserved = self
            .idle_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |idle| {
                (idle + cap <= IDLE_MAX_BYTES).then_some(idle + cap)
            });
        if reserved.is_err() {
            return;
        }
        match self.classes[class].lock() {
            Ok(mut idle) => idle.push(buf),
            // A thread panicked while holding the lock: stop pooling this class.
            Err(_) => {
                self.idle_bytes.fetch_sub(cap, Ordering::Relaxed);
            }
        }
    }
}

/// A block buffer that goes back to the pool when dropped. Fill it by appending (it is
/// a [`BufMut`], or [`PooledBuf::extend_from_slice`]), then [`PooledBuf::freeze`] it
/// into `Bytes` (no copy).
pub struct PooledBuf {
    /// The leading pad, then the data.
    buf: Vec<u8>,
    /// Length of the pad: the data start at `buf[pad]`.
    pad: usize,
    pool: &'static Pool,
}

impl PooledBuf {
    /// An empty buffer with room for at least `len` bytes.
    pub fn with_capacity(len: usize) -> PooledBuf {
        Self::with_capacity_in(&POOL, len)
    }

    fn with_capacity_in(pool: &'static Pool, len: usize) -> PooledBuf {
        let (buf, pad) = pool.take(len);
        PooledBuf { buf, pad, pool }
    }

    /// Append `data` (the buffer may grow past its capacity; a grown buffer is no
    /// longer aligned or pooled, and is simply freed at the end).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pad
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, shared; the buffer returns to the pool when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        if class_of_allocation(self.buf.capacity()).is_none() && self.pad == 0 {
            let mut me = std::mem::ManuallyDrop::new(self);
            return Bytes::from(std::mem::take(&mut me.buf));
        }
        Bytes::from_owner(self)
    }
}

// SAFETY: every method forwards to `Vec<u8>`'s implementation, which only appends past
// the pad (the pad is never handed out as spare capacity).
unsafe impl BufMut for PooledBuf {
    fn remaining_mut(&self) -> usize {
        self.buf.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (`cnt` bytes of `chunk_mut` initialised) is the
        // same one `Vec`'s `advance_mut` needs, and `chunk_mut` is `Vec`'s.
        unsafe { self.buf.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.buf.chunk_mut()
    }
}

impl std::fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuf")
            .field("len", &self.len())
            .field("capacity", &self.buf.capacity())
            .finish()
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.pad..]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Read a whole file into a pooled buffer (as `std::fs::read`, which would allocate a
/// fresh one; `File::read_to_end` writes into the spare capacity without zeroing it).
pub fn read_file(path: &Path) -> std::io::Result<Bytes> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
    read_open_file(&mut file, len)
}

/// Read the rest of an open file into a pooled buffer sized for `len_hint` bytes (the
/// size its caller already has from `fstat`; the file may still turn out longer or
/// shorter, and every byte up to its end is read).
pub fn read_open_file(file: &mut std::fs::File, len_hint: usize) -> std::io::Result<Bytes> {
    let mut buf = PooledBuf::with_capacity(len_hint);
    // Appends past the pad.
    file.read_to_end(&mut buf.buf)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_one_to_sixteen_mib() {
        assert_eq!(class_of_capacity(1 << 20), Some(0));
        assert_eq!(class_of_capacity(16 << 20), Some(4));
        assert_eq!(class_of_capacity((1 << 20) + 1), None);
        assert_eq!(class_of_capacity(512 << 10), None);
        assert_eq!(class_of_capacity(32 << 20), None);
        assert_eq!(capacity_for(4096), 4096);
        assert_eq!(capacity_for(600 << 10), 1 << 20);
        assert_eq!(capacity_for(1 << 20), 1 << 20);
        assert_eq!(capacity_for((1 << 20) + 1), 2 << 20);
        assert_eq!(capacity_for(17 << 20), 17 << 20);
    }

    #[test]
    fn freed_buffers_are_reused_within_the_idle_limit() {
        // A pool of its own: the node's is shared with every other test of the process.
        static TEST_POOL: Pool = Pool::new();
        let idle = || TEST_POOL.idle_bytes.load(Ordering::Relaxed);
        let mut a = PooledBuf::with_capacity_in(&TEST_POOL, 3 << 20);
        a.extend_from_slice(&[5u8; 100]);
        let ptr = a.as_ref().as_ptr();
        let bytes = a.freeze();
        let part = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(idle(), 0, "a clone still holds the buffer");
        drop(part);
        assert_eq!(idle(), (4 << 20) + ALIGN, "the last clone returns it");
        let b = PooledBuf::with_capacity_in(&TEST_POOL, 4 << 20);
        assert_eq!(b.as_ref().as_ptr(), ptr, "the idle buffer is taken again");
        assert!(b.is_empty(), "a reused buffer starts empty");
        drop(b);

        // Never more than the limit idle: the buffers past it are freed.
        let many: Vec<_> = (0..(IDLE_MAX_BYTES >> 20) + 4)
            .map(|_| PooledBuf::with_capacity_in(&TEST_POOL, 1 << 20))
            .collect();
        drop(many);
        assert!(
            idle() <= IDLE_MAX_BYTES && IDLE_MAX_BYTES - idle() < MIN_POOLED + ALIGN,
            "idle buffers fill the limit, no more: {} of {IDLE_MAX_BYTES}",
            idle()
        );

        // Small and huge buffers are plain allocations, frozen without an owner.
        let mut small = PooledBuf::with_capacity_in(&TEST_POOL, 4096);
        small.extend_from_slice(b"abc");
        assert_eq!(&small.freeze()[..], b"abc");
    }

    #[test]
    fn pooled_buffers_start_aligned_new_reused_and_frozen() {
        static TEST_POOL: Pool = Pool::new();
        for round in 0..3 {
            for len in [600 << 10, 1 << 20, (3 << 20) + 5, 16 << 20] {
                let mut b = PooledBuf::with_capacity_in(&TEST_POOL, len);
                assert!(b.is_empty(), "round {round}, {len}: starts empty");
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                b.extend_from_slice(&data[..len / 2]);
                let mut rest = &data[len / 2..];
                while !rest.is_empty() {
                    // As `read_buf` fills it: through `BufMut`.
                    let n = rest.len().min(65536);
                    b.put_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(
                    b.len(),
                    len,
                    "round {round}, {len}: length excludes the pad"
                );
                let bytes = b.freeze();
                assert_eq!(
                    bytes.as_ptr() as usize % ALIGN,
                    0,
                    "round {round}, {len}: aligned"
                );
                assert!(bytes[..] == data[..], "round {round}, {len}: bytes differ");
            }
        }
        assert!(
            TEST_POOL.idle_bytes.load(Ordering::Relaxed) > 0,
            "buffers were pooled"
        );
        let mut small = PooledBuf::with_capacity_in(&TEST_POOL, 4096);
        small.put_slice(b"xyz");
        assert_eq!(&small.freeze()[..], b"xyz", "unpooled sizes have no pad");
    }

    #[test]
    fn read_file_reads_every_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        for len in [0usize, 10, (1 << 20) - 1, 1 << 20, (1 << 20) + 7] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &data).expect("write");
            let read = read_file(&path).expect("read");
            assert_eq!(read.len(), len);
            assert!(read[..] == data[..], "{len} bytes read back differ");
        }
        assert!(read_file(&dir.path().join("absent")).is_err());
    }
}
