//! The block model: [`DataBlock`] (plain or zstd-compressed bytes) and [`VerifiedBlock`].
//!
//! A block's name is the [`blake2sum`] of its *plain* bytes. Verification of either variant
//! recomputes that hash (decompressing first when needed); zstd's own frame checksum is
//! only a first line of defence, never trusted alone. A [`VerifiedBlock`] can only be made
//! by hashing or verifying, so code that holds one may write it without hashing it again
//! ("hash each byte once per node").
//!
//! A [`DataBlock`] from a local read of the storage actor is verified too, but possibly
//! by the checksum stored with its file rather than by BLAKE2 (see the storage actor's
//! `ReadBlock`); it may be served as it is, yet it never becomes a [`VerifiedBlock`]
//! without hashing, and a peer that receives it hashes it.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::budget::Charge;
use crate::hash::{blake2sum, Hash};

/// Why a block's bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("data does not match hash {expected}: it hashes to {actual}")]
    HashMismatch { expected: Hash, actual: Hash },
    #[error("compressed data of block {hash} does not decompress: {reason}")]
    BadCompression { hash: Hash, reason: String },
    #[error("block {hash} decompresses to more than {limit} bytes")]
    TooLarge { hash: Hash, limit: usize },
}

/// Upper bound on a decompressed block before the node sets its own: the largest
/// `max_block_size` the config accepts.
pub const MAX_DECOMPRESSED_LEN: usize = 256 << 20;

/// The bound in force on decompressed blocks. A process-wide setting rather than domain
/// state: the node sets it once at start from `max_block_size` ([`set_max_plain_len`]),
/// so a crafted zstd frame cannot make any path (a write's verification, a read, a
/// peer's reply) allocate more than one legitimate block.
static MAX_PLAIN_LEN: AtomicUsize = AtomicUsize::new(MAX_DECOMPRESSED_LEN);

/// Bound decompression to `len` bytes (clamped to [`MAX_DECOMPRESSED_LEN`]); called once
/// by the node at start with its `max_block_size`.
pub fn set_max_plain_len(len: usize) {
    MAX_PLAIN_LEN.store(len.min(MAX_DECOMPRESSED_LEN), Ordering::Relaxed);
}

/// The bound in force on decompressed blocks.
pub fn max_plain_len() -> usize {
    MAX_PLAIN_LEN.load(Ordering::Relaxed)
}

/// The bytes of one block as stored on disk and sent between nodes.
#[derive(Clone, PartialEq, Eq)]
pub enum DataBlock {
    /// The block's own bytes.
    Plain(Bytes),
    /// A zstd frame (with content checksum) of the block's bytes.
    Compressed(Bytes),
}

impl std::fmt::Debug for DataBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataBlock::Plain(b) => write!(f, "Plain({} bytes)", b.len()),
            DataBlock::Compressed(b) => write!(f, "Compressed({} bytes)", b.len()),
        }
    }
}

impl DataBlock {
    /// Build a block from plain bytes. With `Some(level)` the data is zstd-compressed
    /// (frame checksum on) and the compressed form is kept only when it is smaller.
    /// A block of at least [`SAMPLE_MIN_LEN`] is first judged by a sample
    /// ([`looks_compressible`]): random or already-compressed data is stored plain
    /// without compressing all of it.
    pub fn from_buffer(data: Bytes, level: Option<i32>) -> DataBlock {
        if let Some(level) = level {
            if !looks_compressible(&data, level) {
                return DataBlock::Plain(data);
            }
            if let Ok(c) = compress(&data, level) {
                if c.len() < data.len() {
                    return DataBlock::Compressed(Bytes::from(c));
                }
            }
        }
        DataBlock::Plain(data)
    }

    /// The bytes as stored (compressed or not).
    pub fn inner_buffer(&self) -> &Bytes {
        match self {
            DataBlock::Plain(b) | DataBlock::Compressed(b) => b,
        }
    }

    /// Whether this is the compressed variant.
    pub fn is_compressed(&self) -> bool {
        matches!(self, DataBlock::Compressed(_))
    }

