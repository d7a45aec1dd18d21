//! Block routes: `PUT /v1/blocks`, `GET`/`HEAD /v1/blocks/{hash}` (ETag, `If-None-Match`
//! and ranges decided in [`super::conditional`]), refs and `GET /v1/blocks/{hash}/info`.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use blocknode_actors::bufpool::PooledBuf;
use blocknode_actors::refcount::RefState;
use blocknode_actors::storage::BlockLength;
use blocknode_actors::Hash;

use super::{actor_err, parse_hash, parse_ref, ApiError, ApiResult};
use crate::coordinator::Coordinator;
use crate::http::conditional::{
    decide_range, etag, if_none_match_matches, RangeAnswer, IMMUTABLE_CACHE_CONTROL,
};

#[derive(Deserialize)]
pub(super) struct PutQuery {
    #[serde(rename = "ref")]
    ref_id: Option<String>,
}

/// Limits of the HTTP layer the handlers apply (from the config).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Longest pause inside a request body before the request is cut off.
    pub body_read_timeout: Duration,
}

#[utoipa::path(put, path = "/v1/blocks", tag = "blocks", params(("ref" = Option<String>, Query, description = "add this ref with the write quorum")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the block's bytes"), responses((status = 201, description = "stored on the write quorum", body = crate::http::openapi::PutReply), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::openapi::ErrorBody), (status = 408, description = "the body stalled (http_body_read_timeout)", body = crate::http::openapi::ErrorBody), (status = 413, description = "larger than max_block_size", body = crate::http::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::openapi::ErrorBody), (status = 507, description = "disk full on a holder", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn put_block(
    svc: web::Data<Coordinator>,
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
    // A pooled buffer: a fresh 1 MiB one would be faulted in page by page (see bufpool).
    let mut buf = PooledBuf::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
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
        buf.vec().extend_from_slice(&chunk);
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
async fn block_len(svc: &Coordinator, hash: Hash) -> Result<u64, ApiError> {
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
#[utoipa::path(get, path = "/v1/blocks/{hash}", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits"), ("Range" = Option<String>, Header, description = "one byte range"), ("If-None-Match" = Option<String>, Header, description = "the ETag held"), ("If-Range" = Option<String>, Header, description = "serve the range only for this ETag")), responses((status = 200, description = "the verified bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 206, description = "one byte range of the verified bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 304, description = "the If-None-Match tag names this block"), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::openapi::ErrorBody), (status = 404, description = "no holder has it", body = crate::http::openapi::ErrorBody), (status = 416, description = "range outside the block", body = crate::http::openapi::ErrorBody), (status = 503, description = "unavailable: no copy served and some holders could not be asked", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn get_block(
    svc: web::Data<Coordinator>,
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
            Ok(resp.body(ChunkedBody(data.slice(first as usize..=last as usize))))
        }
        _ => Ok(resp.body(ChunkedBody(data))),
    }
}

/// Largest piece of a block handed to actix-web at a time. actix-web copies a body's
/// pieces into its connection's write buffer and, after a response, frees that buffer
/// when it grew past 128 KiB: a whole 1 MiB block as one piece made it allocate (a
/// fresh mmap, faulted in page by page) and free a block-sized buffer per response.
/// Pieces of 32 KiB keep it at most 64 KiB (its own 32 KiB write threshold plus one
/// piece), reused from one response to the next.
const BODY_PIECE: usize = 32 << 10;

/// The body of a block answer: the verified bytes, handed over in [`BODY_PIECE`]s
/// (slices of the same buffer, nothing copied here).
struct ChunkedBody(Bytes);

impl actix_web::body::MessageBody for ChunkedBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.0.len() as u64)
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        if self.0.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.0.len().min(BODY_PIECE);
        std::task::Poll::Ready(Some(Ok(self.0.split_to(n))))
    }
}

/// `HEAD /v1/blocks/{hash}`: presence and length from what the node knows, without
/// reading or hashing the block when this node holds it.
#[utoipa::path(head, path = "/v1/blocks/{hash}", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits")), responses((status = 200, description = "present; Content-Length is the plain length"), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::openapi::ErrorBody), (status = 404, description = "no holder has it"), (status = 503, description = "unavailable: no copy served and some holders could not be asked", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn head_block(svc: web::Data<Coordinator>, path: web::Path<String>) -> ApiResult {
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
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

#[utoipa::path(put, path = "/v1/blocks/{hash}/refs/{ref}", tag = "refs", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits"), ("ref" = String, Path, description = "ref name: 1-255 of A-Z a-z 0-9 . _ - : @ + =")), responses((status = 204, description = "the ref is live (idempotent)"), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::openapi::ErrorBody), (status = 409, description = "the ref was dropped before", body = crate::http::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn add_ref(
    svc: web::Data<Coordinator>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (h, r) = path.into_inner();
    let (hash, ref_id) = (parse_hash(&h)?, parse_ref(&r)?);
    svc.set_ref(hash, ref_id, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/blocks/{hash}/refs/{ref}", tag = "refs", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits"), ("ref" = String, Path, description = "ref name: 1-255 of A-Z a-z 0-9 . _ - : @ + =")), responses((status = 204, description = "the ref is dropped (idempotent)"), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn drop_ref(
    svc: web::Data<Coordinator>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (h, r) = path.into_inner();
    let (hash, ref_id) = (parse_hash(&h)?, parse_ref(&r)?);
    svc.set_ref(hash, ref_id, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/blocks/{hash}/info", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits")), responses((status = 200, description = "every holder's view and this node's refs"), (status = 400, description = "malformed hash, ref, body or query", body = crate::http::openapi::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::openapi::ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = crate::http::openapi::ErrorBody)))]
pub(super) async fn block_info(svc: web::Data<Coordinator>, path: web::Path<String>) -> ApiResult {
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

/// Longest pause inside a request body when no [`HttpLimits`] are configured; the
/// default of the config key `http_body_read_timeout`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use actix_web::body::{BodySize, MessageBody};

    use super::*;

    #[actix_rt::test]
    async fn a_block_body_is_given_in_small_pieces_that_add_up_to_the_block() {
        let data: Bytes = (0..(1 << 20) + 5).map(|i| (i % 253) as u8).collect();
        let mut body = ChunkedBody(data.clone());
        assert_eq!(body.size(), BodySize::Sized(data.len() as u64));
        let mut got = Vec::new();
        let mut pieces = 0;
        while let Some(piece) =
            futures::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_next(cx)).await
        {
            let piece = piece.unwrap_or_else(|e| match e {});
            assert!(
                piece.len() <= BODY_PIECE,
                "a piece of {} bytes",
                piece.len()
            );
            got.extend_from_slice(&piece);
            pieces += 1;
        }
        assert_eq!(pieces, data.len().div_ceil(BODY_PIECE));
        assert!(got == data[..], "the pieces differ from the block");
        let empty = actix_web::body::to_bytes(ChunkedBody(Bytes::new())).await;
        assert!(matches!(empty, Ok(b) if b.is_empty()));
    }
}
