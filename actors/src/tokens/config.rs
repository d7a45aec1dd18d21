//! Settings of the token actor.

use std::time::Duration;

use crate::hash::NodeId;
use crate::peer::PEER_RPC_TIMEOUT;

/// Default of the longest time a node may be offline and still catch up from its peers
/// (tombstones of revoked tokens are kept this long): 30 days.
pub const DEFAULT_MAX_OFFLINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where and how often the token actor exchanges records.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// This node (left out of `peers` when they follow the layout).
    pub node: NodeId,
    /// Every other cluster member: pushed to on each change, pulled from periodically.
    /// The starting layout's members; each `LayoutChanged` replaces them (see
    /// `layout.rs`).
    pub peers: Vec<NodeId>,
    /// Time between pulls from every peer (a node that missed a push catches up within
    /// it). 5 s: tokens are few, a pull with equal digests costs one small frame.
    pub sync_interval: Duration,
    /// Delay of the first pull after start (peers need a moment to connect).
    pub first_sync_after: Duration,
    /// How long a revoked token's record (its tombstone) is kept: the longest a node may
    /// be offline and still learn of the revoke from its peers. Older tombstones are
    /// purged. A node offline longer resyncs its tokens in full when it is back, and its
    /// peers refuse its stale live records (`offline.rs`). The node's `max_offline`
    /// (default 30 days; any value is accepted here, so tests may use a small one).
    pub tombstone_retention: Duration,
    /// Timeout of one push or pull call. Default [`PEER_RPC_TIMEOUT`] (the node's
    /// `peer_rpc_timeout`).
    pub call_timeout: Duration,
}

impl TokenConfig {
    /// The defaults for node `node`, with no peers yet.
    pub fn new(node: NodeId) -> Self {
        TokenConfig {
            node,
            peers: Vec::new(),
            sync_interval: Duration::from_secs(5),
            first_sync_after: Duration::from_secs(1),
            tombstone_retention: DEFAULT_MAX_OFFLINE,
            call_timeout: PEER_RPC_TIMEOUT,
        }
    }
}
