//! The GC offload of one block, every asynchronous step in one place. The rule each step
//! asks is in `gc.rs`; this file only moves data between the actors:
//!
//! 1. every other holder says whether it needs the block (`NeedBlockQuery`); those that do
//!    get it (`PutBlock`, all must succeed): a failure keeps the block here;
//! 2. the refcount actor fences the hash ([`FenceForDelete`], durable), only if its rc
//!    entry is still deletable: a ref that came back meanwhile keeps the block;
//! 3. storage deletes it on the hash's lane only if no write of it finished since the GC
//!    look began ([`DeleteIfUnwritten`] with the instant taken before the first read);
//! 4. the fence is lifted ([`EndGcFence`]), clearing the rc entry if the block went. A ref
//!    that met the fence between 2 and 4 has asked resync for an immediate fetch.
//!
//! Invariant 4 (docs/ARCHITECTURE.md): any failure keeps the block, and the fence stays only until
//! step 4 or, after a crash, until the refcount actor starts again.

use std::time::Instant;

use super::deps::{call, gone, Deps, GcStep, ResyncBlockError};
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::refcount::{EndGcFence, FenceForDelete};
use crate::storage::{read_charged, DeleteIfUnwritten, DeleteOutcome, ReadBlock};

/// How a GC offload ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offloaded {
    /// Deleted here (the other holders that needed it have it).
    Deleted,
    /// Kept: a ref came back before the fence.
    RefBack,
    /// Kept: a write of the block finished since the decision.
    WrittenSince,
    /// Nothing was stored any more.
    Absent,
}

/// Offload `hash` (stored here, deletable) to the `others` that need it, then delete it
/// here behind the fence. `since` is the instant the GC look began.
pub(super) async fn offload(
    d: &Deps,
    hash: Hash,
    since: Instant,
    others: &[NodeId],
) -> Result<Offloaded, ResyncBlockError> {
    d.pause(GcStep::NeedQuery, hash).await;
    serve_holders_that_need_it(d, hash, others).await?;

    d.pause(GcStep::Fence, hash).await;
    let fenced = d
        .refcount
        .send(FenceForDelete { hash })
        .await
        .map_err(gone(hash, "refcount"))??;
    if !fenced {
        tracing::debug!(hash = %hash.short(), "GC: kept, a ref came back before the fence");
        return Ok(Offloaded::RefBack);
    }

    d.pause(GcStep::Delete, hash).await;
    // Whatever storage answers, the fence must be lifted: keep the answer for later.
    let deleted = d.storage.send(DeleteIfUnwritten { hash, since }).await;

    d.pause(GcStep::EndFence, hash).await;
    let went = matches!(
        deleted,
        Ok(Ok(DeleteOutcome::Deleted | DeleteOutcome::Absent))
    );
    d.refcount
        .send(EndGcFence {
            hash,
            deleted: went,
        })
        .await
        .map_err(gone(hash, "refcount"))??;
    let deleted = deleted.map_err(gone(hash, "storage"))??;
    Ok(match deleted {
        DeleteOutcome::Deleted => {
            tracing::debug!(hash = %hash.short(), "GC: deleted unneeded block");
            Offloaded::Deleted
        }
        DeleteOutcome::WrittenSince => {
            tracing::debug!(hash = %hash.short(), "GC: kept, written since the decision");
            Offloaded::WrittenSince
        }
        DeleteOutcome::Absent => Offloaded::Absent,
    })
}

/// Step 1: every other holder says whether it needs the block; those that do get it (all
/// must succeed, or the block is kept and the error recorded).
async fn serve_holders_that_need_it(
    d: &Deps,
    hash: Hash,
    others: &[NodeId],
) -> Result<(), ResyncBlockError> {
    let queries = others.iter().map(|node| {
        d.peers.send(call(
            *node,
            BlockRpc::NeedBlockQuery(hash),
            d.need_block_timeout,
        ))
    });
    let answers = futures::future::join_all(queries).await;
    let mut need = Vec::new();
    for (node, answer) in others.iter().zip(answers) {
        match answer.map_err(gone(hash, "peer"))? {
            Ok(BlockRpc::NeedBlockReply(true)) => need.push(*node),
            Ok(BlockRpc::NeedBlockReply(false)) => {}
            Ok(other) => {
                return Err(ResyncBlockError::BadNeedReply {
                    hash,
                    node: *node,
                    kind: other.kind(),
                })
            }
            Err(source) => {
                return Err(ResyncBlockError::NeedQuery {
                    hash,
                    node: *node,
                    source,
                })
            }
        }
    }
    if need.is_empty() {
        return Ok(());
    }
    // Charged before it is read: held while the holders that need it take it.
    let data = match &d.budget {
        Some(pool) => {
            let storage = d.storage.clone().recipient();
            read_charged(&storage, hash, pool, false, d.block_timeout).await?
        }
        None => d
            .storage
            .send(ReadBlock::uncharged(hash))
            .await
            .map_err(gone(hash, "storage"))??,
    };
    let puts = need.iter().map(|node| {
        let rpc = BlockRpc::PutBlock {
            hash,
            data: data.clone(),
        };
        d.peers.send(call(*node, rpc, d.block_timeout))
    });
    let results = futures::future::join_all(puts).await;
    for (node, r) in need.iter().zip(results) {
        if let Err(source) = r.map_err(gone(hash, "peer"))? {
            return Err(ResyncBlockError::Offload {
                hash,
                node: *node,
                source,
            });
        }
    }
    tracing::info!(hash = %hash.short(), nodes = need.len(), "offloaded block to the holders that need it");
    Ok(())
}
