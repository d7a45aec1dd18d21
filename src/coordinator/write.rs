//! The write side of the client path: a block and its ref to its holders with the write
//! quorum (in each holder set during a layout transition), in one request per holder;
//! adding and dropping refs.

use std::time::Duration;

use bytes::Bytes;

use blocknode_actors::budget::Charge;
use blocknode_actors::frame::BlockRpc;
use blocknode_actors::peer::{CallMany, Priority, QuorumError};
use blocknode_actors::{Hash, NodeId, Placement, RefId, VerifiedBlock};

use super::{gone, Coordinator, CoordinatorError};

/// How often an add that meets a concurrent drop of its name reads the name again.
const ADD_ATTEMPTS: u32 = 3;

/// Blocks up to this size are hashed (and their compression tried) on the HTTP worker.
const HASH_INLINE_MAX: usize = 16 * 1024;

/// The nodes a write is sent to and the holder sets that must each reach their quorum.
#[derive(Clone)]
struct WriteTargets {
    all: Vec<NodeId>,
    /// Old holders that are not new ones and not in `all`: written to only if the
    /// write fails without them.
    old_only: Vec<NodeId>,
    sets: Vec<(Vec<NodeId>, usize)>,
}

impl Coordinator {
    /// Store a block on its holders; answers once `write_quorum` acknowledged a durable
    /// write, of the block and, when given, of `ref_id` on the same holder.
    ///
    /// `ram` is the client-pool charge taken before the body was read (twice its size:
    /// the body and its compressed copy coexist while it is compressed). After hashing
    /// it shrinks to the form that is sent and is attached to those bytes, so it lives
    /// until the last call holding them has ended (a slow holder past the quorum
    /// included), not until this function returns.
    pub async fn put_block(
        &self,
        plain: Bytes,
        ref_id: Option<RefId>,
        ram: Charge,
    ) -> Result<(Hash, usize), CoordinatorError> {
        let level = self.cfg.compression_level;
        // Hashing and compression are CPU work: keep them off the HTTP worker's loop,
        // except for a small block, whose hash (a few µs) costs less than the two
        // cross-thread hand-offs of a blocking task.
        let block = if plain.len() <= HASH_INLINE_MAX {
            VerifiedBlock::hash_plain(plain, level)
        } else {
            actix_rt::task::spawn_blocking(move || VerifiedBlock::hash_plain(plain, level))
                .await
                .map_err(CoordinatorError::HashTask)?
        };
        self.put_hashed(block, ref_id, ram).await
    }

