//! [`RpcDispatcher`]: answers the requests peers send this node.
//!
//! It owns nothing but the addresses of the actors that own state. The peer actor hands
//! it every incoming [`HandleRpc`] (and the ones this node sends itself); it turns each
//! into messages to the storage, refcount and resync actors and their answers into a
//! reply frame. Kept in the binary so the actors stay ignorant of each other. Layout
//! requests (`LayoutQuery`, `HandoverQuery`) are answered from the layout the layout
//! actor last published.

use actix::prelude::*;

use blocknode_actors::antientropy::narrow::schedule_fetches;
use blocknode_actors::frame::{BlockInfo, BlockRpc, ErrorCode};
use blocknode_actors::layout::{encode_layout, handover_left, LayoutChanged};
use blocknode_actors::peer::HandleRpc;
use blocknode_actors::refcount::{
    AddRef, DigestPrefix, DropRef, GetRc, MergeRefs, RecordsUnder, RefcountActor, RefcountError,
};
use blocknode_actors::resync::{
    GetBlockError, ResyncActor, ResyncConfig, Schedule, ScheduleReason,
};
use blocknode_actors::storage::{BlockExists, ReadBlock, StorageActor, StorageError, WriteBlock};
use blocknode_actors::{Hash, RcEntry};

/// Routes incoming RPCs to the actors that own the data.
pub struct RpcDispatcher {
    storage: Addr<StorageActor>,
    refcount: Addr<RefcountActor>,
    resync: Addr<ResyncActor>,
    /// The resync settings: every schedule delay comes from `ResyncConfig::delay_for`.
    resync_cfg: std::sync::Arc<ResyncConfig>,
    /// The layout in force (for `LayoutQuery` and `HandoverQuery`); `None`: such
    /// requests are refused.
    layout: Option<tokio::sync::watch::Receiver<LayoutChanged>>,
}

impl RpcDispatcher {
    /// A dispatcher over the node's actors.
    pub fn new(
        storage: Addr<StorageActor>,
        refcount: Addr<RefcountActor>,
        resync: Addr<ResyncActor>,
        resync_cfg: ResyncConfig,
    ) -> Self {
        RpcDispatcher {
            storage,
            refcount,
            resync,
            resync_cfg: std::sync::Arc::new(resync_cfg),
            layout: None,
        }
    }

