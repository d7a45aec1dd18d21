//! The layout routes of the HTTP API: `GET /v1/layout`, `POST /v1/layout/stage`,
//! `POST /v1/layout/apply`, `POST /v1/layout/revert` (registered in [`super::configure`]),
//! and the `layout` part of `GET /v1/status`. Each is one message to the layout actor;
//! node ids are 64 hex digits in JSON.
//!
//! Refusals (an apply whose version is not current + 1, nothing staged, removing a
//! non-member, a change that leaves no valid layout) answer 409 `layout_refused`; a body
//! that does not parse answers 400 `bad_request`.

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use blocknode_actors::layout::{
    ApplyLayout, GetLayout, LayoutChange, LayoutError, LayoutView, MoveSummary, RevertLayout,
    StageChange, TransitionStatus,
};
use blocknode_actors::NodeId;

use super::{actor_err, ApiError, ApiResult};
use crate::coordinator::Coordinator as Service;

/// The body of `POST /v1/layout/stage`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    /// `assign` (add a node or change it) or `remove`.
    #[schema(pattern = "^(assign|remove)$")]
    pub op: String,
    /// The node id: 64 hex digits.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub id: String,
    /// `assign` only: zone, capacity (at least 1) and QUIC address `HOST:PORT`.
    #[schema(min_length = 1)]
    pub zone: Option<String>,
    #[schema(minimum = 1)]
    pub capacity: Option<u64>,
    pub addr: Option<String>,
}

/// The body of `POST /v1/layout/apply`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    /// Must be the current version + 1.
    pub version: u64,
}

fn layout_err(e: LayoutError) -> ApiError {
    match e {
        LayoutError::Store(_) | LayoutError::Stopped | LayoutError::Busy => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        _ => ApiError::new(StatusCode::CONFLICT, "layout_refused", e.to_string()),
    }
}

fn parse_id(s: &str) -> Result<NodeId, ApiError> {
    s.parse::<NodeId>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid node id {s:?}: 64 hex digits expected"),
        )
    })
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
}

impl StageBody {
    fn change(&self) -> Result<LayoutChange, ApiError> {
        let id = parse_id(&self.id)?;
        match self.op.as_str() {
            "assign" => {
                let zone = self.zone.clone().filter(|z| !z.is_empty());
                let zone = zone.ok_or_else(|| bad("assign needs a non-empty zone"))?;
                let capacity = self
                    .capacity
                    .filter(|c| *c > 0)
                    .ok_or_else(|| bad("assign needs a capacity of at least 1"))?;
                let addr = self
                    .addr
                    .as_deref()
                    .ok_or_else(|| bad("assign needs an addr HOST:PORT"))?;
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|e| bad(format!("invalid addr {addr:?}: {e}")))?;
                Ok(LayoutChange::Assign {
                    id,
                    addr,
                    zone,
                    capacity,
                })
            }
            "remove" => Ok(LayoutChange::Remove { id }),
            other => Err(bad(format!("op must be assign or remove, got {other:?}"))),
        }
    }
}

/// What applying the staged changes moves (`preview` of `GET /v1/layout`, and the
/// answer of `POST /v1/layout/apply`).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MovesView {
    /// Partitions whose holder set changes.
    partitions_changed: usize,
    /// Replicas that land on a node that did not hold them.
    replicas_moved: usize,
    /// Every replica of the new table.
    replicas_total: usize,
    /// Per node (old and new members): replicas held before and after.
    nodes: Vec<NodeMovesView>,
}

/// One node's share of a [`MovesView`].
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NodeMovesView {
    id: String,
    before: usize,
    after: usize,
}

impl From<&MoveSummary> for MovesView {
    fn from(m: &MoveSummary) -> Self {
        MovesView {
            partitions_changed: m.partitions_changed,
            replicas_moved: m.replicas_moved,
            replicas_total: m.replicas_total,
            nodes: m
                .nodes
                .iter()
                .map(|n| NodeMovesView {
                    id: n.id.to_hex(),
                    before: n.before,
                    after: n.after,
                })
                .collect(),
        }
    }
}

/// A staged change, as `POST /v1/layout/stage` took it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ChangeView {
    Assign {
        id: String,
        addr: String,
        zone: String,
        capacity: u64,
    },
    Remove {
        id: String,
    },
}

