//! Status types of the peer actor: [`PeerInfo`] (one peer's health).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hash::{Hash, NodeId};

/// One peer's health.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub up: bool,
    pub last_seen: Option<Instant>,
    pub rtt: Option<Duration>,
    /// The peer's layout digest from its hello, when known.
    pub layout_digest: Option<Hash>,
}
