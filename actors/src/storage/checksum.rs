//! The stored checksum of a block file: a seeded XXH3-64 of the file's bytes as stored
//! (the zstd frame of a compressed copy, the plain bytes otherwise), kept in the file's
//! extended attribute [`XATTR_NAME`]. It is set on the temp file before that file is
//! fsynced and renamed, so the bytes and their checksum become visible, and durable,
//! together.
//!
//! Why it exists: BLAKE2 of the plain bytes was half of a local 1 MiB GET's CPU, and a
//! local read only has to tell whether the disk gave back what was written, which
//! XXH3 does for a small fraction of the cost. It catches what goes wrong on a disk by
//! accident: rot, a torn or truncated file, and a valid file under another block's name
//! or form (the seed is made of the block's name and whether the copy is compressed).
//! It does not catch a deliberate rewrite of both the bytes and the attribute: only
//! BLAKE2 can, so scrub, every write and every byte that arrives from the network keep
//! BLAKE2.
//!
//! The value is one format byte ([`FORMAT_XXH3_64`]) then the checksum, 8 bytes
//! little-endian. A value of another length or format (a newer version's, or garbled)
//! is not understood: the read falls back to BLAKE2, as for a file without the
//! attribute, so an attribute nobody can read never costs a good copy.
//!
//! A filesystem that refuses user xattrs (`ENOTSUP`: tmpfs on older kernels, some
//! network and FUSE filesystems) is remembered for the process at the first refusal;
//! from then on no attribute is set or read and every local read uses BLAKE2.
//!
//! Public so that the bench's floor measures the node's own checksum and attribute calls.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::warn;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::hash::Hash;

/// The extended attribute holding a block file's checksum.
pub const XATTR_NAME: &CStr = c"user.blocknode.checksum";
/// Format byte of a seeded XXH3-64 value.
pub const FORMAT_XXH3_64: u8 = 1;
/// Length of a value in the [`FORMAT_XXH3_64`] format.
pub const VALUE_LEN: usize = 9;

/// An attribute value.
pub type Value = [u8; VALUE_LEN];

/// Set once a filesystem refused a user xattr; a process-wide setting, not domain state.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Kept apart from the name's bits, so that a plain file renamed `.zst` (or the
/// reverse) under the same name does not match.
const COMPRESSED_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn seed(hash: &Hash, compressed: bool) -> u64 {
    let b = hash.as_bytes();
    let mut s = if compressed { COMPRESSED_SEED } else { 0 };
    for word in b.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        // Every byte of the name counts, so two names that share a prefix differ.
        s = s.rotate_left(17) ^ u64::from_le_bytes(w);
    }
    s
}

/// The attribute value of a copy of block `hash` whose file holds `stored`.
pub fn value(hash: &Hash, compressed: bool, stored: &[u8]) -> Value {
    let sum = xxh3_64_with_seed(stored, seed(hash, compressed));
    let mut v = [0u8; VALUE_LEN];
    v[0] = FORMAT_XXH3_64;
    v[1..].copy_from_slice(&sum.to_le_bytes());
    v
}

fn is_refusal(e: &io::Error) -> bool {
    // ENOTSUP and EOPNOTSUPP are one number on Linux; both are named for other kernels.
    matches!(e.raw_os_error(), Some(c) if c == libc::ENOTSUP || c == libc::EOPNOTSUPP)
}

fn remember_refusal(e: &io::Error) {
    if !REFUSED.swap(true, Ordering::Relaxed) {
        warn!(error = %e, "the data dir's filesystem refuses user xattrs: block files get no stored checksum and every local read is verified with BLAKE2");
    }
}

/// Store `value` on `file` (a block file being written). A filesystem that refuses user
/// xattrs is not an error: it is remembered and the file has no checksum. Any other
/// failure (no space for the attribute, an I/O error) fails the write, as a failure to
/// write its bytes would.
pub fn set(file: &File, value: &Value) -> io::Result<()> {
    if REFUSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    // SAFETY: the name is NUL-terminated, `value` is `VALUE_LEN` readable bytes, and
    // the descriptor is open for the call; the kernel copies both and keeps neither.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            XATTR_NAME.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if is_refusal(&e) {
        remember_refusal(&e);
        return Ok(());
    }
    Err(e)
}

/// The value stored on `file` if it is one this version understands.
pub fn get(file: &File) -> Option<Value> {
    if REFUSED.load(Ordering::Relaxed) {
        return None;
    }
    let mut buf = [0u8; VALUE_LEN];
    // SAFETY: the name is NUL-terminated, `buf` has `VALUE_LEN` writable bytes and the
    // kernel writes at most that many; the descriptor is open for the call.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            XATTR_NAME.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        // ENODATA: no attribute (a file from before checksums); ERANGE: a longer value
        // than any this version writes. Both fall back to BLAKE2.
        let e = io::Error::last_os_error();
        if is_refusal(&e) {
            remember_refusal(&e);
        }
        return None;
    }
    (n as usize == VALUE_LEN && buf[0] == FORMAT_XXH3_64).then_some(buf)
}

/// What the stored checksum says of a copy just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The bytes are the ones written under this name and form.
    Match,
    /// The attribute is understood and disagrees with the bytes.
    Mismatch,
    /// No attribute, one this version does not understand, or no xattrs here: the
    /// checksum says nothing.
    Unknown,
}

/// Check the bytes `stored`, read from `file`, of a copy of block `hash`.
pub fn check(file: &File, hash: &Hash, compressed: bool, stored: &[u8]) -> Check {
    match get(file) {
        None => Check::Unknown,
        Some(v) if v == value(hash, compressed, stored) => Check::Match,
        Some(_) => Check::Mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::blake2sum;

    #[test]
    fn the_value_depends_on_the_bytes_the_name_and_the_form() {
        let h = blake2sum(b"a");
        let v = value(&h, false, b"bytes");
        assert_eq!(v[0], FORMAT_XXH3_64, "format byte first");
        assert_eq!(v, value(&h, false, b"bytes"), "the value is deterministic");
        assert_ne!(
            v,
            value(&h, false, b"bytez"),
            "a changed byte must change it"
        );
        assert_ne!(v, value(&h, true, b"bytes"), "the form must change it");
        let mut other = h;
        other.0[31] ^= 1;
        assert_ne!(
            v,
            value(&other, false, b"bytes"),
            "the last byte of the name must change it"
        );
    }

    #[test]
    fn only_enotsup_counts_as_a_filesystem_refusing_xattrs() {
        assert!(is_refusal(&io::Error::from_raw_os_error(libc::ENOTSUP)));
        assert!(is_refusal(&io::Error::from_raw_os_error(libc::EOPNOTSUPP)));
        for code in [libc::ENOSPC, libc::EIO, libc::ENODATA, libc::ERANGE] {
            assert!(
                !is_refusal(&io::Error::from_raw_os_error(code)),
                "errno {code} is not a refusal"
            );
        }
    }
}
