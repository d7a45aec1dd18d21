//! Bounded answers and bounded repair requests of the resync actor:
//!
//! - [`ListResyncErrorsPage`]: the errors table one page at a time (the HTTP API's
//!   `GET /v1/resync/errors?limit=&after=`), so neither the answer nor its building grows
//!   with the table;
//! - [`RepairAfterRead`]: a read found holders lacking a block; each is asked to resync it
//!   at most once per hash per [`READ_REPAIR_INTERVAL`], remembered in a table of at most
//!   [`READ_REPAIR_TABLE`] hashes ([`RecentRepairs`]), so repeated GETs of a hash nobody
//!   has (a 404 asked again and again) cost no more than one round of requests a minute.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;

use super::deps::call;
use super::status::ResyncErrorInfo;
use super::ResyncActor;
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::rc::now_msec;

/// Least time between two repair requests to one node for one hash after reads that
/// found it lacking there.
pub const READ_REPAIR_INTERVAL: Duration = Duration::from_secs(60);
/// (hash, node) pairs the read-repair table remembers at most (about 100 bytes each).
pub const READ_REPAIR_TABLE: usize = 65_536;

/// Up to `limit` entries of the errors table after `after`, in hash order.
#[derive(Message, Debug, Clone)]
#[rtype(result = "ResyncErrorPage")]
pub struct ListResyncErrorsPage {
    pub after: Option<Hash>,
    pub limit: usize,
}

/// The answer of [`ListResyncErrorsPage`].
#[derive(Debug, Clone)]
pub struct ResyncErrorPage {
    pub errors: Vec<ResyncErrorInfo>,
    /// Set when more entries follow: the `after` of the next page.
    pub next: Option<Hash>,
}

impl Handler<ListResyncErrorsPage> for ResyncActor {
    type Result = MessageResult<ListResyncErrorsPage>;

    fn handle(&mut self, m: ListResyncErrorsPage, _ctx: &mut Context<Self>) -> Self::Result {
        let (entries, more) = self.queue.error_page(m.after, m.limit);
        let next = if more {
            entries.last().map(|(h, _)| *h)
        } else {
            None
        };
        MessageResult(ResyncErrorPage {
            errors: entries
                .into_iter()
                .map(|(h, e)| ResyncErrorInfo {
                    hash: h.to_hex(),
                    count: e.count,
                    last_try: e.last_try,
                    next_try: e.next_try,
                    error: e.message,
                })
                .collect(),
            next,
        })
    }
}

/// A read (a GET) found `nodes` lacking `hash` (or holding it rotten): ask each to
/// resync it, unless that node was asked about this hash within [`READ_REPAIR_INTERVAL`]
/// (kept per hash and node: a holder found lacking later is asked even when another
/// was asked about the hash just before).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RepairAfterRead {
    pub hash: Hash,
    pub nodes: Vec<NodeId>,
}

/// The (hash, node) pairs asked about recently, oldest first: a time-ordered ring
/// bounded in age and size (a pair pushed out early by the size bound may be asked about
/// again sooner).
#[derive(Debug, Default)]
pub(super) struct RecentRepairs {
    at: HashMap<(Hash, NodeId), u64>,
    order: VecDeque<(u64, (Hash, NodeId))>,
}

impl RecentRepairs {
    /// Whether `key`'s node may be asked to repair its hash now (`now` in ms); if so it
    /// is recorded.
    pub(super) fn admit(
        &mut self,
        key: (Hash, NodeId),
        now: u64,
        interval: Duration,
        cap: usize,
    ) -> bool {
        let interval = interval.as_millis() as u64;
        while let Some(&(t, h)) = self.order.front() {
            if now.saturating_sub(t) < interval && self.order.len() < cap {
                break;
            }
            self.order.pop_front();
            if self.at.get(&h) == Some(&t) {
                self.at.remove(&h);
            }
        }
        if self.at.contains_key(&key) {
            return false;
        }
        self.at.insert(key, now);
        self.order.push_back((now, key));
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

impl Handler<RepairAfterRead> for ResyncActor {
    type Result = ();

    fn handle(&mut self, m: RepairAfterRead, ctx: &mut Context<Self>) {
        let now = now_msec();
        for node in m.nodes {
            if !self.read_repairs.admit(
                (m.hash, node),
                now,
                READ_REPAIR_INTERVAL,
                READ_REPAIR_TABLE,
            ) {
                continue;
            }
            if node == self.config.self_id {
                self.enqueue(m.hash, now);
                self.pump(ctx);
            } else {
                let reply = self.deps.peers.send(call(
                    node,
                    BlockRpc::ScheduleResync(m.hash),
                    self.deps.need_block_timeout,
                ));
                actix_rt::spawn(async move {
                    let _ = reply.await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_repaired_once_per_interval_and_the_table_stays_bounded() {
        let mut t = RecentRepairs::default();
        let i = Duration::from_secs(60);
        let h = |n: u32| (Hash([n as u8; 32]), NodeId([1; 32]));
        assert!(t.admit(h(1), 1_000, i, 4));
        assert!(!t.admit(h(1), 2_000, i, 4), "again within the interval");
        assert!(!t.admit(h(1), 60_999, i, 4));
        assert!(t.admit(h(1), 61_000, i, 4), "once the interval is over");
        for n in 2..100 {
            assert!(t.admit(h(n), 61_000 + u64::from(n), i, 4));
            assert!(t.len() <= 4, "the table is bounded: {}", t.len());
        }
    }
}