    /// Check that the plain bytes hash to `hash`, for both variants.
    pub fn verify(&self, hash: &Hash) -> Result<(), BlockError> {
        match self {
            DataBlock::Plain(b) => check(hash, b),
            DataBlock::Compressed(c) => check(hash, &decompress(hash, c)?),
        }
    }

    /// The plain bytes without hashing them: only for a block the storage actor has just
    /// verified, by BLAKE2 or by the file's stored checksum (a compressed block still
    /// has its zstd frame checksum checked).
    pub fn into_plain_verified(self, hash: &Hash) -> Result<Bytes, BlockError> {
        match self {
            DataBlock::Plain(b) => Ok(b),
            DataBlock::Compressed(c) => Ok(Bytes::from(decompress(hash, &c)?)),
        }
    }

    /// Check the block and return its plain bytes (decompressed once).
    pub fn verify_get(self, hash: &Hash) -> Result<Bytes, BlockError> {
        match self {
            DataBlock::Plain(b) => check(hash, &b).map(|_| b),
            DataBlock::Compressed(c) => {
                let plain = decompress(hash, &c)?;
                check(hash, &plain)?;
                Ok(Bytes::from(plain))
            }
        }
    }
}

fn check(expected: &Hash, plain: &[u8]) -> Result<(), BlockError> {
    let actual = blake2sum(plain);
    if actual == *expected {
        Ok(())
    } else {
        Err(BlockError::HashMismatch {
            expected: *expected,
            actual,
        })
    }
}

/// Blocks shorter than this are compressed whole: the sample would be most of them.
pub const SAMPLE_MIN_LEN: usize = 64 << 10;
/// Bytes taken from each of a block's start, middle and end for the sample.
const SAMPLE_PIECE: usize = 4 << 10;
/// A sample whose compressed size is above this share of it (in 1/64ths: 62/64,
/// a saving under about 3%) marks the block as not worth compressing. The stored copy
/// would barely shrink, while every read of it would pay a decompression.
const SAMPLE_KEEP_BELOW_64THS: usize = 62;

/// Whether a block seems worth compressing, judged by compressing 12 KiB taken from its
/// start, middle and end (a few per cent of the cost of compressing 1 MiB). Short
/// blocks are always tried whole.
pub fn looks_compressible(data: &[u8], level: i32) -> bool {
    if data.len() < SAMPLE_MIN_LEN {
        return true;
    }
    let mid = data.len() / 2 - SAMPLE_PIECE / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE_PIECE);
    for start in [0, mid, data.len() - SAMPLE_PIECE] {
        sample.extend_from_slice(&data[start..start + SAMPLE_PIECE]);
    }
    match zstd::bulk::compress(&sample, level) {
        Ok(c) => c.len() * 64 < sample.len() * SAMPLE_KEEP_BELOW_64THS,
        // A compressor that fails on the sample would fail on the block too.
        Err(_) => false,
    }
}

fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(true)?;
    c.compress(data)
}

/// Longest zstd frame header (magic, descriptor, window, dictionary id, content size):
/// reading this many bytes of a `.zst` file is enough to learn the plain length.
pub const ZSTD_MAX_FRAME_HEADER: usize = 18;

/// The plain length a zstd frame declares in its header, if it declares one (frames made
/// by [`DataBlock::from_buffer`] always do: the compressor knows the input size). Reads
/// nothing past the header and verifies nothing; `None` for a prefix that is not a frame
/// header.
pub fn zstd_declared_len(header: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(header)
        .ok()
        .flatten()
}

fn decompress(hash: &Hash, data: &[u8]) -> Result<Vec<u8>, BlockError> {
    decompress_bounded(hash, data, max_plain_len())
}

