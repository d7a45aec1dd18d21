//! Which incarnation of a ref name an add or a drop names (see the refcount actor's
//! `record.rs` for the merge rule). The coordinator chooses, never a holder: it reads the
//! name's record on enough holders to meet every acknowledged write (holders minus the
//! write quorum, plus one), and
//! - an add re-adds the newest incarnation when it is live (idempotent: a retried PUT
//!   names the same one), else starts a new one above every incarnation read and at
//!   least the current time in ms, so it also beats a tombstone already purged on the
//!   holders read but still kept on another;
//! - a drop names the newest incarnation read (0 when none), so a drop replayed late
//!   from a hint never kills a newer add.
//!
//! Numbering on each holder instead would let a drop replayed after a re-add kill the
//! new incarnation there, and anti-entropy would spread it.

use blocknode_actors::frame::{BlockRpc, RefRecord};
use blocknode_actors::peer::{CallMany, Priority};
use blocknode_actors::rc::now_msec;
use blocknode_actors::{Hash, RefId};

use super::{gone, Coordinator, CoordinatorError};

/// The newest of the records read (by the merge order: incarnation, then dropped).
fn newest(records: impl Iterator<Item = RefRecord>) -> Option<(u64, bool)> {
    records
        .map(|r| (r.incarnation, r.live))
        .max_by_key(|(i, live)| (*i, !live))
}

/// The incarnation an add names, given the newest record read.
pub(super) fn add_incarnation(newest: Option<(u64, bool)>, now_ms: u64) -> u64 {
    match newest {
        Some((i, true)) => i,
        Some((i, false)) => i.saturating_add(1).max(now_ms),
        None => now_ms,
    }
}

/// The incarnation a drop names, given the newest record read.
pub(super) fn drop_incarnation(newest: Option<(u64, bool)>) -> u64 {
    newest.map_or(0, |(i, _)| i)
}

impl Coordinator {
    /// The newest record of `ref_id` on `hash` among enough of its holders to meet any
    /// write quorum.
    async fn read_ref_record(
        &self,
        hash: Hash,
        ref_id: &RefId,
    ) -> Result<Option<(u64, bool)>, CoordinatorError> {
        let nodes = self.holders(&hash);
        let wq = self.cfg.write_quorum.min(nodes.len()).max(1);
        let quorum = (nodes.len() + 1).saturating_sub(wq).max(1);
        let mut prefix = hash.as_bytes().to_vec();
        prefix.extend_from_slice(ref_id.as_bytes());
        let replies = self
            .peers
            .send(CallMany {
                nodes,
                rpc: BlockRpc::RefRecordsQuery {
                    prefix,
                    exact: true,
                    limit: 1,
                },
                quorum,
                timeout: self.cfg.small_rpc_timeout,
                priority: Priority::Client,
                interrupt_after_quorum: true,
                also: Vec::new(),
                report_failures: None,
            })
            .await
            .map_err(gone("peer"))?
            .map_err(|e| CoordinatorError::from_quorum(hash, Some(ref_id), e))?;
        Ok(newest(replies.into_iter().flat_map(|(_, rpc)| match rpc {
            BlockRpc::RefRecords(v) => v,
            _ => Vec::new(),
        })))
    }

    /// The incarnation an add of `ref_id` to `hash` names now.
    pub(super) async fn incarnation_to_add(
        &self,
        hash: Hash,
        ref_id: &RefId,
    ) -> Result<u64, CoordinatorError> {
        let newest = self.read_ref_record(hash, ref_id).await?;
        Ok(add_incarnation(newest, now_msec()))
    }

    /// The incarnation a drop of `ref_id` on `hash` names now.
    pub(super) async fn incarnation_to_drop(
        &self,
        hash: Hash,
        ref_id: &RefId,
    ) -> Result<u64, CoordinatorError> {
        Ok(drop_incarnation(self.read_ref_record(hash, ref_id).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_reuses_a_live_incarnation_and_starts_a_new_one_after_a_drop() {
        assert_eq!(
            add_incarnation(Some((7, true)), 100),
            7,
            "idempotent re-add"
        );
        assert_eq!(add_incarnation(Some((7, false)), 100), 100);
        assert_eq!(add_incarnation(Some((700, false)), 100), 701);
        assert_eq!(add_incarnation(None, 100), 100);
        assert_eq!(drop_incarnation(Some((7, true))), 7);
        assert_eq!(drop_incarnation(None), 0);
    }

    #[test]
    fn the_newest_record_is_the_highest_incarnation_then_the_tombstone() {
        let r = |incarnation, live| RefRecord {
            hash: Hash([1; 32]),
            ref_id: "r".parse().unwrap(),
            live,
            incarnation,
            dropped_at: 0,
        };
        let v = vec![r(3, true), r(5, true), r(5, false), r(4, false)];
        assert_eq!(newest(v.into_iter()), Some((5, false)));
        assert_eq!(
            newest(vec![r(2, false), r(3, true)].into_iter()),
            Some((3, true))
        );
        assert_eq!(newest(Vec::new().into_iter()), None);
    }
}
