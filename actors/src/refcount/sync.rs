//! What anti-entropy asks of the refcount actor: digests of key ranges, the records of
//! a range, merging records from another replica, and dropping the records of a
//! partition this node no longer holds.
//!
//! Merge rule (commutative, associative, idempotent, no clocks; `record.rs`): a record
//! is an incarnation, live or dropped; the higher incarnation wins, and within one
//! incarnation dropped wins. The count and its `RcChanged` notifications follow exactly
//! as for `AddRef`/`DropRef`. Digests cover key, incarnation and state, not drop times.
//!
//! Tombstones are purged `max_offline` after their drop (`purge.rs`); a tombstone that
//! comes from a replica already past that age is not recorded again where it is absent
//! (it would only be purged at once, and holders that purged it would keep receiving it).
//! A node offline longer than `max_offline` must be resynced in full: its stale live
//! records would come back otherwise.
//!
//! [`ForgetPartition`] is different from a drop: it *removes* records (no tombstone) of a
//! partition this node no longer holds, after anti-entropy has seen every new holder's
//! digest include them. It never creates or loses a tombstone anywhere else.

use actix::prelude::*;

use super::keys::{decode_rec, split_ref_key};
use super::overlay::{overlay, Merged};
use super::record::RefRec;
use super::{keyed_by_hash, store_err, RcChanged, RefcountActor, RefcountError};
use crate::frame::{ChildDigest, PrefixDigest, RefRecord};
use crate::hash::blake2sum;
use crate::hash::Hash;
use crate::rc::{now_msec, RcEntry};
use crate::refcount::keys::ref_key;

/// Bytes of a digest.
const DIGEST_LEN: usize = 16;

/// Digest of one record. Incarnation 0 adds nothing, so records written before
/// incarnations existed digest as they did.
fn record_digest(key: &[u8], r: &RefRec) -> [u8; DIGEST_LEN] {
    let mut input = Vec::with_capacity(key.len() + 9);
    input.extend_from_slice(key);
    input.push(r.is_live() as u8);
    if r.incarnation > 0 {
        input.extend_from_slice(&r.incarnation.to_be_bytes());
    }
    let h = blake2sum(&input);
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&h.0[..DIGEST_LEN]);
    d
}

fn xor(acc: &mut [u8; DIGEST_LEN], d: &[u8; DIGEST_LEN]) {
    for (a, b) in acc.iter_mut().zip(d) {
        *a ^= b;
    }
}

/// Digest of the records under a prefix (and of each child range).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<PrefixDigest, RefcountError>")]
pub struct DigestPrefix {
    pub prefix: Vec<u8>,
    /// The asker's digest of the same range: when equal, the children are left out
    /// (the common case costs a few bytes, not 257 child digests).
    pub known: Option<Vec<u8>>,
}

/// The records under a prefix (only the key equal to it with `exact`), at most `limit`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<RefRecord>, RefcountError>")]
pub struct RecordsUnder {
    pub prefix: Vec<u8>,
    pub exact: bool,
    pub limit: usize,
}

/// Merge records from another replica; replies how many changed something here.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, RefcountError>")]
pub struct MergeRefs {
    pub records: Vec<RefRecord>,
}

/// Remove (not drop) the ref records of the hashes whose first byte is `partition`, at
/// most `limit` per message, and make their referenced blocks `Deletable` after the
/// grace period: the node no longer holds that partition and its new holders have the
/// records (the anti-entropy actor checks that). The fall to zero is announced by
/// `RcChanged` like any last drop, so resync offloads each block to the holders that
/// need it and only then deletes it here.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<ForgetReport, RefcountError>")]
pub struct ForgetPartition {
    pub partition: u8,
    pub limit: usize,
}

/// What [`ForgetPartition`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetReport {
    pub refs: usize,
    pub rc_entries: usize,
    /// Whether records may remain (a limit was hit): send the message again.
    pub more: bool,
}

