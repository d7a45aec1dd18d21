//! Admin routes: status, resync errors and retries, repair, anti-entropy, scrub and the
//! worker settings.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use blocknode_actors::antientropy::{AntiEntropyStatus, GetAntiEntropyStatus, SyncNow};
use blocknode_actors::peer::GetPeerStatus;
use blocknode_actors::resync::{
    check_tranquility, check_workers, GetResyncStatus, ListResyncErrorsPage, ResyncError,
    ResyncErrorInfo, RetryNow, ScrubCommand, SetScrubTranquility, SetTranquility, SetWorkers,
    StartRepair,
};
use blocknode_actors::storage::GetStorageStats;

use super::paging::PageQuery;
use super::status::{NodeSummary, PeerStatus, StatusReply, StorageSummary};
use super::{actor_err, parse_hash, ApiError, ApiResult};
use crate::coordinator::Coordinator;

/// What `status` and `metrics` show: each actor's own view, asked at once.
pub(super) async fn node_state(
    svc: &Coordinator,
) -> Result<
    (
        Vec<blocknode_actors::peer::PeerInfo>,
        blocknode_actors::storage::StorageStats,
        blocknode_actors::resync::ResyncStatus,
        AntiEntropyStatus,
    ),
    ApiError,
> {
    let (peers, storage, resync, ae) = futures::join!(
        svc.peers.send(GetPeerStatus),
        svc.storage.send(GetStorageStats),
        svc.resync.send(GetResyncStatus),
        svc.anti_entropy.send(GetAntiEntropyStatus)
    );
    Ok((
        peers.map_err(|e| actor_err("peer", e))?,
        storage.map_err(|e| actor_err("storage", e))?,
        resync.map_err(|e| actor_err("resync", e))?,
        ae.map_err(|e| actor_err("anti-entropy", e))?,
    ))
}

#[utoipa::path(get, path = "/v1/status", tag = "node", responses((status = 200, description = "node, layout, members (every node of the layout with what this node knows of it: a peer's blocks, bytes and disk_capacity as it last announced them, stats_age_secs how old they are, null until it has), peers, storage, resync and anti-entropy state", body = super::status::StatusReply), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn status(svc: web::Data<Coordinator>) -> ApiResult {
    let (peers, storage, resync, ae) = node_state(&svc).await?;
    let layout = super::layout::status_summary(&svc).await?;
    let current = svc.layout.borrow().layout.clone();
    let digest = current.digest();
    Ok(HttpResponse::Ok().json(StatusReply {
        node: NodeSummary {
            id: svc.self_id.to_hex(),
            zone: svc.cfg.zone.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: svc.started.elapsed().as_secs(),
        },
        layout,
        members: super::members::members(&current, &svc.self_id, &peers, &storage),
        peers: peers.iter().map(|p| PeerStatus::new(p, &digest)).collect(),
        storage: StorageSummary::from(&storage),
        resync,
        anti_entropy: ae,
    }))
}

/// Start an anti-entropy round now (if none is running).
#[utoipa::path(post, path = "/v1/anti-entropy/sync", tag = "maintenance", responses((status = 202, description = "a round started (false: one is running)", body = SyncStarted), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn anti_entropy_sync(svc: web::Data<Coordinator>) -> ApiResult {
    let started = svc
        .anti_entropy
        .send(SyncNow)
        .await
        .map_err(|e| actor_err("anti-entropy", e))?;
    Ok(HttpResponse::Accepted().json(SyncStarted { started }))
}

/// The answer of `POST /v1/anti-entropy/sync`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SyncStarted {
    /// Whether a round started (false: one was running).
    started: bool,
}

#[utoipa::path(get, path = "/v1/resync/errors", tag = "maintenance", params(("limit" = Option<u64>, Query, description = "entries per page, 1 to 1000 (default 100)", minimum = 1, maximum = 1000), ("after" = Option<String>, Query, description = "the `next` of the previous page: entries after this hash", pattern = "^[0-9a-f]{64}$")), responses((status = 200, description = "one page of the blocks whose last resync failed, in hash order; `next` is the `after` of the next page (null on the last)", body = ResyncErrors), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn resync_errors(
    svc: web::Data<Coordinator>,
    query: web::Query<PageQuery>,
) -> ApiResult {
    let limit = query.limit()?;
    let after = query.after.as_deref().map(parse_hash).transpose()?;
    let page = svc
        .resync
        .send(ListResyncErrorsPage { after, limit })
        .await
        .map_err(|e| actor_err("resync", e))?;
    Ok(HttpResponse::Ok().json(ResyncErrors {
        errors: page.errors,
        next: page.next.map(|h| h.to_hex()),
    }))
}

