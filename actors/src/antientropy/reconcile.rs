//! Reconciling one range of ref records with one peer: compare digests, narrow down to
//! the differing sub-ranges (a recursive split on the next key byte, i.e. a Merkle tree
//! of fan-out 256 computed on demand), and exchange only the differing records.
//!
//! Memory is bounded whatever the range holds: a digest reply has at most 257 children,
//! records are only fetched for ranges of at most [`LEAF`] records on both sides, and the
//! work list holds at most 257 prefixes per level of the key.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use crate::frame::{self, BlockRpc, PrefixDigest, RefRecord};
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, Priority, RpcError};
use crate::refcount::{DigestPrefix, MergeRefs, RecordsUnder, RefcountActor, RefcountError};
use crate::resync::{Schedule, ScheduleReason};

/// Ranges of at most this many records (on both sides) are exchanged record by record;
/// the dispatcher's page size bounds it too.
pub const LEAF: usize = 128;

/// What reconciling a range cost and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Bytes of frames sent to the peer (requests, including merges).
    pub bytes_sent: u64,
    /// Bytes of frames received from the peer (replies).
    pub bytes_received: u64,
    /// Records merged here from the peer.
    pub records_in: u64,
    /// Records sent to the peer to merge.
    pub records_out: u64,
}

impl SyncStats {
    pub fn add(&mut self, o: &SyncStats) {
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.records_in += o.records_in;
        self.records_out += o.records_out;
    }
}

/// Why reconciling failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("peer {node}: {source}")]
    Peer {
        node: NodeId,
        #[source]
        source: RpcError,
    },
    #[error("peer {node} answered {kind} to {request}")]
    BadReply {
        node: NodeId,
        kind: &'static str,
        request: &'static str,
    },
    #[error("local refcount: {0}")]
    Local(#[from] RefcountError),
    #[error("the {0} actor is gone")]
    Gone(&'static str),
}

/// What reconciling needs: the local refcount actor, a way to call the peer, and where
/// to schedule the resync of blocks that gained a live ref.
#[derive(Clone)]
pub struct SyncDeps {
    pub refcount: Addr<RefcountActor>,
    pub peers: Recipient<Call>,
    pub schedule: Recipient<Schedule>,
    pub timeout: Duration,
}

fn frame_len(rpc: &BlockRpc) -> u64 {
    frame::encode(rpc).map(|f| f.len() as u64).unwrap_or(0)
}

impl SyncDeps {
    async fn call(
        &self,
        node: NodeId,
        rpc: BlockRpc,
        stats: &mut SyncStats,
    ) -> Result<BlockRpc, SyncError> {
        stats.bytes_sent += frame_len(&rpc);
        let reply = self
            .peers
            .send(Call {
                node,
                rpc,
                timeout: self.timeout,
                priority: Priority::Background,
            })
            .await
            .map_err(|_| SyncError::Gone("peer"))?
            .map_err(|source| SyncError::Peer { node, source })?;
        stats.bytes_received += frame_len(&reply);
        Ok(reply)
    }

    async fn local_digest(&self, prefix: &[u8]) -> Result<PrefixDigest, SyncError> {
        Ok(self
            .refcount
            .send(DigestPrefix {
                prefix: prefix.to_vec(),
                known: None,
            })
            .await
            .map_err(|_| SyncError::Gone("refcount"))??)
    }

    async fn remote_digest(
        &self,
        node: NodeId,
        prefix: &[u8],
        known: &[u8],
        stats: &mut SyncStats,
    ) -> Result<PrefixDigest, SyncError> {
        let rpc = BlockRpc::RefDigestQuery {
            prefix: prefix.to_vec(),
            known: known.to_vec(),
        };
        match self.call(node, rpc, stats).await? {
            BlockRpc::RefDigestReply(d) => Ok(d),
            other => Err(SyncError::BadReply {
                node,
                kind: other.kind(),
                request: "RefDigestQuery",
            }),
        }
    }

    /// Exchange the records of one small range both ways.
    async fn exchange(
        &self,
        node: NodeId,
        prefix: &[u8],
        exact: bool,
        stats: &mut SyncStats,
    ) -> Result<(), SyncError> {
        let rpc = BlockRpc::RefRecordsQuery {
            prefix: prefix.to_vec(),
            exact,
            limit: LEAF as u32,
        };
        let theirs = match self.call(node, rpc, stats).await? {
            BlockRpc::RefRecords(r) => r,
            other => {
                return Err(SyncError::BadReply {
                    node,
                    kind: other.kind(),
                    request: "RefRecordsQuery",
                })
            }
        };
        let ours = self
            .refcount
            .send(RecordsUnder {
                prefix: prefix.to_vec(),
                exact,
                limit: LEAF,
            })
            .await
            .map_err(|_| SyncError::Gone("refcount"))??;
        let (to_us, to_them) = diff(&ours, &theirs);
        if !to_them.is_empty() {
            stats.records_out += to_them.len() as u64;
            match self.call(node, BlockRpc::MergeRefs(to_them), stats).await? {
                BlockRpc::Ok => {}
                other => {
                    return Err(SyncError::BadReply {
                        node,
                        kind: other.kind(),
                        request: "MergeRefs",
                    })
                }
            }
        }
        if !to_us.is_empty() {
            stats.records_in += to_us.len() as u64;
            let live: Vec<Hash> = to_us.iter().filter(|r| r.live).map(|r| r.hash).collect();
            self.refcount
                .send(MergeRefs { records: to_us })
                .await
                .map_err(|_| SyncError::Gone("refcount"))??;
            schedule_fetches(&self.schedule, live);
        }
        Ok(())
    }
}

/// Blocks that gained a live ref by a merge are looked at now (not after the delay a
/// client's new ref gets, which lets its writer deliver the block first).
pub fn schedule_fetches(schedule: &Recipient<Schedule>, mut hashes: Vec<Hash>) {
    hashes.dedup();
    for hash in hashes {
        schedule.do_send(Schedule {
            hash,
            delay: Duration::ZERO,
            reason: ScheduleReason::MergedRef,
        });
    }
}

/// The records each side must merge: `(to_us, to_them)`. A record goes to the side that
/// lacks it, or whose record it beats: a higher incarnation, or within one incarnation
/// dropped over live.
pub fn diff(ours: &[RefRecord], theirs: &[RefRecord]) -> (Vec<RefRecord>, Vec<RefRecord>) {
    let key = |r: &RefRecord| (r.hash, r.ref_id.clone());
    let rank = |r: &RefRecord| (r.incarnation, !r.live);
    let ours_map: BTreeMap<_, _> = ours.iter().map(|r| (key(r), rank(r))).collect();
    let theirs_map: BTreeMap<_, _> = theirs.iter().map(|r| (key(r), rank(r))).collect();
    let beats = |map: &BTreeMap<_, (u64, bool)>, r: &RefRecord| match map.get(&key(r)) {
        None => true,
        Some(other) => *other < rank(r),
    };
    let to_us = theirs
        .iter()
        .filter(|r| beats(&ours_map, r))
        .cloned()
        .collect();
    let to_them = ours
        .iter()
        .filter(|r| beats(&theirs_map, r))
        .cloned()
        .collect();
    (to_us, to_them)
}

/// One side's (count, digest) of a child range, if it has records there.
type Side<'a> = Option<(u64, &'a [u8])>;