/// Decompress a zstd frame into at most `limit` bytes. The buffer grows as data comes
/// (a frame's declared content size is only a hint for the first allocation, itself
/// bounded), so a lying frame costs at most `limit + 1` bytes.
fn decompress_bounded(hash: &Hash, data: &[u8], limit: usize) -> Result<Vec<u8>, BlockError> {
    let bad = |e: std::io::Error| BlockError::BadCompression {
        hash: *hash,
        reason: e.to_string(),
    };
    let too_large = || BlockError::TooLarge { hash: *hash, limit };
    let declared = zstd::zstd_safe::get_frame_content_size(data).ok().flatten();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let dec = zstd::stream::read::Decoder::new(data).map_err(bad)?;
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    // One byte past the limit tells "too large" apart from "exactly at the limit".
    dec.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// A block whose bytes are known to match its hash: made only by [`VerifiedBlock::hash_plain`]
/// (which computes the hash) or [`VerifiedBlock::verify`] (which checks it). Trust in
/// bytes is carried by this type: code that holds one writes it without hashing again,
/// and nothing decoded from the network or read raw from a disk can be one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBlock {
    hash: Hash,
    data: DataBlock,
    plain_len: usize,
}

impl VerifiedBlock {
    /// Hash plain bytes and build the block (compressed when `level` is set and it helps).
    pub fn hash_plain(plain: Bytes, level: Option<i32>) -> VerifiedBlock {
        let hash = blake2sum(&plain);
        let plain_len = plain.len();
        VerifiedBlock {
            hash,
            data: DataBlock::from_buffer(plain, level),
            plain_len,
        }
    }

    /// Verify `data` against `hash`.
    pub fn verify(hash: Hash, data: DataBlock) -> Result<VerifiedBlock, BlockError> {
        let plain_len = match &data {
            DataBlock::Plain(b) => {
                check(&hash, b)?;
                b.len()
            }
            DataBlock::Compressed(c) => {
                let plain = decompress(&hash, c)?;
                check(&hash, &plain)?;
                plain.len()
            }
        };
        Ok(VerifiedBlock {
            hash,
            data,
            plain_len,
        })
    }

    /// The block's name.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// The stored form.
    pub fn data(&self) -> &DataBlock {
        &self.data
    }

    /// Length of the plain bytes.
    pub fn plain_len(&self) -> usize {
        self.plain_len
    }

    /// Take the stored form out.
    pub fn into_data(self) -> DataBlock {
        self.data
    }