/// The answer of `GET /v1/resync/errors`: one page.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ResyncErrors {
    errors: Vec<ResyncErrorInfo>,
    /// Give it as `?after=` for the next page; null on the last page.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    next: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    /// One block to retry now (64 hex digits); or give `all`.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    hash: Option<String>,
    /// Retry every block in the errors table now.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(post, path = "/v1/resync/retry", tag = "maintenance", request_body = RetryBody, responses((status = 200, description = "how many were rescheduled", body = Rescheduled), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn resync_retry(
    svc: web::Data<Coordinator>,
    body: web::Json<RetryBody>,
) -> ApiResult {
    let target = match (&body.hash, body.all) {
        (Some(h), false) => Some(parse_hash(h)?),
        (None, true) => None,
        _ => {
            return Err(ApiError::bad_request(
                "give either {\"hash\": \"<64 hex>\"} or {\"all\": true}",
            ))
        }
    };
    let n = svc
        .resync
        .send(RetryNow { hash: target })
        .await
        .map_err(|e| actor_err("resync", e))?;
    Ok(HttpResponse::Ok().json(Rescheduled { rescheduled: n }))
}

/// The answer of `POST /v1/resync/retry`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Rescheduled {
    /// Blocks moved to the head of the resync queue.
    rescheduled: usize,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepairBody {
    /// Rebuild every refcount from the refs before repairing.
    #[serde(default)]
    rebuild_rc: bool,
}

/// The body of a route whose JSON body is optional: none (or only whitespace, or JSON
/// `null`, which the document allows) gives the defaults; anything else must parse, or the request is refused (it must not start
/// work the caller did not ask for).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("invalid JSON body: {e}"));
    // serde fills a struct from an array too; the documented body is an object.
    let v: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    if v.is_null() {
        return Ok(T::default());
    }
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected an object",
        ));
    }
    serde_json::from_value(v).map_err(bad)
}

#[utoipa::path(post, path = "/v1/repair", tag = "maintenance", request_body(content = Option<RepairBody>, description = "optional"), responses((status = 202, description = "repair started", body = RepairStarted), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 409, description = "a repair is running", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn repair(svc: web::Data<Coordinator>, body: web::Bytes) -> ApiResult {
    let RepairBody { rebuild_rc } = optional_json(&body)?;
    svc.resync
        .send(StartRepair { rebuild_rc })
        .await
        .map_err(|e| actor_err("resync", e))?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "repair_refused", e.to_string()))?;
    Ok(HttpResponse::Accepted().json(RepairStarted {
        started: true,
        rebuild_rc,
    }))
}

/// The answer of `POST /v1/repair`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RepairStarted {
    /// Always true (a refused repair answers 409).
    started: bool,
    /// Whether the refcounts are rebuilt first.
    rebuild_rc: bool,
}

#[utoipa::path(post, path = "/v1/scrub/{action}", tag = "maintenance", params(("action" = String, Path, description = "start, pause, resume or cancel", pattern = "^(start|pause|resume|cancel)$")), responses((status = 200, description = "done", body = ScrubReply), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 404, description = "unknown action", body = crate::http::schema::ErrorBody), (status = 409, description = "refused in the scrub's state", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn scrub(svc: web::Data<Coordinator>, path: web::Path<String>) -> ApiResult {
    let cmd = match path.as_str() {
        "start" => ScrubCommand::Start,
        "pause" => ScrubCommand::Pause,
        "resume" => ScrubCommand::Resume,
        "cancel" => ScrubCommand::Cancel,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("unknown scrub action {other:?}: use start, pause, resume or cancel"),
            ))
        }
    };
    svc.resync
        .send(cmd)
        .await
        .map_err(|e| actor_err("resync", e))?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "scrub_refused", e.to_string()))?;
    Ok(HttpResponse::Ok().json(ScrubReply {
        scrub: path.into_inner(),
    }))
}

/// The answer of `POST /v1/scrub/{action}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ScrubReply {
    /// The action done: `start`, `pause`, `resume` or `cancel`.
    scrub: String,
}

#[derive(Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Workers {
    /// Concurrent resync workers.
    #[schema(minimum = 1, maximum = 8)]
    resync_workers: Option<u64>,
    /// Rest after each resync, as a multiple of the time it took.
    #[schema(minimum = 0, maximum = 100)]
    resync_tranquility: Option<u64>,
    /// Rest after each scrubbed block, as a multiple of the time it took.
    #[schema(minimum = 0, maximum = 100)]
    scrub_tranquility: Option<u64>,
}

async fn workers_json(svc: &Coordinator) -> ApiResult {
    let s = svc
        .resync
        .send(GetResyncStatus)
        .await
        .map_err(|e| actor_err("resync", e))?;
    Ok(HttpResponse::Ok().json(Workers {
        resync_workers: Some(s.workers as u64),
        resync_tranquility: Some(u64::from(s.tranquility)),
        scrub_tranquility: Some(u64::from(s.scrub.tranquility)),
    }))
}

