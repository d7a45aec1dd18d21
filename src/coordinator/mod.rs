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

use blocknode_actors::antientropy::AntiEntropyActor;
use blocknode_actors::budget::{BudgetError, Charge, RamBudget};
use blocknode_actors::frame::{BlockInfo, BlockRpc, ErrorCode};
use blocknode_actors::layout::{LayoutChanged, LayoutPlacement};
use blocknode_actors::peer::{Call, CallsFailed, PeerActor, Priority, QuorumError, RpcError};
use blocknode_actors::rc::RcEntry;
use blocknode_actors::refcount::{GetRc, ListRefsPage, RefcountActor, RefcountError, RefsPage};
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
    /// The GC grace (`gc_delay`): a holder that reports a block referenced cannot
    /// delete it within this time, which bounds how long such a report may be relied
    /// on (an object upload's bare refs).
    pub gc_delay: Duration,
    /// Test hook, zero in service: an object upload pauses a random time up to this
    /// between a chunk's "its holders have it" and its bare ref, to widen that seam in
    /// the interleaving tests (set from the `BLOCKNODE_TEST_DEDUP_PAUSE_MS` environment
    /// variable).
    pub dedup_test_pause: Duration,
}

/// The `dedup_test_pause` hook from the environment (zero when unset or unreadable).
pub fn dedup_test_pause_from_env() -> Duration {
    std::env::var("BLOCKNODE_TEST_DEDUP_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::ZERO)
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
    /// No room in the client pool of the RAM budget within the wait (the node is busy),
    /// or the pool is closed.
    #[error("{0}")]
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
    /// It answered that it has a verified copy (false also when it could not be asked:
    /// see `state`).
    pub present: bool,
    /// Its live refs (0 when it could not be asked).
    pub rc: u64,
    pub deletable: bool,
    pub error: Option<String>,
    /// `present`, `absent`, or `unknown` when the node could not be asked (down,
    /// unreachable): unknown is not absent.
    #[schema(pattern = "^(present|absent|unknown)$")]
    pub state: &'static str,
    /// `holder` (holds it in the layout in force, and before it during a transition),
    /// `joining` (a new holder a transition is filling) or `leaving` (an old holder whose
    /// copy is released once the transition has moved it).
    #[schema(pattern = "^(holder|joining|leaving)$")]
    pub role: &'static str,
}

/// Each node to ask about a block, with its role: the holders of the layout in force
/// (`holder`, or `joining` when a transition gives them the block), then the old holders
/// a transition takes it from (`leaving`).
pub fn holder_roles(now: &[NodeId], before: &[NodeId]) -> Vec<(NodeId, &'static str)> {
    let mut out: Vec<(NodeId, &'static str)> = now
        .iter()
        .map(|n| {
            let joining = !before.is_empty() && !before.contains(n);
            (*n, if joining { "joining" } else { "holder" })
        })
        .collect();
    for n in before {
        if !now.contains(n) {
            out.push((*n, "leaving"));
        }
    }
    out
}

impl Coordinator {
    /// Wait for `bytes` of the client pool (clamped to the pool, so the largest request
    /// is admitted alone), at most `block_rw_timeout` (then 503: the node is busy); the charge returns them when dropped or, once attached, when
    /// the bytes it pays for are.
    pub async fn reserve_ram(&self, bytes: u64) -> Result<Charge, CoordinatorError> {
        self.budget
            .client
            .charge_within(bytes, self.cfg.block_rw_timeout)
            .await
            .map_err(CoordinatorError::Budget)
    }

    /// Take `bytes` of the client pool only if they are free now (never waits).
    pub fn try_reserve_ram(&self, bytes: u64) -> Option<Charge> {
        self.budget.client.try_charge(bytes).ok()
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
        let nodes = holder_roles(
            &placement.write_nodes(&hash),
            &placement.previous_nodes(&hash),
        );
        let calls = nodes.iter().map(|(node, _)| {
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
            .map(|((node, role), r)| match r {
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
                    state: if present { "present" } else { "absent" },
                    role,
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
                    state: "unknown",
                    role,
                },
            })
            .collect()
    }

    /// One page of this node's refs of a block (see [`ListRefsPage`]).
    pub async fn local_refs_page(
        &self,
        hash: Hash,
        after: Option<RefId>,
        limit: usize,
    ) -> Result<RefsPage, CoordinatorError> {
        self.refcount
            .send(ListRefsPage { hash, after, limit })
            .await
            .map_err(gone("refcount"))?
            .map_err(CoordinatorError::Refcount)
    }

    /// This node's count of live refs of a block (its rc entry).
    pub async fn local_rc(&self, hash: Hash) -> Result<u64, CoordinatorError> {
        let rc = self
            .refcount
            .send(GetRc { hash })
            .await
            .map_err(gone("refcount"))?
            .map_err(CoordinatorError::Refcount)?;
        Ok(match rc {
            RcEntry::Present { count } => count,
            _ => 0,
        })
    }
}

#[cfg(test)]
mod holder_tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn roles_mark_old_and_new_holders_of_a_transition() {
        let (a, b, c, d) = (id(1), id(2), id(3), id(4));
        assert_eq!(
            holder_roles(&[a, b], &[]),
            [(a, "holder"), (b, "holder")],
            "no transition: every node is a holder"
        );
        assert_eq!(
            holder_roles(&[a, b, d], &[a, b, c]),
            [(a, "holder"), (b, "holder"), (d, "joining"), (c, "leaving")]
        );
    }
}
