//! The `members` list of `GET /v1/status`: one row per node of the layout in force (its
//! members, then the retiring ones still handing over), built from the layout (address,
//! zone, capacity, partitions held), the peer actor's view (up, RTT, last seen, layout
//! agreement, and the storage counts each peer last announced in its pings) and, for the
//! node answering, its own storage counts. A peer's counts are `null` until it announced
//! some (a node that predates them never does); `stats_age_secs` says how old they are.
//! The status page draws its nodes table and its bars per node from it.

use std::collections::HashMap;

use serde::Serialize;

use blocknode_actors::frame::NodeStats;
use blocknode_actors::hash::Hash;
use blocknode_actors::layout::Layout;
use blocknode_actors::peer::PeerInfo;
use blocknode_actors::storage::StorageStats;
use blocknode_actors::NodeId;

/// One node as `GET /v1/status` lists it under `members`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemberStatus {
    /// Node id, 64 hex digits.
    pub id: String,
    /// Its QUIC address as the layout gives it.
    pub addr: String,
    /// Its zone (failure domain) in the layout.
    pub zone: String,
    /// Its placement weight in the layout.
    pub capacity: u64,
    /// Partitions of the current table it holds a replica of (of `layout.partitions`).
    pub partitions: usize,
    /// Whether this row is the node that answered.
    pub this_node: bool,
    /// A member of an older layout that still hands its partitions over.
    pub retiring: bool,
    /// This node: always; a peer: its connection is up (the peer actor's view).
    pub up: bool,
    /// Last measured round-trip time to it, ms (none for this node or a peer never reached).
    pub rtt_ms: Option<f64>,
    /// Seconds since a frame last came from it (none for this node or a peer never seen).
    pub last_seen_secs_ago: Option<f64>,
    /// Whether it announces the same layout as this node (none: not known yet).
    pub layout_agrees: Option<bool>,
    /// Blocks stored: this node's own count, or what the peer last announced (none:
    /// it announced none yet).
    pub blocks: Option<u64>,
    /// Block bytes stored (as on disk, compressed or not), known as `blocks` is.
    pub bytes: Option<u64>,
    /// Sum of its data dirs' capacities in bytes, known as `blocks` is (none also when
    /// a data dir has no quota).
    pub disk_capacity: Option<u64>,
    /// Seconds since `blocks` and `bytes` were sampled (0 for this node; none: unknown).
    pub stats_age_secs: Option<f64>,
}

