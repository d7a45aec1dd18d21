//! The messages nodes exchange ([`BlockRpc`] and the records it carries), as plain serde
//! types: the codec (`codec.rs`) serialises them directly into a frame's header.
//!
//! The one field kept out of the header is a `PutBlock`'s block bytes: in the header the
//! field is only the flag `compressed`, and the bytes follow the header as the frame's
//! payload (the codec puts them there and back, see [`payload_flag`]). Wire names are the
//! variant and field names, so renaming one is a protocol change.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::block::{DataBlock, VerifiedBlock};
use crate::hash::Hash;
use crate::layout::{HandoverLeft, LayoutStamp};
use crate::ref_id::RefId;
use crate::tokens::{TokenRecord, TokenSyncPage, TokenSyncQuery};

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
    /// A bare ref was not added: the block is not stored here (collected, or never
    /// stored); the client sends it again with the ref.
    BlockMissing,
}

impl std::fmt::Display for ErrorCode {
    /// The kind in words, for messages a person reads (`NotFound` → "not found").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotFound => "not found",
            ErrorCode::Corrupted => "corrupted",
            ErrorCode::CorruptData => "corrupt data",
            ErrorCode::DiskFull => "disk full",
            ErrorCode::RefDropped => "ref dropped",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal error",
            ErrorCode::BlockMissing => "block missing",
        })
    }
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
    /// The sender's storage counts, when it has sampled them (absent from nodes that
    /// predate them, and from a hello sent as a reply).
    #[serde(default)]
    pub stats: Option<NodeStats>,
}

/// A node's storage counts as it announces them in `Hello` and `Ping`, so every node
/// knows its peers' without asking (the status page's bars per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Blocks stored.
    pub blocks: u64,
    /// Bytes of block files stored.
    pub bytes: u64,
    /// Sum of the data dirs' capacities in bytes (`None`: a dir without quota).
    #[serde(default)]
    pub capacity: Option<u64>,
    /// How old the counts were when sent, ms: the sender samples them periodically.
    #[serde(default)]
    pub age_ms: u64,
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

