//! The HTTP API (actix-web): routes, authentication and the JSON error format.
//!
//! Every route but `GET /health` needs `Authorization: Bearer <admin token>`. Block bodies
//! are raw bytes; everything else is JSON; every error is `{"error": "...", "code": "..."}`
//! with a fitting status. Handlers only translate: the work is messages to actors, made
//! through [`Coordinator`].
//!
//! This file holds routing ([`configure`]), authentication ([`require_token`]) and the
//! error mapping ([`ApiError`]); the handlers live by subject in [`blocks`] (block bytes and
//! refs), [`objects`] (objects of any size, their refs, which blocks are missing), [`admin`] (status, resync, repair, scrub, workers), [`layout`] (the cluster
//! layout) and [`metrics`] (`/metrics`);
//! [`conditional`] decides ETag, `If-None-Match` and byte ranges; [`openapi`] builds the
//! OpenAPI document from the handlers' `#[utoipa::path]` attributes, with the error body
//! and the other types both name in [`schema`].

pub mod admin;
pub mod blocks;
pub mod conditional;
pub mod layout;
pub mod members;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod page;
pub mod paging;
pub mod schema;
pub mod status;
pub mod tokens;

pub use blocks::HttpLimits;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use actix::Addr;
use actix_web::http::Method;

use blocknode_actors::budget::BudgetError;
use blocknode_actors::tokens::{Authenticate, Scope, TokenActor};
use blocknode_actors::{Hash, RefId};