fn same(a: &PrefixDigest, b: &PrefixDigest) -> bool {
    a.count == b.count && a.digest == b.digest
}

/// Reconcile every record under `prefix` with `node`. Returns what it cost.
pub async fn sync_range(
    deps: &SyncDeps,
    node: NodeId,
    prefix: Vec<u8>,
) -> Result<SyncStats, SyncError> {
    let mut stats = SyncStats::default();
    let mut work = vec![prefix];
    while let Some(prefix) = work.pop() {
        let ours = deps.local_digest(&prefix).await?;
        let theirs = deps
            .remote_digest(node, &prefix, &ours.digest, &mut stats)
            .await?;
        if same(&ours, &theirs) {
            continue;
        }
        if ours.count as usize <= LEAF && theirs.count as usize <= LEAF {
            deps.exchange(node, &prefix, false, &mut stats).await?;
            continue;
        }
        // Children that differ: present on one side only, or with another digest.
        let mut children: BTreeMap<u16, (Side<'_>, Side<'_>)> = BTreeMap::new();
        for c in &ours.children {
            children.entry(c.byte).or_default().0 = Some((c.count, &c.digest));
        }
        for c in &theirs.children {
            children.entry(c.byte).or_default().1 = Some((c.count, &c.digest));
        }
        for (byte, (o, t)) in children {
            if o == t {
                continue;
            }
            let (oc, tc) = (o.map_or(0, |x| x.0), t.map_or(0, |x| x.0));
            if byte > 255 {
                // The prefix itself is a complete key.
                deps.exchange(node, &prefix, true, &mut stats).await?;
                continue;
            }
            let mut child = prefix.clone();
            child.push(byte as u8);
            if oc as usize <= LEAF && tc as usize <= LEAF {
                deps.exchange(node, &child, false, &mut stats).await?;
            } else {
                work.push(child);
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod diff_tests {
    use super::*;
    use crate::hash::Hash;

    fn rec(name: &str, live: bool, incarnation: u64) -> RefRecord {
        RefRecord {
            hash: Hash([1; 32]),
            ref_id: name.parse().unwrap(),
            live,
            incarnation,
            dropped_at: if live { 0 } else { 5 },
        }
    }

    #[test]
    fn a_record_goes_to_the_side_whose_record_it_beats() {
        let ours = vec![rec("a", false, 1), rec("b", true, 2), rec("c", true, 1)];
        let theirs = vec![rec("a", true, 2), rec("b", false, 2), rec("c", true, 1)];
        let (to_us, to_them) = diff(&ours, &theirs);
        // a: their live incarnation 2 beats our tombstone of 1; b: their drop of 2 beats
        // our live 2; c: equal, nothing moves.
        assert_eq!(to_us, vec![rec("a", true, 2), rec("b", false, 2)]);
        assert!(to_them.is_empty(), "{to_them:?}");
        let (to_us, to_them) = diff(&theirs, &ours);
        assert!(to_us.is_empty());
        assert_eq!(to_them.len(), 2);
        // A record one side lacks goes to it.
        let (to_us, _) = diff(&[], &[rec("d", false, 0)]);
        assert_eq!(to_us, vec![rec("d", false, 0)]);
    }
}