/// One ref record as replicas exchange it: the higher incarnation wins when two records
/// merge, and within one incarnation dropped wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRecord {
    pub hash: Hash,
    pub ref_id: RefId,
    pub live: bool,
    /// The name's incarnation (absent from nodes that predate incarnations: 0).
    #[serde(default)]
    pub incarnation: u64,
    /// A tombstone's drop time, ms since the epoch (0: live or unknown); it only says
    /// when the tombstone may be purged, never which record wins.
    #[serde(default)]
    pub dropped_at: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockRpc {
    /// Success with nothing to say.
    Ok,
    /// Failure.
    Error { code: ErrorCode, message: String },
    /// Connection opening: layout digest and version.
    Hello(Hello),
    /// Liveness and RTT probe, answered with `Pong` of the same nonce; it carries the
    /// sender's layout stamp, so a layout switch is seen by every peer within a ping,
    /// and its storage counts when known (absent from nodes that predate them).
    Ping {
        nonce: u64,
        layout: LayoutStamp,
        #[serde(default)]
        stats: Option<NodeStats>,
    },
    /// Answer to `Ping`.
    Pong(u64),
    /// Ask for a block; answered with `PutBlock` or an error.
    GetBlock(Hash),
    /// A block's bytes: a store request, or the reply to `GetBlock`. Only whether the
    /// bytes are compressed is in the header; the bytes are the frame's payload.
    PutBlock {
        hash: Hash,
        #[serde(rename = "compressed", with = "payload_flag")]
        data: DataBlock,
    },
    /// A block's bytes and a named reference to it, in one request (a client PUT with
    /// `?ref=`): the receiver verifies and durably writes the block, then adds the ref
    /// (durably), and answers `Ok` once both are; a ref is never counted on a node that
    /// has not stored the block. Payload as for `PutBlock`.
    PutBlockRef {
        hash: Hash,
        #[serde(rename = "compressed", with = "payload_flag")]
        data: DataBlock,
        ref_id: RefId,
        /// The ref's incarnation (absent from older nodes: 0).
        #[serde(default)]
        incarnation: u64,
    },
    /// A `PutBlock` (`ref_id: None`) or `PutBlockRef` whose bytes this node hashed or
    /// verified itself: the receiver writes them without hashing again. It exists only
    /// inside a node (a coordinator's own copy of a client PUT reaches its replica side
    /// as one); the codec sends it as a plain `PutBlock` or `PutBlockRef`, and no decoded
    /// frame is ever one, so a peer cannot claim it.
    #[serde(skip)]
    PutVerified {
        block: VerifiedBlock,
        ref_id: Option<RefId>,
        incarnation: u64,
    },
    /// Does the receiver need this block (referenced there but not stored)?
    NeedBlockQuery(Hash),
    /// Answer to `NeedBlockQuery`.
    NeedBlockReply(bool),
    /// Add the named reference in this incarnation (idempotent; absent from older
    /// nodes: 0).
    AddRef {
        hash: Hash,
        ref_id: RefId,
        #[serde(default)]
        incarnation: u64,
    },
    /// Drop this incarnation of the named reference (idempotent; a higher incarnation
    /// is left alone).
    DropRef {
        hash: Hash,
        ref_id: RefId,
        #[serde(default)]
        incarnation: u64,
    },
    /// Ask what the receiver knows of a block; answered with `BlockInfoReply`.
    BlockInfoQuery(Hash),
    /// Answer to `BlockInfoQuery`.
    BlockInfoReply(BlockInfo),
    /// Ask the receiver to resync this block now (it lacked it or had it rotten).
    ScheduleResync(Hash),
    /// Anti-entropy: digest of the receiver's ref records under a key prefix.
    RefDigestQuery {
        #[doc = "key prefix"]
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        #[doc = "the asker's digest of the same range (empty: unknown); when the"]
        #[doc = "receiver's is equal, its reply leaves the children out"]
        #[serde(with = "serde_bytes", default)]
        known: Vec<u8>,
    },
    /// Answer to `RefDigestQuery`.
    RefDigestReply(PrefixDigest),
    /// Anti-entropy: the receiver's ref records under a prefix (`exact`: only the key
    /// equal to the prefix), at most `limit`.
    RefRecordsQuery {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        exact: bool,
        limit: u32,
    },
    /// Answer to `RefRecordsQuery`.
    RefRecords(Vec<RefRecord>),
    /// Merge these ref records (dropped wins); answered with `Ok`.
    MergeRefs(Vec<RefRecord>),
    /// Merge these API token records (a create or revoke pushed); answered with `Ok`.
    MergeTokens(Vec<TokenRecord>),
    /// Pull of API tokens, one name range at a time: the asker's digests of its records
    /// there (`tokens/sync.rs`); answered with `TokenRecords`.
    TokenDigestQuery(TokenSyncQuery),
    /// Answer to `TokenDigestQuery`: one page of the records that differ.
    TokenRecords(TokenSyncPage),
    /// Ask for the receiver's current layout; answered with `LayoutReply`.
    LayoutQuery,
    /// Answer to `LayoutQuery`: the layout, MessagePack then zstd (a table of a few
    /// distinct node ids compresses well, which keeps it inside the header limit).
    LayoutReply {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
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
            BlockRpc::PutBlock { .. } | BlockRpc::PutVerified { ref_id: None, .. } => "put_block",
            BlockRpc::PutBlockRef { .. }
            | BlockRpc::PutVerified {
                ref_id: Some(_), ..
            } => "put_block_ref",
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
            BlockRpc::MergeTokens(_) => "merge_tokens",
            BlockRpc::TokenDigestQuery(_) => "token_digest_query",
            BlockRpc::TokenRecords(_) => "token_records",
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

    /// The block bytes this message carries outside its header: a `PutBlock`'s or
    /// `PutBlockRef`'s, shared with `self` (not copied); `None` for every other message.
    pub(super) fn payload(&self) -> Option<&Bytes> {
        match self {
            BlockRpc::PutBlock { data, .. } | BlockRpc::PutBlockRef { data, .. } => {
                Some(data.inner_buffer())
            }
            BlockRpc::PutVerified { block, .. } => Some(block.data().inner_buffer()),
            _ => None,
        }
    }

    /// The message as it goes on the wire: a [`BlockRpc::PutVerified`] becomes the
    /// `PutBlock` (or `PutBlockRef`) of the same bytes (shared, not copied), since trust
    /// does not travel.
    pub(super) fn on_wire(&self) -> Cow<'_, BlockRpc> {
        match self {
            BlockRpc::PutVerified {
                block,
                ref_id: None,
                ..
            } => Cow::Owned(BlockRpc::PutBlock {
                hash: block.hash(),
                data: block.data().clone(),
            }),
            BlockRpc::PutVerified {
                block,
                ref_id: Some(ref_id),
                incarnation,
            } => Cow::Owned(BlockRpc::PutBlockRef {
                hash: block.hash(),
                data: block.data().clone(),
                ref_id: ref_id.clone(),
                incarnation: *incarnation,
            }),
            rpc => Cow::Borrowed(rpc),
        }
    }
}

/// A `PutBlock`'s block in the header: the flag `compressed` only. Decoding gives a block
/// of the right variant with no bytes yet; the codec fills them in from the payload.
pub(super) mod payload_flag {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::block::DataBlock;

    pub fn serialize<S: Serializer>(data: &DataBlock, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(data.is_compressed())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DataBlock, D::Error> {
        Ok(with_bytes(bool::deserialize(d)?, Bytes::new()))
    }

    /// The block of the given variant holding `bytes`.
    pub fn with_bytes(compressed: bool, bytes: Bytes) -> DataBlock {
        if compressed {
            DataBlock::Compressed(bytes)
        } else {
            DataBlock::Plain(bytes)
        }
    }
}
