//! The HTTP API (actix-web): routes, authentication and the JSON error format.
//!
//! Every route but `GET /health` needs `Authorization: Bearer <admin token>`. Block bodies
//! are raw bytes; everything else is JSON; every error is `{"error": "...", "code": "..."}`
//! with a fitting status. Handlers only translate: the work is messages to actors, made
//! through [`Service`].

use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::BytesMut;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use blocknode_actors::antientropy::{AntiEntropyStatus, GetAntiEntropyStatus, SyncNow};
use blocknode_actors::peer::GetPeerStatus;
use blocknode_actors::refcount::RefState;
use blocknode_actors::resync::{
    check_tranquility, check_workers, GetResyncStatus, ListResyncErrors, ResyncError, RetryNow,
    ScrubCommand, SetScrubTranquility, SetTranquility, SetWorkers, StartRepair,
};
use blocknode_actors::storage::{BlockLength, GetStorageStats};
use blocknode_actors::{Hash, RefId};

use crate::block_http::{
    decide_range, etag, if_none_match_matches, RangeAnswer, IMMUTABLE_CACHE_CONTROL,
};
use crate::metrics::Snapshot;
use crate::service::{Service, ServiceError};

/// An API error: status, machine code and a human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        HttpResponse::build(self.status).json(json!({"error": self.message, "code": self.code}))
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = match &e {
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ServiceError::Quorum(_) => (StatusCode::SERVICE_UNAVAILABLE, "quorum_failed"),
            ServiceError::RefDropped { .. } => (StatusCode::CONFLICT, "ref_dropped"),
            ServiceError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

pub(crate) fn actor_err(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what} actor unavailable: {e}"),
    )
}

fn parse_hash(s: &str) -> Result<Hash, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid block hash {s:?}: {e}")))
}

fn parse_ref(s: &str) -> Result<RefId, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid ref name: {e}")))
}

pub(crate) type ApiResult = Result<HttpResponse, ApiError>;

/// JSON bodies are accepted whatever their `Content-Type` (`curl -d` sends a form type),
/// and an unreadable one gets the JSON error format, not actix's plain text.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .content_type_required(false)
        .error_handler(|e, _req| json_body_error(&e).into())
}

fn json_body_error(e: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        _ => ApiError::bad_request(format!("invalid JSON body: {e}")),
    }
}

/// A bad query string gets the JSON error format.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|e, _req| ApiError::bad_request(format!("invalid query string: {e}")).into())
}

/// A path segment that does not decode gets the JSON error format.
fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|e, _req| ApiError::bad_request(format!("invalid path: {e}")).into())
}

/// Register every route on an actix-web app, with the extractor configs that give
/// every extractor failure the JSON error format.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(query_config())
        .app_data(path_config())
        .route("/health", web::get().to(health))
        .route("/v1/openapi.json", web::get().to(openapi_json))
        .route("/metrics", web::get().to(metrics))
        .route("/v1/blocks", web::put().to(put_block))
        .route("/v1/blocks/{hash}", web::get().to(get_block))
        .route("/v1/blocks/{hash}", web::head().to(head_block))
        .route("/v1/blocks/{hash}/info", web::get().to(block_info))
        .route("/v1/blocks/{hash}/refs/{ref}", web::put().to(add_ref))
        .route("/v1/blocks/{hash}/refs/{ref}", web::delete().to(drop_ref))
        .route("/v1/status", web::get().to(status))
        .route("/v1/resync/errors", web::get().to(resync_errors))
        .route("/v1/resync/retry", web::post().to(resync_retry))
        .route("/v1/repair", web::post().to(repair))
        .route("/v1/anti-entropy/sync", web::post().to(anti_entropy_sync))
        .route("/v1/scrub/{action}", web::post().to(scrub))
        .route("/v1/workers", web::get().to(get_workers))
        .route("/v1/workers", web::put().to(put_workers))
        .route("/v1/layout", web::get().to(crate::layout_api::get_layout))
        .route("/v1/layout/stage", web::post().to(crate::layout_api::stage))
        .route("/v1/layout/apply", web::post().to(crate::layout_api::apply))
        .route(
            "/v1/layout/revert",
            web::post().to(crate::layout_api::revert),
        );
}

