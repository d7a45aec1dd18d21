//! [`Coordinator`]: the running node as the HTTP API sees it — the actors' addresses, the
//! layout (the latest one the layout actor published) and the client-path operations
//! (put, get, refs, info) built from messages.
//!
//! During a layout transition a write goes to the new and the old holders and needs
//! `write_quorum` in each set; a read asks the new holders first, then the old ones.
//!
//! A `Coordinator` is cheap to clone (addresses and `Arc`s) and is shared by every HTTP
//! worker thread; it owns no domain state itself: every read or change is a message to
//! the actor that owns the state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use blocknode_actors::antientropy::AntiEntropyActor;
use blocknode_actors::budget::{Charge, RamBudget};
use blocknode_actors::frame::{BlockInfo, BlockRpc, ErrorCode};
use blocknode_actors::layout::{LayoutChanged, LayoutPlacement};
use blocknode_actors::peer::{
    Call, CallMany, CallsFailed, HedgedCall, PeerActor, PlanRead, Priority, QuorumError, RpcError,
};
use blocknode_actors::refcount::{ListRefs, RefState, RefcountActor};
use blocknode_actors::resync::{ResyncActor, Schedule, ScheduleReason};
use blocknode_actors::storage::{ReadBlock, StorageActor, StorageError};
use blocknode_actors::{Hash, NodeId, Placement, RefId, VerifiedBlock};

use crate::metrics::Metrics;

/// The settings the client path needs (taken from the node's config).
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// This node's zone, shown in status.
    pub zone: String,
    /// Number of nodes that hold each block.
    pub replication_factor: usize,
    /// Acknowledgements needed before a write is answered.
    pub write_quorum: usize,
    /// zstd level for new blocks; `None` stores them plain.
    pub compression_level: Option<i32>,
    /// Largest block accepted by `PUT /v1/blocks`, in bytes.
    pub max_block_size: usize,
    /// Timeout of a block read or write to a peer.
    pub block_rw_timeout: Duration,
    /// Timeout of small requests (refs, info, need-block queries).
    pub small_rpc_timeout: Duration,
    /// Bearer token of the admin API.
    pub admin_token: String,
}

/// The node's actors and settings, as used by the API.
#[derive(Clone)]
pub struct Coordinator {
    pub self_id: NodeId,
    pub cfg: Arc<CoordinatorConfig>,
    pub storage: Addr<StorageActor>,
    pub refcount: Addr<RefcountActor>,
    pub resync: Addr<ResyncActor>,
    pub peers: Addr<PeerActor>,
    /// The layout in force, as the layout actor last published it.
    pub layout: tokio::sync::watch::Receiver<LayoutChanged>,
    pub layout_actor: Addr<blocknode_actors::layout::LayoutActor>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    /// The RAM budget for block bytes in flight (`block_ram_buffer_max`): PUT and GET
    /// bodies are charged to its client pool, the charge attached to the bytes. A
    /// limiter, not domain state.
    pub budget: RamBudget,
    /// Where the failed calls of a write go (hinted handoff); `None` when it is off.
    pub hints: Option<Recipient<CallsFailed>>,
    pub anti_entropy: Addr<AntiEntropyActor>,
}

/// The nodes a write is sent to and the holder sets that must each reach their quorum.
#[derive(Clone)]
struct WriteTargets {
    all: Vec<NodeId>,
    /// Old holders that are not new ones and not in `all`: written to only if the
    /// write fails without them.
    old_only: Vec<NodeId>,
    sets: Vec<(Vec<NodeId>, usize)>,
}

