//! `FetchNow` is single-flight per hash, and its callers wait a bounded time.

use super::*;

#[actix_rt::test]
async fn concurrent_fetch_now_of_one_hash_runs_one_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(node(1));
    config.block_timeout = Duration::from_secs(5);
    config.need_block_timeout = Duration::from_secs(5);
    let r = rig_with(dir.path(), Duration::from_millis(300), config);
    let v = block("single flight");
    let (h, data) = (v.hash(), v.data().clone());
    put_on(&r, r.b, h, data).await;
    let asks: Vec<_> = (0..10)
        .map(|_| r.resync.send(FetchNow { hash: h }))
        .collect();
    for res in futures::future::join_all(asks).await {
        res.unwrap().unwrap();
    }
    let (gets, _, _) = r.peers.send(Stats).await.unwrap();
    assert_eq!(gets, 1, "one GetBlock for ten concurrent FetchNow");
    assert!(exists(&r, h).await);
    // Ended: a later FetchNow starts a new fetch (the entry was cleared).
    r.resync.send(FetchNow { hash: h }).await.unwrap().unwrap();
    let (gets, _, _) = r.peers.send(Stats).await.unwrap();
    assert_eq!(gets, 2);
}

#[actix_rt::test]
async fn a_fetch_now_caller_waits_under_the_peer_timeout_and_a_retry_joins_the_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(node(1));
    config.block_timeout = Duration::from_secs(5);
    config.need_block_timeout = Duration::from_millis(250);
    let r = rig_with(dir.path(), Duration::from_millis(600), config);
    let v = block("slow holder");
    let (h, data) = (v.hash(), v.data().clone());
    put_on(&r, r.b, h, data).await;
    let t = Instant::now();
    let first = r.resync.send(FetchNow { hash: h }).await.unwrap();
    assert!(
        matches!(first, Err(ResyncBlockError::FetchPending { .. })),
        "{first:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(250));
    // The fetch goes on in the background; a retry joins it.
    let retry = r.resync.send(FetchNow { hash: h }).await.unwrap();
    assert!(matches!(retry, Err(ResyncBlockError::FetchPending { .. })));
    wait_until("the block fetched", || exists(&r, h)).await;
    let (gets, _, _) = r.peers.send(Stats).await.unwrap();
    assert_eq!(gets, 1, "the retry joined the fetch under way");
}
