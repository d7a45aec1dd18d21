//! Object routes: `PUT /v1/objects` (a streamed body of any length), `GET`/`HEAD
//! /v1/objects/{id}` (streamed, with ETag, `If-None-Match` and one byte range),
//! `GET /v1/objects/{id}/info`, the object's refs, and `POST /v1/blocks/missing`. The
//! work is in [`crate::objects`].

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use blocknode_actors::Hash;

use super::blocks::{HeadBody, HttpLimits, DEFAULT_BODY_READ_TIMEOUT};
use super::schema::{BlockBytes, ErrorBody};
use super::{parse_hash, parse_ref, ApiError, ApiResult};
use crate::coordinator::Coordinator;
use crate::http::conditional::{
    decide_range, etag, if_none_match_matches, RangeAnswer, IMMUTABLE_CACHE_CONTROL,
};
use crate::objects::{self, ObjectError, ObjectInfo, PutObjectReply};

/// Most hashes one `POST /v1/blocks/missing` may ask about.
pub const MAX_MISSING_QUERY: usize = 4096;

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        let msg = e.to_string();
        match e {
            ObjectError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", msg),
            ObjectError::NotAnObject { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_an_object", msg)
            }
            ObjectError::RefTooLong(_) | ObjectError::BodyCut { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
            }
            ObjectError::BodyStalled { .. } => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", msg)
            }
            ObjectError::UploadTooLong { .. } => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "upload_too_long", msg)
            }
            ObjectError::Coordinator(c) => ApiError::from(c),
            ObjectError::BlocksTooSmall { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
            ObjectError::Busy { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
            ObjectError::WrongLength { .. } | ObjectError::Task(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ObjectPutQuery {
    #[serde(rename = "ref")]
    ref_id: Option<String>,
}

/// `PUT /v1/objects?ref=NAME`: store a body of any length as an object. The upload runs
/// in its own task: a client that goes away mid-body ends it as a cut-off body, whose
/// refs are dropped, not as a dropped future that could leave them behind.
#[utoipa::path(put, path = "/v1/objects", tag = "objects", params(("ref" = String, Query, description = "the object's ref (required): 1-185 of A-Z a-z 0-9 . _ - : @ + =", pattern = "^[A-Za-z0-9._:@+=-]{1,185}$")), request_body(content = BlockBytes, content_type = "application/octet-stream", description = "the object's bytes, any length (Content-Length or chunked)"), responses((status = 201, description = "stored: every chunk and the manifest on a write quorum, the ref on every block", body = PutObjectReply), (status = 400, description = "no or malformed ref, malformed query, or the body was cut off", body = ErrorBody), (status = 408, description = "the body stalled (http_body_read_timeout; code `body_timeout`), or the upload ran longer than its upload ref lives, 23 hours (code `upload_too_long`)", body = ErrorBody), (status = 409, description = "the ref was dropped before (code `ref_dropped`)", body = ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = ErrorBody), (status = 507, description = "disk full on a holder", body = ErrorBody)))]
pub(super) async fn put_object(
    svc: web::Data<Coordinator>,
    limits: Option<web::Data<HttpLimits>>,
    query: web::Query<ObjectPutQuery>,
    body: web::Payload,
) -> ApiResult {
    let Some(r) = query.ref_id.as_deref() else {
        return Err(ApiError::bad_request(
            "an object needs a ref: PUT /v1/objects?ref=NAME",
        ));
    };
    let user = parse_ref(r)?;
    let pause = limits.map_or(DEFAULT_BODY_READ_TIMEOUT, |l| l.body_read_timeout);
    let svc = svc.get_ref().clone();
    let task = actix_rt::spawn(objects::put_object(svc, body, user, pause));
    let reply = task
        .await
        .map_err(|e| ApiError::internal(format!("upload task failed: {e}")))??;
    Ok(HttpResponse::Created().json(reply))
}

/// Headers every answer about an object carries.
fn object_headers(resp: &mut actix_web::HttpResponseBuilder, id: &Hash) {
    resp.insert_header(("X-Object-Id", id.to_hex()))
        .insert_header((header::ETAG, etag(id)))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE_CACHE_CONTROL))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `GET /v1/objects/{id}`: the object's bytes, streamed in order, whole or one byte
/// range. The manifest and the first chunk are read before the headers go out, so a
/// missing object or an unreadable first chunk gets 404/503; a chunk unreadable later
/// aborts the response (a short body, never wrong bytes).
#[utoipa::path(get, path = "/v1/objects/{id}", tag = "objects", params(("id" = String, Path, description = "the object's id: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$"), ("Range" = Option<String>, Header, description = "one byte range"), ("If-None-Match" = Option<String>, Header, description = "the ETag held"), ("If-Range" = Option<String>, Header, description = "serve the range only for this ETag")), responses((status = 200, description = "the object's bytes", content_type = "application/octet-stream", body = BlockBytes, headers(("ETag" = String, description = "`\"<id>\"`: the bytes never change"), ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"), ("X-Object-Id" = String, description = "the object's id"))), (status = 206, description = "one byte range of the object", content_type = "application/octet-stream", body = BlockBytes, headers(("ETag" = String, description = "`\"<id>\"`"), ("Content-Range" = String, description = "`bytes FIRST-LAST/LENGTH`"))), (status = 304, description = "the If-None-Match tag names this object", headers(("ETag" = String, description = "`\"<id>\"`"))), (status = 400, description = "malformed id", body = ErrorBody), (status = 404, description = "no such object, or the block is not an object (code `not_an_object`)", body = ErrorBody), (status = 416, description = "range outside the object (code `range_not_satisfiable`)", body = ErrorBody, headers(("Content-Range" = String, description = "`bytes */LENGTH`"))), (status = 503, description = "unavailable: the manifest or first chunk not served and some holders could not be asked", body = ErrorBody)))]
pub(super) async fn get_object(
    svc: web::Data<Coordinator>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult {
    let id = parse_hash(&path)?;
    let root = objects::read_node(&svc, id).await?;
    let len = root.size;
    if header_str(&req, header::IF_NONE_MATCH).is_some_and(|v| if_none_match_matches(v, &id)) {
        let mut resp = HttpResponse::NotModified();
        object_headers(&mut resp, &id);
        return Ok(resp.finish());
    }
    let range_applies = header_str(&req, header::IF_RANGE).is_none_or(|v| v.trim() == etag(&id));
    let answer = match header_str(&req, header::RANGE) {
        Some(v) if range_applies => decide_range(v, len),
        _ => RangeAnswer::Full,
    };
    let (mut resp, first, end) = match answer {
        RangeAnswer::Full => (HttpResponse::Ok(), 0, len),
        RangeAnswer::Partial { first, last } => {
            let mut resp = HttpResponse::PartialContent();
            resp.insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}")));
            (resp, first, last + 1)
        }
        RangeAnswer::Unsatisfiable => {
            let mut resp = HttpResponse::RangeNotSatisfiable();
            object_headers(&mut resp, &id);
            resp.insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
            return Ok(resp.json(ErrorBody {
                error: &format!("range outside object {id} of {len} bytes"),
                code: "range_not_satisfiable",
            }));
        }
    };
    let mut body = objects::object_stream(svc.get_ref().clone(), id, root, first, end);
    // Before the headers: an unreadable first chunk is still an error status.
    let head = match body.next().await {
        Some(Err(e)) => return Err(e.into()),
        other => other,
    };
    resp.content_type("application/octet-stream");
    object_headers(&mut resp, &id);
    let body = futures::stream::iter(head).chain(body);
    Ok(resp.body(actix_web::body::SizedStream::new(end - first, body)))
}

/// `HEAD /v1/objects/{id}`: the size from the manifest; no chunk is read.
#[utoipa::path(head, path = "/v1/objects/{id}", tag = "objects", params(("id" = String, Path, description = "the object's id: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$")), responses((status = 200, description = "the object exists; Content-Length is its size", headers(("ETag" = String, description = "`\"<id>\"`"), ("X-Object-Id" = String, description = "the object's id"))), (status = 400, description = "malformed id"), (status = 404, description = "no such object"), (status = 503, description = "unavailable: some holders could not be asked")))]
pub(super) async fn head_object(svc: web::Data<Coordinator>, path: web::Path<String>) -> ApiResult {
    let id = parse_hash(&path)?;
    let root = objects::read_node(&svc, id).await?;
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/octet-stream");
    object_headers(&mut resp, &id);
    Ok(resp.body(HeadBody { len: root.size }))
}

/// `GET /v1/objects/{id}/info`.
#[utoipa::path(get, path = "/v1/objects/{id}/info", tag = "objects", params(("id" = String, Path, description = "the object's id: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$")), responses((status = 200, description = "size, chunks, manifest tree and a holders summary", body = ObjectInfo), (status = 400, description = "malformed id", body = ErrorBody), (status = 404, description = "no such object", body = ErrorBody), (status = 503, description = "unavailable", body = ErrorBody)))]
pub(super) async fn object_info(svc: web::Data<Coordinator>, path: web::Path<String>) -> ApiResult {
    let id = parse_hash(&path)?;
    Ok(HttpResponse::Ok().json(objects::object_info(&svc, id).await?))
}

#[utoipa::path(put, path = "/v1/objects/{id}/refs/{ref}", tag = "objects", params(("id" = String, Path, description = "the object's id: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$"), ("ref" = String, Path, description = "ref name: 1-185 of A-Z a-z 0-9 . _ - : @ + =", pattern = "^[A-Za-z0-9._:@+=-]{1,185}$")), responses((status = 204, description = "the ref protects every block of the object (idempotent)"), (status = 400, description = "malformed id or ref", body = ErrorBody), (status = 404, description = "no such object", body = ErrorBody), (status = 409, description = "the ref was dropped before", body = ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = ErrorBody)))]
pub(super) async fn add_object_ref(
    svc: web::Data<Coordinator>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (i, r) = path.into_inner();
    let (id, user) = (parse_hash(&i)?, parse_ref(&r)?);
    objects::add_object_ref(&svc, id, &user).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/objects/{id}/refs/{ref}", tag = "objects", params(("id" = String, Path, description = "the object's id: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$"), ("ref" = String, Path, description = "ref name: 1-185 of A-Z a-z 0-9 . _ - : @ + =", pattern = "^[A-Za-z0-9._:@+=-]{1,185}$")), responses((status = 204, description = "the ref is dropped from every block of the object (idempotent)"), (status = 400, description = "malformed id or ref", body = ErrorBody), (status = 404, description = "no such object", body = ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = ErrorBody)))]
pub(super) async fn drop_object_ref(
    svc: web::Data<Coordinator>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (i, r) = path.into_inner();
    let (id, user) = (parse_hash(&i)?, parse_ref(&r)?);
    objects::drop_object_ref(&svc, id, &user).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of `POST /v1/blocks/missing`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct MissingQuery {
    /// Block hashes (64 lowercase hex digits each), at most 4096.
    hashes: Vec<String>,
}

/// The answer of `POST /v1/blocks/missing`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MissingReply {
    /// The hashes asked about that fewer than a write quorum of their holders store and
    /// reference (a stored block with no ref may be being collected), in
    /// the order asked, each once: their bytes must be sent.
    missing: Vec<String>,
}

#[utoipa::path(post, path = "/v1/blocks/missing", tag = "blocks", request_body = MissingQuery, responses((status = 200, description = "which of these blocks the cluster lacks", body = MissingReply), (status = 400, description = "a malformed hash, or more than 4096", body = ErrorBody), (status = 503, description = "an actor unavailable", body = ErrorBody)))]
pub(super) async fn missing_blocks(
    svc: web::Data<Coordinator>,
    body: web::Json<MissingQuery>,
) -> ApiResult {
    if body.hashes.len() > MAX_MISSING_QUERY {
        return Err(ApiError::bad_request(format!(
            "{} hashes asked; at most {MAX_MISSING_QUERY} per request",
            body.hashes.len()
        )));
    }
    let hashes = body
        .hashes
        .iter()
        .map(|h| parse_hash(h))
        .collect::<Result<Vec<Hash>, ApiError>>()?;
    let missing = objects::missing_blocks(&svc, &hashes).await;
    Ok(HttpResponse::Ok().json(MissingReply {
        missing: missing.iter().map(Hash::to_hex).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use blocknode_actors::tokens::Scope;

    use crate::http::needed_scope;

    #[test]
    fn reading_objects_needs_read_and_changing_them_write() {
        let id = "ab".repeat(32);
        for (method, path, scope) in [
            (Method::PUT, "/v1/objects".to_string(), Scope::Write),
            (Method::GET, format!("/v1/objects/{id}"), Scope::Read),
            (Method::HEAD, format!("/v1/objects/{id}"), Scope::Read),
            (Method::GET, format!("/v1/objects/{id}/info"), Scope::Read),
            (
                Method::PUT,
                format!("/v1/objects/{id}/refs/r"),
                Scope::Write,
            ),
            (
                Method::DELETE,
                format!("/v1/objects/{id}/refs/r"),
                Scope::Write,
            ),
            (Method::POST, "/v1/blocks/missing".to_string(), Scope::Read),
            (Method::DELETE, format!("/v1/objects/{id}"), Scope::Admin),
            (Method::POST, "/v1/objects".to_string(), Scope::Admin),
            // Paths that only start like an object route are unknown routes.
            (Method::PUT, "/v1/objectsX".to_string(), Scope::Admin),
            (Method::GET, format!("/v1/objectsX/{id}"), Scope::Admin),
            (
                Method::PUT,
                format!("/v1/objects-{id}/refs/r"),
                Scope::Admin,
            ),
        ] {
            assert_eq!(needed_scope(&method, &path), scope, "{method} {path}");
        }
    }
}
