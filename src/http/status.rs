//! The answer of `GET /v1/status` as typed structs ([`StatusReply`]), so its schema in
//! the OpenAPI document is the JSON the route sends: `node`, `layout` (built in
//! `layout.rs`), `members` (`members.rs`), `peers`, `storage`, and the resync and
//! anti-entropy actors' own status types, embedded as they serialise. The CLI's
//! `blocknode status` and the status page read these keys.

use serde::Serialize;

use blocknode_actors::antientropy::AntiEntropyStatus;
use blocknode_actors::hash::Hash;
use blocknode_actors::peer::PeerInfo;
use blocknode_actors::resync::ResyncStatus;
use blocknode_actors::storage::{DiskStatus, RebalanceStatus, StorageStats};

use super::layout::LayoutSummary;
use super::members::MemberStatus;

/// The answer of `GET /v1/status`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StatusReply {
    pub node: NodeSummary,
    pub layout: LayoutSummary,
    /// Every node of the layout in force (members, then retiring ones), as seen here.
    pub members: Vec<MemberStatus>,
    /// Every peer this node dials (the layout's members but this node).
    pub peers: Vec<PeerStatus>,
    pub storage: StorageSummary,
    pub resync: ResyncStatus,
    pub anti_entropy: AntiEntropyStatus,
}

/// The answering node.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NodeSummary {
    /// Node id, 64 hex digits.
    pub id: String,
    pub zone: String,
    /// Its blocknode version.
    pub version: String,
    pub uptime_secs: u64,
}

/// One peer as the peer actor sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PeerStatus {
    /// Node id, 64 hex digits.
    id: String,
    /// Its QUIC address.
    addr: String,
    /// Our connection to it is up.
    up: bool,
    /// Last measured round-trip time, ms (none: never reached).
    rtt_ms: Option<f64>,
    /// Seconds since a frame last came from it (none: never seen).
    last_seen_secs_ago: Option<f64>,
    /// Whether it announces the layout we have (none: not known yet).
    layout_agrees: Option<bool>,
}

impl PeerStatus {
    /// `p` as listed, its layout digest compared with ours (`digest`).
    pub fn new(p: &PeerInfo, digest: &Hash) -> Self {
        PeerStatus {
            id: p.id.to_hex(),
            addr: p.addr.to_string(),
            up: p.up,
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            last_seen_secs_ago: p.last_seen.map(|t| t.elapsed().as_secs_f64()),
            layout_agrees: p.layout_digest.map(|d| d == *digest),
        }
    }
}

/// This node's storage counters.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StorageSummary {
    /// Blocks stored on the data dirs that are not failed.
    blocks: u64,
    /// Bytes of block files on them.
    bytes: u64,
    bytes_written: u64,
    bytes_read: u64,
    corruptions_found: u64,
    /// The start-up count is still running (`blocks` and `bytes` are partial).
    counting: bool,
    /// The data dirs' capacities summed, bytes (none: a dir has no quota).
    capacity: Option<u64>,
    /// Each data dir, in config order.
    disks: Vec<DiskView>,
    /// The background mover of blocks whose dir changed.
    rebalance: RebalanceStatus,
}

/// One data dir.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DiskView {
    path: String,
    /// Bytes of block files counted on it.
    used: u64,
    blocks: u64,
    /// Its quota in bytes (none: a lone `data_dir` without one).
    capacity: Option<u64>,
    /// `ok`, `read_only`, `draining` or `failed`.
    #[schema(pattern = "^(ok|read_only|draining|failed)$")]
    state: String,
    /// Why it was marked failed.
    failure: Option<String>,
}

impl From<&DiskStatus> for DiskView {
    fn from(d: &DiskStatus) -> Self {
        DiskView {
            path: d.path.display().to_string(),
            used: d.used,
            blocks: d.blocks,
            capacity: d.capacity,
            state: d.state.name().to_string(),
            failure: d.failure.clone(),
        }
    }
}

impl From<&StorageStats> for StorageSummary {
    fn from(s: &StorageStats) -> Self {
        StorageSummary {
            blocks: s.blocks,
            bytes: s.bytes,
            bytes_written: s.bytes_written,
            bytes_read: s.bytes_read,
            corruptions_found: s.corruptions_found,
            counting: s.counting,
            capacity: s.capacity(),
            disks: s.disks.iter().map(DiskView::from).collect(),
            rebalance: s.rebalance.clone(),
        }
    }
}
