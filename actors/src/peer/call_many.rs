//! The quorum rule of [`super::CallMany`], as Garage's `try_call_many`, over any set of
//! call futures (so it is tested without a network).
//!
//! All calls run at once. The result is known as soon as either `quorum` calls succeeded
//! (success, with those replies) or so many failed that the quorum cannot be reached any
//! more (failure, with every error seen). The calls still running then are cancelled if
//! `interrupt_after_quorum`, otherwise they finish in the background: a write that was
//! not needed for the quorum still lands on its node.
//!
//! During a layout transition a write must reach the quorum in two holder sets (old and
//! new): [`gather_quorums`] takes the extra set and succeeds only once both are met.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};

use super::{QuorumError, RpcError};
use crate::frame::BlockRpc;
use crate::hash::NodeId;

/// What to do with the failures of all calls, once all ended (not run when none failed).
pub(crate) type FailureReport = Box<dyn FnOnce(Vec<(NodeId, RpcError)>)>;

/// Run `calls` together and apply the quorum rule. With `report`, the calls are never
/// interrupted (their outcome must be known) and `report` gets every failure.
#[cfg(test)]
pub(crate) async fn gather_quorum<F>(
    calls: Vec<(NodeId, F)>,
    quorum: usize,
    interrupt_after_quorum: bool,
    report: Option<FailureReport>,
) -> Result<Vec<(NodeId, BlockRpc)>, QuorumError>
where
    F: Future<Output = Result<BlockRpc, RpcError>> + 'static,
{
    gather_quorums(calls, quorum, Vec::new(), interrupt_after_quorum, report).await
}

