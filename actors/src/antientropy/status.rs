//! Status types of the anti-entropy actor: [`AntiEntropyStatus`] and each partition's
//! [`PartitionState`].

use serde::Serialize;

/// Where one partition stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PartitionState {
    /// Not looked at since start.
    Unknown,
    /// Held here; equal to every other holder at `at` (ms since the epoch).
    InSync { at: u64 },
    /// Being reconciled now.
    Syncing,
    /// Held here; the last attempt failed (a holder unreachable, …).
    Error { at: u64, error: String },
    /// Not held here and nothing of it left here.
    NotHeld,
    /// Not held here, records left, waiting for the member lists to agree.
    WaitingForLayout,
}
/// Counters and states, for the status API and metrics (its schema is in the HTTP API's
/// OpenAPI document, as `anti_entropy` of `GET /v1/status`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AntiEntropyStatus {
    pub interval_secs: u64,
    pub hinted_handoff: bool,
    pub partitions_in_sync: usize,
    pub partitions_syncing: usize,
    pub partitions_error: usize,
    pub partitions_not_held: usize,
    pub partitions_waiting_for_layout: usize,
    pub partitions_unknown: usize,
    /// Partitions waiting for their turn (a round, or a peer that came up).
    pub partitions_queued: usize,
    /// End of the last round in which every partition synced (ms since the epoch).
    pub last_full_sync: Option<u64>,
    pub round_running: bool,
    pub rounds_completed: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub records_sent: u64,
    pub records_received: u64,
    pub hints_pending: u64,
    pub hints_replayed: u64,
    /// Members whose hints reached `max_hints_per_member`: missed writes to them are no
    /// longer kept one by one, and a full anti-entropy sync with each runs once it is up
    /// (node ids, 64 hex).
    pub full_sync_needed: Vec<String>,
    /// Whether every peer whose member list is known has ours.
    pub layout_agreed: bool,
    /// Peers whose member list differs from ours.
    pub layout_differs: Vec<String>,
    /// Up to 8 partitions in error, each `[partition, error]`.
    pub errors: Vec<(u8, String)>,
}
