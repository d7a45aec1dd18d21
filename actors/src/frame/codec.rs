//! The frame codec: a [`BlockRpc`] in, bytes out, and back, with every length checked
//! before anything is allocated.
//!
//! The header is the message itself, serialised with rmp-serde in map form; a
//! `PutBlock`'s bytes are left out of it (the header says only whether they are
//! compressed, see `messages.rs`) and follow it as the payload, handed to the stream as
//! the block's own `Bytes`, never copied into the encoding.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::messages::{payload_flag, BlockRpc};
use crate::bufpool::PooledBuf;

/// Bytes of the fixed prefix: two big-endian `u32` lengths.
pub const PREFIX_LEN: usize = 8;
/// Largest header accepted by default. Headers hold hashes, ids and short texts.
pub const DEFAULT_MAX_HEADER_LEN: usize = 64 << 10;
/// Largest payload accepted by default: the default `max_block_size` (16 MiB).
pub const DEFAULT_MAX_PAYLOAD_LEN: usize = 16 << 20;

/// Size limits checked on every received frame before allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest header length accepted.
    pub max_header_len: usize,
    /// Largest payload length accepted (the configured `max_block_size`).
    pub max_payload_len: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame header of {len} bytes exceeds the limit of {max}")]
    HeaderTooLarge { len: usize, max: usize },
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("frame is truncated: the stream ended before its {0} was complete")]
    Truncated(&'static str),
    #[error("frame header does not decode: {0}")]
    Decode(#[source] rmp_serde::decode::Error),
    #[error("frame header has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("a {0} message carries no payload, but the frame has {1} payload bytes")]
    UnexpectedPayload(&'static str, usize),
    #[error("frame could not be encoded: {0}")]
    Encode(#[source] rmp_serde::encode::Error),
    #[error("frame {part} of {len} bytes does not fit a u32 length")]
    TooLong { part: &'static str, len: usize },
    #[error("I/O error while reading a frame: {0}")]
    Io(#[from] std::io::Error),
}

/// An encoded frame: prefix plus header, then the block bytes shared, not copied.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The 8-byte prefix followed by the header.
    pub head: Vec<u8>,
    /// The payload, when the message carries block bytes.
    pub payload: Option<Bytes>,
}

impl EncodedFrame {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.as_ref().map_or(0, |p| p.len())
    }

    /// Whether the frame is empty (never: the prefix is always there).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole frame in one buffer (copies the payload; for tests and small messages).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        if let Some(p) = &self.payload {
            v.extend_from_slice(p);
        }
        v
    }
}

/// A length as the prefix's `u32`.
fn prefix_len(part: &'static str, len: usize) -> Result<u32, FrameError> {
    u32::try_from(len).map_err(|_| FrameError::TooLong { part, len })
}

/// Encode a message. The payload of a `PutBlock` is shared with `rpc`, not copied.
pub fn encode(rpc: &BlockRpc) -> Result<EncodedFrame, FrameError> {
    let header = rmp_serde::to_vec_named(rpc.on_wire().as_ref()).map_err(FrameError::Encode)?;
    let payload = rpc.payload().cloned();
    let header_len = prefix_len("header", header.len())?;
    let payload_len = prefix_len("payload", payload.as_ref().map_or(0, |p| p.len()))?;
    let mut head = Vec::with_capacity(PREFIX_LEN + header.len());
    head.extend_from_slice(&header_len.to_be_bytes());
    head.extend_from_slice(&payload_len.to_be_bytes());
    head.extend_from_slice(&header);
    Ok(EncodedFrame { head, payload })
}

/// Parse and check the 8-byte prefix: `(header_len, payload_len)` within `limits`.
pub fn parse_prefix(
    prefix: &[u8; PREFIX_LEN],
    limits: &FrameLimits,
) -> Result<(usize, usize), FrameError> {
    let header_len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let payload_len = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
    if header_len > limits.max_header_len {
        return Err(FrameError::HeaderTooLarge {
            len: header_len,
            max: limits.max_header_len,
        });
    }
    if payload_len > limits.max_payload_len {
        return Err(FrameError::PayloadTooLarge {
            len: payload_len,
            max: limits.max_payload_len,
        });
    }
    Ok((header_len, payload_len))
}

/// Decode a header and its payload into a message.
pub fn decode_parts(header: &[u8], payload: Bytes) -> Result<BlockRpc, FrameError> {
    let mut cursor = std::io::Cursor::new(header);
    let rpc: BlockRpc = rmp_serde::from_read(&mut cursor).map_err(FrameError::Decode)?;
    let used = cursor.position() as usize;
    if used != header.len() {
        return Err(FrameError::TrailingBytes(header.len() - used));
    }
    match rpc {
        // The header decoded the block's variant with no bytes: the payload is them.
        BlockRpc::PutBlock { hash, data } => Ok(BlockRpc::PutBlock {
            hash,
            data: payload_flag::with_bytes(data.is_compressed(), payload),
        }),
        BlockRpc::PutBlockRef {
            hash,
            data,
            ref_id,
            incarnation,
        } => Ok(BlockRpc::PutBlockRef {
            hash,
            data: payload_flag::with_bytes(data.is_compressed(), payload),
            ref_id,
            incarnation,
        }),
        rpc if payload.is_empty() => Ok(rpc),
        rpc => Err(FrameError::UnexpectedPayload(rpc.kind(), payload.len())),
    }
}

/// Decode one whole frame held in memory (it must be exactly one frame).
pub fn decode(frame: &[u8], limits: &FrameLimits) -> Result<BlockRpc, FrameError> {
    let prefix: &[u8; PREFIX_LEN] = frame
        .get(..PREFIX_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or(FrameError::Truncated("length prefix"))?;
    let (hl, pl) = parse_prefix(prefix, limits)?;
    let rest = &frame[PREFIX_LEN..];
    if rest.len() < hl {
        return Err(FrameError::Truncated("header"));
    }
    if rest.len() < hl + pl {
        return Err(FrameError::Truncated("payload"));
    }
    if rest.len() > hl + pl {
        return Err(FrameError::TrailingBytes(rest.len() - hl - pl));
    }
    decode_parts(&rest[..hl], Bytes::copy_from_slice(&rest[hl..]))
}

/// Read exactly one frame from `r`, checking the limits before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &FrameLimits,
) -> Result<BlockRpc, FrameError> {
    let (hl, pl) = read_prefix(r, limits).await?;
    read_body(r, hl, pl).await
}

/// Read and check a frame's prefix: `(header_len, payload_len)`, nothing allocated yet
/// (a caller may reserve memory for the payload before reading on).
pub async fn read_prefix<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &FrameLimits,
) -> Result<(usize, usize), FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    read_exact(r, &mut prefix, "length prefix").await?;
    parse_prefix(&prefix, limits)
}

