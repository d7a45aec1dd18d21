//! Block routes: `PUT /v1/blocks`, `GET`/`HEAD /v1/blocks/{hash}` (ETag, `If-None-Match`
//! and ranges decided in [`super::conditional`]), refs and `GET /v1/blocks/{hash}/info`.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use blocknode_actors::bufpool::PooledBuf;
use blocknode_actors::refcount::RefState;
use blocknode_actors::storage::BlockLength;
use blocknode_actors::tokens::Scope;
use blocknode_actors::{Hash, RefId};

use super::paging::PageQuery;
use super::schema::{BlockBytes, ErrorBody, PutReply};
use super::{actor_err, parse_hash, parse_ref, ApiError, ApiResult};
use crate::coordinator::{Coordinator, HolderInfo};
use crate::http::conditional::{
    decide_range, etag, if_none_match_matches, RangeAnswer, IMMUTABLE_CACHE_CONTROL,
};

/// The query of `PUT /v1/blocks`: a ref, or the explicit wish for an unreferenced block.
/// Any other parameter is refused (a typo such as `?reff=` must not store a block that
/// GC collects a few minutes later).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutQuery {
    #[serde(rename = "ref")]
    ref_id: Option<String>,
    /// Store the block without a ref: collected after `gc_delay` unless a ref arrives.
    #[serde(default)]
    unreferenced: bool,
}

/// The query of the block routes that take none: any parameter is refused, by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoQuery {}

/// Limits of the HTTP layer the handlers apply (from the config).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Longest pause inside a request body before the request is cut off.
    pub body_read_timeout: Duration,
}