use crate::coordinator::{Coordinator, CoordinatorError};

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
        HttpResponse::build(self.status).json(schema::ErrorBody {
            error: &self.message,
            code: self.code,
        })
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        let (status, code) = match &e {
            CoordinatorError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CoordinatorError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            CoordinatorError::Quorum(_) => (StatusCode::SERVICE_UNAVAILABLE, "quorum_failed"),
            CoordinatorError::RefDropped { .. } => (StatusCode::CONFLICT, "ref_dropped"),
            CoordinatorError::BlockMissing { .. } => (StatusCode::NOT_FOUND, "block_missing"),
            CoordinatorError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            CoordinatorError::Budget(BudgetError::Closed { .. })
            | CoordinatorError::ActorGone { .. }
            | CoordinatorError::HashTask(_)
            | CoordinatorError::Refcount(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            // The RAM budget had no room within the wait: busy, try again.
            CoordinatorError::Budget(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
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

/// A bad query string gets the JSON error format; an unknown parameter is named
/// ("unknown field `reff`, expected `ref` or `unreferenced`").
fn query_config() -> web::QueryConfig {
    use actix_web::error::QueryPayloadError;
    web::QueryConfig::default().error_handler(|e, _req| {
        let why = match &e {
            QueryPayloadError::Deserialize(d) => d.to_string(),
            other => other.to_string(),
        };
        ApiError::bad_request(format!("invalid query string: {why}")).into()
    })
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
        .route("/", web::get().to(page::status_page))
        .route("/health", web::get().to(health))
        .route("/v1/openapi.json", web::get().to(openapi_json))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/v1/blocks", web::put().to(blocks::put_block))
        .route(
            "/v1/blocks/missing",
            web::post().to(objects::missing_blocks),
        )
        .route("/v1/blocks/{hash}", web::get().to(blocks::get_block))
        .route("/v1/blocks/{hash}", web::head().to(blocks::head_block))
        .route("/v1/blocks/{hash}/info", web::get().to(blocks::block_info))
        .route(
            "/v1/blocks/{hash}/refs/{ref}",
            web::put().to(blocks::add_ref),
        )
        .route(
            "/v1/blocks/{hash}/refs/{ref}",
            web::delete().to(blocks::drop_ref),
        )
        .route("/v1/objects", web::put().to(objects::put_object))
        .route("/v1/objects/{id}", web::get().to(objects::get_object))
        .route("/v1/objects/{id}", web::head().to(objects::head_object))
        .route("/v1/objects/{id}/info", web::get().to(objects::object_info))
        .route(
            "/v1/objects/{id}/refs/{ref}",
            web::put().to(objects::add_object_ref),
        )
        .route(
            "/v1/objects/{id}/refs/{ref}",
            web::delete().to(objects::drop_object_ref),
        )
        .route("/v1/status", web::get().to(admin::status))
        .route("/v1/resync/errors", web::get().to(admin::resync_errors))
        .route("/v1/resync/retry", web::post().to(admin::resync_retry))
        .route("/v1/repair", web::post().to(admin::repair))
        .route(
            "/v1/anti-entropy/sync",
            web::post().to(admin::anti_entropy_sync),
        )
        .route("/v1/scrub/{action}", web::post().to(admin::scrub))
        .route("/v1/workers", web::get().to(admin::get_workers))
        .route("/v1/workers", web::put().to(admin::put_workers))
        .route("/v1/tokens", web::post().to(tokens::create_token))
        .route("/v1/tokens", web::get().to(tokens::list_tokens))
        .route("/v1/tokens/{name}", web::delete().to(tokens::revoke_token))
        .route("/v1/layout", web::get().to(layout::get_layout))
        .route("/v1/layout/stage", web::post().to(layout::stage))
        .route("/v1/layout/apply", web::post().to(layout::apply))
        .route("/v1/layout/revert", web::post().to(layout::revert));
}

/// Answer unknown routes and methods with the JSON error format.
pub async fn not_found(req: HttpRequest) -> ApiResult {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// The scope a request needs: `read` for reading blocks and their info, `write` for
/// storing blocks and changing refs, `admin` for everything else (unknown routes
/// included, so a lesser token learns nothing about which exist).
pub fn needed_scope(method: &Method, path: &str) -> Scope {
    if let Some(rest) = path.strip_prefix("/v1/objects") {
        return object_scope(method, rest);
    }
    if *method == Method::POST && path == "/v1/blocks/missing" {
        // It tells presence, as a HEAD does.
        return Scope::Read;
    }
    let Some(rest) = path.strip_prefix("/v1/blocks") else {
        return Scope::Admin;
    };
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let reading = *method == Method::GET || *method == Method::HEAD;
    match (parts.as_slice(), reading) {
        ([], false) if *method == Method::PUT => Scope::Write,
        ([_hash], true) | ([_hash, "info"], true) => Scope::Read,
        ([_hash, "refs", _ref], false) if *method == Method::PUT || *method == Method::DELETE => {
            Scope::Write
        }
        _ => Scope::Admin,
    }
}

/// [`needed_scope`] under `/v1/objects`: reading an object needs `read`, storing one
/// and changing its refs `write`.
fn object_scope(method: &Method, rest: &str) -> Scope {
    if !rest.is_empty() && !rest.starts_with('/') {
        // `/v1/objectsX...`: not an object route.
        return Scope::Admin;
    }
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let reading = *method == Method::GET || *method == Method::HEAD;
    match (parts.as_slice(), reading) {
        ([], false) if *method == Method::PUT => Scope::Write,
        ([_id], true) | ([_id, "info"], true) => Scope::Read,
        ([_id, "refs", _ref], false) if *method == Method::PUT || *method == Method::DELETE => {
            Scope::Write
        }
        _ => Scope::Admin,
    }
}

/// Whether a route answers without a token: the health check, the OpenAPI document and
/// the status page (which asks for a token itself).
fn is_public(method: &Method, path: &str) -> bool {
    *method == Method::GET && matches!(path, "/health" | "/v1/openapi.json" | "/")
}

/// Bearer-token check: the bootstrap admin token (the token file), or a scoped token
/// known to the token actor whose scope covers the route ([`needed_scope`]). A missing,
/// wrong or revoked token gets 401, the same answer in every case; a known token used
/// outside its scope gets 403 (code `forbidden`).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    if is_public(req.method(), req.path()) {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let admin = req
        .app_data::<web::Data<Coordinator>>()
        .map(|s| s.cfg.admin_token.clone())
        .unwrap_or_default();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let grant = if !admin.is_empty() && constant_time_eq(given.as_bytes(), admin.as_bytes()) {
        Some(("admin token file".to_string(), Scope::Admin))
    } else if given.is_empty() {
        None
    } else {
        match req.app_data::<web::Data<Addr<TokenActor>>>() {
            Some(tokens) => match tokens.send(Authenticate { secret: given }).await {
                Ok(g) => g.map(|g| (g.name.to_string(), g.scope)),
                Err(e) => {
                    let resp = actor_err("token", e).error_response();
                    return Ok(req.into_response(resp).map_into_right_body());
                }
            },
            None => None,
        }
    };
    let Some((name, scope)) = grant else {
        // The same answer for a missing and a wrong token: nothing to learn from it.
        let resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
        .error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    };
    let needed = needed_scope(req.method(), req.path());
    if !scope.allows(needed) {
        let resp = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {name} has scope {scope}; {} {} needs scope {needed}",
                req.method(),
                req.path()
            ),
        )
        .error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let outside_layout = req
        .app_data::<web::Data<Coordinator>>()
        .is_some_and(|s| !s.in_layout());
    let data_route = req.path().starts_with("/v1/blocks") || req.path().starts_with("/v1/objects");
    if outside_layout && data_route {
        // A joining node holds nothing and knows no holders until a layout names it.
        let resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_in_layout",
            "this node is not in the cluster layout yet (waiting for `blocknode layout assign` and `apply` on a member)",
        )
        .error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    }
    // What the token may see inside an answer (the refs of `/info` need `write`).
    req.extensions_mut().insert(scope);
    next.call(req).await.map(|r| r.map_into_left_body())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The OpenAPI document of this API (no token: it describes, it reveals nothing).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node", security(()), responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = crate::http::openapi::OpenApiDocument)))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::http::openapi::document())
}

/// The answer of `GET /health`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: the node serves.
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "node", security(()), responses((status = 200, description = "the node serves", body = Health)))]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}
