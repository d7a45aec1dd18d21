//! Worker settings through messages: range checks, and a new tranquility that takes
//! effect at once (a worker resting under the old value is woken).

use super::*;

#[actix_rt::test]
async fn tranquility_out_of_range_is_refused_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    r.resync
        .send(SetTranquility { tranquility: 7 })
        .await
        .unwrap()
        .unwrap();
    for bad in [MAX_TRANQUILITY + 1, 4_000_000_000] {
        match r
            .resync
            .send(SetTranquility { tranquility: bad })
            .await
            .unwrap()
        {
            Err(ResyncError::BadTranquility { key, value }) => {
                assert_eq!((key, value), ("resync_tranquility", bad as u64))
            }
            other => panic!("tranquility {bad} should be refused, got {other:?}"),
        }
        assert!(
            r.resync
                .send(SetScrubTranquility { tranquility: bad })
                .await
                .unwrap()
                .is_err(),
            "scrub tranquility {bad} should be refused"
        );
    }
    let st = r.resync.send(GetResyncStatus).await.unwrap();
    assert_eq!(st.tranquility, 7, "a refused value must not be applied");
    assert_eq!(
        check_tranquility("resync_tranquility", (1u64 << 32) + 1).map_err(|e| e.to_string()),
        Err("resync_tranquility must be between 0 and 100, got 4294967297".into()),
        "2^32 + 1 must not wrap to 1"
    );
}

#[actix_rt::test]
async fn a_lower_tranquility_wakes_a_resting_worker_at_once() {
    let d = tempfile::tempdir().unwrap();
    // Each fetch takes 200 ms: at tranquility 100 the worker then rests 20 s.
    let r = rig(d.path(), Duration::from_millis(200));
    r.resync
        .send(SetWorkers { workers: 1 })
        .await
        .unwrap()
        .unwrap();
    r.resync
        .send(SetTranquility {
            tranquility: MAX_TRANQUILITY,
        })
        .await
        .unwrap()
        .unwrap();
    let (first, second) = (block("rest one"), block("rest two"));
    for v in [&first, &second] {
        put_on(&r, r.b, v.hash(), v.data().clone()).await;
        add_ref_quietly(&r, v.hash()).await;
    }
    let now = |hash| Schedule {
        hash,
        delay: Duration::ZERO,
        reason: ScheduleReason::Manual,
    };
    r.resync.send(now(first.hash())).await.unwrap();
    wait_until("the first block to be fetched", || async {
        exists(&r, first.hash()).await
    })
    .await;
    r.resync.send(now(second.hash())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !exists(&r, second.hash()).await,
        "the only worker should still be resting after the first block"
    );
    r.resync
        .send(SetTranquility { tranquility: 0 })
        .await
        .unwrap()
        .unwrap();
    let t = Instant::now();
    while !exists(&r, second.hash()).await {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the resting worker did not wake when tranquility went to 0 \
             (it would have slept ~20 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