/// Read the header and payload announced by a checked prefix and decode the message.
pub async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    header_len: usize,
    payload_len: usize,
) -> Result<BlockRpc, FrameError> {
    read_body_with(r, header_len, payload_len, PooledBuf::freeze).await
}

/// As [`read_body`], with `wrap` turning the payload buffer into `Bytes` (a caller hangs
/// its RAM budget charge on the buffer this way, see
/// [`crate::budget::Charge::attach_owned`]).
pub async fn read_body_with<R: AsyncRead + Unpin>(
    r: &mut R,
    header_len: usize,
    payload_len: usize,
    wrap: impl FnOnce(PooledBuf) -> Bytes,
) -> Result<BlockRpc, FrameError> {
    let mut header = vec![0u8; header_len];
    read_exact(r, &mut header, "header").await?;
    let payload = read_new_buf(r, payload_len, "payload").await?;
    decode_parts(&header, wrap(payload))
}

/// Read a frame's header, `header_len` bytes announced by a checked prefix.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    header_len: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut header = vec![0u8; header_len];
    read_exact(r, &mut header, "header").await?;
    Ok(header)
}

/// Read up to `buf.len()` first bytes of a payload (a reader that sizes its memory by
/// them, e.g. a zstd frame header, before reading the rest with [`read_payload_after`]).
pub async fn read_payload_start<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    read_exact(r, buf, "payload").await
}

/// Read the rest of a `len`-byte payload whose first bytes `start` were already read,
/// into one pooled buffer, which `wrap` turns into `Bytes`.
pub async fn read_payload_after<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    start: &[u8],
    wrap: impl FnOnce(PooledBuf) -> Bytes,
) -> Result<Bytes, FrameError> {
    let mut buf = PooledBuf::with_capacity(len);
    buf.extend_from_slice(start);
    fill_buf(r, &mut buf, len, "payload").await?;
    Ok(wrap(buf))
}

/// Read exactly `len` bytes into a pooled buffer (see [`crate::bufpool`]), never
/// zero-filled first: the reader writes into the spare capacity (a block payload is up
/// to `max_block_size`, and zeroing it only to overwrite it at once was a full extra
/// pass over every byte).
async fn read_new_buf<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    what: &'static str,
) -> Result<PooledBuf, FrameError> {
    let mut buf = PooledBuf::with_capacity(len);
    fill_buf(r, &mut buf, len, what).await?;
    Ok(buf)
}

/// Append to `buf` until it holds `len` bytes.
async fn fill_buf<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut PooledBuf,
    len: usize,
    what: &'static str,
) -> Result<(), FrameError> {
    // `take`: a pooled buffer has more capacity than `len`; nothing past this frame is
    // read.
    let mut limited = r.take(len.saturating_sub(buf.len()) as u64);
    while buf.len() < len {
        match limited.read_buf(buf).await {
            Ok(0) => return Err(FrameError::Truncated(what)),
            Ok(_) => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated(what)),
        Err(e) => Err(FrameError::Io(e)),
    }
}