impl RefcountActor {
    /// Visit every record under `prefix` in key order (stored ones overlaid with pending
    /// writes) until `f` returns false. Streams the stored range, so memory stays bounded
    /// however many refs a partition holds (the overlay is only the unsynced writes).
    fn each_record_under(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], RefRec) -> bool,
    ) -> Result<(), RefcountError> {
        let pending = self.pending.all_refs();
        let pending = pending
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, s)| (k, *s));
        let stored = self.refs.prefix(prefix).map(|g| g.into_inner());
        for m in overlay(stored, pending) {
            let go_on = match m.map_err(store_err)? {
                Merged::Stored(k, v) => f(&k, decode_rec(&k, &v)),
                Merged::Pending(k, s) => f(k, s),
            };
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    /// Apply one record by the merge rule.
    fn merge_one(&mut self, r: &RefRecord, now_ms: u64) -> Result<bool, RefcountError> {
        let incoming = if r.live {
            RefRec::live(r.incarnation)
        } else {
            RefRec::dropped(r.incarnation, r.dropped_at)
        };
        let retention = self.config.tombstone_retention.as_millis() as u64;
        let expired =
            !r.live && r.dropped_at != 0 && now_ms.saturating_sub(r.dropped_at) >= retention;
        if expired && self.ref_state(&ref_key(&r.hash, &r.ref_id))?.is_none() {
            return Ok(false);
        }
        match self.set_ref(r.hash, r.ref_id.clone(), incoming) {
            Ok(u) => Ok(u.changed),
            // A live record beaten by the tombstone here: nothing to merge.
            Err(RefcountError::RefDropped { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Handler<ForgetPartition> for RefcountActor {
    type Result = ResponseFuture<Result<ForgetReport, RefcountError>>;

    fn handle(&mut self, m: ForgetPartition, ctx: &mut Context<Self>) -> Self::Result {
        let limit = m.limit.max(1);
        let prefix = [m.partition];
        let mut keys = Vec::new();
        if let Err(e) = self.each_record_under(&prefix, |k, _| {
            keys.push(k.to_vec());
            keys.len() < limit
        }) {
            return Box::pin(async move { Err(e) });
        }
        let mut entries: Vec<(Hash, RcEntry)> = Vec::new();
        let pending = self.pending.all_rc();
        let mut first = [0u8; 32];
        first[0] = m.partition;
        let pending = pending
            .range(Hash(first)..)
            .take_while(|(h, _)| h.as_bytes()[0] == m.partition)
            .map(|(h, e)| (h, Some(*e)));
        let stored = keyed_by_hash(self.rc.prefix(prefix).map(|g| g.into_inner()));
        for item in overlay(stored, pending) {
            let (hash, e) = match item {
                Err(e) => return Box::pin(async move { Err(store_err(e)) }),
                // A corrupt entry goes too: its refs are going away with it.
                Ok(Merged::Stored(h, v)) => (
                    h,
                    RcEntry::parse(&v).unwrap_or(RcEntry::Present { count: 1 }),
                ),
                // A pending `Absent` (count 0) hides the stored entry.
                Ok(Merged::Pending(h, e)) => (*h, e),
            };
            if e.count() > 0 {
                entries.push((hash, e));
                if entries.len() >= limit {
                    break;
                }
            }
        }
        let report = ForgetReport {
            refs: keys.len(),
            rc_entries: entries.len(),
            more: keys.len() >= limit || entries.len() >= limit,
        };
        if !keys.is_empty() || !entries.is_empty() {
            let g = self.pending.open_generation();
            for k in keys {
                g.refs.insert(k, None);
            }
            // A referenced block becomes deletable after the grace period, as after a
            // last drop (invariant 4); resync offloads it, deletes it and clears the
            // entry. Entries already at zero are left to that same path.
            let new = RcEntry::Present { count: 1 }.with_count(0, now_msec(), self.config.gc_delay);
            for (hash, old) in entries {
                g.rc.insert(hash, new);
                g.changes.push(RcChanged {
                    hash,
                    old,
                    new,
                    fenced: false,
                });
            }
        }
        tracing::info!(
            partition = m.partition,
            refs = report.refs,
            rc = report.rc_entries,
            "forgot records of a partition this node no longer holds"
        );
        self.reply_when_durable(Ok(report), ctx)
    }
}

impl Handler<DigestPrefix> for RefcountActor {
    type Result = Result<PrefixDigest, RefcountError>;

    fn handle(&mut self, m: DigestPrefix, _ctx: &mut Context<Self>) -> Self::Result {
        let mut total = [0u8; DIGEST_LEN];
        let mut count = 0u64;
        let mut children: Vec<(u16, u64, [u8; DIGEST_LEN])> = Vec::new();
        self.each_record_under(&m.prefix, |k, s| {
            let d = record_digest(k, &s);
            xor(&mut total, &d);
            count += 1;
            let byte = k.get(m.prefix.len()).map_or(256u16, |b| *b as u16);
            match children.last_mut() {
                Some(c) if c.0 == byte => {
                    c.1 += 1;
                    xor(&mut c.2, &d);
                }
                _ => children.push((byte, 1, d)),
            }
            true
        })?;
        if m.known.as_deref() == Some(&total[..]) {
            children.clear();
        }
        Ok(PrefixDigest {
            count,
            digest: total.to_vec(),
            children: children
                .into_iter()
                .map(|(byte, count, d)| ChildDigest {
                    byte,
                    count,
                    digest: d.to_vec(),
                })
                .collect(),
        })
    }
}

impl Handler<RecordsUnder> for RefcountActor {
    type Result = Result<Vec<RefRecord>, RefcountError>;

    fn handle(&mut self, m: RecordsUnder, _ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        if m.limit == 0 {
            return Ok(out);
        }
        self.each_record_under(&m.prefix, |k, s| {
            if m.exact && k.len() != m.prefix.len() {
                return true;
            }
            if let Some((hash, ref_id)) = split_ref_key(k) {
                out.push(RefRecord {
                    hash,
                    ref_id,
                    live: s.is_live(),
                    incarnation: s.incarnation,
                    dropped_at: s.dropped_at,
                });
            }
            out.len() < m.limit
        })?;
        Ok(out)
    }
}

impl Handler<MergeRefs> for RefcountActor {
    type Result = ResponseFuture<Result<usize, RefcountError>>;

    fn handle(&mut self, m: MergeRefs, ctx: &mut Context<Self>) -> Self::Result {
        let mut changed = 0;
        let now = now_msec();
        for r in &m.records {
            match self.merge_one(r, now) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => return Box::pin(async move { Err(e) }),
            }
        }
        self.reply_when_durable(Ok(changed), ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::hash::Hash;
    use crate::refcount::{GetRc, RefcountConfig};

    fn rec(i: u8, r: u8, live: bool) -> RefRecord {
        rec_in(i, r, live, 0)
    }

    fn rec_in(i: u8, r: u8, live: bool, incarnation: u64) -> RefRecord {
        RefRecord {
            hash: Hash([i; 32]),
            ref_id: format!("r{r}").parse().unwrap(),
            live,
            incarnation,
            dropped_at: if live { 0 } else { now_msec() },
        }
    }

    /// Merge `batches` in order into a fresh actor; return (digest of everything, rc of each hash).
    fn merged(batches: Vec<Vec<RefRecord>>) -> (PrefixDigest, Vec<u64>) {
        let sys = actix::System::new();
        sys.block_on(async move {
            let d = tempfile::tempdir().unwrap();
            let db = fjall::Database::builder(d.path()).open().unwrap();
            let a = RefcountActor::new(
                db,
                RefcountConfig {
                    gc_delay: Duration::from_secs(600),
                    ..Default::default()
                },
                None,
            )
            .unwrap()
            .start();
            for b in batches {
                a.send(MergeRefs { records: b }).await.unwrap().unwrap();
            }
            let dig = a
                .send(DigestPrefix {
                    prefix: vec![],
                    known: None,
                })
                .await
                .unwrap()
                .unwrap();
            let mut rcs = Vec::new();
            for i in 0..4u8 {
                rcs.push(
                    a.send(GetRc {
                        hash: Hash([i; 32]),
                    })
                    .await
                    .unwrap()
                    .unwrap()
                    .count(),
                );
            }
            (dig, rcs)
        })
    }

    fn records() -> impl Strategy<Value = Vec<RefRecord>> {
        proptest::collection::vec(
            (0u8..4, 0u8..4, any::<bool>(), 0u64..3).prop_map(|(i, r, l, n)| rec_in(i, r, l, n)),
            0..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Merging A then B gives the same records and counts as B then A.
        #[test]
        fn merge_is_commutative(a in records(), b in records()) {
            prop_assert_eq!(merged(vec![a.clone(), b.clone()]), merged(vec![b, a]));
        }

        /// Merging A, B, C in any grouping gives the same records and counts.
        #[test]
        fn merge_is_associative(a in records(), b in records(), c in records()) {
            let ab: Vec<_> = a.iter().chain(&b).cloned().collect();
            let bc: Vec<_> = b.iter().chain(&c).cloned().collect();
            prop_assert_eq!(merged(vec![ab, c]), merged(vec![a, bc]));
        }

        /// A higher incarnation wins in either order, whatever the states.
        #[test]
        fn higher_incarnation_wins(i in 0u8..4, r in 0u8..4, old_live in any::<bool>(), new_live in any::<bool>()) {
            let (old, new) = (rec_in(i, r, old_live, 1), rec_in(i, r, new_live, 2));
            let (_, rc1) = merged(vec![vec![old.clone()], vec![new.clone()]]);
            let (_, rc2) = merged(vec![vec![new], vec![old]]);
            prop_assert_eq!(rc1[i as usize], new_live as u64);
            prop_assert_eq!(rc2[i as usize], new_live as u64);
        }

        /// Merging the same records twice changes nothing the second time.
        #[test]
        fn merge_is_idempotent(a in records()) {
            prop_assert_eq!(merged(vec![a.clone()]), merged(vec![a.clone(), a]));
        }

        /// Within one incarnation, a dropped record wins over a live one, in either order.
        #[test]
        fn dropped_wins(i in 0u8..4, r in 0u8..4, n in 0u64..3) {
            let (_, rc1) = merged(vec![vec![rec_in(i, r, true, n)], vec![rec_in(i, r, false, n)]]);
            let (_, rc2) = merged(vec![vec![rec_in(i, r, false, n)], vec![rec_in(i, r, true, n)]]);
            prop_assert_eq!(rc1[i as usize], 0);
            prop_assert_eq!(rc2[i as usize], 0);
        }
    }

    #[test]
    fn digests_agree_exactly_when_the_records_do() {
        let (d1, _) = merged(vec![vec![rec(1, 1, true), rec(2, 2, false)]]);
        let (d2, _) = merged(vec![vec![rec(2, 2, false), rec(1, 1, true)]]);
        let (d3, _) = merged(vec![vec![rec(1, 1, true), rec(2, 2, true)]]);
        assert_eq!(d1, d2);
        assert_ne!(
            d1.digest, d3.digest,
            "a live/dropped difference must show in the digest"
        );
        assert_eq!(d1.count, 2);
        assert_eq!(d1.children.len(), 2, "one child range per first key byte");
    }
}