/// The rows of `layout`'s members and retiring members, as seen from `me`.
pub fn members(
    layout: &Layout,
    me: &NodeId,
    peers: &[PeerInfo],
    storage: &StorageStats,
) -> Vec<MemberStatus> {
    let digest: Hash = layout.digest();
    let by_id: HashMap<NodeId, &PeerInfo> = peers.iter().map(|p| (p.id, p)).collect();
    let mut held: HashMap<NodeId, usize> = HashMap::new();
    for row in &layout.table {
        for id in row {
            *held.entry(*id).or_default() += 1;
        }
    }
    let retiring = layout.retiring.iter().map(|m| (m, true));
    let mut out: Vec<MemberStatus> = Vec::new();
    for (m, is_retiring) in layout.members.iter().map(|m| (m, false)).chain(retiring) {
        if out.iter().any(|r| r.id == m.id.to_hex()) {
            continue;
        }
        let this_node = m.id == *me;
        let peer = by_id.get(&m.id);
        // Storage counts and their age in seconds: ours as of now, a peer's as announced.
        let seen: Option<(NodeStats, f64)> = if this_node {
            Some((
                NodeStats {
                    blocks: storage.blocks,
                    bytes: storage.bytes,
                    capacity: storage.capacity(),
                    age_ms: 0,
                },
                0.0,
            ))
        } else {
            peer.and_then(|p| p.stats)
                .map(|(s, at)| (s, at.elapsed().as_secs_f64()))
        };
        out.push(MemberStatus {
            id: m.id.to_hex(),
            addr: m.addr.to_string(),
            zone: m.zone.clone(),
            capacity: m.capacity,
            partitions: held.get(&m.id).copied().unwrap_or(0),
            this_node,
            retiring: is_retiring,
            up: this_node || peer.is_some_and(|p| p.up),
            rtt_ms: peer.and_then(|p| p.rtt).map(|d| d.as_secs_f64() * 1000.0),
            last_seen_secs_ago: peer
                .and_then(|p| p.last_seen)
                .map(|t| t.elapsed().as_secs_f64()),
            layout_agrees: if this_node {
                Some(true)
            } else {
                peer.and_then(|p| p.layout_digest).map(|d| d == digest)
            },
            blocks: seen.map(|(s, _)| s.blocks),
            bytes: seen.map(|(s, _)| s.bytes),
            disk_capacity: seen.and_then(|(s, _)| s.capacity),
            stats_age_secs: seen.map(|(_, age)| age),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use blocknode_actors::layout::LayoutMember;

    use super::*;

    fn member(i: u8, zone: &str, capacity: u64) -> LayoutMember {
        LayoutMember {
            id: NodeId([i; 32]),
            addr: format!("127.0.0.1:{}", 4000 + u16::from(i))
                .parse()
                .expect("test address"),
            zone: zone.into(),
            capacity,
        }
    }

    #[test]
    fn rows_combine_the_layout_the_peer_view_and_this_nodes_counts() {
        let layout = Layout::initial(
            vec![member(1, "a", 1), member(2, "b", 2), member(3, "c", 1)],
            2,
        )
        .expect("a valid layout");
        let peers = vec![
            PeerInfo {
                id: NodeId([2; 32]),
                addr: "127.0.0.1:4002".parse().expect("addr"),
                up: true,
                last_seen: Some(Instant::now()),
                rtt: Some(Duration::from_micros(1500)),
                layout_digest: Some(layout.digest()),
                stats: Some((
                    NodeStats {
                        blocks: 3,
                        bytes: 3000,
                        capacity: Some(1 << 30),
                        age_ms: 0,
                    },
                    Instant::now() - Duration::from_secs(2),
                )),
            },
            PeerInfo {
                id: NodeId([3; 32]),
                addr: "127.0.0.1:4003".parse().expect("addr"),
                up: false,
                last_seen: None,
                rtt: None,
                layout_digest: None,
                stats: None,
            },
        ];
        let storage = StorageStats {
            blocks: 7,
            bytes: 7000,
            ..StorageStats::default()
        };
        let rows = members(&layout, &NodeId([1; 32]), &peers, &storage);
        assert_eq!(rows.len(), 3);
        let (me, two, three) = (&rows[0], &rows[1], &rows[2]);
        assert!(me.this_node && me.up && me.layout_agrees == Some(true));
        assert_eq!((me.blocks, me.bytes), (Some(7), Some(7000)));
        assert!(two.up && !two.this_node && two.layout_agrees == Some(true));
        assert_eq!((two.zone.as_str(), two.capacity), ("b", 2));
        assert_eq!(two.rtt_ms, Some(1.5));
        assert_eq!(
            (two.blocks, two.bytes, two.disk_capacity),
            (Some(3), Some(3000), Some(1 << 30)),
            "a peer's counts as it announced them"
        );
        assert!(
            two.stats_age_secs.is_some_and(|a| (2.0..3.0).contains(&a)),
            "their age: {:?}",
            two.stats_age_secs
        );
        assert_eq!(me.stats_age_secs, Some(0.0));
        assert_eq!(
            (three.blocks, three.bytes, three.stats_age_secs),
            (None, None, None),
            "a peer that announced nothing"
        );
        assert!(!three.up && three.rtt_ms.is_none() && three.layout_agrees.is_none());
        // Every partition has 2 replicas; the heaviest member holds the most.
        let total: usize = rows.iter().map(|r| r.partitions).sum();
        assert_eq!(total, layout.partitions * 2);
        assert!(two.partitions > me.partitions && two.partitions > three.partitions);
    }

    #[test]
    fn retiring_members_follow_and_an_unknown_peer_is_down() {
        let mut layout = Layout::initial(vec![member(1, "a", 1)], 1).expect("a valid layout");
        layout.retiring = vec![member(9, "a", 1)];
        let rows = members(&layout, &NodeId([1; 32]), &[], &StorageStats::default());
        assert_eq!(rows.len(), 2);
        assert!(rows[1].retiring && !rows[1].up && rows[1].partitions == 0);
        assert_eq!(rows[0].partitions, layout.partitions);
    }
}