/// Answer unknown routes and methods with the JSON error format.
pub async fn not_found(req: HttpRequest) -> ApiResult {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Bearer-token check for everything but `GET /health` and `GET /v1/openapi.json`.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    if req.path() == "/health" || req.path() == "/v1/openapi.json" {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let expected = req
        .app_data::<web::Data<Service>>()
        .map(|s| s.cfg.admin_token.clone())
        .unwrap_or_default();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if expected.is_empty() || !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        // The same answer for a missing and a wrong token: nothing to learn from it.
        let resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
        .error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let outside_layout = req
        .app_data::<web::Data<Service>>()
        .is_some_and(|s| !s.in_layout());
    if outside_layout && req.path().starts_with("/v1/blocks") {
        // A joining node holds nothing and knows no holders until a layout names it.
        let resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_in_layout",
            "this node is not in the cluster layout yet (waiting for `blocknode layout assign` and `apply` on a member)",
        )
        .error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    }
    next.call(req).await.map(|r| r.map_into_left_body())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The OpenAPI document of this API (no token: it describes, it reveals nothing).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node", security(()), responses((status = 200, description = "the OpenAPI 3.1 document of this API")))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

#[utoipa::path(get, path = "/health", tag = "node", security(()), responses((status = 200, description = "the node serves")))]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[derive(Deserialize)]
struct PutQuery {
    #[serde(rename = "ref")]
    ref_id: Option<String>,
}

/// Limits of the HTTP layer the handlers apply (from the config).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Longest pause inside a request body before the request is cut off.
    pub body_read_timeout: Duration,
}

#[utoipa::path(put, path = "/v1/blocks", tag = "blocks", params(("ref" = Option<String>, Query, description = "add this ref with the write quorum")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the block's bytes"), responses((status = 201, description = "stored on the write quorum", body = crate::openapi::PutReply), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 408, description = "the body stalled (http_body_read_timeout)", body = crate::openapi::ErrorBody), (status = 413, description = "larger than max_block_size", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody), (status = 507, description = "disk full on a holder", body = crate::openapi::ErrorBody)))]
async fn put_block(
    svc: web::Data<Service>,
    limits: Option<web::Data<HttpLimits>>,
    req: HttpRequest,
    query: web::Query<PutQuery>,
    mut body: web::Payload,
) -> ApiResult {
    let max = svc.cfg.max_block_size;
    let ref_id = query.ref_id.as_deref().map(parse_ref).transpose()?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("block is larger than max_block_size ({max} bytes)"),
        )
    };
    // Refuse by the declared length before reading anything.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    // The body and its compressed copy are in memory at once: charge twice the size
    // (the largest block when the length is not declared) before reading anything.
    let ram = svc
        .reserve_ram(2 * declared.unwrap_or(max as u64).min(max as u64))
        .await?;
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let pause = limits.map_or(DEFAULT_BODY_READ_TIMEOUT, |l| l.body_read_timeout);
    // A body that stops arriving is cut off; returning drops `_ram`, so the budget is
    // back at once, and the unread rest makes actix close the connection.
    while let Some(chunk) = tokio::time::timeout(pause, body.next())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "request body stalled for {pause:?} after {} bytes (http_body_read_timeout)",
                    buf.len()
                ),
            )
        })?
    {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    let (hash, size) = svc.put_block(buf.freeze(), ref_id, ram).await?;
    Ok(HttpResponse::Created().json(json!({"hash": hash.to_hex(), "size": size})))
}