    /// The same block with its bytes tied to `charge`, which returns to its pool when
    /// the last copy of them is dropped. The bytes themselves do not change, so the
    /// block stays verified.
    pub fn with_charge(self, charge: Charge) -> VerifiedBlock {
        let data = match self.data {
            DataBlock::Plain(b) => DataBlock::Plain(charge.attach(b)),
            DataBlock::Compressed(b) => DataBlock::Compressed(charge.attach(b)),
        };
        VerifiedBlock { data, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Bytes {
        Bytes::from(
            "the quick brown fox jumps over the lazy dog "
                .repeat(n / 44 + 1)
                .into_bytes()[..n]
                .to_vec(),
        )
    }

    #[test]
    fn compressible_data_is_stored_compressed_and_verifies() {
        let data = text(100_000);
        let hash = blake2sum(&data);
        let b = DataBlock::from_buffer(data.clone(), Some(3));
        assert!(b.is_compressed());
        assert!(b.inner_buffer().len() < data.len());
        b.verify(&hash).unwrap();
        assert_eq!(b.verify_get(&hash).unwrap(), data);
    }

    #[test]
    fn a_compressed_frame_declares_its_plain_length_in_its_header() {
        let b = DataBlock::from_buffer(text(100_000), Some(1));
        assert!(b.is_compressed());
        let head = &b.inner_buffer()[..ZSTD_MAX_FRAME_HEADER];
        assert_eq!(zstd_declared_len(head), Some(100_000));
        assert_eq!(zstd_declared_len(b"not a zstd frame header"), None);
        assert_eq!(zstd_declared_len(&[]), None);
    }

    #[test]
    fn incompressible_data_stays_plain() {
        let data: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        let b = DataBlock::from_buffer(Bytes::from(data), Some(3));
        assert!(!b.is_compressed());
        let empty = DataBlock::from_buffer(Bytes::new(), Some(3));
        assert!(!empty.is_compressed(), "empty block must stay plain");
        empty.verify(&blake2sum(b"")).unwrap();
    }

    #[test]
    fn a_sample_tells_random_blocks_from_compressible_ones() {
        let random: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
        assert!(
            !looks_compressible(&random, 1),
            "random 1 MiB judged compressible"
        );
        let b = DataBlock::from_buffer(Bytes::from(random), Some(1));
        assert!(!b.is_compressed());
        assert!(
            looks_compressible(&text(1 << 20), 1),
            "text judged incompressible"
        );
        // Text with a random stretch in the middle still compresses well overall.
        let mut mixed = text(1 << 20).to_vec();
        for b in &mut mixed[400_000..600_000] {
            *b = rand::random();
        }
        assert!(looks_compressible(&mixed, 1));
        assert!(DataBlock::from_buffer(Bytes::from(mixed), Some(1)).is_compressed());
        // Below the sampling size the block is always tried whole.
        let short: Vec<u8> = (0..SAMPLE_MIN_LEN - 1).map(|_| rand::random()).collect();
        assert!(looks_compressible(&short, 1));
        let edge: Vec<u8> = (0..SAMPLE_MIN_LEN).map(|_| rand::random()).collect();
        assert!(!looks_compressible(&edge, 1));
    }

    #[test]
    fn verification_checks_blake2_of_plain_bytes_for_both_variants() {
        let data = text(50_000);
        let wrong = blake2sum(b"other");
        let plain = DataBlock::Plain(data.clone());
        assert!(matches!(
            plain.verify(&wrong),
            Err(BlockError::HashMismatch { .. })
        ));
        // A valid zstd frame (checksum fine) of other bytes must still be refused.
        let comp = DataBlock::from_buffer(data, Some(1));
        assert!(comp.is_compressed());
        assert!(matches!(
            comp.verify(&wrong),
            Err(BlockError::HashMismatch { .. })
        ));
    }

    #[test]
    fn garbage_compressed_block_is_an_error_not_a_panic() {
        let b = DataBlock::Compressed(Bytes::from_static(b"definitely not zstd"));
        assert!(matches!(
            b.verify(&blake2sum(b"")),
            Err(BlockError::BadCompression { .. })
        ));
        let mut frame = compress(&text(10_000), 1).unwrap();
        let mid = frame.len() / 2;
        frame[mid] ^= 0xff;
        let h = blake2sum(&text(10_000));
        assert!(DataBlock::Compressed(Bytes::from(frame))
            .verify(&h)
            .is_err());
    }

    #[test]
    fn decompression_stops_at_the_limit_whatever_the_frame_declares() {
        let data = text(300_000);
        let h = blake2sum(&data);
        let frame = compress(&data, 1).unwrap();
        assert_eq!(decompress_bounded(&h, &frame, 300_000).unwrap(), data);
        assert!(matches!(
            decompress_bounded(&h, &frame, 299_999),
            Err(BlockError::TooLarge { limit: 299_999, .. })
        ));
        // A streamed frame (no declared size) is stopped by the bounded read itself.
        let mut streamed = Vec::new();
        {
            let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 1).unwrap();
            std::io::Write::write_all(&mut enc, &data).unwrap();
            enc.finish().unwrap();
        }
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed)
                .ok()
                .flatten(),
            None,
            "the streamed frame should not declare its size"
        );
        assert!(matches!(
            decompress_bounded(&h, &streamed, 100_000),
            Err(BlockError::TooLarge { .. })
        ));
        assert_eq!(decompress_bounded(&h, &streamed, 1 << 20).unwrap(), data);
    }

    #[test]
    fn verified_block_knows_its_hash_and_plain_length() {
        let data = text(20_000);
        let v = VerifiedBlock::hash_plain(data.clone(), Some(1));
        assert_eq!(v.hash(), blake2sum(&data));
        assert_eq!(v.plain_len(), 20_000);
        let again = VerifiedBlock::verify(v.hash(), v.data().clone()).unwrap();
        assert_eq!(again.plain_len(), 20_000);
        assert!(VerifiedBlock::verify(blake2sum(b"z"), v.into_data()).is_err());
    }
}
