//! Fetch a block from the nodes that should hold it: ask them in a given order, verify
//! each copy against the hash on a blocking thread, stop at the first copy that
//! verifies, and keep how every other holder ended, so that a caller can tell "no holder
//! has it" (every holder asked said "not here" or sent rotten bytes: a 404) from "some
//! could not be asked" (the block may well exist: unavailable).
//!
//! Two callers, two paces ([`FetchPlan`]): the coordinator's GET (`src/coordinator/read.rs`)
//! hedges, asking the next holder when the last one asked has not answered within its
//! hedge delay (about that peer's recent p95, from [`crate::peer::PlanRead`]); resync's
//! fetch of a missing block (`resync/work.rs`) asks one holder after another (background
//! traffic, one copy is enough). How a holder is asked (plain or hedged call, priority,
//! timeout) and what a verified copy becomes (plain bytes, a [`crate::VerifiedBlock`])
//! are the caller's: the `ask` and `verify` arguments.
//!
//! Dropping the future returned by [`fetch_from_holders`] drops every ask still running,
//! which cancels those reads.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::block::{BlockError, DataBlock};
use crate::frame::{BlockRpc, ErrorCode};
use crate::hash::{Hash, NodeId};
use crate::peer::RpcError;

/// The holders to ask, in order, each with how long it may take before the next one is
/// asked as well (`None`: the next one is asked only once it has ended without a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    order: Vec<(NodeId, Option<Duration>)>,
}

impl FetchPlan {
    /// Ask `nodes` one after another: the next only when the one before ended without
    /// a copy.
    pub fn one_by_one(nodes: impl IntoIterator<Item = NodeId>) -> FetchPlan {
        FetchPlan {
            order: nodes.into_iter().map(|n| (n, None)).collect(),
        }
    }

    /// Ask each node in turn, and the next one as well once a node has not answered
    /// within its hedge delay (the order and delays of a [`crate::peer::ReadPlan`]).
    pub fn hedged(order: impl IntoIterator<Item = (NodeId, Duration)>) -> FetchPlan {
        FetchPlan {
            order: order.into_iter().map(|(n, d)| (n, Some(d))).collect(),
        }
    }
}

/// How a holder ended without giving a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// It answered "not here" or "rotten here", or sent bytes that fail verification:
    /// it lacks the block (worth asking it to resync).
    Lacking(String),
    /// It could not be asked or gave no usable answer (down, timeout, refusal, an
    /// unexpected reply): the block may be there.
    Unreachable(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Lacking(why) | Miss::Unreachable(why) => f.write_str(why),
        }
    }
}

/// What a fetch found.
#[derive(Debug)]
pub struct Fetched<T> {
    /// The first verified copy, and the holder that served it.
    pub found: Option<(NodeId, T)>,
    /// Every holder asked that ended without a copy, in the order they ended (holders
    /// still running when a copy arrived are not in it).
    pub missed: Vec<(NodeId, Miss)>,
}

impl<T> Fetched<T> {
    /// The holders that lack the block.
    pub fn lacking(&self) -> Vec<NodeId> {
        self.missed_where(|m| matches!(m, Miss::Lacking(_)))
    }

    /// The holders that could not be asked or gave no usable answer.
    pub fn unreachable(&self) -> Vec<NodeId> {
        self.missed_where(|m| matches!(m, Miss::Unreachable(_)))
    }

    fn missed_where(&self, which: impl Fn(&Miss) -> bool) -> Vec<NodeId> {
        self.missed
            .iter()
            .filter(|(_, m)| which(m))
            .map(|(n, _)| *n)
            .collect()
    }

    /// No copy, and every holder asked lacks the block: it is not stored (as opposed to
    /// unavailable). True when no holder was asked at all.
    pub fn not_found(&self) -> bool {
        self.found.is_none()
            && self
                .missed
                .iter()
                .all(|(_, m)| matches!(m, Miss::Lacking(_)))
    }
}

