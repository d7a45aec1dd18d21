//! Resyncing one block: the seed's `resync_block` as a `'static` future over the other
//! actors' addresses. It holds no state; the actor runs it for one hash at a time (busy
//! set) and records its outcome.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::decision::{decide, Decision};
use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, Priority, RpcError};
use crate::placement::Placement;
use crate::rc::now_msec;
use crate::refcount::{ClearIfDeletable, GetRc, RefcountActor};
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
}

/// Result of one resync.
pub(super) enum Outcome {
    Done,
    /// Look again at this time (ms): grace period still running.
    Later(u64),
}

/// The seed's `resync_block`.
pub(super) async fn resync_block(d: Deps, hash: Hash) -> Result<Outcome, String> {
    let exists = d
        .storage
        .send(BlockExists { hash })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let rc = d
        .refcount
        .send(GetRc { hash })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let others: Vec<NodeId> = d
        .placement
        .write_nodes(&hash)
        .into_iter()
        .filter(|n| *n != d.self_id)
        .collect();
    match decide(exists, rc, now_msec()) {
        Decision::Nothing => Ok(Outcome::Done),
        Decision::WaitUntil(at) => Ok(Outcome::Later(at)),
        Decision::Fetch => {
            let mut tried = Vec::new();
            for node in &others {
                let r = d
                    .peers
                    .send(Call {
                        node: *node,
                        rpc: BlockRpc::GetBlock(hash),
                        timeout: d.block_timeout,
                        priority: Priority::Background,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                match r {
                    Ok(BlockRpc::PutBlock { hash: h, data }) if h == hash => {
                        match d
                            .storage
                            .send(WriteBlock::new(hash, data))
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            Ok(_) => {
                                tracing::info!(hash = %hash.short(), peer = %node.short(), "fetched missing block");
                                return Ok(Outcome::Done);
                            }
                            Err(StorageError::CorruptData { .. }) => {
                                tried.push(format!("{}: sent corrupt data", node.short()))
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(other) => tried.push(format!("{}: answered {}", node.short(), other.kind())),
                    Err(e) => tried.push(short_err(node, &e)),
                }
            }
            Err(format!(
                "block is referenced here but no other holder could provide it ({})",
                if tried.is_empty() {
                    "no other holder".to_string()
                } else {
                    tried.join("; ")
                }
            ))
        }
        Decision::Offload => {
            let queries = others.iter().map(|node| {
                d.peers.send(Call {
                    node: *node,
                    rpc: BlockRpc::NeedBlockQuery(hash),
                    timeout: d.need_block_timeout,
                    priority: Priority::Background,
                })
            });
            let answers = futures::future::join_all(queries).await;
            let mut need = Vec::new();
            for (node, a) in others.iter().zip(answers) {
                match a.map_err(|e| e.to_string())? {
                    Ok(BlockRpc::NeedBlockReply(true)) => need.push(*node),
                    Ok(BlockRpc::NeedBlockReply(false)) => {}
                    Ok(other) => {
                        return Err(format!(
                            "{} answered {} to NeedBlockQuery",
                            node.short(),
                            other.kind()
                        ))
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot ask {} whether it needs the block: {e}",
                            node.short()
                        ))
                    }
                }
            }
            if !need.is_empty() {
                let data = d
                    .storage
                    .send(ReadBlock { hash })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                for node in &need {
                    let r = d
                        .peers
                        .send(Call {
                            node: *node,
                            rpc: BlockRpc::PutBlock {
                                hash,
                                data: data.clone(),
                            },
                            timeout: d.block_timeout,
                            priority: Priority::Background,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Err(e) = r {
                        return Err(format!("offload to {} failed: {e}", node.short()));
                    }
                }
                tracing::info!(hash = %hash.short(), nodes = need.len(), "offloaded block to the holders that need it");
            }
            // Only if it is still deletable: a ref may have come back meanwhile.
            let rc = d
                .refcount
                .send(GetRc { hash })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if rc.is_deletable(now_msec()) {
                d.storage
                    .send(DeleteBlock { hash })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                d.refcount
                    .send(ClearIfDeletable { hash })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::debug!(hash = %hash.short(), "deleted unneeded block");
            }
            Ok(Outcome::Done)
        }
    }
}

fn short_err(node: &NodeId, e: &RpcError) -> String {
    format!("{}: {e}", node.short())
}
