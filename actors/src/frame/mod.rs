//! [`BlockRpc`]: the messages nodes exchange, and their frame codec.
//!
//! One request and its reply travel on one bidirectional QUIC stream, each as one frame:
//!
//! ```text
//! frame   = header_len: u32 BE | payload_len: u32 BE | header | payload
//! header  = header_len bytes: MessagePack (rmp-serde, map form) of the message with any
//!           block bytes left out; for PutBlock and PutBlockRef it says whether they
//!           are compressed
//! payload = payload_len bytes: the raw block bytes of a PutBlock or PutBlockRef, empty
//!           otherwise
//! ```
//!
//! `messages.rs` defines the messages as serde types (the header is the message itself,
//! a `PutBlock`'s bytes marked to stay out of it); `codec.rs` encodes and decodes frames.
//! Block bytes are not copied into the MessagePack encoding: the sender writes the header
//! then hands the block's `Bytes` to the stream as they are. Both lengths are checked
//! against [`FrameLimits`] *before* anything is allocated, so a forged 4 GiB length
//! costs the receiver nothing. Unknown variants, trailing garbage, a payload on a
//! message that carries none, and a truncated frame are all [`FrameError`]s.
//!
//! One message never crosses the wire as itself: [`BlockRpc::PutVerified`], a block
//! this node verified, is encoded as the `PutBlock` (or, with a ref, `PutBlockRef`) of
//! the same bytes; decoding never yields it, so what a peer sends is always verified
//! before it is stored.

mod codec;
mod messages;
#[cfg(test)]
mod tests;

pub use codec::{
    decode, decode_parts, encode, parse_prefix, read_body, read_body_with, read_frame, read_header,
    read_payload_after, read_payload_start, read_prefix, EncodedFrame, FrameError, FrameLimits,
    DEFAULT_MAX_HEADER_LEN, DEFAULT_MAX_PAYLOAD_LEN, PREFIX_LEN,
};
pub use messages::{
    BlockInfo, BlockRpc, ChildDigest, ErrorCode, Hello, NodeStats, PrefixDigest, RefRecord,
};
