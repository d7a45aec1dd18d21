//! The GC fence's memory of writes (`gc_looks.rs`), through the actor's messages: only
//! hashes under an open look are remembered, and the fence still holds once looks are
//! closed or forgotten.

use std::path::Path;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use super::*;
use crate::hash::blake2sum;

const STEP: Duration = Duration::from_secs(30);

fn start(dir: &Path, horizon: Duration) -> Addr<StorageActor> {
    StorageActor::new(StorageConfig::one_dir(dir.to_path_buf(), false, None))
        .expect("storage actor starts")
        .with_gc_look_horizon(horizon)
        .start()
}

async fn ask<M>(addr: &Addr<StorageActor>, m: M) -> M::Result
where
    M: Message + Send + 'static,
    M::Result: Send,
    StorageActor: Handler<M>,
{
    tokio::time::timeout(STEP, addr.send(m))
        .await
        .expect("storage actor did not answer in time")
        .expect("storage actor mailbox closed")
}

fn block(n: usize) -> (Hash, DataBlock) {
    let data = Bytes::from((0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>());
    (blake2sum(&data), DataBlock::Plain(data))
}

async fn looks(s: &Addr<StorageActor>) -> u64 {
    ask(s, GetStorageStats).await.gc_looks
}

#[actix_rt::test]
async fn only_the_writes_of_hashes_under_a_gc_look_are_remembered() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), GC_LOOK_HORIZON);
    let (h, b) = block(256);
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    let look = ask(&s, OpenGcLook { hash: h }).await.unwrap();
    assert!(look.modified_ms.is_some(), "the look stats the block");
    let writes = (0..500).map(|_| {
        let (oh, ob) = block(64);
        s.send(WriteBlock::new(oh, ob))
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap().unwrap();
    }
    assert_eq!(
        looks(&s).await,
        1,
        "500 writes of hashes no GC look decides about must leave nothing remembered"
    );
    ask(&s, WriteBlock::new(h, b)).await.unwrap();
    assert_eq!(
        ask(
            &s,
            DeleteIfUnwritten {
                hash: h,
                since: look.since
            }
        )
        .await
        .unwrap(),
        DeleteOutcome::WrittenSince
    );
    ask(&s, CloseGcLook { hash: h }).await;
    assert_eq!(looks(&s).await, 0, "a closed look forgets its hash");
    assert_eq!(
        ask(
            &s,
            DeleteIfUnwritten {
                hash: h,
                since: look.since
            }
        )
        .await
        .unwrap(),
        DeleteOutcome::WrittenSince,
        "a delete whose look is closed cannot be checked: refused"
    );
    assert!(ask(&s, BlockExists { hash: h }).await.unwrap());
}

#[actix_rt::test]
async fn the_fence_holds_after_abandoned_looks_are_purged() {
    let horizon = Duration::from_secs(2);
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), horizon);
    let (abandoned, ab) = block(128);
    ask(&s, WriteBlock::new(abandoned, ab)).await.unwrap();
    // A look whose close was lost, then one in flight whose block is re-written.
    let old = ask(&s, OpenGcLook { hash: abandoned }).await.unwrap();
    actix_rt::time::sleep(horizon + Duration::from_millis(200)).await;
    let (h, b) = block(128);
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    let look = ask(&s, OpenGcLook { hash: h }).await.unwrap();
    assert_eq!(
        ask(&s, WriteBlock::new(h, b)).await.unwrap(),
        WriteOutcome::AlreadyPresent
    );
    // The purge (every horizon / 4) drops the abandoned look and keeps the live one.
    let deadline = Instant::now() + horizon;
    while looks(&s).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the abandoned look was never purged"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ask(
            &s,
            DeleteIfUnwritten {
                hash: h,
                since: look.since
            }
        )
        .await
        .unwrap(),
        DeleteOutcome::WrittenSince,
        "a write during a look in flight must still stop its delete after the purge"
    );
    assert_eq!(
        ask(
            &s,
            DeleteIfUnwritten {
                hash: abandoned,
                since: old.since
            }
        )
        .await
        .unwrap(),
        DeleteOutcome::WrittenSince,
        "a delete decided by a forgotten look is refused"
    );
    assert!(ask(&s, BlockExists { hash: h }).await.unwrap());
    assert!(ask(&s, BlockExists { hash: abandoned }).await.unwrap());
    // A look opened after every write may delete.
    let fresh = ask(&s, OpenGcLook { hash: h }).await.unwrap();
    assert_eq!(
        ask(
            &s,
            DeleteIfUnwritten {
                hash: h,
                since: fresh.since
            }
        )
        .await
        .unwrap(),
        DeleteOutcome::Deleted
    );
}
