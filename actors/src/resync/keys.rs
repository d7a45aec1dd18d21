//! Key and value encodings of the resync keyspaces.
//!
//! - `resync_queue`: key = due time (ms since the epoch, u64 big-endian) ++ 32-byte
//!   hash, so iteration order is due order; value empty. An item is removed only after
//!   its block was processed, so a crash loses nothing.
//! - `resync_queue_index`: key = 32-byte hash; value = the due time (u64 big-endian) of
//!   the hash's one waiting entry in `resync_queue`. Written in the same batch as the
//!   queue, it keeps one waiting entry per hash: a schedule for a queued hash either
//!   moves its entry earlier or is dropped. An entry leaves the index when a worker takes
//!   it (it stays in the queue until done), so the hash can be queued again meanwhile.
//! - `resync_errors`: key = 32-byte hash; value = error count, last try, next try (three
//!   u64 big-endian, times in ms) ++ the last error message (UTF-8).
//! - `resync_settings`: key = a setting name below; value = u64 big-endian, except
//!   `scrub_position` (the last hash checked, 32 bytes).

use crate::hash::{Hash, HASH_LEN};

pub const WORKERS: &str = "workers";
pub const TRANQUILITY: &str = "tranquility";
pub const SCRUB_TRANQUILITY: &str = "scrub_tranquility";
/// 0 idle, 1 running, 2 paused.
pub const SCRUB_STATE: &str = "scrub_state";
pub const SCRUB_POSITION: &str = "scrub_position";
pub const SCRUB_CHECKED: &str = "scrub_checked";
pub const SCRUB_CORRUPTIONS: &str = "scrub_corruptions";
pub const SCRUB_NEXT_RUN: &str = "scrub_next_run";

pub fn queue_key(due_ms: u64, hash: &Hash) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + HASH_LEN);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(hash.as_bytes());
    k
}

pub fn parse_queue_key(k: &[u8]) -> Option<(u64, Hash)> {
    if k.len() != 8 + HASH_LEN {
        return None;
    }
    Some((parse_u64(&k[..8])?, Hash::from_slice(&k[8..])?))
}

pub fn parse_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// One row of the errors table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEntry {
    pub count: u64,
    pub last_try: u64,
    pub next_try: u64,
    pub message: String,
}

impl ErrorEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24 + self.message.len());
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.last_try.to_be_bytes());
        v.extend_from_slice(&self.next_try.to_be_bytes());
        v.extend_from_slice(self.message.as_bytes());
        v
    }

    /// `None` for a value too short to be an entry (it is then ignored, never a panic).
    pub fn parse(v: &[u8]) -> Option<Self> {
        if v.len() < 24 {
            return None;
        }
        Some(ErrorEntry {
            count: parse_u64(&v[0..8])?,
            last_try: parse_u64(&v[8..16])?,
            next_try: parse_u64(&v[16..24])?,
            message: String::from_utf8_lossy(&v[24..]).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::blake2sum;

    #[test]
    fn encodings_round_trip_and_bad_bytes_are_none() {
        let h = blake2sum(b"k");
        assert_eq!(parse_queue_key(&queue_key(42, &h)), Some((42, h)));
        assert!(
            queue_key(1, &h) < queue_key(2, &h),
            "queue keys sort by due time"
        );
        assert_eq!(parse_queue_key(b"short"), None);
        let e = ErrorEntry {
            count: 3,
            last_try: 10,
            next_try: 20,
            message: "boom".into(),
        };
        assert_eq!(ErrorEntry::parse(&e.encode()), Some(e));
        assert_eq!(ErrorEntry::parse(b"x"), None);
    }
}
