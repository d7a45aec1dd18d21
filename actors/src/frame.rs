//! [`BlockRpc`]: the messages nodes exchange, and their frame codec.
//!
//! One request and its reply travel on one bidirectional QUIC stream, each as one frame:
//!
//! ```text
//! frame   = header_len: u32 BE | payload_len: u32 BE | header | payload
//! header  = header_len bytes: MessagePack (rmp-serde, map form) of the message with any
//!           block bytes left out; for PutBlock it says whether they are compressed
//! payload = payload_len bytes: the raw block bytes of a PutBlock, empty otherwise
//! ```
//!
//! Block bytes are not copied into the MessagePack encoding: the sender writes the header
//! then hands the block's `Bytes` to the stream as they are. Both lengths are checked
//! against [`FrameLimits`] *before* anything is allocated, so a forged 4 GiB length
//! costs the receiver nothing. Unknown variants, trailing garbage, a payload on a
//! message that carries none, and a truncated frame are all [`FrameError`]s.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::block::DataBlock;
use crate::hash::Hash;
use crate::layout::{HandoverLeft, LayoutStamp};
use crate::ref_id::RefId;

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

/// Machine-readable kind of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request was malformed or not understood.
    BadRequest,
    /// The block is not stored here.
    NotFound,
    /// The stored copy failed verification (it has been quarantined).
    Corrupted,
    /// The data sent does not match its hash; nothing was written.
    CorruptData,
    /// The disk is full.
    DiskFull,
    /// The ref id was dropped and cannot be added again.
    RefDropped,
    /// The node is overloaded or shutting down; try again.
    Unavailable,
    /// Anything else; see the message.
    Internal,
}

/// A node's opening message on a new connection, answered with its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Digest of the sender's layout; nodes whose digests differ disagree on placement.
    pub layout_digest: Hash,
    /// Version of the sender's layout: a node that sees a newer one fetches it
    /// (`LayoutQuery`). Absent from nodes that predate versioned layouts (then 0).
    #[serde(default)]
    pub layout_version: u64,
    /// The sender's blocknode version.
    pub version: String,
}

/// What a node knows of one block, for `GET /v1/blocks/{hash}/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// A copy is stored here.
    pub present: bool,
    /// Live references counted here.
    pub rc: u64,
    /// The rc entry is deletable (grace period running or over).
    pub deletable: bool,
    /// The last resync error for this block, if any.
    pub error: Option<String>,
}

/// One ref record as replicas exchange it: dropped wins when two records merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRecord {
    pub hash: Hash,
    pub ref_id: RefId,
    pub live: bool,
}

/// Digest of the ref records whose key starts with a prefix, and of each child range
/// (the prefix plus one more key byte; `byte` 256 stands for the key equal to the prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PrefixDigest {
    pub count: u64,
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
    pub children: Vec<ChildDigest>,
}

/// Digest of one child range of a [`PrefixDigest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildDigest {
    pub byte: u16,
    pub count: u64,
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
}

/// Every message exchanged between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRpc {
    /// Success with nothing to say.
    Ok,
    /// Failure.
    Error { code: ErrorCode, message: String },
    /// Connection opening: layout digest and version.
    Hello(Hello),
    /// Liveness and RTT probe, answered with `Pong` of the same nonce; it carries the
    /// sender's layout stamp, so a layout switch is seen by every peer within a ping.
    Ping { nonce: u64, layout: LayoutStamp },
    /// Answer to `Ping`.
    Pong(u64),
    /// Ask for a block; answered with `PutBlock` or an error.
    GetBlock(Hash),
    /// A block's bytes: a store request, or the reply to `GetBlock`.
    PutBlock { hash: Hash, data: DataBlock },
    /// Does the receiver need this block (referenced there but not stored)?
    NeedBlockQuery(Hash),
    /// Answer to `NeedBlockQuery`.
    NeedBlockReply(bool),
    /// Add the named reference (idempotent).
    AddRef { hash: Hash, ref_id: RefId },
    /// Drop the named reference (idempotent).
    DropRef { hash: Hash, ref_id: RefId },
    /// Ask what the receiver knows of a block; answered with `BlockInfoReply`.
    BlockInfoQuery(Hash),
    /// Answer to `BlockInfoQuery`.
    BlockInfoReply(BlockInfo),
    /// Ask the receiver to resync this block now (it lacked it or had it rotten).
    ScheduleResync(Hash),
    /// Anti-entropy: digest of the receiver's ref records under a key prefix.
    RefDigestQuery {
        #[doc = "key prefix"]
        prefix: Vec<u8>,
        #[doc = "the asker's digest of the same range (empty: unknown); when the"]
        #[doc = "receiver's is equal, its reply leaves the children out"]
        known: Vec<u8>,
    },
    /// Answer to `RefDigestQuery`.
    RefDigestReply(PrefixDigest),
    /// Anti-entropy: the receiver's ref records under a prefix (`exact`: only the key
    /// equal to the prefix), at most `limit`.
    RefRecordsQuery {
        prefix: Vec<u8>,
        exact: bool,
        limit: u32,
    },
    /// Answer to `RefRecordsQuery`.
    RefRecords(Vec<RefRecord>),
    /// Merge these ref records (dropped wins); answered with `Ok`.
    MergeRefs(Vec<RefRecord>),
    /// Ask for the receiver's current layout; answered with `LayoutReply`.
    LayoutQuery,
    /// Answer to `LayoutQuery`: the layout, MessagePack then zstd (a table of a few
    /// distinct node ids compresses well, which keeps it inside the header limit).
    LayoutReply { data: Vec<u8> },
    /// During the transition to layout `version`: what the receiver still has to hand
    /// over; answered with `HandoverReply`.
    HandoverQuery { version: u64 },
    /// Answer to `HandoverQuery`.
    HandoverReply(HandoverLeft),
}

