//! Repair: optionally rebuild `rc` from `refs`, then queue every hash that has an rc
//! entry and every block file on disk, a page at a time so memory stays bounded. Each
//! queued hash is then resynced like any other (fetched if referenced and missing,
//! offloaded and deleted if unreferenced). Progress is kept in `RepairStatus`.

use actix::prelude::*;

use super::{RepairStatus, ResyncActor, ResyncError, StartRepair, PAGE};
use crate::hash::Hash;
use crate::rc::now_msec;
use crate::refcount::{ListRcHashes, RebuildRc};
use crate::storage::ListBlocks;

/// Queue a page of hashes found by repair.
#[derive(Message)]
#[rtype(result = "()")]
struct EnqueueRepair(Vec<Hash>);

impl Handler<EnqueueRepair> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: EnqueueRepair, ctx: &mut Context<Self>) {
        let now = now_msec();
        self.repair.queued += msg.0.len() as u64;
        for h in msg.0 {
            self.enqueue(h, now);
        }
        self.pump(ctx);
    }
}

/// Repair moved to another phase.
#[derive(Message)]
#[rtype(result = "()")]
struct RepairPhase(&'static str);

impl Handler<RepairPhase> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: RepairPhase, _ctx: &mut Context<Self>) {
        self.repair.phase = msg.0.to_string();
        if msg.0 == "done" {
            self.repair.running = false;
            tracing::info!(queued = self.repair.queued, "repair: every hash queued");
        }
    }
}

impl Handler<StartRepair> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: StartRepair, ctx: &mut Context<Self>) -> Self::Result {
        if self.repair.running {
            return Err(ResyncError::RepairRunning);
        }
        tracing::info!(rebuild_rc = msg.rebuild_rc, "repair started");
        self.repair = RepairStatus {
            running: true,
            phase: "starting".into(),
            queued: 0,
            done: 0,
        };
        let me = ctx.address();
        let storage = self.deps.storage.clone();
        let refcount = self.deps.refcount.clone();
        actix_rt::spawn(async move {
            if msg.rebuild_rc {
                me.do_send(RepairPhase("rebuild_rc"));
                match refcount.send(RebuildRc).await {
                    Ok(Ok(r)) => {
                        tracing::info!(entries = r.entries, fixed = r.fixed, "repair: rc rebuilt")
                    }
                    other => tracing::warn!("repair: rc rebuild failed: {other:?}"),
                }
            }
            me.do_send(RepairPhase("rc"));
            let mut after = None;
            loop {
                match refcount.send(ListRcHashes { after, limit: PAGE }).await {
                    Ok(Ok(page)) if !page.is_empty() => {
                        after = page.last().copied();
                        let _ = me.send(EnqueueRepair(page)).await;
                    }
                    Ok(Ok(_)) => break,
                    other => {
                        tracing::warn!("repair: listing rc entries failed: {other:?}");
                        break;
                    }
                }
            }
            me.do_send(RepairPhase("blocks"));
            let mut after = None;
            loop {
                match storage.send(ListBlocks { after, limit: PAGE }).await {
                    Ok(Ok(page)) if !page.is_empty() => {
                        after = page.last().copied();
                        let _ = me.send(EnqueueRepair(page)).await;
                    }
                    Ok(Ok(_)) => break,
                    other => {
                        tracing::warn!("repair: listing blocks failed: {other:?}");
                        break;
                    }
                }
            }
            me.do_send(RepairPhase("done"));
        });
        Ok(())
    }
}
