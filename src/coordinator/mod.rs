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

mod incarnation;
mod read;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use blocknode_actors::antientropy::AntiEntropyActor;
use blocknode_actors::budget::{BudgetError, Charge, RamBudget};
use blocknode_actors::frame::{BlockInfo, BlockRpc, ErrorCode};
use blocknode_actors::layout::{LayoutChanged, LayoutPlacement};
use blocknode_actors::peer::{Call, CallsFailed, PeerActor, Priority, QuorumError, RpcError};
use blocknode_actors::refcount::{ListRefs, RefState, RefcountActor, RefcountError};
use blocknode_actors::resync::ResyncActor;
use blocknode_actors::storage::StorageActor;
use blocknode_actors::{Hash, NodeId, Placement, RefId};

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
    /// The add met a drop of the same name that raced with it, again and again.
    #[error("ref {ref_id} of block {hash} was dropped while it was being added; add it again")]
    RefDropped { hash: Hash, ref_id: RefId },
    #[error("disk full on a node holding block {0}")]
    DiskFull(Hash),
    /// A bare ref was refused: the block is not stored on a write quorum of its holders
    /// (collected, or never stored). The client PUTs it again with the ref.
    #[error("ref {ref_id} not added: block {hash} is not stored on enough of its holders; PUT the block again with ?ref={ref_id}")]
    BlockMissing { hash: Hash, ref_id: RefId },
    /// An actor of this node is gone (it stopped: the node is shutting down).
    #[error("internal error: {actor} actor: {source}")]
    ActorGone {
        actor: &'static str,
        #[source]
        source: MailboxError,
    },
    /// The client pool of the RAM budget is closed.
    #[error("internal error: {0}")]
    Budget(#[source] BudgetError),
    /// The blocking task that hashes and compresses a block died.
    #[error("internal error: hashing task failed: {0}")]
    HashTask(#[source] actix_rt::task::JoinError),
    /// This node's refcount actor failed to read the refs.
    #[error("internal error: {0}")]
    Refcount(#[source] RefcountError),
}

/// Maps a mailbox error (the actor stopped) to [`CoordinatorError::ActorGone`].
fn gone(actor: &'static str) -> impl FnOnce(MailboxError) -> CoordinatorError {
    move |source| CoordinatorError::ActorGone { actor, source }
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
        if let Some(r) = ref_id {
            if codes.contains(&Some(ErrorCode::BlockMissing)) {
                return CoordinatorError::BlockMissing {
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
            .map_err(CoordinatorError::Budget)
    }

    /// Charge bytes that already exist (a local read, a decompressed block) to the
    /// client pool, for as long as they live (an HTTP response body being sent).
    async fn hold_ram(&self, bytes: Bytes) -> Result<Bytes, CoordinatorError> {
        self.budget
            .client
            .hold(bytes)
            .await
            .map_err(CoordinatorError::Budget)
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
            .map_err(gone("refcount"))?
            .map_err(CoordinatorError::Refcount)
    }
}