/// Ask the holders of `plan` for `hash`; `ask(node)` sends one `GetBlock` and resolves to
/// the peer's reply, or to `Err(E)` when asking is impossible (the caller's actor is
/// gone), which ends the fetch with that error. A `PutBlock` reply is checked by
/// `verify` on a blocking thread; `Ok` is the copy returned, `Err` marks the holder as
/// lacking (a rotten copy). The first verified copy ends the fetch.
pub async fn fetch_from_holders<T, E, A, AF, V>(
    hash: Hash,
    plan: FetchPlan,
    mut ask: A,
    verify: V,
) -> Result<Fetched<T>, E>
where
    T: Send + 'static,
    A: FnMut(NodeId) -> AF,
    AF: Future<Output = Result<Result<BlockRpc, RpcError>, E>>,
    V: Fn(Hash, DataBlock) -> Result<T, BlockError> + Clone + Send + 'static,
{
    let mut missed = Vec::new();
    let mut next = plan.order.into_iter();
    let mut running = FuturesUnordered::new();
    let mut hedge_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        // Ask the next holder when none is running or the last one asked is late.
        let launch = running.is_empty() || hedge_timer.as_ref().is_some_and(|t| t.is_elapsed());
        if launch {
            match next.next() {
                Some((node, hedge)) => {
                    let reply = ask(node);
                    let verify = verify.clone();
                    running.push(async move { (node, answer(hash, node, reply, verify).await) });
                    hedge_timer = hedge.map(|d| Box::pin(tokio::time::sleep(d)));
                    continue;
                }
                None if running.is_empty() => {
                    return Ok(Fetched {
                        found: None,
                        missed,
                    })
                }
                None => hedge_timer = None,
            }
        }
        let outcome = match hedge_timer.as_mut() {
            Some(t) => tokio::select! {
                o = running.next() => o,
                _ = t.as_mut() => continue,
            },
            None => running.next().await,
        };
        // Not None: `running` was not empty.
        let Some((node, outcome)) = outcome else {
            continue;
        };
        match outcome? {
            // Returning drops `running`, which cancels the reads still in flight.
            Ok(copy) => {
                return Ok(Fetched {
                    found: Some((node, copy)),
                    missed,
                })
            }
            Err(miss) => missed.push((node, miss)),
        }
        // A holder ended without the block: ask the next one now.
        if let Some(t) = hedge_timer.as_mut() {
            t.as_mut().reset(tokio::time::Instant::now());
        }
    }
}

/// One holder's reply, classified (and its copy verified).
async fn answer<T, E, AF, V>(
    hash: Hash,
    node: NodeId,
    reply: AF,
    verify: V,
) -> Result<Result<T, Miss>, E>
where
    T: Send + 'static,
    AF: Future<Output = Result<Result<BlockRpc, RpcError>, E>>,
    V: Fn(Hash, DataBlock) -> Result<T, BlockError> + Send + 'static,
{
    Ok(match reply.await? {
        Ok(BlockRpc::PutBlock { hash: h, data }) if h == hash => {
            match tokio::task::spawn_blocking(move || verify(hash, data)).await {
                Ok(Ok(copy)) => Ok(copy),
                Ok(Err(e)) => {
                    tracing::warn!(hash = %hash.short(), peer = %node.short(), error = %e, "peer sent bytes that fail verification");
                    Err(Miss::Lacking("sent corrupt data".into()))
                }
                Err(e) => Err(Miss::Unreachable(format!("verification task failed: {e}"))),
            }
        }
        Ok(other) => {
            tracing::warn!(hash = %hash.short(), peer = %node.short(), "unexpected reply {} to GetBlock", other.kind());
            Err(Miss::Unreachable(format!("answered {}", other.kind())))
        }
        Err(
            e @ RpcError::Remote {
                code: ErrorCode::NotFound | ErrorCode::Corrupted,
                ..
            },
        ) => Err(Miss::Lacking(e.to_string())),
        Err(e) => {
            tracing::debug!(hash = %hash.short(), peer = %node.short(), "get from peer failed: {e}");
            Err(Miss::Unreachable(e.to_string()))
        }
    })
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
