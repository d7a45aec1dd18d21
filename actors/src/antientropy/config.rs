//! What the anti-entropy actor is started with: [`AntiEntropyConfig`] (settings and
//! their defaults) and [`AntiEntropyLinks`] (the addresses it talks to).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::hash::NodeId;
use crate::peer::{Call, GetPeerStatus, PEER_RPC_TIMEOUT};
use crate::placement::Placement;
use crate::refcount::RefcountActor;
use crate::resync::Schedule;
use crate::storage::ReadBlock;

/// Settings of an [`AntiEntropyActor`](super::AntiEntropyActor).
#[derive(Debug, Clone)]
pub struct AntiEntropyConfig {
    pub self_id: NodeId,
    /// Time between the starts of two full rounds (jittered ±10 %). Default 10 minutes.
    /// Zero turns anti-entropy off (no rounds, no sync on a peer's comeback; `SyncNow`
    /// still runs one).
    pub interval: Duration,
    /// Delay of the first round after start. Default [`FIRST_ROUND_AFTER`].
    pub first_round_after: Duration,
    /// Sleep `tranquility × time taken` after each partition. Default 1.
    pub tranquility: u32,
    /// Whether missed writes are kept as hints. Default true.
    pub hinted_handoff: bool,
    /// Timeout of one anti-entropy or replay request. Default [`PEER_RPC_TIMEOUT`] (the
    /// node's `peer_rpc_timeout`).
    pub rpc_timeout: Duration,
    /// How often peers' health is looked at (comebacks). Default 1 s.
    pub peer_poll: Duration,
    /// Hints kept per member; past it the member is marked for a full sync instead
    /// (`overflow.rs`). Default [`super::DEFAULT_MAX_HINTS_PER_MEMBER`].
    pub max_hints_per_member: u64,
}

/// Default time between two anti-entropy rounds: hints and read repair catch most gaps at
/// once, so the rounds only need to bound how long a missed one can last.
pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(600);

/// Delay of the first round after start (at most the interval): peers need a moment
/// to connect, and a node that just started has no missed writes of its own to fix.
pub const FIRST_ROUND_AFTER: Duration = Duration::from_secs(30);

impl AntiEntropyConfig {
    pub fn new(self_id: NodeId) -> Self {
        AntiEntropyConfig {
            self_id,
            interval: DEFAULT_ANTI_ENTROPY_INTERVAL,
            first_round_after: FIRST_ROUND_AFTER,
            tranquility: 1,
            hinted_handoff: true,
            rpc_timeout: PEER_RPC_TIMEOUT,
            peer_poll: Duration::from_secs(1),
            max_hints_per_member: super::overflow::DEFAULT_MAX_HINTS_PER_MEMBER,
        }
    }
}

/// The addresses the actor talks to.
#[derive(Clone)]
pub struct AntiEntropyLinks {
    pub refcount: Addr<RefcountActor>,
    pub peers: Recipient<Call>,
    pub peer_status: Recipient<GetPeerStatus>,
    pub schedule: Recipient<Schedule>,
    /// Where blocks go until the layout actor sends its first `LayoutChanged`.
    pub placement: Arc<dyn Placement>,
    /// This node's block reads: a missed block that is stored here is pushed to the
    /// node that missed it (`PutBlock`) instead of asking it to fetch it through its
    /// resync queue. `None`: always ask (`ScheduleResync`).
    pub read_block: Option<Recipient<ReadBlock>>,
    /// The pool such a block is charged to before it is read (and while it is sent);
    /// `None`: uncharged.
    pub read_budget: Option<crate::budget::Pool>,
}
