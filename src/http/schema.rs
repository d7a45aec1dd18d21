//! The types the handlers answer with that exist for the API's description: every
//! error's body ([`ErrorBody`] with its [`ErrorCode`]), [`PutReply`] and [`BlockBytes`].
//! The handlers name them in their `#[utoipa::path]` attributes; `openapi.rs` lists them
//! in the document.

use serde::Serialize;
use utoipa::ToSchema;

/// Every error's body, as [`super::ApiError`] writes it.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong, for people.
    pub error: &'a str,
    /// What went wrong, for programs: one of [`ErrorCode`].
    #[schema(value_type = ErrorCode)]
    pub code: &'a str,
}

/// The stable machine codes of errors. Handlers name them as strings
/// ([`super::ApiError::new`]); a test checks that every code the HTTP sources use is
/// one of these.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ErrorCode {
    /// 400: a malformed hash, ref, name, query, path or JSON body, or an unknown query
    /// parameter (named in the message).
    BadRequest,
    /// 400: `PUT /v1/blocks` without `?ref=` and without `?unreferenced=true`.
    RefRequired,
    /// 401: no token, or one the node does not know (the same answer for both).
    Unauthorized,
    /// 403: a known token whose scope does not cover the route.
    Forbidden,
    /// 404: no such block or token.
    NotFound,
    /// 404: a ref was not added because the block is not present on a write quorum of
    /// its holders (collected, or never stored): PUT the block again with the ref.
    BlockMissing,
    /// 404: no such route (or method on it), or an unknown scrub action.
    NoRoute,
    /// 404: the block named as an object is not an object's manifest.
    NotAnObject,
    /// 408: a request body stalled longer than `http_body_read_timeout`.
    BodyTimeout,
    /// 408: an object upload ran longer than its upload ref lives (23 hours).
    UploadTooLong,
    /// 409: a drop of the same ref name raced with the add, again and again.
    RefDropped,
    /// 409: a live token has this name.
    TokenExists,
    /// 409: the layout change or apply was refused.
    LayoutRefused,
    /// 409: a repair is already running.
    RepairRefused,
    /// 409: the scrub cannot do that in its state.
    ScrubRefused,
    /// 413: larger than `max_block_size` or the JSON body limit.
    TooLarge,
    /// 416: the byte range lies outside the block.
    RangeNotSatisfiable,
    /// 500: a broken invariant (never expected; logged).
    Internal,
    /// 503: an actor or the holders could not be reached.
    Unavailable,
    /// 503: fewer holders than the quorum answered.
    QuorumFailed,
    /// 503: this node is not in the cluster layout yet.
    NotInLayout,
    /// 507: a holder's disk is full.
    DiskFull,
}

/// The answer of `PUT /v1/blocks`.
#[derive(Serialize, ToSchema)]
pub struct PutReply {
    /// The block's name: 64 lowercase hex digits.
    pub hash: String,
    /// Its plain length in bytes.
    pub size: u64,
}

/// A block's raw bytes (`PUT /v1/blocks` takes them, `GET /v1/blocks/{hash}` gives them).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct BlockBytes(Vec<u8>);
