//! Objects: byte streams of any size, cut into content-defined chunks that are stored as
//! ordinary blocks, listed in a manifest block whose hash is the object's id.
//!
//! - [`manifest`]: the manifest's byte format, the streaming tree builder, offset lookup
//!   (pure);
//! - [`chunker`]: FastCDC over a stream that arrives in pieces (pure);
//! - `upload.rs`: `PUT /v1/objects`: cut, hash once, store each chunk with bounded
//!   parallelism inside the client RAM budget, commit;
//! - `download.rs`: the ordered byte stream of an object or a range of it, several
//!   chunks read ahead through the coordinator's read path;
//! - `refs.rs`: the refs that protect an object, the tree walk, presence queries.
//!
//! # Refs
//!
//! Garbage collection knows blocks, not objects, so an object's ref `R` is a ref on
//! every block of the object (chunks, manifest nodes, the root) named
//! `@obj:<id>:<R>` ([`object_ref_name`]): a chunk shared by objects A and B carries
//! one ref per object and ref name, so dropping A's never touches B's. The root's ref
//! is added last and dropped first: an object "has" a ref once its root has it, and a
//! crash between the steps leaves extra refs on chunks (a leak), never a root whose
//! chunks may go.
//!
//! An upload first gives each block it stores a ref private to that upload,
//! `@upload:<start>:<random>` (`blocknode_actors::upload_ref`), sent with the bytes (`PutBlockRef`) or, for a chunk already on
//! a write quorum, alone; at commit it adds the object ref to every block, then drops
//! the upload ref. A body cut off drops the upload refs of what it stored: those
//! chunks become orphans that GC collects after `gc_delay`, and no object or object
//! ref exists. An upload ref left by a node that died mid-upload expires: every node
//! drops it 24 hours after the upload started (`refcount/expire.rs`); an upload still
//! running then fails cleanly before its commit.

pub mod chunker;
mod download;
pub mod manifest;
mod refs;
mod upload;

use std::time::Duration;

use blocknode_actors::{Hash, RefId};

use crate::coordinator::CoordinatorError;

pub use download::{object_stream, read_node, ObjectBody};
pub use refs::{add_object_ref, drop_object_ref, missing_blocks, object_info, ObjectInfo};
pub use upload::{outlived_upload_ref, put_object, PutObjectReply};

use manifest::ManifestError;

/// Prefix of the ref names that protect an object's blocks.
pub const OBJECT_REF_PREFIX: &str = "@obj:";

/// Prefix of the ref names an upload in progress holds on its blocks.
pub use blocknode_actors::upload_ref::UPLOAD_REF_PREFIX;

/// Longest ref name an object accepts: the block ref name `@obj:<64 hex>:<R>` must fit
/// a ref name's 255 bytes.
pub const MAX_OBJECT_REF_LEN: usize = blocknode_actors::ref_id::MAX_REF_ID_LEN - 70;

/// Why an object operation failed; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {0} was not found on any node that should hold it")]
    NotFound(Hash),
    #[error("block {id} is not an object: {source}")]
    NotAnObject {
        id: Hash,
        #[source]
        source: ManifestError,
    },
    #[error("ref name {0} is too long for an object ref: at most {MAX_OBJECT_REF_LEN} bytes")]
    RefTooLong(RefId),
    #[error("request body stalled for {pause:?} after {after} bytes (http_body_read_timeout)")]
    BodyStalled { pause: Duration, after: u64 },
    #[error("the upload ran longer than {} hours, the most its upload ref can protect it; store the data as several objects", limit.as_secs() / 3600)]
    UploadTooLong { limit: Duration },
    #[error("request body cut off after {after} bytes: {reason}")]
    BodyCut { after: u64, reason: String },
    #[error("object {id}: block {hash} has {got} bytes where its manifest says {want}")]
    WrongLength {
        id: Hash,
        hash: Hash,
        got: u64,
        want: u64,
    },
    #[error("{0}")]
    Coordinator(#[from] CoordinatorError),
    /// The chunks would not fit a block.
    #[error("this cluster's max_block_size ({max_block_size} bytes) is below the largest chunk ({max_chunk} bytes): objects need max_block_size of at least 4 MiB")]
    BlocksTooSmall {
        max_block_size: usize,
        max_chunk: u32,
    },
    /// No room in the client RAM budget within the wait: the node is busy.
    #[error("this node is busy: no room for {wanted} bytes in its RAM budget (block_ram_buffer_max) within {secs} s; retry later")]
    Busy { wanted: u64, secs: u64 },
    /// A blocking task (hashing) or a chunk's task died.
    #[error("internal error: a task of the upload failed: {0}")]
    Task(String),
}

/// The ref name that protects every block of object `id` for the user's ref `user`.
pub fn object_ref_name(id: &Hash, user: &RefId) -> Result<RefId, ObjectError> {
    if user.as_str().len() > MAX_OBJECT_REF_LEN {
        return Err(ObjectError::RefTooLong(user.clone()));
    }
    format!("{OBJECT_REF_PREFIX}{}:{user}", id.to_hex())
        .parse()
        .map_err(|_| ObjectError::RefTooLong(user.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ref_names_are_valid_and_tell_objects_apart() {
        let a = blocknode_actors::hash::blake2sum(b"a");
        let b = blocknode_actors::hash::blake2sum(b"b");
        let r: RefId = "snap-1".parse().expect("a ref");
        let na = object_ref_name(&a, &r).expect("fits");
        assert_ne!(na, object_ref_name(&b, &r).expect("fits"));
        assert!(na.as_str().starts_with("@obj:") && na.as_str().ends_with(":snap-1"));
        let longest: RefId = "x".repeat(MAX_OBJECT_REF_LEN).parse().expect("a ref");
        assert!(object_ref_name(&a, &longest).is_ok());
        let too_long: RefId = "x".repeat(MAX_OBJECT_REF_LEN + 1).parse().expect("a ref");
        assert!(matches!(
            object_ref_name(&a, &too_long),
            Err(ObjectError::RefTooLong(_))
        ));
    }
}