#[utoipa::path(put, path = "/v1/blocks", tag = "blocks", params(("ref" = Option<String>, Query, description = "add this ref with the write quorum: 1-255 of A-Z a-z 0-9 . _ - : @ + =; required unless `unreferenced=true`", pattern = "^[A-Za-z0-9._:@+=-]{1,255}$"), ("unreferenced" = Option<bool>, Query, description = "store the block without a ref: it is collected after `gc_delay` unless a ref is added meanwhile")), request_body(content = BlockBytes, content_type = "application/octet-stream", description = "the block's bytes"), responses((status = 201, description = "stored on the write quorum", body = PutReply), (status = 400, description = "malformed hash, ref, body or query; an unknown query parameter; neither `ref` nor `unreferenced=true` (code `ref_required`)", body = ErrorBody), (status = 401, description = "missing or invalid token", body = ErrorBody), (status = 408, description = "the body stalled (http_body_read_timeout)", body = ErrorBody), (status = 409, description = "a drop of the `?ref=` name raced with this add three times in a row (code `ref_dropped`); a name dropped before is otherwise added again, in a new incarnation", body = ErrorBody), (status = 413, description = "larger than max_block_size", body = ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = ErrorBody), (status = 507, description = "disk full on a holder", body = ErrorBody)))]
pub(super) async fn put_block(
    svc: web::Data<Coordinator>,
    limits: Option<web::Data<HttpLimits>>,
    req: HttpRequest,
    query: web::Query<PutQuery>,
    mut body: web::Payload,
) -> ApiResult {
    let max = svc.cfg.max_block_size;
    let ref_id = query.ref_id.as_deref().map(parse_block_ref).transpose()?;
    match (&ref_id, query.unreferenced) {
        (None, false) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ref_required",
                "a block needs a ref (?ref=NAME), or ?unreferenced=true for a block that \
                 is collected after gc_delay unless a ref is added",
            ))
        }
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "?ref= and ?unreferenced=true exclude each other",
            ))
        }
        _ => {}
    }
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
        buf.extend_from_slice(&chunk);
    }
    let (hash, size) = svc.put_block(buf.freeze(), ref_id, ram).await?;
    Ok(HttpResponse::Created().json(PutReply {
        hash: hash.to_hex(),
        size: size as u64,
    }))
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
#[utoipa::path(get, path = "/v1/blocks/{hash}", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$", example = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"), ("Range" = Option<String>, Header, description = "one byte range"), ("If-None-Match" = Option<String>, Header, description = "the ETag held"), ("If-Range" = Option<String>, Header, description = "serve the range only for this ETag")), responses((status = 200, description = "the verified bytes", content_type = "application/octet-stream", body = BlockBytes, headers(("ETag" = String, description = "`\"<hash>\"`: the bytes never change"), ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"), ("X-Block-Hash" = String, description = "the block's hash"))), (status = 206, description = "one byte range of the verified bytes", content_type = "application/octet-stream", body = BlockBytes, headers(("ETag" = String, description = "`\"<hash>\"`: the bytes never change"), ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"), ("X-Block-Hash" = String, description = "the block's hash"), ("Content-Range" = String, description = "`bytes FIRST-LAST/LENGTH`"))), (status = 304, description = "the If-None-Match tag names this block", headers(("ETag" = String, description = "`\"<hash>\"`: the bytes never change"), ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"), ("X-Block-Hash" = String, description = "the block's hash"))), (status = 400, description = "malformed hash, ref, body or query", body = ErrorBody), (status = 401, description = "missing or invalid token", body = ErrorBody), (status = 404, description = "no holder has it", body = ErrorBody), (status = 416, description = "range outside the block (code `range_not_satisfiable`)", body = ErrorBody, headers(("Content-Range" = String, description = "`bytes */LENGTH`"))), (status = 503, description = "unavailable: no copy served and some holders could not be asked", body = ErrorBody)))]
pub(super) async fn get_block(
    svc: web::Data<Coordinator>,
    req: HttpRequest,
    path: web::Path<String>,
    _query: web::Query<NoQuery>,
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
            return Ok(resp.json(ErrorBody {
                error: &format!("range outside block {hash} of {len} bytes"),
                code: "range_not_satisfiable",
            }));
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
#[utoipa::path(head, path = "/v1/blocks/{hash}", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$", example = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419")), responses((status = 200, description = "present; Content-Length is the plain length", headers(("ETag" = String, description = "`\"<hash>\"`: the bytes never change"), ("Cache-Control" = String, description = "`public, max-age=31536000, immutable`"), ("X-Block-Hash" = String, description = "the block's hash"))), (status = 400, description = "malformed hash, ref, body or query"), (status = 401, description = "missing or invalid token"), (status = 404, description = "no holder has it"), (status = 503, description = "unavailable: no copy served and some holders could not be asked")))]
pub(super) async fn head_block(
    svc: web::Data<Coordinator>,
    path: web::Path<String>,
    _query: web::Query<NoQuery>,
) -> ApiResult {
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
pub(super) struct HeadBody {
    pub(super) len: u64,
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

/// A ref name for a block route: object refs (`@obj:`) are refused, since dropping one
/// from a single chunk would break its object; they change only through
/// `/v1/objects/{id}/refs` (an upload's `@upload:` refs stay allowed: the CLI's
/// client-side dedup sends chunks under one).
fn parse_block_ref(s: &str) -> Result<RefId, ApiError> {
    if s.starts_with(crate::objects::OBJECT_REF_PREFIX) {
        return Err(ApiError::bad_request(format!(
            "ref names starting with {} belong to objects: change them through /v1/objects/{{id}}/refs/{{ref}}",
            crate::objects::OBJECT_REF_PREFIX
        )));
    }
    parse_ref(s)
}

#[utoipa::path(put, path = "/v1/blocks/{hash}/refs/{ref}", tag = "refs", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$", example = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"), ("ref" = String, Path, description = "ref name: 1-255 of A-Z a-z 0-9 . _ - : @ + =", pattern = "^[A-Za-z0-9._:@+=-]{1,255}$")), responses((status = 204, description = "the ref is live (idempotent), and the block is stored on a write quorum of its holders"), (status = 400, description = "malformed hash, ref, body or query", body = ErrorBody), (status = 401, description = "missing or invalid token", body = ErrorBody), (status = 404, description = "the block is not stored on a write quorum of its holders (code `block_missing`): the ref is not acknowledged; PUT the block again with `?ref=`", body = ErrorBody), (status = 409, description = "a drop of the same name raced with this add three times in a row (code `ref_dropped`); a name dropped before is otherwise added again, in a new incarnation", body = ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = ErrorBody)))]
pub(super) async fn add_ref(
    svc: web::Data<Coordinator>,
    path: web::Path<(String, String)>,
    _query: web::Query<NoQuery>,
) -> ApiResult {
    let (h, r) = path.into_inner();
    let (hash, ref_id) = (parse_hash(&h)?, parse_block_ref(&r)?);
    svc.set_ref(hash, ref_id, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/blocks/{hash}/refs/{ref}", tag = "refs", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$", example = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"), ("ref" = String, Path, description = "ref name: 1-255 of A-Z a-z 0-9 . _ - : @ + =", pattern = "^[A-Za-z0-9._:@+=-]{1,255}$")), responses((status = 204, description = "the ref is dropped (idempotent)"), (status = 400, description = "malformed hash, ref, body or query", body = ErrorBody), (status = 401, description = "missing or invalid token", body = ErrorBody), (status = 503, description = "quorum not reached or an actor unavailable", body = ErrorBody)))]
pub(super) async fn drop_ref(
    svc: web::Data<Coordinator>,
    path: web::Path<(String, String)>,
    _query: web::Query<NoQuery>,
) -> ApiResult {
    let (h, r) = path.into_inner();
    let (hash, ref_id) = (parse_hash(&h)?, parse_block_ref(&r)?);
    svc.set_ref(hash, ref_id, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The answer of `GET /v1/blocks/{hash}/info`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BlockInfoReply {
    /// The block's hash.
    hash: String,
    /// What each node that should hold it (by the layout, and the previous one during a
    /// transition) says, in placement order: its id (`node`), whether it has a verified
    /// copy (`present`), its live refs (`rc`), whether its copy may be deleted
    /// (`deletable`), why it could not be asked (`error`), `state` (`present`, `absent`,
    /// or `unknown` when it could not be asked: not the same as absent) and `role`
    /// (`holder`; during a transition `joining` for a new holder, `leaving` for an old
    /// one).
    holders: Vec<HolderInfo>,
    /// This node's refs to it.
    local: LocalRefs,
}

/// This node's refcount view of a block.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LocalRefs {
    /// Whether this node is one of the block's holders; a node that is not keeps no
    /// refs of it, so `rc` 0 here says nothing about the block.
    holder: bool,
    /// Live refs.
    rc: u64,
    /// One page of the refs this node knows, live or dropped (a dropped ref is a
    /// tombstone), in name order; empty for a token of scope `read`, which may read the
    /// block but not learn the names it is referenced by.
    refs: Vec<RefView>,
    /// Give it as `?after=` for the next page of refs, percent-encoded like any query
    /// value (a `+` in a name is sent as `%2B`, else it reads as a space); null on the
    /// last page.
    #[schema(pattern = "^[A-Za-z0-9._:@+=-]{1,255}$")]
    next: Option<String>,
    /// True when the token's scope (`read`) may not see ref names: `refs` is empty.
    refs_hidden: bool,
}

/// One ref to a block.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RefView {
    #[serde(rename = "ref")]
    ref_id: String,
    /// `live` or `dropped`.
    #[schema(pattern = "^(live|dropped)$")]
    state: &'static str,
}

#[utoipa::path(get, path = "/v1/blocks/{hash}/info", tag = "blocks", params(("hash" = String, Path, description = "the block's hash: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$", example = "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"), ("limit" = Option<u64>, Query, description = "refs per page, 1 to 1000 (default 100)", minimum = 1, maximum = 1000), ("after" = Option<String>, Query, description = "the `local.next` of the previous page, percent-encoded (a `+` as `%2B`): refs after this name", pattern = "^[A-Za-z0-9._:@+=-]{1,255}$")), responses((status = 200, description = "every holder's view and one page of this node's refs (`local.next` is the `after` of the next page, null on the last; a `read` token gets no ref names)", body = BlockInfoReply), (status = 400, description = "malformed hash or query", body = ErrorBody), (status = 503, description = "an actor unavailable", body = ErrorBody)))]
pub(super) async fn block_info(
    svc: web::Data<Coordinator>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult {
    let hash = parse_hash(&path)?;
    let limit = query.limit()?;
    let after = query.after.as_deref().map(parse_ref).transpose()?;
    // Ref names are what a writer chose (object names, say); a read token reads blocks
    // by hash and learns only how many refs there are.
    let names_hidden = req
        .extensions()
        .get::<Scope>()
        .is_none_or(|s| !s.allows(Scope::Write));
    let holders = svc.block_info(hash).await;
    let me = svc.self_id.to_hex();
    let holder = holders.iter().any(|h| h.node == me);
    let rc = svc.local_rc(hash).await?;
    let (refs, next) = if names_hidden {
        (Vec::new(), None)
    } else {
        let page = svc.local_refs_page(hash, after, limit).await?;
        let next = if page.more {
            page.refs.last().map(|(r, _)| r.as_str().to_string())
        } else {
            None
        };
        let refs = page
            .refs
            .into_iter()
            .map(|(r, s)| RefView {
                ref_id: r.as_str().to_string(),
                state: match s {
                    RefState::Live => "live",
                    RefState::Dropped => "dropped",
                },
            })
            .collect();
        (refs, next)
    };
    Ok(HttpResponse::Ok().json(BlockInfoReply {
        hash: hash.to_hex(),
        holders,
        local: LocalRefs {
            holder,
            rc,
            refs,
            next,
            refs_hidden: names_hidden,
        },
    }))
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
