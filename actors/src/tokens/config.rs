//! Settings of the token actor.

use std::time::Duration;

use crate::hash::NodeId;
use crate::peer::PEER_RPC_TIMEOUT;

/// Where and how often the token actor exchanges records.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Every other cluster member: pushed to on each change, pulled from periodically.
    pub peers: Vec<NodeId>,
    /// Time between pulls from every peer (a node that missed a push catches up within
    /// it). 5 s: tokens are few, a pull with equal digests costs one small frame.
    pub sync_interval: Duration,
    /// Delay of the first pull after start (peers need a moment to connect).
    pub first_sync_after: Duration,
    /// Timeout of one push or pull call. Default [`PEER_RPC_TIMEOUT`] (the node's
    /// `peer_rpc_timeout`).
    pub call_timeout: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            peers: Vec::new(),
            sync_interval: Duration::from_secs(5),
            first_sync_after: Duration::from_secs(1),
            call_timeout: PEER_RPC_TIMEOUT,
        }
    }
}