    /// [`Self::put_block`] for a block already hashed (and compressed) by the caller:
    /// an object's chunks are hashed once, while they are cut.
    pub async fn put_hashed(
        &self,
        block: VerifiedBlock,
        ref_id: Option<RefId>,
        mut ram: Charge,
    ) -> Result<(Hash, usize), CoordinatorError> {
        let hash = block.hash();
        let size = block.plain_len();
        let nodes = self.write_targets(&hash);
        ram.shrink_to(block.data().inner_buffer().len() as u64);
        // This node's own holder writes the bytes without hashing them again; the
        // others get a plain PutBlock (PutBlockRef) and verify (see `BlockRpc::PutVerified`).
        // With a ref, block and ref go in one request per holder, and each holder adds
        // the ref only once its copy of the block is durable (replica.rs
        // `put_block_ref`): a holder never counts a ref to a block it has not stored,
        // and a PUT is one round trip per holder instead of two.
        // The ref's incarnation is read from the holders first (`incarnation.rs`); an add
        // that meets a drop racing with it reads again and retries.
        let block = block.with_charge(ram);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let incarnation = match &ref_id {
                Some(r) => self.incarnation_to_add(hash, r).await?,
                None => 0,
            };
            let rpc = BlockRpc::PutVerified {
                block: block.clone(),
                ref_id: ref_id.clone(),
                incarnation,
            };
            let timeout = self.cfg.block_rw_timeout;
            match self
                .call_quorum(hash, nodes.clone(), rpc, timeout, ref_id.as_ref())
                .await
            {
                Err(CoordinatorError::RefDropped { .. }) if attempt < ADD_ATTEMPTS => continue,
                r => r?,
            }
            break;
        }
        self.metrics.bytes_written.inc_by(size as u64);
        Ok((hash, size))
    }

    /// Where a write goes: the holders, and during a transition the previous holders
    /// too, with the quorum each set needs (empty outside a transition).
    fn write_targets(&self, hash: &Hash) -> WriteTargets {
        let placement = self.placement();
        let new = placement.write_nodes(hash);
        let old = placement.previous_nodes(hash);
        let wq = |set: &[NodeId]| self.cfg.write_quorum.min(set.len()).max(1);
        let mut all = self.holders(hash);
        let mut sets = Vec::new();
        let mut old_only: Vec<NodeId> = old.iter().filter(|n| !new.contains(n)).copied().collect();
        if !old.is_empty() && old != new {
            // The old set's quorum counts the nodes it shares with the new one; old-only
            // holders are written to first only when those are too few (what they
            // receive they must hand over again, which delays the end of the
            // transition), else only if the write fails without them.
            let common = old.len() - old_only.len();
            if common < wq(&old) {
                all.append(&mut old_only);
            }
            sets.push((new.clone(), wq(&new)));
            sets.push((old.clone(), wq(&old)));
        }
        WriteTargets {
            all,
            old_only,
            sets,
        }
    }

    async fn call_quorum(
        &self,
        hash: Hash,
        targets: WriteTargets,
        rpc: BlockRpc,
        timeout: Duration,
        ref_id: Option<&RefId>,
    ) -> Result<(), CoordinatorError> {
        let first = self
            .call_quorum_once(&targets.all, &targets.sets, rpc.clone(), timeout)
            .await?;
        let res = match first {
            Err(_) if !targets.old_only.is_empty() => {
                // A shared holder is down: the old set needs its old-only holders. The
                // write is idempotent, so it is sent again to all of them.
                let mut all = targets.all.clone();
                all.extend(targets.old_only.iter().copied());
                self.call_quorum_once(&all, &targets.sets, rpc, timeout)
                    .await?
            }
            r => r,
        };
        res.map(|_| ())
            .map_err(|e| CoordinatorError::from_quorum(hash, ref_id, e))
    }

    async fn call_quorum_once(
        &self,
        nodes: &[NodeId],
        sets: &[(Vec<NodeId>, usize)],
        rpc: BlockRpc,
        timeout: Duration,
    ) -> Result<Result<Vec<(NodeId, BlockRpc)>, QuorumError>, CoordinatorError> {
        let nodes = nodes.to_vec();
        let sets = sets.to_vec();
        let quorum = self.cfg.write_quorum.min(nodes.len()).max(1);
        self.peers
            .send(CallMany {
                nodes,
                rpc,
                quorum,
                timeout,
                priority: Priority::Client,
                interrupt_after_quorum: false,
                also: sets,
                report_failures: self.hints.clone(),
            })
            .await
            .map_err(gone("peer"))
    }

    /// Add or drop a ref on the block's holders with the write quorum, naming the
    /// incarnation read from them first (`incarnation.rs`).
    pub async fn set_ref(
        &self,
        hash: Hash,
        ref_id: RefId,
        live: bool,
    ) -> Result<(), CoordinatorError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rpc = if live {
                BlockRpc::AddRef {
                    hash,
                    ref_id: ref_id.clone(),
                    incarnation: self.incarnation_to_add(hash, &ref_id).await?,
                }
            } else {
                BlockRpc::DropRef {
                    hash,
                    ref_id: ref_id.clone(),
                    incarnation: self.incarnation_to_drop(hash, &ref_id).await?,
                }
            };
            let nodes = self.write_targets(&hash);
            let timeout = self.cfg.small_rpc_timeout;
            match self
                .call_quorum(hash, nodes, rpc, timeout, Some(&ref_id))
                .await
            {
                Err(CoordinatorError::RefDropped { .. }) if live && attempt < ADD_ATTEMPTS => {}
                r => return r,
            }
        }
    }
}