/// Headers every answer about a block carries: its name, its tag and that it never
/// changes.
fn block_headers(resp: &mut actix_web::HttpResponseBuilder, hash: &Hash) {
    resp.insert_header(("X-Block-Hash", hash.to_hex()))
        .insert_header((header::ETAG, etag(hash)))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE_CACHE_CONTROL))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The plain length of a block, from what this node knows when it holds a copy (file
/// size or zstd header: nothing read, nothing hashed), else by a verified read from the
/// holders (which also asks a holder that lacks it to resync).
async fn block_len(svc: &Service, hash: Hash) -> Result<u64, ApiError> {
    if svc.holders(&hash).first() == Some(&svc.self_id) {
        match svc.storage.send(BlockLength { hash }).await {
            Ok(Ok(Some(len))) => return Ok(len),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(hash = %hash.short(), "local block length: {e}"),
            Err(e) => return Err(actor_err("storage", e)),
        }
    }
    Ok(svc.get_block(hash).await?.len() as u64)
}

/// `GET /v1/blocks/{hash}`: the verified bytes, whole or one byte range; 304 when the
/// client's `If-None-Match` already names it. A range is cut from the whole verified
/// block, so no byte is served that was not checked against the hash.
#[utoipa::path(get, path = "/v1/blocks/{hash}", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits"), ("Range" = Option<String>, Header, description = "one byte range"), ("If-None-Match" = Option<String>, Header, description = "the ETag held"), ("If-Range" = Option<String>, Header, description = "serve the range only for this ETag")), responses((status = 200, description = "the verified bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 206, description = "one byte range of the verified bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 304, description = "the If-None-Match tag names this block"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 404, description = "no holder has it", body = crate::openapi::ErrorBody), (status = 416, description = "range outside the block", body = crate::openapi::ErrorBody), (status = 503, description = "unavailable: no copy served and some holders could not be asked", body = crate::openapi::ErrorBody)))]
async fn get_block(
    svc: web::Data<Service>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult {
    let hash = parse_hash(&path)?;
    if header_str(&req, header::IF_NONE_MATCH).is_some_and(|v| if_none_match_matches(v, &hash)) {
        // The tag names the bytes: the client's copy is right if the block exists.
        block_len(&svc, hash).await?;
        let mut resp = HttpResponse::NotModified();
        block_headers(&mut resp, &hash);
        return Ok(resp.finish());
    }
    let data = svc.get_block(hash).await?;
    let len = data.len() as u64;
    // `If-Range` with another validator asks for the whole block instead (RFC 9110 §13.1.5).
    let range_applies = header_str(&req, header::IF_RANGE).is_none_or(|v| v.trim() == etag(&hash));
    let answer = match header_str(&req, header::RANGE) {
        Some(v) if range_applies => decide_range(v, len),
        _ => RangeAnswer::Full,
    };
    let mut resp = match answer {
        RangeAnswer::Full => HttpResponse::Ok(),
        RangeAnswer::Partial { .. } => HttpResponse::PartialContent(),
        RangeAnswer::Unsatisfiable => {
            let mut resp = HttpResponse::RangeNotSatisfiable();
            block_headers(&mut resp, &hash);
            resp.insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
            return Ok(resp.json(json!({
                "error": format!("range outside block {hash} of {len} bytes"),
                "code": "range_not_satisfiable",
            })));
        }
    };
    resp.content_type("application/octet-stream");
    block_headers(&mut resp, &hash);
    match answer {
        RangeAnswer::Partial { first, last } => {
            resp.insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}")));
            // In bounds: decide_range keeps first <= last < len.
            Ok(resp.body(data.slice(first as usize..=last as usize)))
        }
        _ => Ok(resp.body(data)),
    }
}

/// `HEAD /v1/blocks/{hash}`: presence and length from what the node knows, without
/// reading or hashing the block when this node holds it.
#[utoipa::path(head, path = "/v1/blocks/{hash}", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits")), responses((status = 200, description = "present; Content-Length is the plain length"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 404, description = "no holder has it"), (status = 503, description = "unavailable: no copy served and some holders could not be asked", body = crate::openapi::ErrorBody)))]
async fn head_block(svc: web::Data<Service>, path: web::Path<String>) -> ApiResult {
    let hash = parse_hash(&path)?;
    let len = block_len(&svc, hash).await?;
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/octet-stream");
    block_headers(&mut resp, &hash);
    Ok(resp.body(HeadBody { len }))
}

/// The body of a `HEAD` answer: declares the block's length (actix writes
/// `Content-Length` from a body's size, and sends no body bytes for `HEAD`) and has no
/// bytes to give.
struct HeadBody {
    len: u64,
}

impl actix_web::body::MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.len)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

