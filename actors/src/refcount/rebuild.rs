//! `RebuildRc`: recompute every rc entry from the `refs` keyspace.
//!
//! [`scan`] runs on a blocking thread while the actor waits (no other message is handled
//! meanwhile), reading fjall plus a copy of the pending writes; [`desired_entry`] is the
//! pure rule that says what an entry should be. The actor then stages the fixes as
//! ordinary writes, so they are ordered after every earlier write.
//!
//! Limitation: the live counts of all referenced blocks are held in memory during the
//! scan (~40 bytes per block); a node with hundreds of millions of blocks would want a
//! streaming merge of the two keyspaces instead.

use std::collections::BTreeMap;
use std::time::Duration;

use fjall::Keyspace;
use tracing::warn;

use super::keyed_by_hash;
use super::keys::decode_rec;
use super::overlay::{overlay, Merged};
use super::record::RefRec;
use crate::hash::{Hash, HASH_LEN};
use crate::rc::{RcEntry, RcParseError};

/// One block seen by the scan: its stored rc entry and its live ref count.
#[derive(Debug)]
pub struct ScanEntry {
    pub hash: Hash,
    pub stored: Result<RcEntry, RcParseError>,
    pub live: u64,
}

/// What the rc entry of a block with `live` live refs should be, given what is stored:
/// live refs make it `Present`; without any, an existing entry becomes (or stays)
/// `Deletable` so the grace period still applies, and no entry stays `Absent`.
pub fn desired_entry(
    stored: &Result<RcEntry, RcParseError>,
    live: u64,
    now_ms: u64,
    gc_delay: Duration,
) -> RcEntry {
    if live > 0 {
        return RcEntry::Present { count: live };
    }
    match stored {
        Ok(RcEntry::Absent) => RcEntry::Absent,
        Ok(d @ RcEntry::Deletable { .. }) => *d,
        Ok(RcEntry::Present { .. }) | Err(_) => RcEntry::Deletable {
            at_time: now_ms.saturating_add(gc_delay.as_millis() as u64),
        },
    }
}

/// Read both keyspaces, overlaid with the pending writes, and pair every block's stored
/// entry with its live count. Blocks with neither an entry nor a live ref are left out.
pub fn scan(
    refs: &Keyspace,
    rc: &Keyspace,
    pending_refs: &BTreeMap<Vec<u8>, Option<RefRec>>,
    pending_rc: &BTreeMap<Hash, RcEntry>,
) -> Result<Vec<ScanEntry>, fjall::Error> {
    let mut live: BTreeMap<Hash, u64> = BTreeMap::new();
    let pending = pending_refs.iter().map(|(k, s)| (k, *s));
    for item in overlay(refs.iter().map(|g| g.into_inner()), pending) {
        let (hash, state) = match item? {
            Merged::Stored(k, v) => (block_of(&k), decode_rec(&k, &v)),
            Merged::Pending(k, s) => (block_of(k), s),
        };
        if let (Some(hash), true) = (hash, state.is_live()) {
            *live.entry(hash).or_default() += 1;
        }
    }

    // A pending `Absent` removes the entry.
    let pending = pending_rc
        .iter()
        .map(|(h, e)| (h, (*e != RcEntry::Absent).then_some(*e)));
    let mut stored: Vec<(Hash, Result<RcEntry, RcParseError>)> = Vec::new();
    for item in overlay(keyed_by_hash(rc.iter().map(|g| g.into_inner())), pending) {
        stored.push(match item? {
            Merged::Stored(h, v) => (h, RcEntry::parse(&v)),
            Merged::Pending(h, e) => (*h, Ok(e)),
        });
    }

    let mut out = Vec::with_capacity(stored.len().max(live.len()));
    for (hash, s) in stored {
        let n = live.remove(&hash).unwrap_or(0);
        out.push(ScanEntry {
            hash,
            stored: s,
            live: n,
        });
    }
    out.extend(live.into_iter().map(|(hash, n)| ScanEntry {
        hash,
        stored: Ok(RcEntry::Absent),
        live: n,
    }));
    Ok(out)
}

/// The block a `refs` key belongs to (its first bytes); a shorter key is logged and
/// ignored.
fn block_of(key: &[u8]) -> Option<Hash> {
    let hash = key.get(..HASH_LEN).and_then(Hash::from_slice);
    if hash.is_none() {
        warn!(key = %hex::encode(key), "refs key shorter than a hash; ignored");
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_entry_follows_live_count_and_keeps_grace_period() {
        let gc = Duration::from_secs(10);
        let d = RcEntry::Deletable { at_time: 5 };
        assert_eq!(
            desired_entry(&Ok(d), 2, 100, gc),
            RcEntry::Present { count: 2 }
        );
        assert_eq!(
            desired_entry(&Ok(d), 0, 100, gc),
            d,
            "deadline must be kept"
        );
        assert_eq!(
            desired_entry(&Ok(RcEntry::Present { count: 3 }), 0, 100, gc),
            RcEntry::Deletable { at_time: 10_100 }
        );
        assert_eq!(
            desired_entry(&Err(RcParseError(vec![9])), 0, 100, gc),
            RcEntry::Deletable { at_time: 10_100 },
            "a corrupt entry without live refs must start a grace period, not vanish"
        );
        assert_eq!(
            desired_entry(&Ok(RcEntry::Absent), 0, 100, gc),
            RcEntry::Absent
        );
    }
}