impl From<&LayoutChange> for ChangeView {
    fn from(c: &LayoutChange) -> Self {
        match c {
            LayoutChange::Assign {
                id,
                addr,
                zone,
                capacity,
            } => ChangeView::Assign {
                id: id.to_hex(),
                addr: addr.to_string(),
                zone: zone.clone(),
                capacity: *capacity,
            },
            LayoutChange::Remove { id } => ChangeView::Remove { id: id.to_hex() },
        }
    }
}

/// The running transition's figures (also in `GET /v1/status`).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TransitionView {
    /// The layout version being moved to.
    version: u64,
    partitions_moving: usize,
    partitions_left: u64,
    blocks_left: u64,
    bytes_left: u64,
    /// New holders whose progress is not known yet.
    holders_unknown: Vec<String>,
    rate_bytes_per_sec: f64,
    eta_secs: Option<f64>,
}

impl From<&TransitionStatus> for TransitionView {
    fn from(t: &TransitionStatus) -> Self {
        TransitionView {
            version: t.version,
            partitions_moving: t.partitions_moving,
            partitions_left: t.partitions_left,
            blocks_left: t.blocks_left,
            bytes_left: t.bytes_left,
            holders_unknown: t.holders_unknown.iter().map(|n| n.to_hex()).collect(),
            rate_bytes_per_sec: t.rate_bytes_per_sec,
            eta_secs: t.eta_secs,
        }
    }
}

/// A member of the layout in force.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MemberView {
    id: String,
    addr: String,
    zone: String,
    capacity: u64,
    /// Partitions it holds a replica of.
    partitions: usize,
}

/// A node that left the layout and still hands its data over.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RetiringView {
    id: String,
    addr: String,
}

/// What applying the staged changes would give.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PreviewView {
    version: u64,
    moves: MovesView,
}

/// A peer whose layout is not ours.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PeerLayoutView {
    id: String,
    version: u64,
}

/// The answer of `GET /v1/layout` and `POST /v1/layout/stage`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LayoutReply {
    version: u64,
    /// The layout's digest (64 hex digits): equal digests, equal layouts.
    digest: String,
    replication_factor: usize,
    partitions: usize,
    in_transition: bool,
    members: Vec<MemberView>,
    retiring: Vec<RetiringView>,
    staged: Vec<ChangeView>,
    preview: Option<PreviewView>,
    transition: Option<TransitionView>,
    disagreeing_peers: Vec<PeerLayoutView>,
}

impl From<&LayoutView> for LayoutReply {
    fn from(v: &LayoutView) -> Self {
        let l = &v.current;
        let load = |id: &NodeId| l.table.iter().filter(|row| row.contains(id)).count();
        LayoutReply {
            version: l.version,
            digest: l.digest().to_hex(),
            replication_factor: l.replication,
            partitions: l.partitions,
            in_transition: l.in_transition(),
            members: l
                .members
                .iter()
                .map(|m| MemberView {
                    id: m.id.to_hex(),
                    addr: m.addr.to_string(),
                    zone: m.zone.clone(),
                    capacity: m.capacity,
                    partitions: load(&m.id),
                })
                .collect(),
            retiring: l
                .retiring
                .iter()
                .map(|m| RetiringView {
                    id: m.id.to_hex(),
                    addr: m.addr.to_string(),
                })
                .collect(),
            staged: v.staged.iter().map(ChangeView::from).collect(),
            preview: v.preview.as_ref().map(|(next, moves)| PreviewView {
                version: next.version,
                moves: moves.into(),
            }),
            transition: v.transition.as_ref().map(TransitionView::from),
            disagreeing_peers: v
                .disagreeing
                .iter()
                .map(|(id, s)| PeerLayoutView {
                    id: id.to_hex(),
                    version: s.version,
                })
                .collect(),
        }
    }
}

/// The answer of `POST /v1/layout/apply`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Applied {
    /// The version now in force.
    version: u64,
    moves: MovesView,
}

/// The answer of `POST /v1/layout/revert`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Reverted {
    /// Staged changes dropped.
    dropped: usize,
}

