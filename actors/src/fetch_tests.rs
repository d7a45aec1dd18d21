//! The shared fetch against fake holders: each answers after a set delay with a copy,
//! a rotten copy, "not here", or an error; the tests check who was asked, when, and what
//! the fetch concluded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::block::VerifiedBlock;
use crate::hash::blake2sum;

/// What a fake holder answers, after how long.
#[derive(Clone)]
enum Fake {
    Copy(Duration),
    Rotten,
    NotHere,
    Down,
    WrongReply,
}

fn node(i: u8) -> NodeId {
    NodeId(blake2sum(&[i]).0)
}

const BODY: &[u8] = b"the block the holders are asked for";

/// Run one fetch of `BODY` against `fakes`; the ask log records (node, time since start).
async fn run(
    plan: FetchPlan,
    fakes: HashMap<NodeId, Fake>,
) -> (Fetched<VerifiedBlock>, Vec<(NodeId, Duration)>) {
    let hash = blake2sum(BODY);
    let asked = Rc::new(RefCell::new(Vec::new()));
    let start = Instant::now();
    let log = asked.clone();
    let fetched = fetch_from_holders(
        hash,
        plan,
        |n| {
            log.borrow_mut().push((n, start.elapsed()));
            let fake = fakes.get(&n).cloned().unwrap_or(Fake::Down);
            async move {
                let reply = match fake {
                    Fake::Copy(after) => {
                        tokio::time::sleep(after).await;
                        Ok(BlockRpc::PutBlock {
                            hash,
                            data: DataBlock::Plain(Bytes::from_static(BODY)),
                        })
                    }
                    Fake::Rotten => Ok(BlockRpc::PutBlock {
                        hash,
                        data: DataBlock::Plain(Bytes::from_static(b"rotten")),
                    }),
                    Fake::NotHere => Err(RpcError::Remote {
                        node: n,
                        code: ErrorCode::NotFound,
                        message: "not here".into(),
                    }),
                    Fake::Down => Err(RpcError::Unreachable {
                        node: n,
                        reason: "down".into(),
                    }),
                    Fake::WrongReply => Ok(BlockRpc::Pong(1)),
                };
                Ok::<_, Infallible>(reply)
            }
        },
        VerifiedBlock::verify,
    )
    .await
    .unwrap_or_else(|e: Infallible| match e {});
    let log = asked.borrow().clone();
    (fetched, log)
}

#[actix_rt::test]
async fn one_by_one_skips_lacking_and_rotten_holders_and_stops_at_the_first_copy() {
    let fakes = HashMap::from([
        (node(1), Fake::NotHere),
        (node(2), Fake::Rotten),
        (node(3), Fake::Copy(Duration::ZERO)),
        (node(4), Fake::Copy(Duration::ZERO)),
    ]);
    let plan = FetchPlan::one_by_one([node(1), node(2), node(3), node(4)]);
    let (f, asked) = run(plan, fakes).await;
    let (from, copy) = f.found.as_ref().expect("node 3 has a good copy");
    assert_eq!(*from, node(3));
    assert_eq!(copy.hash(), blake2sum(BODY));
    let order: Vec<NodeId> = asked.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        order,
        vec![node(1), node(2), node(3)],
        "node 4 must not be asked"
    );
    assert_eq!(f.lacking(), vec![node(1), node(2)]);
    assert!(f.unreachable().is_empty());
    assert_eq!(f.missed[1].1, Miss::Lacking("sent corrupt data".into()));
}

#[actix_rt::test]
async fn one_by_one_waits_for_a_slow_holder_before_asking_the_next() {
    let fakes = HashMap::from([
        (node(1), Fake::Copy(Duration::from_millis(300))),
        (node(2), Fake::Copy(Duration::ZERO)),
    ]);
    let (f, asked) = run(FetchPlan::one_by_one([node(1), node(2)]), fakes).await;
    assert_eq!(f.found.map(|(n, _)| n), Some(node(1)));
    assert_eq!(asked.len(), 1, "the second holder was asked: {asked:?}");
}

#[actix_rt::test]
async fn hedged_asks_the_next_holder_once_the_first_is_late_and_takes_the_first_copy() {
    let fakes = HashMap::from([
        (node(1), Fake::Copy(Duration::from_secs(10))),
        (node(2), Fake::Copy(Duration::ZERO)),
    ]);
    let plan = FetchPlan::hedged([
        (node(1), Duration::from_millis(50)),
        (node(2), Duration::from_millis(50)),
    ]);
    let start = Instant::now();
    let (f, asked) = run(plan, fakes).await;
    assert_eq!(f.found.map(|(n, _)| n), Some(node(2)));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited for the slow holder"
    );
    assert_eq!(asked.len(), 2);
    assert!(
        asked[1].1 >= Duration::from_millis(50),
        "the second holder was asked before the hedge delay: {asked:?}"
    );
    assert!(
        f.missed.is_empty(),
        "the cancelled read is no miss: {:?}",
        f.missed
    );
}

#[actix_rt::test]
async fn hedged_asks_the_next_holder_at_once_when_one_ends_without_a_copy() {
    let fakes = HashMap::from([
        (node(1), Fake::NotHere),
        (node(2), Fake::Copy(Duration::ZERO)),
    ]);
    let plan = FetchPlan::hedged([
        (node(1), Duration::from_secs(30)),
        (node(2), Duration::from_secs(30)),
    ]);
    let start = Instant::now();
    let (f, _) = run(plan, fakes).await;
    assert_eq!(f.found.map(|(n, _)| n), Some(node(2)));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited for the hedge delay after a refusal"
    );
}

#[actix_rt::test]
async fn every_holder_lacking_is_not_found_and_one_unreachable_is_not() {
    let all_lack = HashMap::from([(node(1), Fake::NotHere), (node(2), Fake::Rotten)]);
    let (f, _) = run(FetchPlan::one_by_one([node(1), node(2)]), all_lack).await;
    assert!(f.found.is_none());
    assert!(f.not_found(), "all holders lack it: {:?}", f.missed);

    let one_down = HashMap::from([
        (node(1), Fake::NotHere),
        (node(2), Fake::Down),
        (node(3), Fake::WrongReply),
    ]);
    let plan = FetchPlan::one_by_one([node(1), node(2), node(3)]);
    let (f, _) = run(plan, one_down).await;
    assert!(!f.not_found(), "a down holder may have it: {:?}", f.missed);
    assert_eq!(f.unreachable(), vec![node(2), node(3)]);
    assert_eq!(f.lacking(), vec![node(1)]);
    assert_eq!(f.missed[2].1, Miss::Unreachable("answered pong".into()));
}

#[actix_rt::test]
async fn no_holder_is_not_found() {
    let (f, asked) = run(FetchPlan::one_by_one([]), HashMap::new()).await;
    assert!(f.found.is_none() && f.not_found() && asked.is_empty());
}

#[actix_rt::test]
async fn an_ask_that_cannot_be_sent_ends_the_fetch_with_its_error() {
    let hash = blake2sum(BODY);
    let asked = RefCell::new(0);
    let res = fetch_from_holders(
        hash,
        FetchPlan::one_by_one([node(1), node(2)]),
        |_| {
            *asked.borrow_mut() += 1;
            async { Err::<Result<BlockRpc, RpcError>, _>("actor gone") }
        },
        VerifiedBlock::verify,
    )
    .await;
    assert_eq!(res.err(), Some("actor gone"));
    assert_eq!(*asked.borrow(), 1, "no holder is asked after the error");
}