impl BlockRpc {
    /// Short name of the variant, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            BlockRpc::Ok => "ok",
            BlockRpc::Error { .. } => "error",
            BlockRpc::Hello(_) => "hello",
            BlockRpc::Ping { .. } => "ping",
            BlockRpc::Pong(_) => "pong",
            BlockRpc::GetBlock(_) => "get_block",
            BlockRpc::PutBlock { .. } => "put_block",
            BlockRpc::NeedBlockQuery(_) => "need_block_query",
            BlockRpc::NeedBlockReply(_) => "need_block_reply",
            BlockRpc::AddRef { .. } => "add_ref",
            BlockRpc::DropRef { .. } => "drop_ref",
            BlockRpc::BlockInfoQuery(_) => "block_info_query",
            BlockRpc::BlockInfoReply(_) => "block_info_reply",
            BlockRpc::ScheduleResync(_) => "schedule_resync",
            BlockRpc::RefDigestQuery { .. } => "ref_digest_query",
            BlockRpc::RefDigestReply(_) => "ref_digest_reply",
            BlockRpc::RefRecordsQuery { .. } => "ref_records_query",
            BlockRpc::RefRecords(_) => "ref_records",
            BlockRpc::MergeRefs(_) => "merge_refs",
            BlockRpc::LayoutQuery => "layout_query",
            BlockRpc::LayoutReply { .. } => "layout_reply",
            BlockRpc::HandoverQuery { .. } => "handover_query",
            BlockRpc::HandoverReply(_) => "handover_reply",
        }
    }

    /// An error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> BlockRpc {
        BlockRpc::Error {
            code,
            message: message.into(),
        }
    }
}

