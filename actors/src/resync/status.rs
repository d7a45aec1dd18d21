//! Status types of the resync actor: [`ResyncStatus`] (with [`ScrubStatus`],
//! [`ScrubState`] and [`RepairStatus`]) and the errors table's [`ResyncErrorInfo`]; their
//! schemas are in the HTTP API's OpenAPI document (`resync` of `GET /v1/status`).

use serde::Serialize;

/// One entry of the errors table (its schema is in the HTTP API's OpenAPI document).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ResyncErrorInfo {
    /// The block's hash.
    pub hash: String,
    /// Failed tries in a row.
    pub count: u64,
    /// ms since the epoch.
    pub last_try: u64,
    /// ms since the epoch.
    pub next_try: u64,
    /// The last failure.
    pub error: String,
}

/// Scrub state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScrubState {
    Idle,
    Running,
    Paused,
}

impl ScrubState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ScrubState::Idle => "idle",
            ScrubState::Running => "running",
            ScrubState::Paused => "paused",
        }
    }
}

/// Scrub status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScrubStatus {
    pub state: ScrubState,
    pub tranquility: u32,
    /// Blocks checked in the current (or last) pass.
    pub checked: u64,
    /// Last hash checked in the current pass.
    pub position: Option<String>,
    /// Corrupted blocks found, all time.
    pub corruptions: u64,
    /// When the next automatic scrub starts (ms since the epoch).
    pub next_run: u64,
}

/// Repair progress.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RepairStatus {
    pub running: bool,
    /// `rebuild_rc`, `rc`, `blocks` or `done`.
    pub phase: String,
    /// Items queued by the current (or last) repair.
    pub queued: u64,
    /// Resyncs finished since the repair started.
    pub done: u64,
}

/// Everything the API and metrics show of resync.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ResyncStatus {
    pub queue_length: u64,
    pub errors: u64,
    pub busy: u64,
    pub workers: usize,
    pub tranquility: u32,
    pub ops_ok: u64,
    pub ops_error: u64,
    pub scrub: ScrubStatus,
    pub repair: RepairStatus,
}