#[utoipa::path(put, path = "/v1/blocks/{hash}/refs/{ref}", tag = "refs", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits"), ("ref" = String, Path, description = "ref name: 1-255 of A-Z a-z 0-9 . _ - : @ + =")), responses((status = 204, description = "the ref is live (idempotent)"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 409, description = "the ref was dropped before", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn add_ref(svc: web::Data<Service>, path: web::Path<(String, String)>) -> ApiResult {
    let (h, r) = path.into_inner();
    let (hash, ref_id) = (parse_hash(&h)?, parse_ref(&r)?);
    svc.set_ref(hash, ref_id, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/blocks/{hash}/refs/{ref}", tag = "refs", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits"), ("ref" = String, Path, description = "ref name: 1-255 of A-Z a-z 0-9 . _ - : @ + =")), responses((status = 204, description = "the ref is dropped (idempotent)"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn drop_ref(svc: web::Data<Service>, path: web::Path<(String, String)>) -> ApiResult {
    let (h, r) = path.into_inner();
    let (hash, ref_id) = (parse_hash(&h)?, parse_ref(&r)?);
    svc.set_ref(hash, ref_id, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/blocks/{hash}/info", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits")), responses((status = 200, description = "every holder's view and this node's refs"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn block_info(svc: web::Data<Service>, path: web::Path<String>) -> ApiResult {
    let hash = parse_hash(&path)?;
    let holders = svc.block_info(hash).await;
    let refs = svc.local_refs(hash).await?;
    let local_rc = refs.iter().filter(|(_, s)| *s == RefState::Live).count();
    let refs: Vec<_> = refs
        .into_iter()
        .map(|(r, s)| {
            json!({"ref": r.as_str(), "state": match s { RefState::Live => "live", RefState::Dropped => "dropped" }})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "hash": hash.to_hex(),
        "holders": holders,
        "local": {"rc": local_rc, "refs": refs},
    })))
}

/// What `status` and `metrics` show: each actor's own view, asked at once.
async fn node_state(
    svc: &Service,
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

#[utoipa::path(get, path = "/v1/status", tag = "node", responses((status = 200, description = "node, layout, peers, storage, resync and anti-entropy state"), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn status(svc: web::Data<Service>) -> ApiResult {
    let (peers, storage, resync, ae) = node_state(&svc).await?;
    let layout = crate::layout_api::status_json(&svc).await?;
    let digest = svc.layout.borrow().layout.digest();
    let peers_json: Vec<_> = peers
        .iter()
        .map(|p| {
            json!({
                "id": p.id.to_hex(),
                "addr": p.addr.to_string(),
                "up": p.up,
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "last_seen_secs_ago": p.last_seen.map(|t| t.elapsed().as_secs_f64()),
                "layout_agrees": p.layout_digest.map(|d| d == digest),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "node": {
            "id": svc.self_id.to_hex(),
            "zone": svc.cfg.zone,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": svc.started.elapsed().as_secs(),
        },
        "layout": layout,
        "peers": peers_json,
        "storage": {
            "blocks": storage.blocks,
            "bytes": storage.bytes,
            "bytes_written": storage.bytes_written,
            "bytes_read": storage.bytes_read,
            "corruptions_found": storage.corruptions_found,
            "counting": storage.counting,
        },
        "resync": resync,
        "anti_entropy": ae,
    })))
}

/// Start an anti-entropy round now (if none is running).
#[utoipa::path(post, path = "/v1/anti-entropy/sync", tag = "maintenance", responses((status = 202, description = "a round started (false: one is running)"), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn anti_entropy_sync(svc: web::Data<Service>) -> ApiResult {
    let started = svc
        .anti_entropy
        .send(SyncNow)
        .await
        .map_err(|e| actor_err("anti-entropy", e))?;
    Ok(HttpResponse::Accepted().json(json!({ "started": started })))
}

#[utoipa::path(get, path = "/v1/resync/errors", tag = "maintenance", responses((status = 200, description = "blocks whose last resync failed"), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn resync_errors(svc: web::Data<Service>) -> ApiResult {
    let errors = svc
        .resync
        .send(ListResyncErrors)
        .await
        .map_err(|e| actor_err("resync", e))?;
    Ok(HttpResponse::Ok().json(json!({ "errors": errors })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    hash: Option<String>,
    #[serde(default)]
    all: bool,
}

#[utoipa::path(post, path = "/v1/resync/retry", tag = "maintenance", request_body = RetryBody, responses((status = 200, description = "how many were rescheduled"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn resync_retry(svc: web::Data<Service>, body: web::Json<RetryBody>) -> ApiResult {
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
    Ok(HttpResponse::Ok().json(json!({ "rescheduled": n })))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepairBody {
    #[serde(default)]
    rebuild_rc: bool,
}

/// The body of a route whose JSON body is optional: none (or only whitespace) gives the
/// defaults; anything else must parse, or the request is refused (it must not start
/// work the caller did not ask for).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("invalid JSON body: {e}"));
    // serde fills a struct from an array too; the documented body is an object.
    let v: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected an object",
        ));
    }
    serde_json::from_value(v).map_err(bad)
}