#[utoipa::path(get, path = "/v1/workers", tag = "maintenance", responses((status = 200, description = "current settings", body = Workers), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn get_workers(svc: web::Data<Coordinator>) -> ApiResult {
    workers_json(&svc).await
}

/// Checked settings of a `PUT /v1/workers`.
#[derive(Debug, PartialEq, Eq)]
struct WorkerSettings {
    resync_workers: Option<usize>,
    resync_tranquility: Option<u32>,
    scrub_tranquility: Option<u32>,
}

/// Range-check every value before any is applied, so a refused request changes nothing
/// (and nothing above 2^32 wraps into range).
fn check_workers_body(b: &Workers) -> Result<WorkerSettings, ApiError> {
    let refused = |e: ResyncError| ApiError::bad_request(e.to_string());
    Ok(WorkerSettings {
        resync_workers: b
            .resync_workers
            .map(check_workers)
            .transpose()
            .map_err(refused)?,
        resync_tranquility: b
            .resync_tranquility
            .map(|t| check_tranquility("resync_tranquility", t))
            .transpose()
            .map_err(refused)?,
        scrub_tranquility: b
            .scrub_tranquility
            .map(|t| check_tranquility("scrub_tranquility", t))
            .transpose()
            .map_err(refused)?,
    })
}

#[utoipa::path(put, path = "/v1/workers", tag = "maintenance", request_body = Workers, responses((status = 200, description = "settings after the change", body = Workers), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn put_workers(
    svc: web::Data<Coordinator>,
    body: web::Json<Workers>,
) -> ApiResult {
    let set = check_workers_body(&body)?;
    let refused = |e: ResyncError| ApiError::bad_request(e.to_string());
    if let Some(n) = set.resync_workers {
        svc.resync
            .send(SetWorkers { workers: n })
            .await
            .map_err(|e| actor_err("resync", e))?
            .map_err(refused)?;
    }
    if let Some(t) = set.resync_tranquility {
        svc.resync
            .send(SetTranquility { tranquility: t })
            .await
            .map_err(|e| actor_err("resync", e))?
            .map_err(refused)?;
    }
    if let Some(t) = set.scrub_tranquility {
        svc.resync
            .send(SetScrubTranquility { tranquility: t })
            .await
            .map_err(|e| actor_err("resync", e))?
            .map_err(refused)?;
    }
    workers_json(&svc).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(json: &str) -> Workers {
        serde_json::from_str(json).expect("test body parses")
    }

    #[test]
    fn worker_settings_are_range_checked_and_never_wrap() {
        let ok = check_workers_body(&workers(
            r#"{"resync_workers":3,"resync_tranquility":0,"scrub_tranquility":100}"#,
        ))
        .expect("in range");
        assert_eq!(
            ok,
            WorkerSettings {
                resync_workers: Some(3),
                resync_tranquility: Some(0),
                scrub_tranquility: Some(100),
            }
        );
        for (body, key) in [
            (r#"{"resync_workers":0}"#, "resync_workers"),
            (r#"{"resync_workers":9}"#, "resync_workers"),
            (
                r#"{"resync_workers":18446744073709551615}"#,
                "resync_workers",
            ),
            (r#"{"resync_tranquility":101}"#, "resync_tranquility"),
            (r#"{"resync_tranquility":4000000000}"#, "resync_tranquility"),
            // 2^32 + 1 would wrap to 1 if narrowed first.
            (r#"{"resync_tranquility":4294967297}"#, "resync_tranquility"),
            (r#"{"scrub_tranquility":4294967297}"#, "scrub_tranquility"),
        ] {
            let e = check_workers_body(&workers(body)).expect_err(body);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                e.message.contains(key) && e.message.contains("between"),
                "{body}: the error should name {key} and its range, got {:?}",
                e.message
            );
        }
    }

    #[test]
    fn an_optional_body_is_empty_or_valid() {
        let d: RepairBody = optional_json(b"").expect("empty body");
        assert!(!d.rebuild_rc);
        let d: RepairBody = optional_json(b" \n").expect("whitespace body");
        assert!(!d.rebuild_rc);
        let d: RepairBody = optional_json(b"null").expect("null body");
        assert!(!d.rebuild_rc);
        let d: RepairBody = optional_json(br#"{"rebuild_rc":true}"#).expect("valid body");
        assert!(d.rebuild_rc);
        for bad in [&b"{"[..], b"rebuild_rc=true", br#"{"rebuild":true}"#, b"[]"] {
            let e = optional_json::<RepairBody>(bad)
                .err()
                .unwrap_or_else(|| panic!("{:?} should be refused", String::from_utf8_lossy(bad)));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }
}
