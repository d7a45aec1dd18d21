//! The replica side of the cluster: [`RpcDispatcher`] answers the requests peers send
//! this node (and the ones this node sends itself).
//!
//! It owns nothing but the addresses of the actors that own state. The peer actor hands
//! it every incoming [`HandleRpc`]; [`Replica`] has one function per request a peer can
//! send (`get_block`, `put_block`, `put_block_ref`, `need_block`, `add_ref`, ...),
//! each turning it into messages to the storage, refcount and resync actors and their
//! answers into a reply frame. Kept in the binary so the actors stay ignorant of each other. Layout
//! requests (`LayoutQuery`, `HandoverQuery`) are answered from the layout the layout
//! actor last published.

use std::time::Duration;

use actix::prelude::*;

use blocknode_actors::antientropy::narrow::schedule_fetches;
use blocknode_actors::budget::Pool;
use blocknode_actors::frame::{BlockInfo, BlockRpc, ErrorCode, RefRecord};
use blocknode_actors::layout::{encode_layout, handover_left, HandoverLeft, LayoutChanged};
use blocknode_actors::peer::HandleRpc;
use blocknode_actors::present_ref::{add_present_ref, PresentRefError};
use blocknode_actors::refcount::{
    AddRef, AddStoredRef, DigestPrefix, DropRef, GetRc, MergeRefs, RecordsUnder, RefcountActor,
    RefcountError,
};
use blocknode_actors::resync::{
    FetchNow, GetBlockError, ResyncActor, ResyncConfig, Schedule, ScheduleReason,
};
use blocknode_actors::storage::{
    read_charged, BlockExists, ReadBlock, StorageActor, StorageError, WriteBlock, WriteOutcome,
};
use blocknode_actors::tokens::{
    MergeTokens, TokenActor, TokenRecord, TokenSyncQuery, TokensIfDiffer,
};
use blocknode_actors::{Hash, NodeId, RcEntry, RefId};

/// Routes incoming RPCs to the actors that own the data.
pub struct RpcDispatcher {
    replica: Replica,
}

/// The addresses one request needs: cloned into each request's future, so requests run
/// concurrently and none waits for another.
#[derive(Clone)]
struct Replica {
    storage: Addr<StorageActor>,
    refcount: Addr<RefcountActor>,
    resync: Addr<ResyncActor>,
    /// The resync settings: every schedule delay comes from `ResyncConfig::delay_for`.
    resync_cfg: std::sync::Arc<ResyncConfig>,
    /// The API tokens: peers push and pull their records here.
    tokens: Addr<TokenActor>,
    /// The layout in force (for `LayoutQuery` and `HandoverQuery`); `None`: such
    /// requests are refused.
    layout: Option<tokio::sync::watch::Receiver<LayoutChanged>>,
    /// The pool a served `GetBlock` is charged to before it is read, and the longest
    /// wait for it; `None`: uncharged (tests of other things).
    serve_budget: Option<(Pool, Duration)>,
}

impl RpcDispatcher {
    /// Answer layout requests from `layout`.
    pub fn with_layout(mut self, layout: tokio::sync::watch::Receiver<LayoutChanged>) -> Self {
        self.replica.layout = Some(layout);
        self
    }

    /// Charge the blocks served to peers' `GetBlock` to `pool` (the peer pool) before
    /// they are read, waiting at most `wait` for it.
    pub fn with_serve_budget(mut self, pool: Pool, wait: Duration) -> Self {
        self.replica.serve_budget = Some((pool, wait));
        self
    }

    /// A dispatcher over the node's actors.
    pub fn new(
        storage: Addr<StorageActor>,
        refcount: Addr<RefcountActor>,
        resync: Addr<ResyncActor>,
        resync_cfg: ResyncConfig,
        tokens: Addr<TokenActor>,
    ) -> Self {
        RpcDispatcher {
            replica: Replica {
                storage,
                refcount,
                resync,
                resync_cfg: std::sync::Arc::new(resync_cfg),
                tokens,
                layout: None,
                serve_budget: None,
            },
        }
    }
}

