//! What a node still has to hand over during a layout transition ([`HandoverLeft`],
//! answered to `HandoverQuery`), and how the layout actor follows the transition of the
//! whole cluster ([`TransitionStatus`]): it asks every old holder what it has left, and
//! ends the transition (drops the previous table) when all of them have nothing left.
//!
//! An old holder gives a partition up by the existing paths: anti-entropy syncs its refs
//! to the new holders then forgets them, and resync offloads each block to every new
//! holder that needs it before deleting it. So "no block of a partition it no longer
//! holds is stored here" means every new holder has that partition's refs and blocks.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::messages::EndTransition;
use super::placement::LayoutPlacement;
use super::LayoutActor;
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, Priority};
use crate::placement::{partition_of, Placement};
use crate::storage::{BlockLength, ListBlocks, StorageActor, StorageError};

/// Blocks listed per storage request while counting.
const LIST_PAGE: usize = 1000;

/// What one node still stores of partitions it no longer holds, under layout `version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverLeft {
    pub version: u64,
    /// Partitions with at least one such block.
    pub partitions: u64,
    pub blocks: u64,
    /// Their bytes on disk.
    pub bytes: u64,
}

/// Count what `me` stores of partitions `placement` does not give it (whatever the
/// previous table said: such a block is on its way out).
pub async fn handover_left(
    storage: &Addr<StorageActor>,
    placement: &LayoutPlacement,
    me: NodeId,
) -> Result<HandoverLeft, StorageError> {
    let mut left = HandoverLeft {
        version: placement.version(),
        ..HandoverLeft::default()
    };
    let mut partitions = std::collections::BTreeSet::new();
    let mut after: Option<Hash> = None;
    loop {
        let page = storage
            .send(ListBlocks {
                after,
                limit: LIST_PAGE,
            })
            .await
            .map_err(StorageError::ActorGone)??;
        for h in &page {
            let p = partition_of(h, placement.partitions());
            if placement.partition_nodes(p).contains(&me) {
                continue;
            }
            let len = storage
                .send(BlockLength { hash: *h })
                .await
                .map_err(StorageError::ActorGone)??;
            if let Some(len) = len {
                partitions.insert(p);
                left.blocks += 1;
                left.bytes += len;
            }
        }
        if page.len() < LIST_PAGE {
            break;
        }
        after = page.last().copied();
    }
    left.partitions = partitions.len() as u64;
    Ok(left)
}

/// The cluster's view of the running transition, as this node last polled it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransitionStatus {
    /// The layout version being moved to.
    pub version: u64,
    /// Partitions whose holders change.
    pub partitions_moving: usize,
    /// Summed over the old holders: partitions, blocks and bytes they still have to
    /// hand over (as of their last answer).
    pub partitions_left: u64,
    pub blocks_left: u64,
    pub bytes_left: u64,
    /// Old holders that have not answered the last poll (down, or still starting).
    pub holders_unknown: Vec<NodeId>,
    /// Bytes handed over per second since the transition was first polled.
    pub rate_bytes_per_sec: f64,
    /// `bytes_left / rate`; `None` while the rate is unknown or zero.
    pub eta_secs: Option<f64>,
}

/// How often the old holders are asked what they have left.
pub const HANDOVER_POLL: Duration = Duration::from_secs(2);

/// The answers of one poll.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct HandoverPolled {
    version: u64,
    moving: usize,
    answers: Vec<(NodeId, Option<HandoverLeft>)>,
}

/// The first poll's bytes, for the rate.
#[derive(Debug, Clone, Copy)]
pub(super) struct FirstPoll {
    version: u64,
    at: Instant,
    bytes: u64,
}

impl LayoutActor {
    /// Ask every old holder of a moving partition what it has left (one poll at a time).
    pub(super) fn poll_handover(&mut self, ctx: &mut Context<Self>) {
        if !self.current.in_transition() || self.polling {
            return;
        }
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let moving = self.placement.moving_partitions();
        let mut holders: Vec<NodeId> = Vec::new();
        for &p in &moving {
            let now = self.placement.partition_nodes(p);
            for n in self.placement.previous_of(p) {
                if !now.contains(n) && !holders.contains(n) {
                    holders.push(*n);
                }
            }
        }
        holders.sort();
        self.polling = true;
        let version = self.current.version;
        let timeout = self.config.fetch_timeout;
        let addr = ctx.address();
        actix_rt::spawn(async move {
            let asks = holders.iter().map(|&node| {
                let peers = peers.clone();
                async move {
                    let r = peers
                        .send(Call {
                            node,
                            rpc: BlockRpc::HandoverQuery { version },
                            timeout,
                            priority: Priority::Background,
                        })
                        .await;
                    match r {
                        Ok(Ok(BlockRpc::HandoverReply(left))) => (node, Some(left)),
                        _ => (node, None),
                    }
                }
            });
            let answers = futures::future::join_all(asks).await;
            addr.do_send(HandoverPolled {
                version,
                moving: moving.len(),
                answers,
            });
        });
    }
}

impl Handler<HandoverPolled> for LayoutActor {
    type Result = ();

    fn handle(&mut self, m: HandoverPolled, ctx: &mut Context<Self>) {
        self.polling = false;
        if m.version != self.current.version {
            return;
        }
        let mut st = TransitionStatus {
            version: m.version,
            partitions_moving: m.moving,
            ..TransitionStatus::default()
        };
        for (node, left) in &m.answers {
            // An answer under an older layout does not count: that holder has not
            // switched yet, so it does not know what it gave up.
            match left.filter(|l| l.version == m.version) {
                Some(l) => {
                    st.partitions_left += l.partitions;
                    st.blocks_left += l.blocks;
                    st.bytes_left += l.bytes;
                }
                None => st.holders_unknown.push(*node),
            }
        }
        let first = match self.first_poll.filter(|f| f.version == m.version) {
            Some(f) => f,
            None => {
                let f = FirstPoll {
                    version: m.version,
                    at: Instant::now(),
                    bytes: st.bytes_left,
                };
                self.first_poll = Some(f);
                f
            }
        };
        let secs = first.at.elapsed().as_secs_f64();
        if secs > 0.0 && first.bytes > st.bytes_left {
            st.rate_bytes_per_sec = (first.bytes - st.bytes_left) as f64 / secs;
            st.eta_secs = Some(st.bytes_left as f64 / st.rate_bytes_per_sec);
        }
        let done = st.holders_unknown.is_empty() && st.blocks_left == 0;
        self.transition = Some(st);
        if done {
            tracing::info!(version = m.version, "every old holder has handed over");
            ctx.address().do_send(EndTransition { version: m.version });
        }
    }
}
