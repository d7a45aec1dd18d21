//! On-disk encoding of the `refs` and `rc` keyspaces (pure functions, no I/O).
//!
//! - `refs`: key = the 32 hash bytes followed by the ref id's bytes; value = one byte,
//!   [`LIVE`] or [`DROPPED`], then the incarnation (u64 big-endian) and the drop time
//!   (ms since the epoch, u64 big-endian; 0 while live), see `record.rs`. A value of the
//!   one byte alone (written before incarnations existed) is incarnation 0 with an
//!   unknown drop time. The hash comes first so that all refs of one block are one
//!   prefix scan, and all refs of one partition (first hash byte) one range scan, which
//!   is what anti-entropy digests per partition walk. A dropped ref stays as a
//!   tombstone until `max_offline` after its drop: within its incarnation, dropped wins
//!   when replicas merge, so it must outlive the live records it beats.
//! - `rc`: key = the 32 hash bytes; value = [`RcEntry`](crate::rc::RcEntry) bytes (see
//!   `rc.rs`); an absent key is `RcEntry::Absent`.
//! - `gc_fence`: key = the 32 hash bytes; value = the time the fence was set (ms since
//!   the epoch, u64 big-endian). Present while a GC delete of the block is under way (see
//!   `gc.rs`): an `AddRef` that meets it asks resync for an immediate fetch. Written
//!   durably before storage is asked to delete, lifted when the delete ended; a fence
//!   found at start was left by a crash mid-delete and is lifted then (its block is
//!   fetched at once if it is referenced again).

use tracing::warn;

use super::record::RefRec;
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

/// The stored value of a ref record.
pub fn encode_rec(r: &RefRec) -> [u8; 17] {
    let mut v = [0u8; 17];
    v[0] = match r.state {
        RefState::Live => LIVE,
        RefState::Dropped => DROPPED,
    };
    v[1..9].copy_from_slice(&r.incarnation.to_be_bytes());
    v[9..17].copy_from_slice(&r.dropped_at.to_be_bytes());
    v
}

/// Decode a stored ref record. An unreadable value counts as live (incarnation 0):
/// keeping a block too long is recoverable, deleting it too early is not (invariant 4).
/// A later drop of that name overwrites the value and so repairs it.
pub fn decode_rec(key: &[u8], value: &[u8]) -> RefRec {
    let u64_at = |b: &[u8]| b.try_into().map(u64::from_be_bytes).unwrap_or(0);
    match value {
        [DROPPED] => RefRec::dropped(0, 0),
        [LIVE] => RefRec::live(0),
        [DROPPED, rest @ ..] if rest.len() == 16 => {
            RefRec::dropped(u64_at(&rest[..8]), u64_at(&rest[8..]))
        }
        [LIVE, rest @ ..] if rest.len() == 16 => RefRec::live(u64_at(&rest[..8])),
        other => {
            warn!(
                key = %hex::encode(key),
                value = %hex::encode(other),
                "invalid ref state in the refs keyspace; counting it as live"
            );
            RefRec::live(0)
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
    fn records_round_trip_old_values_are_incarnation_0_and_junk_counts_as_live() {
        for r in [RefRec::live(7), RefRec::dropped(3, 1_700_000_000_000)] {
            assert_eq!(decode_rec(b"k", &encode_rec(&r)), r);
        }
        assert_eq!(decode_rec(b"k", &[LIVE]), RefRec::live(0));
        assert_eq!(decode_rec(b"k", &[DROPPED]), RefRec::dropped(0, 0));
        assert_eq!(decode_rec(b"k", &[7]), RefRec::live(0));
        assert_eq!(decode_rec(b"k", &[]), RefRec::live(0));
        assert_eq!(decode_rec(b"k", &[DROPPED, 1, 2]), RefRec::live(0));
    }
}