/// The `layout` object of `GET /v1/status`.
pub(crate) async fn status_summary(svc: &Service) -> Result<LayoutSummary, ApiError> {
    let v = svc
        .layout_actor
        .send(GetLayout)
        .await
        .map_err(|e| actor_err("layout", e))?;
    Ok(LayoutSummary {
        version: v.current.version,
        digest: v.current.digest().to_hex(),
        replication_factor: v.current.replication,
        write_quorum: svc.cfg.write_quorum,
        partitions: v.current.partitions,
        members: v.current.members.len(),
        in_layout: v.current.names(&svc.self_id),
        staged_changes: v.staged.len(),
        disagreeing_peers: v.disagreeing.iter().map(|(id, _)| id.to_hex()).collect(),
        transition: v.transition.as_ref().map(TransitionView::from),
    })
}

/// The `layout` part of `GET /v1/status`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LayoutSummary {
    /// Version of the layout in force.
    version: u64,
    /// Its digest, 64 hex digits.
    digest: String,
    replication_factor: usize,
    write_quorum: usize,
    partitions: usize,
    /// How many members it has.
    members: usize,
    /// Whether it names this node.
    in_layout: bool,
    /// Changes staged, not applied.
    staged_changes: usize,
    /// Peers that announce another layout.
    disagreeing_peers: Vec<String>,
    /// The running transition, if any.
    transition: Option<TransitionView>,
}

#[utoipa::path(get, path = "/v1/layout", tag = "layout", responses((status = 200, description = "the layout in force (version, members with their partition counts, rf, partitions), staged changes with what applying them would move, the running transition", body = LayoutReply), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "the layout actor is unavailable", body = crate::http::schema::ErrorBody)))]
pub async fn get_layout(svc: web::Data<Service>) -> ApiResult {
    let v = svc
        .layout_actor
        .send(GetLayout)
        .await
        .map_err(|e| actor_err("layout", e))?;
    Ok(HttpResponse::Ok().json(LayoutReply::from(&v)))
}

#[utoipa::path(post, path = "/v1/layout/stage", tag = "layout", request_body = StageBody, responses((status = 200, description = "staged; the answer is GET /v1/layout's, with the preview of what applying would move", body = LayoutReply), (status = 400, description = "malformed body, id or address", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 409, description = "refused: not a member, or no valid layout results", body = crate::http::schema::ErrorBody), (status = 503, description = "the layout actor is unavailable", body = crate::http::schema::ErrorBody)))]
pub async fn stage(svc: web::Data<Service>, body: web::Json<StageBody>) -> ApiResult {
    let change = body.change()?;
    let v = svc
        .layout_actor
        .send(StageChange { change })
        .await
        .map_err(|e| actor_err("layout", e))?
        .map_err(layout_err)?;
    Ok(HttpResponse::Ok().json(LayoutReply::from(&v)))
}

#[utoipa::path(post, path = "/v1/layout/apply", tag = "layout", request_body = ApplyBody, responses((status = 200, description = "applied: the version in force and what moves", body = Applied), (status = 400, description = "malformed body", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 409, description = "refused: nothing staged, or version is not current + 1", body = crate::http::schema::ErrorBody), (status = 503, description = "the layout actor is unavailable", body = crate::http::schema::ErrorBody)))]
pub async fn apply(svc: web::Data<Service>, body: web::Json<ApplyBody>) -> ApiResult {
    let a = svc
        .layout_actor
        .send(ApplyLayout {
            version: body.version,
        })
        .await
        .map_err(|e| actor_err("layout", e))?
        .map_err(layout_err)?;
    Ok(HttpResponse::Ok().json(Applied {
        version: a.version,
        moves: (&a.moves).into(),
    }))
}

#[utoipa::path(post, path = "/v1/layout/revert", tag = "layout", responses((status = 200, description = "staged changes dropped", body = Reverted), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 503, description = "the layout actor is unavailable", body = crate::http::schema::ErrorBody)))]
pub async fn revert(svc: web::Data<Service>) -> ApiResult {
    let dropped = svc
        .layout_actor
        .send(RevertLayout)
        .await
        .map_err(|e| actor_err("layout", e))?
        .map_err(layout_err)?;
    Ok(HttpResponse::Ok().json(Reverted { dropped }))
}
