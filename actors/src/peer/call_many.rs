//! The quorum rule of [`super::CallMany`], as Garage's `try_call_many`, over any set of
//! call futures (so it is tested without a network).
//!
//! All calls run at once. The result is known as soon as either `quorum` calls succeeded
//! (success, with those replies) or so many failed that the quorum cannot be reached any
//! more (failure, with every error seen). The calls still running then are cancelled if
//! `interrupt_after_quorum`, otherwise they finish in the background: a write that was
//! not needed for the quorum still lands on its node.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};

use super::{QuorumError, RpcError};
use crate::frame::BlockRpc;
use crate::hash::NodeId;

/// Run `calls` together and apply the quorum rule.
pub(crate) async fn gather_quorum<F>(
    calls: Vec<(NodeId, F)>,
    quorum: usize,
    interrupt_after_quorum: bool,
) -> Result<Vec<(NodeId, BlockRpc)>, QuorumError>
where
    F: Future<Output = Result<BlockRpc, RpcError>> + 'static,
{
    let mut pending: FuturesUnordered<_> = calls
        .into_iter()
        .map(|(node, call)| async move { (node, call.await) })
        .collect();
    let mut oks = Vec::new();
    let mut errors = Vec::new();
    let outcome = loop {
        if oks.len() >= quorum {
            break Ok(oks);
        }
        if oks.len() + pending.len() < quorum {
            break Err(QuorumError {
                quorum,
                oks: oks.len(),
                errors,
            });
        }
        // Cannot be None: the quorum is not reached and still reachable, so some
        // call is pending.
        let Some((node, result)) = pending.next().await else {
            break Err(QuorumError {
                quorum,
                oks: oks.len(),
                errors,
            });
        };
        match result {
            Ok(reply) => oks.push((node, reply)),
            Err(e) => errors.push((node, e)),
        }
    };
    if !interrupt_after_quorum && !pending.is_empty() {
        actix_rt::spawn(async move { while pending.next().await.is_some() {} });
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use futures::future::LocalBoxFuture;
    use futures::FutureExt;

    use super::*;

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn ok_after(
        ms: u64,
        done: Rc<Cell<usize>>,
    ) -> LocalBoxFuture<'static, Result<BlockRpc, RpcError>> {
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            done.set(done.get() + 1);
            Ok(BlockRpc::Ok)
        }
        .boxed_local()
    }

    fn err_after(ms: u64, n: NodeId) -> LocalBoxFuture<'static, Result<BlockRpc, RpcError>> {
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Err(RpcError::Unreachable {
                node: n,
                reason: "down".into(),
            })
        }
        .boxed_local()
    }

    #[actix_rt::test]
    async fn quorum_succeeds_without_waiting_for_the_slow_call() {
        let done = Rc::new(Cell::new(0));
        let start = std::time::Instant::now();
        let calls = vec![
            (node(1), ok_after(10, done.clone())),
            (node(2), ok_after(20, done.clone())),
            (node(3), ok_after(2_000, done.clone())),
        ];
        let oks = gather_quorum(calls, 2, true)
            .await
            .expect("quorum of 2 fast oks");
        assert_eq!(oks.len(), 2, "exactly the quorum is returned");
        assert!(
            start.elapsed() < Duration::from_millis(1_000),
            "waited for the slow call"
        );
    }

    #[actix_rt::test]
    async fn without_interrupt_the_remaining_calls_finish_in_background() {
        let done = Rc::new(Cell::new(0));
        let calls = vec![
            (node(1), ok_after(1, done.clone())),
            (node(2), ok_after(50, done.clone())),
        ];
        gather_quorum(calls, 1, false).await.expect("quorum of 1");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            done.get(),
            2,
            "the call beyond the quorum was not completed"
        );

        let done = Rc::new(Cell::new(0));
        let calls = vec![
            (node(1), ok_after(1, done.clone())),
            (node(2), ok_after(50, done.clone())),
        ];
        gather_quorum(calls, 1, true).await.expect("quorum of 1");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            done.get(),
            1,
            "the call beyond the quorum was not cancelled"
        );
    }

    #[actix_rt::test]
    async fn quorum_fails_as_soon_as_it_is_impossible_listing_errors() {
        let done = Rc::new(Cell::new(0));
        let start = std::time::Instant::now();
        let calls = vec![
            (node(1), err_after(5, node(1))),
            (node(2), err_after(10, node(2))),
            (node(3), ok_after(2_000, done.clone())),
        ];
        let err = gather_quorum(calls, 2, true)
            .await
            .expect_err("two of three failed");
        assert!(
            start.elapsed() < Duration::from_millis(1_000),
            "waited for the slow call"
        );
        assert_eq!(err.oks, 0);
        let failed: Vec<NodeId> = err.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(failed, vec![node(1), node(2)], "errors are not all listed");
    }

    #[actix_rt::test]
    async fn edge_quorums() {
        let none: Vec<(NodeId, LocalBoxFuture<'static, _>)> = Vec::new();
        assert!(gather_quorum(none, 0, true).await.unwrap().is_empty());
        let done = Rc::new(Cell::new(0));
        let err = gather_quorum(vec![(node(1), ok_after(1, done))], 2, true)
            .await
            .expect_err("quorum above the number of nodes cannot succeed");
        assert_eq!(err.quorum, 2);
    }
}