impl Actor for RpcDispatcher {
    type Context = Context<Self>;
}

fn mailbox(what: &str, e: MailboxError) -> BlockRpc {
    BlockRpc::error(
        ErrorCode::Unavailable,
        format!("{what} actor unavailable: {e}"),
    )
}

fn storage_error(e: StorageError) -> BlockRpc {
    let code = match &e {
        StorageError::NotFound { .. } => ErrorCode::NotFound,
        StorageError::Corrupted { .. } => ErrorCode::Corrupted,
        StorageError::CorruptData { .. } => ErrorCode::CorruptData,
        StorageError::DiskFull { .. } => ErrorCode::DiskFull,
        StorageError::Budget { .. } | StorageError::OverBudget { .. } => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    BlockRpc::error(code, e.to_string())
}

fn refcount_error(e: RefcountError) -> BlockRpc {
    let code = match &e {
        RefcountError::RefDropped { .. } => ErrorCode::RefDropped,
        _ => ErrorCode::Internal,
    };
    BlockRpc::error(code, e.to_string())
}

impl Handler<HandleRpc> for RpcDispatcher {
    type Result = ResponseFuture<BlockRpc>;

    fn handle(&mut self, msg: HandleRpc, _ctx: &mut Context<Self>) -> Self::Result {
        let r = self.replica.clone();
        let from = msg.from;
        Box::pin(async move {
            match msg.rpc {
                BlockRpc::GetBlock(hash) => r.get_block(hash).await,
                BlockRpc::PutBlock { hash, data } => {
                    r.put_block(from, WriteBlock::new(hash, data)).await
                }
                BlockRpc::PutVerified {
                    block,
                    ref_id: None,
                    ..
                } => r.put_block(from, WriteBlock::verified(block)).await,
                BlockRpc::PutBlockRef {
                    hash,
                    data,
                    ref_id,
                    incarnation,
                } => {
                    r.put_block_ref(from, WriteBlock::new(hash, data), ref_id, incarnation)
                        .await
                }
                BlockRpc::PutVerified {
                    block,
                    ref_id: Some(ref_id),
                    incarnation,
                } => {
                    r.put_block_ref(from, WriteBlock::verified(block), ref_id, incarnation)
                        .await
                }
                BlockRpc::NeedBlockQuery(hash) => r.need_block(hash).await,
                BlockRpc::AddRef {
                    hash,
                    ref_id,
                    incarnation,
                } => r.add_ref(hash, ref_id, incarnation).await,
                BlockRpc::DropRef {
                    hash,
                    ref_id,
                    incarnation,
                } => r.drop_ref(hash, ref_id, incarnation).await,
                BlockRpc::BlockInfoQuery(hash) => r.block_info(hash).await,
                BlockRpc::RefDigestQuery { prefix, known } => r.ref_digest(prefix, known).await,
                BlockRpc::RefRecordsQuery {
                    prefix,
                    exact,
                    limit,
                } => r.ref_records(prefix, exact, limit).await,
                BlockRpc::MergeRefs(records) => r.merge_refs(records).await,
                BlockRpc::MergeTokens(records) => r.merge_tokens(records).await,
                BlockRpc::TokenDigestQuery(query) => r.token_records(query).await,
                BlockRpc::ScheduleResync(hash) => {
                    r.schedule(hash, ScheduleReason::ReadFailed);
                    BlockRpc::Ok
                }
                BlockRpc::LayoutQuery => r.layout_query(),
                BlockRpc::HandoverQuery { version } => r.handover_query(version).await,
                other => BlockRpc::error(
                    ErrorCode::BadRequest,
                    format!("{} is not a request", other.kind()),
                ),
            }
        })
    }
}

impl Replica {
    /// `MergeTokens`: a peer pushed a token create or revoke; `Ok` once durable here.
    async fn merge_tokens(&self, records: Vec<TokenRecord>) -> BlockRpc {
        match self.tokens.send(MergeTokens { records }).await {
            Ok(Ok(_)) => BlockRpc::Ok,
            Ok(Err(e)) => BlockRpc::error(ErrorCode::Internal, e.to_string()),
            Err(e) => mailbox("token", e),
        }
    }

    /// `TokenDigestQuery`: a peer's pull of one name range; a page of the token records
    /// here that differ from its digests.
    async fn token_records(&self, query: TokenSyncQuery) -> BlockRpc {
        match self.tokens.send(TokensIfDiffer { query }).await {
            Ok(page) => BlockRpc::TokenRecords(page),
            Err(e) => mailbox("token", e),
        }
    }

    fn schedule(&self, hash: Hash, reason: ScheduleReason) {
        self.resync
            .do_send(Schedule::for_reason(hash, reason, &self.resync_cfg));
    }

    /// `GetBlock`: the verified bytes from the storage actor; a rotten copy is reported
    /// and scheduled for repair.
    ///
    /// The bytes are charged to the peer pool before they are read; the charge goes with
    /// them until the reply is sent (or given up). That pool is never held by work that
    /// waits for a pool of another node (the caller charges its reply before reading it,
    /// or drops it unread), so this wait always ends; past `wait` the caller hears
    /// "unavailable" and asks another holder.
    async fn get_block(&self, hash: Hash) -> BlockRpc {
        let read = match &self.serve_budget {
            Some((pool, wait)) => {
                let storage = self.storage.clone().recipient();
                read_charged(&storage, hash, pool, false, *wait).await
            }
            None => match self.storage.send(ReadBlock::uncharged(hash)).await {
                Ok(r) => r,
                Err(e) => return mailbox("storage", e),
            },
        };
        match read {
            Ok(data) => BlockRpc::PutBlock { hash, data },
            Err(e) => {
                if matches!(e, StorageError::Corrupted { .. }) {
                    self.schedule(hash, ScheduleReason::ReadFailed);
                }
                storage_error(e)
            }
        }
    }

    /// `PutBlock` / `PutVerified`: write the block (a `PutBlock`'s bytes are verified
    /// first, a `PutVerified`'s were by this node); an unreferenced block is looked at
    /// again after the grace period.
    async fn put_block(&self, from: NodeId, write: WriteBlock) -> BlockRpc {
        let hash = write.hash();
        match self.storage.send(write).await {
            Ok(Ok(_)) => {
                // A block nobody references here is an orphan: look at it again after
                // the grace period (a ref may still be on its way).
                match self.refcount.send(GetRc { hash }).await {
                    Ok(Ok(rc)) if rc.is_needed() => {}
                    _ => self.schedule(hash, ScheduleReason::OrphanPut),
                }
                BlockRpc::Ok
            }
            Ok(Err(e)) => {
                tracing::warn!(hash = %hash.short(), peer = %from.short(), "refused block: {e}");
                storage_error(e)
            }
            Err(e) => mailbox("storage", e),
        }
    }

    /// `PutBlockRef` (or its verified form): write the block, and only once that write is
    /// durable add the ref, durably; `Ok` once both are. The order is the fence: a ref is
    /// never counted here for a block this node has not stored (a concurrent reader of
    /// rc and presence never sees one without the other). When this write created the
    /// file, the ref goes in as [`AddStoredRef`], which tells resync nothing (it would
    /// find the block present and needed); when an equal copy was already here, a GC
    /// delete may have been deciding about that copy, so it is a plain [`AddRef`], whose
    /// new-ref check fetches the block again if the delete went through.
    async fn put_block_ref(
        &self,
        from: NodeId,
        write: WriteBlock,
        ref_id: RefId,
        incarnation: u64,
    ) -> BlockRpc {
        let hash = write.hash();
        let outcome = match self.storage.send(write).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                tracing::warn!(hash = %hash.short(), peer = %from.short(), "refused block: {e}");
                return storage_error(e);
            }
            Err(e) => return mailbox("storage", e),
        };
        #[cfg(test)]
        tests::between_write_and_ref().await;
        let added = if outcome == WriteOutcome::AlreadyPresent {
            let add = AddRef {
                hash,
                ref_id,
                incarnation,
            };
            self.refcount.send(add).await
        } else {
            let add = AddStoredRef {
                hash,
                ref_id,
                incarnation,
            };
            self.refcount.send(add).await
        };
        match added {
            Ok(Ok(_)) => BlockRpc::Ok,
            Ok(Err(e)) => {
                // Stored without its ref (a dropped ref id, a failed journal): an orphan
                // here unless another ref arrives within the grace period.
                self.schedule(hash, ScheduleReason::OrphanPut);
                refcount_error(e)
            }
            Err(e) => {
                self.schedule(hash, ScheduleReason::OrphanPut);
                mailbox("refcount", e)
            }
        }
    }

    /// `NeedBlockQuery` (Garage's need_block): referenced here and not stored here.
    async fn need_block(&self, hash: Hash) -> BlockRpc {
        let rc = self.refcount.send(GetRc { hash }).await;
        let exists = self.storage.send(BlockExists { hash }).await;
        match (rc, exists) {
            (Ok(Ok(rc)), Ok(Ok(exists))) => BlockRpc::NeedBlockReply(rc.is_needed() && !exists),
            (Ok(Err(e)), _) => refcount_error(e),
            (_, Ok(Err(e))) => storage_error(e),
            (Err(e), _) | (_, Err(e)) => mailbox("storage/refcount", e),
        }
    }

    /// `AddRef` (a bare ref, without the bytes): counted, durably, only if the block is
    /// stored here, decided in the same order as a GC delete of it (`present_ref.rs`).
    /// A holder lacking the block fetches it from the other holders at once and counts
    /// the ref once it has it; when none can provide it, `BlockMissing`, and nothing is
    /// counted.
    async fn add_ref(&self, hash: Hash, ref_id: RefId, incarnation: u64) -> BlockRpc {
        let (storage, refcount) = (&self.storage, &self.refcount);
        let mut added = add_present_ref(storage, refcount, hash, ref_id.clone(), incarnation).await;
        if matches!(added, Err(PresentRefError::BlockMissing { .. })) {
            match self.resync.send(FetchNow { hash }).await {
                Ok(Ok(())) => {
                    added = add_present_ref(storage, refcount, hash, ref_id, incarnation).await;
                    if added.is_err() {
                        // Fetched but not referenced here: an orphan unless a ref comes.
                        self.schedule(hash, ScheduleReason::OrphanPut);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(hash = %hash.short(), "a bare ref's block could not be fetched: {e}")
                }
                Err(e) => return mailbox("resync", e),
            }
        }
        match added {
            Ok(_) => BlockRpc::Ok,
            Err(PresentRefError::BlockMissing { hash }) => BlockRpc::error(
                ErrorCode::BlockMissing,
                format!("block {hash} is not stored here"),
            ),
            Err(PresentRefError::Refcount(e)) => refcount_error(e),
            Err(PresentRefError::Storage(e)) => storage_error(e),
            Err(e @ PresentRefError::Gone { .. }) => {
                BlockRpc::error(ErrorCode::Unavailable, e.to_string())
            }
        }
    }

    /// `DropRef`: a dropped incarnation of a ref (a tombstone), durable before the answer.
    async fn drop_ref(&self, hash: Hash, ref_id: RefId, incarnation: u64) -> BlockRpc {
        let drop = DropRef {
            hash,
            ref_id,
            incarnation,
        };
        match self.refcount.send(drop).await {
            Ok(Ok(_)) => BlockRpc::Ok,
            Ok(Err(e)) => refcount_error(e),
            Err(e) => mailbox("refcount", e),
        }
    }

    /// `BlockInfoQuery`: presence, rc and the last resync error of one block.
    async fn block_info(&self, hash: Hash) -> BlockRpc {
        let rc = self.refcount.send(GetRc { hash }).await;
        let exists = self.storage.send(BlockExists { hash }).await;
        let err = self
            .resync
            .send(GetBlockError { hash })
            .await
            .ok()
            .flatten();
        let (rc, rc_err) = match rc {
            Ok(Ok(rc)) => (rc, None),
            Ok(Err(e)) => (RcEntry::Absent, Some(e.to_string())),
            Err(e) => (RcEntry::Absent, Some(e.to_string())),
        };
        let present = matches!(exists, Ok(Ok(true)));
        BlockRpc::BlockInfoReply(BlockInfo {
            present,
            rc: rc.count(),
            deletable: matches!(rc, RcEntry::Deletable { .. }),
            error: rc_err.or(err),
        })
    }

    /// `RefDigestQuery`: anti-entropy's digests of the refs under a prefix.
    async fn ref_digest(&self, prefix: Vec<u8>, known: Vec<u8>) -> BlockRpc {
        let known = (!known.is_empty()).then_some(known);
        match self.refcount.send(DigestPrefix { prefix, known }).await {
            Ok(Ok(d)) => BlockRpc::RefDigestReply(d),
            Ok(Err(e)) => refcount_error(e),
            Err(e) => mailbox("refcount", e),
        }
    }

    /// `RefRecordsQuery`: one page of ref records under a prefix.
    async fn ref_records(&self, prefix: Vec<u8>, exact: bool, limit: u32) -> BlockRpc {
        // Bounded so the reply fits the frame header limit.
        let limit = (limit as usize).min(128);
        let query = RecordsUnder {
            prefix,
            exact,
            limit,
        };
        match self.refcount.send(query).await {
            Ok(Ok(r)) => BlockRpc::RefRecords(r),
            Ok(Err(e)) => refcount_error(e),
            Err(e) => mailbox("refcount", e),
        }
    }

    /// `MergeRefs`: records a peer has and this node lacks; their blocks are fetched now.
    async fn merge_refs(&self, records: Vec<RefRecord>) -> BlockRpc {
        let live: Vec<Hash> = records.iter().filter(|r| r.live).map(|r| r.hash).collect();
        match self.refcount.send(MergeRefs { records }).await {
            Ok(Ok(_)) => {
                schedule_fetches(&self.resync.clone().recipient(), live);
                BlockRpc::Ok
            }
            Ok(Err(e)) => refcount_error(e),
            Err(e) => mailbox("refcount", e),
        }
    }
}