/// Why a client-path operation failed; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("block {0} was not found on any node that should hold it")]
    NotFound(Hash),
    /// No holder served the block and some could not be asked (down, partitioned, timed
    /// out): the block may well exist. Never reported as `NotFound`.
    #[error("block {hash} is unavailable: no holder served it and {} could not be asked ({})", unreachable.len(), unreachable.iter().map(|n| n.short()).collect::<Vec<_>>().join(", "))]
    Unavailable {
        hash: Hash,
        unreachable: Vec<NodeId>,
    },
    #[error("write quorum not reached ({0})")]
    Quorum(QuorumError),
    #[error(
        "ref {ref_id} of block {hash} was dropped and cannot be added again; use a new ref id"
    )]
    RefDropped { hash: Hash, ref_id: RefId },
    #[error("disk full on a node holding block {0}")]
    DiskFull(Hash),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordinatorError {
    /// Classify a quorum failure: a refusal every node agrees on is reported as such.
    fn from_quorum(hash: Hash, ref_id: Option<&RefId>, e: QuorumError) -> CoordinatorError {
        let codes: Vec<Option<ErrorCode>> = e
            .errors
            .iter()
            .map(|(_, err)| match err {
                RpcError::Remote { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
        if let Some(r) = ref_id {
            if codes.contains(&Some(ErrorCode::RefDropped)) {
                return CoordinatorError::RefDropped {
                    hash,
                    ref_id: r.clone(),
                };
            }
        }
        if codes.contains(&Some(ErrorCode::DiskFull)) {
            return CoordinatorError::DiskFull(hash);
        }
        CoordinatorError::Quorum(e)
    }
}

/// How the holders that did not serve a read ended.
#[derive(Debug, Default)]
struct ReadTally {
    /// Answered "not here" or sent a rotten copy: asked to resync afterwards.
    lacking: Vec<NodeId>,
    /// Could not be asked or gave no usable answer (down, timeout, protocol error).
    unreachable: Vec<NodeId>,
}

/// One holder's answer to a read.
enum HolderAnswer {
    Served(Bytes),
    Lacking,
    Unreachable,
}

/// One holder's view of a block, for `GET /v1/blocks/{hash}/info`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HolderInfo {
    pub node: String,
    pub present: bool,
    pub rc: u64,
    pub deletable: bool,
    pub error: Option<String>,
}

impl Coordinator {
    /// Wait for `bytes` of the client pool (clamped to the pool, so the largest request
    /// is admitted alone); the charge returns them when dropped or, once attached, when
    /// the bytes it pays for are.
    pub async fn reserve_ram(&self, bytes: u64) -> Result<Charge, CoordinatorError> {
        self.budget
            .client
            .charge(bytes)
            .await
            .map_err(|e| CoordinatorError::Internal(e.to_string()))
    }

    /// Charge bytes that already exist (a local read, a decompressed block) to the
    /// client pool, for as long as they live (an HTTP response body being sent).
    async fn hold_ram(&self, bytes: Bytes) -> Result<Bytes, CoordinatorError> {
        self.budget
            .client
            .hold(bytes)
            .await
            .map_err(|e| CoordinatorError::Internal(e.to_string()))
    }

    /// The placement of the layout in force.
    pub fn placement(&self) -> Arc<LayoutPlacement> {
        self.layout.borrow().placement.clone()
    }

    /// Whether the layout in force names this node (a joining node serves no data).
    pub fn in_layout(&self) -> bool {
        self.layout.borrow().layout.names(&self.self_id)
    }

    /// The nodes that should hold `hash`, this node first when it is one of them (local
    /// reads are cheapest), then the others in placement order.
    pub fn holders(&self, hash: &Hash) -> Vec<NodeId> {
        let mut nodes = self.placement().write_nodes(hash);
        if let Some(i) = nodes.iter().position(|n| *n == self.self_id) {
            let me = nodes.remove(i);
            nodes.insert(0, me);
        }
        nodes
    }

    /// Store a block on its holders; answers once `write_quorum` acknowledged a durable
    /// write, and adds `ref_id` with the same quorum when given.
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
        mut ram: Charge,
    ) -> Result<(Hash, usize), CoordinatorError> {
        let level = self.cfg.compression_level;
        // Hashing and compression are CPU work: keep them off the HTTP worker's loop.
        let block = actix_rt::task::spawn_blocking(move || VerifiedBlock::hash_plain(plain, level))
            .await
            .map_err(|e| CoordinatorError::Internal(format!("hashing task failed: {e}")))?;
        let hash = block.hash();
        let size = block.plain_len();
        let nodes = self.write_targets(&hash);
        ram.shrink_to(block.data().inner_buffer().len() as u64);
        // This node's own holder writes the bytes without hashing them again; the
        // others get a plain PutBlock and verify (see `BlockRpc::PutVerified`).
        let rpc = BlockRpc::PutVerified(block.with_charge(ram));
        // Block first, then the ref: a holder never counts a ref to a block the write
        // quorum has not stored. (Sending both at once was measured: no throughput
        // gain on this machine, and every holder then saw most blocks as orphans first.)
        self.call_quorum(hash, nodes.clone(), rpc, self.cfg.block_rw_timeout, None)
            .await?;
        if let Some(r) = ref_id {
            self.call_quorum(
                hash,
                nodes,
                BlockRpc::AddRef {
                    hash,
                    ref_id: r.clone(),
                },
                self.cfg.small_rpc_timeout,
                Some(&r),
            )
            .await?;
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
            .map_err(|e| CoordinatorError::Internal(format!("peer actor: {e}")))
    }

    /// Add or drop a ref on the block's holders with the write quorum.
    pub async fn set_ref(
        &self,
        hash: Hash,
        ref_id: RefId,
        live: bool,
    ) -> Result<(), CoordinatorError> {
        let rpc = if live {
            BlockRpc::AddRef {
                hash,
                ref_id: ref_id.clone(),
            }
        } else {
            BlockRpc::DropRef {
                hash,
                ref_id: ref_id.clone(),
            }
        };
        let nodes = self.write_targets(&hash);
        self.call_quorum(hash, nodes, rpc, self.cfg.small_rpc_timeout, Some(&ref_id))
            .await
    }

    /// Read a block. This node first when it holds one; then the peers in the order
    /// the peer actor gives ([`PlanRead`]: up peers fastest first, stalled and down
    /// peers last), hedged: when the peer asked last has not answered within its hedge
    /// delay (about its recent p95), the next one is asked too. The first verified copy
    /// wins and the reads still running are cancelled. Holders that lacked it or had it
    /// rotten are asked to resync it. `NotFound` only when every holder answered "not
    /// here" (or rotten); when some could not be asked, `Unavailable` naming them.
    pub async fn get_block(&self, hash: Hash) -> Result<Bytes, CoordinatorError> {
        let holders = self.holders(&hash);
        let mut tally = ReadTally::default();
        let mut found = None;
        if holders.contains(&self.self_id) {
            // The storage actor verified the copy it read: do not hash it again.
            match self.storage.send(ReadBlock { hash }).await {
                Ok(Ok(data)) => match data.into_plain_verified(&hash) {
                    // Charged once read (its size was unknown before): it is held until
                    // the response body has been sent.
                    Ok(plain) => found = Some(self.hold_ram(plain).await?),
                    Err(e) => {
                        tracing::error!(hash = %hash.short(), "local read returned unverified data: {e}");
                        tally.unreachable.push(self.self_id);
                    }
                },
                Ok(Err(StorageError::NotFound { .. }))
                | Ok(Err(StorageError::Corrupted { .. })) => tally.lacking.push(self.self_id),
                Ok(Err(e)) => {
                    tracing::warn!(hash = %hash.short(), "local read failed: {e}");
                    tally.unreachable.push(self.self_id);
                }
                Err(e) => return Err(CoordinatorError::Internal(format!("storage actor: {e}"))),
            }
        }
        if found.is_none() {
            let remote: Vec<NodeId> = holders
                .iter()
                .copied()
                .filter(|n| *n != self.self_id)
                .collect();
            found = self.hedged_remote_read(hash, remote, &mut tally).await?;
        }
        if found.is_none() {
            // A transition runs: the old holders may be the only ones with it yet. Their
            // lack is not repaired (they are giving the block up).
            let old: Vec<NodeId> = self
                .placement()
                .previous_nodes(&hash)
                .into_iter()
                .filter(|n| !holders.contains(n) && *n != self.self_id)
                .collect();
            let mut old_tally = ReadTally::default();
            found = self.hedged_remote_read(hash, old, &mut old_tally).await?;
            if found.is_none() {
                tally.unreachable.extend(old_tally.unreachable);
            }
        }
        for node in std::mem::take(&mut tally.lacking) {
            self.ask_resync(node, hash);
        }
        match found {
            Some(plain) => {
                self.metrics.bytes_read.inc_by(plain.len() as u64);
                Ok(plain)
            }
            None if tally.unreachable.is_empty() => Err(CoordinatorError::NotFound(hash)),
            None => Err(CoordinatorError::Unavailable {
                hash,
                unreachable: tally.unreachable,
            }),
        }
    }

    /// The hedged part of [`Self::get_block`] over the peers `remote`; every holder that
    /// ends without serving the block lands in `tally` (lacking or unreachable).
    async fn hedged_remote_read(
        &self,
        hash: Hash,
        remote: Vec<NodeId>,
        tally: &mut ReadTally,
    ) -> Result<Option<Bytes>, CoordinatorError> {
        use futures::stream::{FuturesUnordered, StreamExt};

        if remote.is_empty() {
            return Ok(None);
        }
        let plan = self
            .peers
            .send(PlanRead { holders: remote })
            .await
            .map_err(|e| CoordinatorError::Internal(format!("peer actor: {e}")))?;
        let mut next = plan.order.into_iter();
        let mut running = FuturesUnordered::new();
        let mut hedge_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            // Ask the next holder when none is running or the last one asked is late.
            let launch = running.is_empty() || hedge_timer.as_ref().is_some_and(|t| t.is_elapsed());
            if launch {
                match next.next() {
                    Some((node, hedge)) => {
                        running.push(self.ask_holder(hash, node));
                        hedge_timer = Some(Box::pin(tokio::time::sleep(hedge)));
                        continue;
                    }
                    None if running.is_empty() => return Ok(None),
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
            match outcome {
                // Dropping `running` cancels the reads still in flight.
                HolderAnswer::Served(plain) => return Ok(Some(plain)),
                HolderAnswer::Lacking => tally.lacking.push(node),
                HolderAnswer::Unreachable => tally.unreachable.push(node),
            }
            // A holder ended without the block: ask the next one now.
            if let Some(t) = hedge_timer.as_mut() {
                t.as_mut().reset(tokio::time::Instant::now());
            }
        }
    }

    /// Ask one peer for the block and verify what it sends (on a blocking thread: every
    /// served byte is checked here). Dropping the future cancels the read.
    async fn ask_holder(&self, hash: Hash, node: NodeId) -> (NodeId, HolderAnswer) {
        let (_cancel_on_drop, cancel) = tokio::sync::oneshot::channel();
        let reply = self
            .peers
            .send(HedgedCall {
                call: Call {
                    node,
                    rpc: BlockRpc::GetBlock(hash),
                    timeout: self.cfg.block_rw_timeout,
                    priority: Priority::Client,
                },
                cancel,
            })
            .await;
        let answer = match reply {
            Err(e) => {
                tracing::warn!(hash = %hash.short(), peer = %node.short(), "peer actor: {e}");
                HolderAnswer::Unreachable
            }
            Ok(Ok(BlockRpc::PutBlock { hash: h, data })) if h == hash => {
                // A plain reply's bytes are the body, already charged as they were read
                // from the peer; a decompressed body is new and charged here.
                let compressed = data.is_compressed();
                match actix_rt::task::spawn_blocking(move || data.verify_get(&hash)).await {
                    Ok(Ok(plain)) if !compressed => HolderAnswer::Served(plain),
                    Ok(Ok(plain)) => match self.hold_ram(plain).await {
                        Ok(plain) => HolderAnswer::Served(plain),
                        Err(e) => {
                            tracing::warn!(hash = %hash.short(), "RAM budget: {e}");
                            HolderAnswer::Unreachable
                        }
                    },
                    _ => {
                        tracing::warn!(hash = %hash.short(), peer = %node.short(), "peer sent bytes that fail verification");
                        HolderAnswer::Lacking
                    }
                }
            }
            Ok(Err(RpcError::Remote {
                code: ErrorCode::NotFound | ErrorCode::Corrupted,
                ..
            })) => HolderAnswer::Lacking,
            Ok(Ok(other)) => {
                tracing::warn!(hash = %hash.short(), peer = %node.short(), "unexpected reply {} to GetBlock", other.kind());
                HolderAnswer::Unreachable
            }
            Ok(Err(e)) => {
                tracing::debug!(hash = %hash.short(), "get from peer failed: {e}");
                HolderAnswer::Unreachable
            }
        };
        (node, answer)
    }

    /// Ask `node` to resync `hash` now (fire and forget).
    fn ask_resync(&self, node: NodeId, hash: Hash) {
        if node == self.self_id {
            self.resync.do_send(Schedule {
                hash,
                delay: Duration::ZERO,
                reason: ScheduleReason::ReadFailed,
            });
        } else {
            let call = self.peers.send(Call {
                node,
                rpc: BlockRpc::ScheduleResync(hash),
                timeout: self.cfg.small_rpc_timeout,
                priority: Priority::Background,
            });
            actix_rt::spawn(async move {
                let _ = call.await;
            });
        }
    }

    /// Every holder's view of the block, in placement order, then (during a layout
    /// transition) the previous holders that are not holders any more.
    pub async fn block_info(&self, hash: Hash) -> Vec<HolderInfo> {
        let placement = self.placement();
        let mut nodes = placement.write_nodes(&hash);
        for n in placement.previous_nodes(&hash) {
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        let calls = nodes.iter().map(|node| {
            self.peers.send(Call {
                node: *node,
                rpc: BlockRpc::BlockInfoQuery(hash),
                timeout: self.cfg.small_rpc_timeout,
                priority: Priority::Client,
            })
        });
        let replies = futures::future::join_all(calls).await;
        nodes
            .iter()
            .zip(replies)
            .map(|(node, r)| match r {
                Ok(Ok(BlockRpc::BlockInfoReply(BlockInfo {
                    present,
                    rc,
                    deletable,
                    error,
                }))) => HolderInfo {
                    node: node.to_hex(),
                    present,
                    rc,
                    deletable,
                    error,
                },
                other => HolderInfo {
                    node: node.to_hex(),
                    present: false,
                    rc: 0,
                    deletable: false,
                    error: Some(match other {
                        Ok(Err(e)) => format!("unreachable: {e}"),
                        Ok(Ok(r)) => format!("unexpected reply {}", r.kind()),
                        Err(e) => format!("peer actor: {e}"),
                    }),
                },
            })
            .collect()
    }

    /// This node's refs of a block.
    pub async fn local_refs(&self, hash: Hash) -> Result<Vec<(RefId, RefState)>, CoordinatorError> {
        self.refcount
            .send(ListRefs { hash })
            .await
            .map_err(|e| CoordinatorError::Internal(format!("refcount actor: {e}")))?
            .map_err(|e| CoordinatorError::Internal(e.to_string()))
    }
}
