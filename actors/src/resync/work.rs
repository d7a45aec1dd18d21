//! Resyncing one block: the seed's `resync_block` as a `'static` future over the other
//! actors' addresses. It holds no state; the actor runs it for one hash at a time (busy
//! set) and records its outcome (an error goes to the errors table as its message).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::decision::{decide, Decision};
use crate::block::DataBlock;
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, Priority, RpcError};
use crate::placement::Placement;
use crate::rc::{now_msec, RcEntry};
use crate::refcount::{ClearIfDeletable, GetRc, RefcountActor, RefcountError};
use crate::storage::{BlockExists, DeleteBlock, ReadBlock, StorageActor, StorageError, WriteBlock};

/// What the workers need to resync a block: cheap to clone into a `'static` future.
#[derive(Clone)]
pub(super) struct Deps {
    pub(super) self_id: NodeId,
    pub(super) storage: Addr<StorageActor>,
    pub(super) refcount: Addr<RefcountActor>,
    pub(super) peers: Recipient<Call>,
    pub(super) placement: Arc<dyn Placement>,
    pub(super) block_timeout: Duration,
    pub(super) need_block_timeout: Duration,
    /// False while this node's member list differs from a peer's: no block is deleted
    /// then (an offload is put off), since the holders are not agreed on.
    pub(super) may_delete: bool,
}

/// Result of one resync.
#[derive(Debug)]
pub(super) enum Outcome {
    Done,
    /// Look again at this time (ms): grace period still running.
    Later(u64),
}

/// Why resyncing one block failed; its text is what the errors table keeps.
#[derive(Debug, thiserror::Error)]
pub enum ResyncBlockError {
    #[error("block {hash}: the {actor} actor is gone: {source}")]
    ActorGone {
        hash: Hash,
        actor: &'static str,
        #[source]
        source: MailboxError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Refcount(#[from] RefcountError),
    #[error("block {hash} is referenced here but no other holder could provide it ({tried})")]
    NotFound { hash: Hash, tried: String },
    #[error("block {hash} kept: cannot ask {node} whether it needs the block: {source}")]
    NeedQuery {
        hash: Hash,
        node: NodeId,
        #[source]
        source: RpcError,
    },
    #[error("block {hash} kept: {node} answered {kind} to NeedBlockQuery")]
    BadNeedReply {
        hash: Hash,
        node: NodeId,
        kind: &'static str,
    },
    #[error("block {hash} kept: offload to {node} failed: {source}")]
    Offload {
        hash: Hash,
        node: NodeId,
        #[source]
        source: RpcError,
    },
}

/// Maps an actix mailbox error (the actor stopped) to [`ResyncBlockError::ActorGone`].
fn gone(hash: Hash, actor: &'static str) -> impl FnOnce(MailboxError) -> ResyncBlockError {
    move |source| ResyncBlockError::ActorGone {
        hash,
        actor,
        source,
    }
}

/// The seed's `resync_block`: compare "exists here" with the rc entry here, then fetch,
/// offload-and-delete, wait, or do nothing ([`decide`]).
pub(super) async fn resync_block(d: Deps, hash: Hash) -> Result<Outcome, ResyncBlockError> {
    let exists = d
        .storage
        .send(BlockExists { hash })
        .await
        .map_err(gone(hash, "storage"))??;
    let rc = get_rc(&d, hash).await?;
    let others: Vec<NodeId> = d
        .placement
        .write_nodes(&hash)
        .into_iter()
        .filter(|n| *n != d.self_id)
        .collect();
    match decide(exists, rc, now_msec()) {
        Decision::Nothing => Ok(Outcome::Done),
        Decision::WaitUntil(at) => Ok(Outcome::Later(at)),
        Decision::Fetch => fetch(&d, hash, &others).await.map(|()| Outcome::Done),
        // Look again later (after the usual extra delay) once the layouts agree.
        Decision::Offload if !d.may_delete => {
            tracing::debug!(hash = %hash.short(), "deletion put off: member lists differ between nodes");
            Ok(Outcome::Later(now_msec()))
        }
        Decision::Offload => offload(&d, hash, &others).await.map(|()| Outcome::Done),
    }
}

async fn get_rc(d: &Deps, hash: Hash) -> Result<RcEntry, ResyncBlockError> {
    Ok(d.refcount
        .send(GetRc { hash })
        .await
        .map_err(gone(hash, "refcount"))??)
}

fn call(node: NodeId, rpc: BlockRpc, timeout: Duration) -> Call {
    Call {
        node,
        rpc,
        timeout,
        priority: Priority::Background,
    }
}

/// Referenced here but absent: ask the other holders one after another (background
/// traffic; one copy is enough); the first answer that verifies is written here (the
/// storage actor checks the hash, so a corrupt copy is refused and the next one tried).
async fn fetch(d: &Deps, hash: Hash, others: &[NodeId]) -> Result<(), ResyncBlockError> {
    let mut tried = Vec::new();
    for node in others {
        let reply = d
            .peers
            .send(call(*node, BlockRpc::GetBlock(hash), d.block_timeout))
            .await
            .map_err(gone(hash, "peer"))?;
        let data: DataBlock = match reply {
            Ok(BlockRpc::PutBlock { hash: h, data }) if h == hash => data,
            Ok(other) => {
                tried.push(format!("{}: answered {}", node.short(), other.kind()));
                continue;
            }
            Err(e) => {
                tried.push(format!("{}: {e}", node.short()));
                continue;
            }
        };
        match d
            .storage
            .send(WriteBlock::new(hash, data))
            .await
            .map_err(gone(hash, "storage"))?
        {
            Ok(_) => {
                tracing::info!(hash = %hash.short(), peer = %node.short(), "fetched missing block");
                return Ok(());
            }
            Err(StorageError::CorruptData { .. }) => {
                tracing::warn!(hash = %hash.short(), peer = %node.short(), "peer sent a corrupt copy");
                tried.push(format!("{}: sent corrupt data", node.short()));
            }
            // A local failure (disk full, I/O): asking more peers would not help.
            Err(e) => return Err(e.into()),
        }
    }
    Err(ResyncBlockError::NotFound {
        hash,
        tried: if tried.is_empty() {
            "no other holder".to_string()
        } else {
            tried.join("; ")
        },
    })
}

/// Present here and deletable: every other holder says whether it needs the block; those
/// that do get it (all must succeed); then, only if it is *still* deletable (a ref may
/// have come back meanwhile), it is deleted here and its rc entry cleared. Any failure
/// keeps the block (invariant 4 of DESIGN.md).
async fn offload(d: &Deps, hash: Hash, others: &[NodeId]) -> Result<(), ResyncBlockError> {
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
    if !need.is_empty() {
        let data = d
            .storage
            .send(ReadBlock { hash })
            .await
            .map_err(gone(hash, "storage"))??;
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
    }
    if get_rc(d, hash).await?.is_deletable(now_msec()) {
        d.storage
            .send(DeleteBlock { hash })
            .await
            .map_err(gone(hash, "storage"))??;
        d.refcount
            .send(ClearIfDeletable { hash })
            .await
            .map_err(gone(hash, "refcount"))??;
        tracing::debug!(hash = %hash.short(), "deleted unneeded block");
    }
    Ok(())
}