impl Replica {
    fn layout_now(&self) -> Option<LayoutChanged> {
        self.layout.as_ref().map(|l| l.borrow().clone())
    }

    /// `LayoutQuery`: the layout in force, encoded.
    fn layout_query(&self) -> BlockRpc {
        match self.layout_now().map(|l| encode_layout(&l.layout)) {
            Some(Ok(data)) => BlockRpc::LayoutReply { data },
            Some(Err(e)) => BlockRpc::error(ErrorCode::Internal, e.to_string()),
            None => BlockRpc::error(ErrorCode::Unavailable, "no layout here"),
        }
    }

    /// `HandoverQuery`: what this node still stores of partitions it gave up under
    /// `version`; under another version, an empty answer naming ours (the asker ignores
    /// it until we have switched).
    async fn handover_query(&self, version: u64) -> BlockRpc {
        let Some(l) = self.layout_now() else {
            return BlockRpc::error(ErrorCode::Unavailable, "no layout here");
        };
        if l.layout.version != version {
            return BlockRpc::HandoverReply(HandoverLeft {
                version: l.layout.version,
                ..HandoverLeft::default()
            });
        }
        match handover_left(&self.storage, &l.placement, self.resync_cfg.self_id).await {
            Ok(left) => BlockRpc::HandoverReply(left),
            Err(e) => storage_error(e),
        }
    }
}

#[cfg(test)]
mod tests;
