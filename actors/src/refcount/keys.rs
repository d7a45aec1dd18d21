//! On-disk encoding of the `refs` and `rc` keyspaces (pure functions, no I/O).
//!
//! - `refs`: key = the 32 hash bytes followed by the ref id's bytes; value = one byte,
//!   [`LIVE`] or [`DROPPED`]. The hash comes first so that all refs of one block are one
//!   prefix scan, and all refs of one partition (first hash byte) one range scan, which
//!   is what anti-entropy digests per partition will walk. A dropped ref stays as a
//!   tombstone: "dropped wins" when replicas merge, so it must outlive the live record
//!   it beats.
//! - `rc`: key = the 32 hash bytes; value = [`RcEntry`](crate::rc::RcEntry) bytes (see
//!   `rc.rs`); an absent key is `RcEntry::Absent`.
//! - `gc_fence`: key = the 32 hash bytes; value = the time the fence was set (ms since
//!   the epoch, u64 big-endian). Present while a GC delete of the block is under way (see
//!   `gc.rs`): an `AddRef` that meets it asks resync for an immediate fetch. Written
//!   durably before storage is asked to delete, lifted when the delete ended; a fence
//!   found at start was left by a crash mid-delete and is lifted then (its block is
//!   fetched at once if it is referenced again).

use tracing::warn;

use super::RefState;
use crate::hash::{Hash, HASH_LEN};
use crate::ref_id::RefId;

/// Stored value of a live ref.
pub const LIVE: u8 = 1;
/// Stored value of a dropped ref (a tombstone).
pub const DROPPED: u8 = 0;

/// The stored value of a fence set at `at_ms`.
pub fn encode_fence(at_ms: u64) -> [u8; 8] {
    at_ms.to_be_bytes()
}

/// The `refs` key of `(hash, ref_id)`.
pub fn ref_key(hash: &Hash, ref_id: &RefId) -> Vec<u8> {
    let mut k = Vec::with_capacity(HASH_LEN + ref_id.as_bytes().len());
    k.extend_from_slice(hash.as_bytes());
    k.extend_from_slice(ref_id.as_bytes());
    k
}

/// Split a `refs` key into its hash and ref id; `None` if it is malformed.
pub fn split_ref_key(key: &[u8]) -> Option<(Hash, RefId)> {
    if key.len() <= HASH_LEN {
        return None;
    }
    let hash = Hash::from_slice(&key[..HASH_LEN])?;
    let ref_id = RefId::from_bytes(&key[HASH_LEN..]).ok()?;
    Some((hash, ref_id))
}

/// The stored byte of a ref state.
pub fn encode_state(state: RefState) -> [u8; 1] {
    match state {
        RefState::Live => [LIVE],
        RefState::Dropped => [DROPPED],
    }
}

/// Decode a stored ref state. An unreadable value counts as live: keeping a block too
/// long is recoverable, deleting it too early is not (invariant 4). A later `DropRef`
/// of that name overwrites the value and so repairs it.
pub fn decode_state(key: &[u8], value: &[u8]) -> RefState {
    match value {
        [DROPPED] => RefState::Dropped,
        [LIVE] => RefState::Live,
        other => {
            warn!(
                key = %hex::encode(key),
                value = %hex::encode(other),
                "invalid ref state in the refs keyspace; counting it as live"
            );
            RefState::Live
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_keys_sort_by_hash_first_and_split_back() {
        let a = Hash([1; 32]);
        let b = Hash([2; 32]);
        let long: RefId = "zzzzzzzz".parse().unwrap();
        let short: RefId = "a".parse().unwrap();
        let ka = ref_key(&a, &long);
        let kb = ref_key(&b, &short);
        assert!(ka < kb, "keys of a smaller hash must sort first");
        assert_eq!(split_ref_key(&ka), Some((a, long)));
        assert_eq!(
            split_ref_key(&[1; 32]),
            None,
            "a key without ref id is malformed"
        );
        assert_eq!(split_ref_key(&[1; 20]), None, "a short key is malformed");
    }

    #[test]
    fn state_bytes_round_trip_and_junk_counts_as_live() {
        for s in [RefState::Live, RefState::Dropped] {
            assert_eq!(decode_state(b"k", &encode_state(s)), s);
        }
        assert_eq!(decode_state(b"k", &[7]), RefState::Live);
        assert_eq!(decode_state(b"k", &[]), RefState::Live);
    }
}