    /// Answer layout requests from `layout`.
    pub fn with_layout(mut self, layout: tokio::sync::watch::Receiver<LayoutChanged>) -> Self {
        self.layout = Some(layout);
        self
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
        let storage = self.storage.clone();
        let refcount = self.refcount.clone();
        let resync = self.resync.clone();
        let resync_cfg = self.resync_cfg.clone();
        let layout = self.layout.as_ref().map(|l| l.borrow().clone());
        let from = msg.from;
        Box::pin(async move {
            let schedule = |hash: Hash, reason: ScheduleReason| {
                resync.do_send(Schedule::for_reason(hash, reason, &resync_cfg))
            };
            match msg.rpc {
                BlockRpc::GetBlock(hash) => match storage.send(ReadBlock { hash }).await {
                    Ok(Ok(data)) => BlockRpc::PutBlock { hash, data },
                    Ok(Err(e)) => {
                        if matches!(e, StorageError::Corrupted { .. }) {
                            schedule(hash, ScheduleReason::ReadFailed);
                        }
                        storage_error(e)
                    }
                    Err(e) => mailbox("storage", e),
                },
                BlockRpc::PutBlock { hash, data } => {
                    // A PutBlock this node sends itself carries the bytes its service
                    // has just hashed (a peer cannot pass for this node: ids are pinned
                    // to certificates); anything else is verified before it is written.
                    let write = if from == resync_cfg.self_id {
                        WriteBlock::hashed_here(hash, data)
                    } else {
                        WriteBlock::new(hash, data)
                    };
                    match storage.send(write).await {
                        Ok(Ok(_)) => {
                            // A block nobody references here is an orphan: look at it again
                            // after the grace period (a ref may still be on its way).
                            match refcount.send(GetRc { hash }).await {
                                Ok(Ok(rc)) if rc.is_needed() => {}
                                _ => schedule(hash, ScheduleReason::OrphanPut),
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
                BlockRpc::NeedBlockQuery(hash) => {
                    // Garage's need_block: referenced here and not stored here.
                    let rc = refcount.send(GetRc { hash }).await;
                    let exists = storage.send(BlockExists { hash }).await;
                    match (rc, exists) {
                        (Ok(Ok(rc)), Ok(Ok(exists))) => {
                            BlockRpc::NeedBlockReply(rc.is_needed() && !exists)
                        }
                        (Ok(Err(e)), _) => refcount_error(e),
                        (_, Ok(Err(e))) => storage_error(e),
                        (Err(e), _) | (_, Err(e)) => mailbox("storage/refcount", e),
                    }
                }
                BlockRpc::AddRef { hash, ref_id } => {
                    match refcount.send(AddRef { hash, ref_id }).await {
                        Ok(Ok(_)) => BlockRpc::Ok,
                        Ok(Err(e)) => refcount_error(e),
                        Err(e) => mailbox("refcount", e),
                    }
                }
                BlockRpc::DropRef { hash, ref_id } => {
                    match refcount.send(DropRef { hash, ref_id }).await {
                        Ok(Ok(_)) => BlockRpc::Ok,
                        Ok(Err(e)) => refcount_error(e),
                        Err(e) => mailbox("refcount", e),
                    }
                }
                BlockRpc::BlockInfoQuery(hash) => {
                    let rc = refcount.send(GetRc { hash }).await;
                    let exists = storage.send(BlockExists { hash }).await;
                    let err = resync.send(GetBlockError { hash }).await.ok().flatten();
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
                BlockRpc::RefDigestQuery { prefix, known } => {
                    let known = (!known.is_empty()).then_some(known);
                    match refcount.send(DigestPrefix { prefix, known }).await {
                        Ok(Ok(d)) => BlockRpc::RefDigestReply(d),
                        Ok(Err(e)) => refcount_error(e),
                        Err(e) => mailbox("refcount", e),
                    }
                }
                BlockRpc::RefRecordsQuery {
                    prefix,
                    exact,
                    limit,
                } => {
                    // Bounded so the reply fits the frame header limit.
                    let limit = (limit as usize).min(128);
                    match refcount
                        .send(RecordsUnder {
                            prefix,
                            exact,
                            limit,
                        })
                        .await
                    {
                        Ok(Ok(r)) => BlockRpc::RefRecords(r),
                        Ok(Err(e)) => refcount_error(e),
                        Err(e) => mailbox("refcount", e),
                    }
                }
                BlockRpc::MergeRefs(records) => {
                    let live: Vec<Hash> =
                        records.iter().filter(|r| r.live).map(|r| r.hash).collect();
                    match refcount.send(MergeRefs { records }).await {
                        Ok(Ok(_)) => {
                            // Refs that arrive by anti-entropy: fetch their blocks now.
                            schedule_fetches(&resync.clone().recipient(), live);
                            BlockRpc::Ok
                        }
                        Ok(Err(e)) => refcount_error(e),
                        Err(e) => mailbox("refcount", e),
                    }
                }
                BlockRpc::ScheduleResync(hash) => {
                    schedule(hash, ScheduleReason::ReadFailed);
                    BlockRpc::Ok
                }
                BlockRpc::LayoutQuery => match layout.map(|l| encode_layout(&l.layout)) {
                    Some(Ok(data)) => BlockRpc::LayoutReply { data },
                    Some(Err(e)) => BlockRpc::error(ErrorCode::Internal, e.to_string()),
                    None => BlockRpc::error(ErrorCode::Unavailable, "no layout here"),
                },
                BlockRpc::HandoverQuery { version } => match layout {
                    Some(l) if l.layout.version == version => {
                        match handover_left(&storage, &l.placement, resync_cfg.self_id).await {
                            Ok(left) => BlockRpc::HandoverReply(left),
                            Err(e) => storage_error(e),
                        }
                    }
                    Some(l) => BlockRpc::HandoverReply(blocknode_actors::layout::HandoverLeft {
                        version: l.layout.version,
                        ..Default::default()
                    }),
                    None => BlockRpc::error(ErrorCode::Unavailable, "no layout here"),
                },
                other => BlockRpc::error(
                    ErrorCode::BadRequest,
                    format!("{} is not a request", other.kind()),
                ),
            }
        })
    }
}