#[utoipa::path(post, path = "/v1/repair", tag = "maintenance", request_body(content = Option<RepairBody>, description = "optional"), responses((status = 202, description = "repair started"), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 409, description = "a repair is running", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn repair(svc: web::Data<Service>, body: web::Bytes) -> ApiResult {
    let RepairBody { rebuild_rc } = optional_json(&body)?;
    svc.resync
        .send(StartRepair { rebuild_rc })
        .await
        .map_err(|e| actor_err("resync", e))?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "repair_refused", e.to_string()))?;
    Ok(HttpResponse::Accepted().json(json!({ "started": true, "rebuild_rc": rebuild_rc })))
}

#[utoipa::path(post, path = "/v1/scrub/{action}", tag = "maintenance", params(("action" = String, Path, description = "start, pause, resume or cancel")), responses((status = 200, description = "done"), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 404, description = "unknown action", body = crate::openapi::ErrorBody), (status = 409, description = "refused in the scrub's state", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn scrub(svc: web::Data<Service>, path: web::Path<String>) -> ApiResult {
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
    Ok(HttpResponse::Ok().json(json!({ "scrub": path.as_str() })))
}

#[derive(Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Workers {
    resync_workers: Option<u64>,
    resync_tranquility: Option<u64>,
    scrub_tranquility: Option<u64>,
}

async fn workers_json(svc: &Service) -> ApiResult {
    let s = svc
        .resync
        .send(GetResyncStatus)
        .await
        .map_err(|e| actor_err("resync", e))?;
    Ok(HttpResponse::Ok().json(json!({
        "resync_workers": s.workers,
        "resync_tranquility": s.tranquility,
        "scrub_tranquility": s.scrub.tranquility,
    })))
}

#[utoipa::path(get, path = "/v1/workers", tag = "maintenance", responses((status = 200, description = "current settings", body = Workers), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn get_workers(svc: web::Data<Service>) -> ApiResult {
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

#[utoipa::path(put, path = "/v1/workers", tag = "maintenance", request_body = Workers, responses((status = 200, description = "settings after the change", body = Workers), (status = 400, description = "malformed hash, ref, body or query", body = crate::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn put_workers(svc: web::Data<Service>, body: web::Json<Workers>) -> ApiResult {
    let set = check_workers_body(&body)?;
    let refused = |e: ResyncError| ApiError::bad_request(e.to_string());
    if let Some(n) = set.resync_workers {
        svc.resync
            .send(SetWorkers(n))
            .await
            .map_err(|e| actor_err("resync", e))?
            .map_err(refused)?;
    }
    if let Some(t) = set.resync_tranquility {
        svc.resync
            .send(SetTranquility(t))
            .await
            .map_err(|e| actor_err("resync", e))?
            .map_err(refused)?;
    }
    if let Some(t) = set.scrub_tranquility {
        svc.resync
            .send(SetScrubTranquility(t))
            .await
            .map_err(|e| actor_err("resync", e))?
            .map_err(refused)?;
    }
    workers_json(&svc).await
}

#[utoipa::path(get, path = "/metrics", tag = "node", responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String), (status = 401, description = "missing or invalid token", body = crate::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::openapi::ErrorBody)))]
async fn metrics(svc: web::Data<Service>) -> ApiResult {
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
    let text = svc
        .metrics
        .encode(s.registry())
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// Longest pause inside a request body when no [`HttpLimits`] are configured.
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of small intra-cluster requests when the config does not say.
pub const DEFAULT_SMALL_RPC_TIMEOUT: Duration = Duration::from_secs(5);

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
