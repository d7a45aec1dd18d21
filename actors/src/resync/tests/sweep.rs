//! Schedules lost in a crash are re-derived by the sweep at start: a released block
//! (`Deletable`) and an orphan file whose queue entries never became durable are still
//! collected, and a quarantined copy is fetched again at once.

use super::*;
use crate::rc::RcEntry;

/// Run `f` on its own actix system in a thread and wait for it: every actor it starts
/// is gone (the metadata store closed) when this returns, as after a crash.
fn before_the_crash<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || System::new().block_on(f()))
        .join()
        .expect("the run before the crash panicked");
}

#[actix_rt::test]
async fn a_deletable_entry_whose_queue_entry_was_lost_is_collected_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let v = block("released before the crash");
    let h = v.hash();
    before_the_crash(move || async move {
        let db = Database::builder(dir.join("meta")).open().unwrap();
        let storage = StorageActor::new(StorageConfig::one_dir(dir.join("data"), false, None))
            .unwrap()
            .start();
        // No resync to tell: the drop's queue entry is "lost" (never written).
        let rc = RefcountActor::new(
            db,
            RefcountConfig {
                gc_delay: Duration::from_millis(100),
                ..Default::default()
            },
            None,
        )
        .unwrap()
        .start();
        storage
            .send(WriteBlock::verified(v))
            .await
            .unwrap()
            .unwrap();
        let ref_id: crate::ref_id::RefId = "snap".parse().unwrap();
        rc.send(AddRef {
            hash: h,
            ref_id: ref_id.clone(),
            incarnation: 0,
        })
        .await
        .unwrap()
        .unwrap();
        rc.send(DropRef {
            hash: h,
            ref_id,
            incarnation: 0,
        })
        .await
        .unwrap()
        .unwrap();
    });
    let r = rig(d.path(), Duration::ZERO);
    assert!(matches!(
        r.refcount.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Deletable { .. }
    ));
    assert!(exists(&r, h).await);
    wait_until(
        "the released block to be collected after the restart",
        || async { !exists(&r, h).await },
    )
    .await;
}

#[actix_rt::test]
async fn an_orphan_file_whose_check_was_lost_is_collected_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let v = block("orphan before the crash");
    let h = v.hash();
    before_the_crash(move || async move {
        let storage = StorageActor::new(StorageConfig::one_dir(dir.join("data"), false, None))
            .unwrap()
            .start();
        // A crash between the block's write and its ref (or its orphan check).
        storage
            .send(WriteBlock::verified(v))
            .await
            .unwrap()
            .unwrap();
    });
    let r = rig(d.path(), Duration::ZERO);
    assert!(exists(&r, h).await);
    wait_until("the orphan to be collected after the restart", || async {
        !exists(&r, h).await
    })
    .await;
    assert_eq!(
        r.refcount.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Absent
    );
}

#[actix_rt::test]
async fn a_quarantined_copy_is_fetched_again_at_once() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    r.storage
        .send(crate::storage::SetQuarantineListener {
            listener: r.resync.clone().recipient(),
        })
        .await
        .unwrap();
    let (h, data) = stored_with_ref_data(&r, "rots on disk", "keep").await;
    put_on(&r, r.b, h, data.clone()).await;
    // Let the start-up sweep pass, so only the quarantine can schedule the fetch.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let path = block_path(d.path(), h);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // A local read (here: the scrub's check) quarantines it.
    assert!(r
        .storage
        .send(crate::storage::VerifyBlock { hash: h })
        .await
        .unwrap()
        .is_err());
    wait_until("the quarantined block to be fetched again", || async {
        r.storage
            .send(ReadBlock::uncharged(h))
            .await
            .unwrap()
            .is_ok_and(|b| b == data)
    })
    .await;
}
