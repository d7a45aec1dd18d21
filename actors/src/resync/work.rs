//! Resyncing one block: Garage's `resync_block` as a `'static` future over the other
//! actors' addresses. It holds no state; the actor runs it for one hash at a time (busy
//! set) and records its outcome (an error goes to the errors table as its message).

use actix::prelude::*;

use super::decision::{decide, Decision};
use super::deps::{call, gone, Deps, GcStep, ResyncBlockError};
use super::offload::offload;
use crate::block::VerifiedBlock;
use crate::fetch::{fetch_from_holders, FetchPlan};
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::rc::{now_msec, RcEntry};
use crate::refcount::GetRc;
use crate::storage::{CloseGcLook, GcLook, OpenGcLook, StorageActor, WriteBlock};

/// Result of one resync.
#[derive(Debug)]
pub(super) enum Outcome {
    Done,
    /// Look again at this time (ms): grace period still running.
    Later(u64),
}

/// Garage's `resync_block`: compare "stored here (since when)" with the rc entry here,
/// then fetch, offload-and-delete, wait, or do nothing ([`decide`]).
pub(super) async fn resync_block(d: Deps, hash: Hash) -> Result<Outcome, ResyncBlockError> {
    d.pause(GcStep::Look, hash).await;
    // The look's instant is taken by storage before anything is read: a write of the
    // block that finishes after it stops the delete (`DeleteIfUnwritten`). The guard
    // closes the look whatever happens next, so storage forgets the hash's writes.
    let _look = LookGuard {
        storage: d.storage.clone(),
        hash,
    };
    let GcLook {
        since,
        modified_ms: stored,
    } = d
        .storage
        .send(OpenGcLook { hash })
        .await
        .map_err(gone(hash, "storage"))??;
    d.pause(GcStep::ReadRc, hash).await;
    let rc = get_rc(&d, hash).await?;
    let others: Vec<NodeId> = d
        .placement
        .write_nodes(&hash)
        .into_iter()
        .filter(|n| *n != d.self_id)
        .collect();
    match decide(stored, rc, now_msec(), d.gc_delay, d.may_delete) {
        Decision::Nothing => Ok(Outcome::Done),
        Decision::WaitUntil(at) => Ok(Outcome::Later(at)),
        Decision::Fetch => fetch(&d, hash, &fetch_sources(&d, hash))
            .await
            .map(|()| Outcome::Done),
        // Look again later (after the usual extra delay) once the layouts agree.
        Decision::PutOff => {
            tracing::debug!(hash = %hash.short(), "deletion put off: member lists differ between nodes");
            Ok(Outcome::Later(now_msec()))
        }
        Decision::Offload => offload(&d, hash, since, &others)
            .await
            .map(|_| Outcome::Done),
    }
}

/// Closes a GC look when the resync of its block ends, on every path (an error, or the
/// future dropped with its actor, included).
struct LookGuard {
    storage: Addr<StorageActor>,
    hash: Hash,
}

impl Drop for LookGuard {
    fn drop(&mut self) {
        self.storage.do_send(CloseGcLook { hash: self.hash });
    }
}

/// The holders to fetch `hash` from: the other current holders, then (during a layout
/// transition, when they may be the only ones with the block yet) the previous ones.
fn fetch_sources(d: &Deps, hash: Hash) -> Vec<NodeId> {
    let mut sources: Vec<NodeId> = d
        .placement
        .write_nodes(&hash)
        .into_iter()
        .filter(|n| *n != d.self_id)
        .collect();
    for n in d.placement.previous_nodes(&hash) {
        if n != d.self_id && !sources.contains(&n) {
            sources.push(n);
        }
    }
    sources
}

/// Fetch `hash` from its other holders now and write it here ([`super::FetchNow`]).
pub(super) async fn fetch_now(d: Deps, hash: Hash) -> Result<(), ResyncBlockError> {
    fetch(&d, hash, &fetch_sources(&d, hash)).await
}

pub(super) async fn get_rc(d: &Deps, hash: Hash) -> Result<RcEntry, ResyncBlockError> {
    Ok(d.refcount
        .send(GetRc { hash })
        .await
        .map_err(gone(hash, "refcount"))??)
}

/// Referenced here but absent: ask the other holders one after another (background
/// traffic; one copy is enough, [`fetch_from_holders`] verifies it); the first copy
/// that verifies is written here. A local write failure (disk full, I/O) ends the fetch:
/// asking more peers would not help.
async fn fetch(d: &Deps, hash: Hash, others: &[NodeId]) -> Result<(), ResyncBlockError> {
    let fetched = fetch_from_holders(
        hash,
        FetchPlan::one_by_one(others.iter().copied()),
        |node| {
            let reply = d
                .peers
                .send(call(node, BlockRpc::GetBlock(hash), d.block_timeout));
            async move { reply.await.map_err(gone(hash, "peer")) }
        },
        VerifiedBlock::verify,
    )
    .await?;
    let Some((node, block)) = fetched.found else {
        let tried: Vec<String> = fetched
            .missed
            .iter()
            .map(|(n, why)| format!("{}: {why}", n.short()))
            .collect();
        return Err(ResyncBlockError::NotFound {
            hash,
            tried: if tried.is_empty() {
                "no other holder".to_string()
            } else {
                tried.join("; ")
            },
        });
    };
    d.storage
        .send(WriteBlock::verified(block))
        .await
        .map_err(gone(hash, "storage"))??;
    tracing::info!(hash = %hash.short(), peer = %node.short(), "fetched missing block");
    Ok(())
}
