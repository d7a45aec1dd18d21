//! Call routing: one call to one node (this node's own handler answers directly), the
//! observed latency of each, hedged reads with their cancellation, read plans, and
//! quorum calls.

use std::time::Instant;

use actix::prelude::*;
use futures::future::{self, LocalBoxFuture};
use quinn::Connection;
use tokio::sync::oneshot;

use super::health::{self, HolderHealth};
use super::{
    call_many, conn, Call, CallMany, CallsFailed, HandleRpc, HedgedCall, PeerActor, PeerState,
    PlanRead, Priority, QuorumError, ReadPlan, RpcError, RpcObserver,
};
use crate::frame::BlockRpc;
use crate::hash::NodeId;

impl PeerActor {
    /// The future of one call; it holds no borrow of the actor, so many run at once.
    fn call_future(
        &mut self,
        call: Call,
        ctx: &mut Context<Self>,
    ) -> LocalBoxFuture<'static, Result<BlockRpc, RpcError>> {
        let Call {
            node,
            rpc,
            timeout,
            priority,
        } = call;
        let timed_out = RpcError::Timeout {
            node,
            after: timeout,
        };
        if node == self.self_id {
            // The local handler answers directly: no network, no serialisation.
            let handler = self.handler.clone();
            return Box::pin(async move {
                match tokio::time::timeout(timeout, handler.send(HandleRpc { from: node, rpc }))
                    .await
                {
                    Err(_) => Err(timed_out),
                    Ok(Err(_)) => Err(RpcError::Unreachable {
                        node,
                        reason: "the local handler is gone".into(),
                    }),
                    Ok(Ok(reply)) => conn::reply_to_result(node, reply),
                }
            });
        }
        let redial_after = self.tuning.redial_after;
        let Some(p) = self.peers.get_mut(&node) else {
            return Box::pin(future::ready(Err(RpcError::UnknownNode { node })));
        };
        let connection: LocalBoxFuture<'static, Result<Connection, RpcError>> =
            if let Some(c) = &p.conn {
                Box::pin(future::ready(Ok(c.clone())))
            } else {
                if priority == Priority::Client && p.is_down() {
                    // Never redial on the client path: fail now, reconnect in the
                    // background (a timer may already be set by the backoff).
                    if !p.connecting && p.retry.is_none() {
                        self.start_connect(node, ctx);
                    }
                    return Box::pin(future::ready(Err(RpcError::Unreachable {
                        node,
                        reason: "peer is down (reconnecting in the background)".into(),
                    })));
                }
                if !p.connecting {
                    if let Some((at, e)) = &p.last_failure {
                        if at.elapsed() < redial_after {
                            return Box::pin(future::ready(Err(e.clone())));
                        }
                    }
                }
                let (tx, rx) = oneshot::channel();
                p.waiters.push(tx);
                self.start_connect(node, ctx);
                Box::pin(async move {
                    rx.await.unwrap_or_else(|_| {
                        Err(RpcError::Unreachable {
                            node,
                            reason: "connection attempt abandoned".into(),
                        })
                    })
                })
            };
        let limits = self.config.limits;
        let replies = self.tuning.ram_budget.as_ref().map(|b| b.client.clone());
        Box::pin(async move {
            let exchange = async {
                let conn = connection.await?;
                conn::request(&conn, node, &rpc, priority, &limits, replies.as_ref()).await
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(timed_out))
        })
    }
}
impl Handler<Call> for PeerActor {
    type Result = ResponseFuture<Result<BlockRpc, RpcError>>;

    fn handle(&mut self, msg: Call, ctx: &mut Context<Self>) -> Self::Result {
        self.observed_call(msg, ctx)
    }
}

