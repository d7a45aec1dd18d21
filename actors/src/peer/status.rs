//! Status of the peer actor: [`PeerInfo`] (one peer's health and last announced storage
//! counts), and this node's own counts ([`SetLocalStats`], pushed by the node every few
//! seconds), which the actor announces in its `Hello`s and `Ping`s. Peers' counts arrive
//! the same way, so no storage actor is asked on the QUIC path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::PeerActor;
use crate::frame::NodeStats;
use crate::hash::{Hash, NodeId};

/// Counts announced as older than this are ignored: a node samples its own every few
/// seconds, so such an age is a broken or hostile sender's (and would strain `Instant`).
pub const MAX_ANNOUNCED_AGE: Duration = Duration::from_secs(24 * 3600);

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
    /// The storage counts it last announced (`Hello` or `Ping`), with when it sampled
    /// them (as seen here: the time received minus the age it gave), when known.
    pub stats: Option<(NodeStats, Instant)>,
}

/// This node's storage counts, as of now: announced to peers in the next `Hello`s and
/// `Ping`s (with their age at sending).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetLocalStats(pub NodeStats);

impl Handler<SetLocalStats> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: SetLocalStats, _ctx: &mut Context<Self>) {
        self.local_stats = Some((msg.0, Instant::now()));
    }
}

impl PeerActor {
    /// This node's counts to announce now: the last pushed ones, aged.
    pub(super) fn announced_stats(&self) -> Option<NodeStats> {
        self.local_stats.map(|(s, at)| NodeStats {
            age_ms: s
                .age_ms
                .saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
            ..s
        })
    }

    /// Keep the counts `from` announced (ignored for a node that is not a peer).
    pub(super) fn peer_stats_seen(&mut self, from: NodeId, stats: Option<NodeStats>) {
        let (Some(s), Some(p)) = (stats, self.peers.get_mut(&from)) else {
            return;
        };
        let age = Duration::from_millis(s.age_ms);
        if age > MAX_ANNOUNCED_AGE {
            return;
        }
        let Some(sampled) = Instant::now().checked_sub(age) else {
            return;
        };
        p.stats = Some((s, sampled));
    }
}