/// The header as encoded: [`BlockRpc`] with block bytes moved to the payload.
#[derive(Debug, Serialize, Deserialize)]
enum WireHeader {
    Ok,
    Error {
        code: ErrorCode,
        message: String,
    },
    Hello(Hello),
    Ping {
        nonce: u64,
        layout: LayoutStamp,
    },
    Pong(u64),
    GetBlock(Hash),
    PutBlock {
        hash: Hash,
        compressed: bool,
    },
    NeedBlockQuery(Hash),
    NeedBlockReply(bool),
    AddRef {
        hash: Hash,
        ref_id: RefId,
    },
    DropRef {
        hash: Hash,
        ref_id: RefId,
    },
    BlockInfoQuery(Hash),
    BlockInfoReply(BlockInfo),
    ScheduleResync(Hash),
    RefDigestQuery {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        #[serde(with = "serde_bytes", default)]
        known: Vec<u8>,
    },
    RefDigestReply(PrefixDigest),
    RefRecordsQuery {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        exact: bool,
        limit: u32,
    },
    RefRecords(Vec<RefRecord>),
    MergeRefs(Vec<RefRecord>),
    LayoutQuery,
    LayoutReply {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    HandoverQuery {
        version: u64,
    },
    HandoverReply(HandoverLeft),
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
    Decode(String),
    #[error("frame header has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("a {0} message carries no payload, but the frame has {1} payload bytes")]
    UnexpectedPayload(&'static str, usize),
    #[error("frame could not be encoded: {0}")]
    Encode(String),
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

/// Encode a message. The payload of a `PutBlock` is shared with `rpc`, not copied.
pub fn encode(rpc: &BlockRpc) -> Result<EncodedFrame, FrameError> {
    let (header, payload) = match rpc.clone() {
        BlockRpc::Ok => (WireHeader::Ok, None),
        BlockRpc::Error { code, message } => (WireHeader::Error { code, message }, None),
        BlockRpc::Hello(h) => (WireHeader::Hello(h), None),
        BlockRpc::Ping { nonce, layout } => (WireHeader::Ping { nonce, layout }, None),
        BlockRpc::Pong(n) => (WireHeader::Pong(n), None),
        BlockRpc::GetBlock(h) => (WireHeader::GetBlock(h), None),
        BlockRpc::PutBlock { hash, data } => (
            WireHeader::PutBlock {
                hash,
                compressed: data.is_compressed(),
            },
            Some(data.inner_buffer().clone()),
        ),
        BlockRpc::NeedBlockQuery(h) => (WireHeader::NeedBlockQuery(h), None),
        BlockRpc::NeedBlockReply(b) => (WireHeader::NeedBlockReply(b), None),
        BlockRpc::AddRef { hash, ref_id } => (WireHeader::AddRef { hash, ref_id }, None),
        BlockRpc::DropRef { hash, ref_id } => (WireHeader::DropRef { hash, ref_id }, None),
        BlockRpc::BlockInfoQuery(h) => (WireHeader::BlockInfoQuery(h), None),
        BlockRpc::BlockInfoReply(i) => (WireHeader::BlockInfoReply(i), None),
        BlockRpc::ScheduleResync(h) => (WireHeader::ScheduleResync(h), None),
        BlockRpc::RefDigestQuery { prefix, known } => {
            (WireHeader::RefDigestQuery { prefix, known }, None)
        }
        BlockRpc::RefDigestReply(d) => (WireHeader::RefDigestReply(d), None),
        BlockRpc::RefRecordsQuery {
            prefix,
            exact,
            limit,
        } => (
            WireHeader::RefRecordsQuery {
                prefix,
                exact,
                limit,
            },
            None,
        ),
        BlockRpc::RefRecords(r) => (WireHeader::RefRecords(r), None),
        BlockRpc::MergeRefs(r) => (WireHeader::MergeRefs(r), None),
        BlockRpc::LayoutQuery => (WireHeader::LayoutQuery, None),
        BlockRpc::LayoutReply { data } => (WireHeader::LayoutReply { data }, None),
        BlockRpc::HandoverQuery { version } => (WireHeader::HandoverQuery { version }, None),
        BlockRpc::HandoverReply(h) => (WireHeader::HandoverReply(h), None),
    };
    let header = rmp_serde::to_vec_named(&header).map_err(|e| FrameError::Encode(e.to_string()))?;
    let payload_len = payload.as_ref().map_or(0, |p| p.len());
    let header_len =
        u32::try_from(header.len()).map_err(|_| FrameError::Encode("header over 4 GiB".into()))?;
    let payload_len_u32 =
        u32::try_from(payload_len).map_err(|_| FrameError::Encode("payload over 4 GiB".into()))?;
    let mut head = Vec::with_capacity(PREFIX_LEN + header.len());
    head.extend_from_slice(&header_len.to_be_bytes());
    head.extend_from_slice(&payload_len_u32.to_be_bytes());
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
    let wire: WireHeader =
        rmp_serde::from_read(&mut cursor).map_err(|e| FrameError::Decode(e.to_string()))?;
    let used = cursor.position() as usize;
    if used != header.len() {
        return Err(FrameError::TrailingBytes(header.len() - used));
    }
    let no_payload = |rpc: BlockRpc| {
        if payload.is_empty() {
            Ok(rpc)
        } else {
            Err(FrameError::UnexpectedPayload(rpc.kind(), payload.len()))
        }
    };
    match wire {
        WireHeader::PutBlock { hash, compressed } => Ok(BlockRpc::PutBlock {
            hash,
            data: if compressed {
                DataBlock::Compressed(payload)
            } else {
                DataBlock::Plain(payload)
            },
        }),
        WireHeader::Ok => no_payload(BlockRpc::Ok),
        WireHeader::Error { code, message } => no_payload(BlockRpc::Error { code, message }),
        WireHeader::Hello(h) => no_payload(BlockRpc::Hello(h)),
        WireHeader::Ping { nonce, layout } => no_payload(BlockRpc::Ping { nonce, layout }),
        WireHeader::Pong(n) => no_payload(BlockRpc::Pong(n)),
        WireHeader::GetBlock(h) => no_payload(BlockRpc::GetBlock(h)),
        WireHeader::NeedBlockQuery(h) => no_payload(BlockRpc::NeedBlockQuery(h)),
        WireHeader::NeedBlockReply(b) => no_payload(BlockRpc::NeedBlockReply(b)),
        WireHeader::AddRef { hash, ref_id } => no_payload(BlockRpc::AddRef { hash, ref_id }),
        WireHeader::DropRef { hash, ref_id } => no_payload(BlockRpc::DropRef { hash, ref_id }),
        WireHeader::BlockInfoQuery(h) => no_payload(BlockRpc::BlockInfoQuery(h)),
        WireHeader::BlockInfoReply(i) => no_payload(BlockRpc::BlockInfoReply(i)),
        WireHeader::ScheduleResync(h) => no_payload(BlockRpc::ScheduleResync(h)),
        WireHeader::RefDigestQuery { prefix, known } => {
            no_payload(BlockRpc::RefDigestQuery { prefix, known })
        }
        WireHeader::RefDigestReply(d) => no_payload(BlockRpc::RefDigestReply(d)),
        WireHeader::RefRecordsQuery {
            prefix,
            exact,
            limit,
        } => no_payload(BlockRpc::RefRecordsQuery {
            prefix,
            exact,
            limit,
        }),
        WireHeader::RefRecords(r) => no_payload(BlockRpc::RefRecords(r)),
        WireHeader::MergeRefs(r) => no_payload(BlockRpc::MergeRefs(r)),
        WireHeader::LayoutQuery => no_payload(BlockRpc::LayoutQuery),
        WireHeader::LayoutReply { data } => no_payload(BlockRpc::LayoutReply { data }),
        WireHeader::HandoverQuery { version } => no_payload(BlockRpc::HandoverQuery { version }),
        WireHeader::HandoverReply(h) => no_payload(BlockRpc::HandoverReply(h)),
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
    read_body_with(r, header_len, payload_len, Bytes::from).await
}

/// As [`read_body`], with `wrap` turning the payload buffer into `Bytes` (a caller hangs
/// its RAM budget charge on the buffer this way, see [`crate::budget::Charge::attach_vec`]).
pub async fn read_body_with<R: AsyncRead + Unpin>(
    r: &mut R,
    header_len: usize,
    payload_len: usize,
    wrap: impl FnOnce(Vec<u8>) -> Bytes,
) -> Result<BlockRpc, FrameError> {
    let mut header = vec![0u8; header_len];
    read_exact(r, &mut header, "header").await?;
    let mut payload = vec![0u8; payload_len];
    read_exact(r, &mut payload, "payload").await?;
    decode_parts(&header, wrap(payload))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::blake2sum;
    use proptest::prelude::*;

    fn samples() -> Vec<BlockRpc> {
        let h = blake2sum(b"abc");
        vec![
            BlockRpc::Ok,
            BlockRpc::error(ErrorCode::NotFound, "no such block"),
            BlockRpc::Hello(Hello {
                layout_digest: h,
                layout_version: 3,
                version: "0.1.0".into(),
            }),
            BlockRpc::Ping {
                nonce: 7,
                layout: LayoutStamp {
                    version: 3,
                    digest: h,
                },
            },
            BlockRpc::LayoutQuery,
            BlockRpc::LayoutReply {
                data: vec![1, 2, 3],
            },
            BlockRpc::HandoverQuery { version: 4 },
            BlockRpc::HandoverReply(HandoverLeft {
                version: 4,
                partitions: 2,
                blocks: 10,
                bytes: 1 << 20,
            }),
            BlockRpc::Pong(7),
            BlockRpc::GetBlock(h),
            BlockRpc::PutBlock {
                hash: h,
                data: DataBlock::Plain(Bytes::from_static(b"abc")),
            },
            BlockRpc::PutBlock {
                hash: h,
                data: DataBlock::Compressed(Bytes::from_static(b"zz")),
            },
            BlockRpc::PutBlock {
                hash: blake2sum(b""),
                data: DataBlock::Plain(Bytes::new()),
            },
            BlockRpc::NeedBlockQuery(h),
            BlockRpc::NeedBlockReply(true),
            BlockRpc::AddRef {
                hash: h,
                ref_id: "r1".parse().unwrap(),
            },
            BlockRpc::DropRef {
                hash: h,
                ref_id: "r1".parse().unwrap(),
            },
            BlockRpc::BlockInfoQuery(h),
            BlockRpc::BlockInfoReply(BlockInfo {
                present: true,
                rc: 2,
                deletable: false,
                error: Some("x".into()),
            }),
            BlockRpc::ScheduleResync(h),
            BlockRpc::RefDigestQuery {
                prefix: vec![1, 2],
                known: vec![3; 16],
            },
            BlockRpc::RefDigestReply(PrefixDigest {
                count: 3,
                digest: vec![7; 16],
                children: vec![ChildDigest {
                    byte: 256,
                    count: 1,
                    digest: vec![1; 16],
                }],
            }),
            BlockRpc::RefRecordsQuery {
                prefix: vec![9],
                exact: false,
                limit: 128,
            },
            BlockRpc::RefRecords(vec![RefRecord {
                hash: h,
                ref_id: "a".parse().unwrap(),
                live: false,
            }]),
            BlockRpc::MergeRefs(vec![RefRecord {
                hash: h,
                ref_id: "b".parse().unwrap(),
                live: true,
            }]),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let f = encode(&m).unwrap();
            assert_eq!(decode(&f.to_vec(), &FrameLimits::default()).unwrap(), m);
        }
    }

    #[test]
    fn put_block_payload_is_shared_not_copied() {
        let data = Bytes::from(vec![5u8; 1 << 20]);
        let m = BlockRpc::PutBlock {
            hash: blake2sum(&data),
            data: DataBlock::Plain(data.clone()),
        };
        let f = encode(&m).unwrap();
        let p = f.payload.unwrap();
        assert_eq!(p.as_ptr(), data.as_ptr());
        assert!(
            f.head.len() < 128,
            "header should be small: {}",
            f.head.len()
        );
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocation() {
        let limits = FrameLimits::default();
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            decode(&huge, &limits),
            Err(FrameError::HeaderTooLarge { .. })
        ));
        let mut big_payload = Vec::new();
        big_payload.extend_from_slice(&10u32.to_be_bytes());
        big_payload.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&big_payload, &limits),
            Err(FrameError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        let f = encode(&BlockRpc::GetBlock(blake2sum(b"x")))
            .unwrap()
            .to_vec();
        for cut in [0, 3, 8, f.len() - 1] {
            assert!(
                matches!(
                    decode(&f[..cut], &FrameLimits::default()),
                    Err(FrameError::Truncated(_))
                ),
                "cut at {cut}"
            );
        }
        let mut junk = vec![0, 0, 0, 4, 0, 0, 0, 0];
        junk.extend_from_slice(b"\xc1\xc1\xc1\xc1");
        assert!(matches!(
            decode(&junk, &FrameLimits::default()),
            Err(FrameError::Decode(_))
        ));
        // A payload on a message that carries none.
        let mut ok = encode(&BlockRpc::Ok).unwrap().to_vec();
        ok[7] = 2;
        ok.extend_from_slice(b"zz");
        assert!(matches!(
            decode(&ok, &FrameLimits::default()),
            Err(FrameError::UnexpectedPayload("ok", 2))
        ));
    }

    #[tokio::test]
    async fn read_frame_reads_one_frame_from_a_stream() {
        let m = BlockRpc::PutBlock {
            hash: blake2sum(b"abc"),
            data: DataBlock::Plain(Bytes::from_static(b"abc")),
        };
        let bytes = encode(&m).unwrap().to_vec();
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r, &FrameLimits::default()).await.unwrap(),
            m
        );
        let mut short = &bytes[..bytes.len() - 1];
        assert!(matches!(
            read_frame(&mut short, &FrameLimits::default()).await,
            Err(FrameError::Truncated("payload"))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// The decoder never panics, whatever the bytes.
        #[test]
        fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &FrameLimits::default());
        }

        /// Mutating one byte of a valid frame gives an error or a valid message, never a panic.
        #[test]
        fn decoder_survives_mutated_frames(idx in 0usize..64, val in any::<u8>(), which in 0usize..16) {
            let s = samples();
            let mut f = encode(&s[which % s.len()]).unwrap().to_vec();
            let i = idx % f.len();
            f[i] = val;
            let _ = decode(&f, &FrameLimits::default());
        }
    }
}
