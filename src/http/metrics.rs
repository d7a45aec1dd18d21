//! `GET /metrics`: renders the node's counters and the actors' state as OpenMetrics text.

use actix_web::{web, HttpResponse};

use super::admin::node_state;
use super::{ApiError, ApiResult};
use crate::coordinator::Coordinator;
use crate::metrics::Snapshot;

#[utoipa::path(get, path = "/metrics", tag = "node", responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn metrics(svc: web::Data<Coordinator>) -> ApiResult {
    let (peers, storage, resync, ae) = node_state(&svc).await?;
    let mut s = Snapshot::default();
    s.gauge(
        "blocks_stored",
        "Blocks stored on this node",
        storage.blocks as i64,
    );
    s.gauge(
        "stored_bytes",
        "Bytes of block files on this node",
        storage.bytes as i64,
    );
    s.counter(
        "disk_written_bytes",
        "Bytes written to block files",
        storage.bytes_written,
    );
    s.counter(
        "disk_read_bytes",
        "Bytes read from block files",
        storage.bytes_read,
    );
    disk_gauges(&mut s, &storage.disks);
    let plain = svc.metrics.bytes_written.get();
    s.gauge_f64(
        "compression_ratio",
        "Plain bytes accepted / bytes written to disk (since start)",
        if storage.bytes_written > 0 {
            plain as f64 / storage.bytes_written as f64
        } else {
            1.0
        },
    );
    s.gauge(
        "resync_queue_length",
        "Blocks waiting in the resync queue",
        resync.queue_length as i64,
    );
    s.gauge(
        "resync_error_blocks",
        "Blocks whose last resync failed",
        resync.errors as i64,
    );
    s.counter_family(
        "resync_ops",
        "Resync operations by result (since start)",
        [("ok", resync.ops_ok), ("error", resync.ops_error)]
            .into_iter()
            .map(|(result, n)| {
                (
                    crate::metrics::ResultLabels {
                        result: result.into(),
                    },
                    n,
                )
            })
            .collect(),
    );
    s.counter(
        "scrub_corruptions",
        "Corrupted blocks found by scrub (all time)",
        resync.scrub.corruptions,
    );
    s.gauge_family(
        "anti_entropy_partitions",
        "Partitions by anti-entropy state",
        [
            ("in_sync", ae.partitions_in_sync),
            ("syncing", ae.partitions_syncing),
            ("error", ae.partitions_error),
            ("not_held", ae.partitions_not_held),
            ("waiting_for_layout", ae.partitions_waiting_for_layout),
            ("unknown", ae.partitions_unknown),
        ]
        .into_iter()
        .map(|(state, n)| {
            (
                crate::metrics::ResultLabels {
                    result: state.into(),
                },
                n as i64,
            )
        })
        .collect(),
    );
    s.gauge(
        "anti_entropy_last_full_sync_timestamp_seconds",
        "Unix time of the end of the last anti-entropy round without errors (0: none yet)",
        (ae.last_full_sync.unwrap_or(0) / 1000) as i64,
    );
    s.counter(
        "anti_entropy_bytes",
        "Bytes exchanged by anti-entropy (sent and received)",
        ae.bytes_sent + ae.bytes_received,
    );
    s.counter(
        "anti_entropy_records_repaired",
        "Ref records merged by anti-entropy (both ways)",
        ae.records_sent + ae.records_received,
    );
    s.gauge(
        "hints_pending",
        "Hinted writes waiting for their node to come back",
        ae.hints_pending as i64,
    );
    s.gauge(
        "layout_agreed",
        "1 if every known peer has this node's member list",
        ae.layout_agreed as i64,
    );
    s.gauge_family(
        "peer_up",
        "1 if the peer is connected, 0 if not",
        peers
            .iter()
            .map(|p| {
                (
                    crate::metrics::PeerLabels { peer: p.id.short() },
                    p.up as i64,
                )
            })
            .collect(),
    );
    layout_gauges(&mut s, &svc).await?;
    let text = svc
        .metrics
        .encode(s.registry())
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// The layout in force and the running transition (all 0 when none runs).
async fn layout_gauges(s: &mut Snapshot, svc: &Coordinator) -> Result<(), ApiError> {
    let v = svc
        .layout_actor
        .send(blocknode_actors::layout::GetLayout)
        .await
        .map_err(|e| super::actor_err("layout", e))?;
    s.gauge(
        "layout_version",
        "Version of the layout in force",
        v.current.version as i64,
    );
    s.gauge(
        "layout_staged_changes",
        "Layout changes staged and not applied",
        v.staged.len() as i64,
    );
    let t = v.transition.as_ref();
    s.gauge(
        "layout_transition_active",
        "1 while a layout change is being handed over",
        t.is_some() as i64,
    );
    s.gauge(
        "layout_transition_remaining_partitions",
        "Partitions old holders still have to hand over",
        t.map_or(0, |t| t.partitions_left as i64),
    );
    s.gauge(
        "layout_transition_remaining_blocks",
        "Blocks old holders still have to hand over",
        t.map_or(0, |t| t.blocks_left as i64),
    );
    s.gauge(
        "layout_transition_remaining_bytes",
        "Bytes old holders still have to hand over",
        t.map_or(0, |t| t.bytes_left as i64),
    );
    // No rate gauge: Prometheus derives it (`deriv()` of the remaining bytes); the
    // actor's own rate is in /v1/status.
    s.gauge_f64(
        "layout_transition_eta_seconds",
        "Estimated seconds until the transition ends (0: none runs or unknown)",
        t.and_then(|t| t.eta_secs).unwrap_or(0.0),
    );
    Ok(())
}

/// Per data dir: its state (0 ok, 1 read_only, 2 draining, 3 failed), bytes used and
/// capacity.
fn disk_gauges(s: &mut Snapshot, disks: &[blocknode_actors::storage::DiskStatus]) {
    use blocknode_actors::storage::DiskState;
    let label = |d: &blocknode_actors::storage::DiskStatus| crate::metrics::DiskLabels {
        path: d.path.display().to_string(),
    };
    let code = |st: DiskState| match st {
        DiskState::Ok => 0,
        DiskState::ReadOnly => 1,
        DiskState::Draining => 2,
        DiskState::Failed => 3,
    };
    s.gauge_family(
        "disk_state",
        "Data dir state: 0 ok, 1 read_only, 2 draining, 3 failed",
        disks.iter().map(|d| (label(d), code(d.state))).collect(),
    );
    s.gauge_family(
        "disk_used_bytes",
        "Bytes of block files on the data dir",
        disks.iter().map(|d| (label(d), d.used as i64)).collect(),
    );
    s.gauge_family(
        "disk_capacity_bytes",
        "Configured capacity of the data dir (absent without a quota)",
        disks
            .iter()
            .filter_map(|d| d.capacity.map(|c| (label(d), c as i64)))
            .collect(),
    );
}