impl PeerActor {
    /// Report every outgoing call's latency to `observer`.
    pub fn with_observer(mut self, observer: RpcObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// One call, its latency reported to the observer (calls to this node are not).
    fn observed_call(
        &mut self,
        call: Call,
        ctx: &mut Context<Self>,
    ) -> LocalBoxFuture<'static, Result<BlockRpc, RpcError>> {
        let (kind, node) = (call.rpc.kind(), call.node);
        let fut = self.call_future(call, ctx);
        match self.observer.clone() {
            Some(obs) if node != self.self_id => Box::pin(async move {
                let start = std::time::Instant::now();
                let r = fut.await;
                obs(kind, node, start.elapsed(), r.is_ok());
                r
            }),
            _ => fut,
        }
    }
}

impl Handler<HedgedCall> for PeerActor {
    type Result = ResponseActFuture<Self, Result<BlockRpc, RpcError>>;

    fn handle(&mut self, msg: HedgedCall, ctx: &mut Context<Self>) -> Self::Result {
        let node = msg.call.node;
        let seq = self.read_seq;
        self.read_seq = self.read_seq.wrapping_add(1);
        let start = Instant::now();
        let hedge = match self.peers.get_mut(&node) {
            Some(p) => {
                p.reads_in_flight.insert(seq, start);
                p.reads.hedge_delay()
            }
            None => health::MAX_HEDGE_DELAY,
        };
        let call = self.observed_call(msg.call, ctx);
        let cancel = msg.cancel;
        let raced = async move {
            match future::select(call, cancel).await {
                future::Either::Left((r, _)) => Some(r),
                future::Either::Right(_) => None,
            }
        };
        Box::pin(raced.into_actor(self).map(move |res, act, _ctx| {
            let took = start.elapsed();
            if let Some(p) = act.peers.get_mut(&node) {
                p.reads_in_flight.remove(&seq);
                match &res {
                    // An answer, a refusal or a timeout: how long this peer takes.
                    Some(Ok(_))
                    | Some(Err(RpcError::Remote { .. }))
                    | Some(Err(RpcError::Timeout { .. })) => p.reads.record(took),
                    // Cancelled after its hedge delay: a lower bound worth keeping.
                    None if took >= hedge => p.reads.record(took),
                    _ => {}
                }
            }
            res.unwrap_or(Err(RpcError::Unreachable {
                node,
                reason: "read cancelled: another holder answered first".into(),
            }))
        }))
    }
}

impl Handler<PlanRead> for PeerActor {
    type Result = MessageResult<PlanRead>;

    fn handle(&mut self, msg: PlanRead, _ctx: &mut Context<Self>) -> Self::Result {
        let known: Vec<(NodeId, HolderHealth)> = msg
            .holders
            .iter()
            .map(|&n| {
                let h = if n == self.self_id {
                    HolderHealth::Local
                } else {
                    self.peers
                        .get(&n)
                        .map_or(HolderHealth::Down, PeerState::health)
                };
                (n, h)
            })
            .collect();
        let order = health::order_holders(&known)
            .into_iter()
            .map(|n| {
                let hedge = self
                    .peers
                    .get(&n)
                    .map_or(health::MIN_HEDGE_DELAY, |p| p.reads.hedge_delay());
                (n, hedge)
            })
            .collect();
        MessageResult(ReadPlan { order })
    }
}

impl Handler<CallMany> for PeerActor {
    type Result = ResponseFuture<Result<Vec<(NodeId, BlockRpc)>, QuorumError>>;

    fn handle(&mut self, msg: CallMany, ctx: &mut Context<Self>) -> Self::Result {
        let calls: Vec<_> = msg
            .nodes
            .iter()
            .map(|&n| {
                let call = Call {
                    node: n,
                    rpc: msg.rpc.clone(),
                    timeout: msg.timeout,
                    priority: msg.priority,
                };
                let f = self.observed_call(call, ctx);
                (n, f)
            })
            .collect();
        let report = msg.report_failures.map(|r| {
            let rpc = msg.rpc;
            Box::new(move |failed: Vec<(NodeId, RpcError)>| {
                r.do_send(CallsFailed { rpc, failed });
            }) as Box<dyn FnOnce(Vec<(NodeId, RpcError)>)>
        });
        Box::pin(call_many::gather_quorums(
            calls,
            msg.quorum,
            msg.also,
            msg.interrupt_after_quorum,
            report,
        ))
    }
}