/// [`gather_quorum`] with extra conditions: each `(set, q)` of `also` needs `q`
/// successes among the nodes of `set` too (the old and new holder sets of a layout
/// transition).
pub(crate) async fn gather_quorums<F>(
    calls: Vec<(NodeId, F)>,
    quorum: usize,
    also: Vec<(Vec<NodeId>, usize)>,
    interrupt_after_quorum: bool,
    report: Option<FailureReport>,
) -> Result<Vec<(NodeId, BlockRpc)>, QuorumError>
where
    F: Future<Output = Result<BlockRpc, RpcError>> + 'static,
{
    let mut waiting: Vec<NodeId> = calls.iter().map(|(n, _)| *n).collect();
    let mut pending: FuturesUnordered<_> = calls
        .into_iter()
        .map(|(node, call)| async move { (node, call.await) })
        .collect();
    let mut oks: Vec<(NodeId, BlockRpc)> = Vec::new();
    let mut errors = Vec::new();
    let outcome = loop {
        // (successes, still possible, needed) of each extra set.
        let extra: Vec<(usize, usize, usize)> = also
            .iter()
            .map(|(set, q)| {
                let ok = oks.iter().filter(|(n, _)| set.contains(n)).count();
                let open = waiting.iter().filter(|n| set.contains(n)).count();
                (ok, ok + open, *q)
            })
            .collect();
        let extra_met = extra.iter().all(|&(ok, _, q)| ok >= q);
        if oks.len() >= quorum && extra_met {
            break Ok(oks);
        }
        if oks.len() + pending.len() < quorum {
            break Err(QuorumError {
                quorum,
                oks: oks.len(),
                errors: std::mem::take(&mut errors),
            });
        }
        if let Some(&(ok, _, q)) = extra.iter().find(|&&(_, possible, q)| possible < q) {
            break Err(QuorumError {
                quorum: q,
                oks: ok,
                errors: std::mem::take(&mut errors),
            });
        }
        // Cannot be None: the quorum is not reached and still reachable, so some
        // call is pending.
        let Some((node, result)) = pending.next().await else {
            break Err(QuorumError {
                quorum,
                oks: oks.len(),
                errors: std::mem::take(&mut errors),
            });
        };
        if let Some(i) = waiting.iter().position(|n| *n == node) {
            waiting.swap_remove(i);
        }
        match result {
            Ok(reply) => oks.push((node, reply)),
            Err(e) => errors.push((node, e)),
        }
    };
    match report {
        Some(report) => {
            let mut failed: Vec<(NodeId, RpcError)> = match &outcome {
                Ok(_) => errors,
                Err(e) => e.errors.clone(),
            };
            if pending.is_empty() {
                if !failed.is_empty() {
                    report(failed);
                }
            } else {
                actix_rt::spawn(async move {
                    while let Some((node, result)) = pending.next().await {
                        if let Err(e) = result {
                            failed.push((node, e));
                        }
                    }
                    if !failed.is_empty() {
                        report(failed);
                    }
                });
            }
        }
        None if !interrupt_after_quorum && !pending.is_empty() => {
            actix_rt::spawn(async move { while pending.next().await.is_some() {} });
        }
        None => {}
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

    #[actix_rt::test]
    async fn a_second_holder_set_must_reach_its_quorum_too() {
        // Old holders {1,2,3}, new {1,2,4}; quorum 2 in each. 1 fails, 2 and 4 answer
        // fast, 3 late: the new set is met by 2 and 4, the old one needs 3 as well.
        let done = Rc::new(Cell::new(0));
        let calls = vec![
            (node(1), err_after(1, node(1))),
            (node(2), ok_after(1, done.clone())),
            (node(4), ok_after(1, done.clone())),
            (node(3), ok_after(60, done.clone())),
        ];
        let oks = gather_quorums(
            calls,
            2,
            vec![(vec![node(1), node(2), node(3)], 2)],
            true,
            None,
        )
        .await
        .expect("both quorums");
        let mut got: Vec<NodeId> = oks.iter().map(|(n, _)| *n).collect();
        got.sort();
        assert_eq!(got, vec![node(2), node(3), node(4)], "waited for node 3");

        // The old set loses two of three: the write fails although the new set is met.
        let calls = vec![
            (node(1), err_after(1, node(1))),
            (node(3), err_after(1, node(3))),
            (node(2), ok_after(1, done.clone())),
            (node(4), ok_after(1, done.clone())),
        ];
        let err = gather_quorums(
            calls,
            2,
            vec![(vec![node(1), node(2), node(3)], 2)],
            true,
            None,
        )
        .await
        .expect_err("old quorum impossible");
        assert!(err.quorum == 2 && err.oks <= 1, "{err:?}");
        assert_eq!(
            err.errors.len(),
            2,
            "both old holders' failures named: {err:?}"
        );
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
        let oks = gather_quorum(calls, 2, true, None)
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
        gather_quorum(calls, 1, false, None)
            .await
            .expect("quorum of 1");
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
        gather_quorum(calls, 1, true, None)
            .await
            .expect("quorum of 1");
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
        let err = gather_quorum(calls, 2, true, None)
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
    async fn failures_after_the_quorum_are_reported_once_all_calls_ended() {
        let done = Rc::new(Cell::new(0));
        let seen: Rc<std::cell::RefCell<Option<Vec<NodeId>>>> = Rc::default();
        let sink = seen.clone();
        let calls = vec![
            (node(1), ok_after(1, done.clone())),
            (node(2), ok_after(2, done.clone())),
            (node(3), err_after(80, node(3))),
        ];
        let report: FailureReport = Box::new(move |failed| {
            *sink.borrow_mut() = Some(failed.into_iter().map(|(n, _)| n).collect());
        });
        let oks = gather_quorum(calls, 2, true, Some(report))
            .await
            .expect("two fast oks make the quorum");
        assert_eq!(oks.len(), 2);
        assert!(
            seen.borrow().is_none(),
            "reported before the slow call ended"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            seen.borrow().clone(),
            Some(vec![node(3)]),
            "the late failure must be reported (and the call not interrupted)"
        );

        // Nothing failed: no report.
        let seen2: Rc<Cell<bool>> = Rc::default();
        let sink2 = seen2.clone();
        let calls = vec![(node(1), ok_after(1, done.clone()))];
        gather_quorum(calls, 1, false, Some(Box::new(move |_| sink2.set(true))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !seen2.get(),
            "a report was sent although every call succeeded"
        );
    }

    #[actix_rt::test]
    async fn edge_quorums() {
        let none: Vec<(NodeId, LocalBoxFuture<'static, _>)> = Vec::new();
        assert!(gather_quorum(none, 0, true, None).await.unwrap().is_empty());
        let done = Rc::new(Cell::new(0));
        let err = gather_quorum(vec![(node(1), ok_after(1, done))], 2, true, None)
            .await
            .expect_err("quorum above the number of nodes cannot succeed");
        assert_eq!(err.quorum, 2);
    }
}
