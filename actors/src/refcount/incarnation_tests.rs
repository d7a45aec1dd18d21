//! Message-level tests of ref incarnations: a dropped name added again, a drop replayed
//! late, tombstones purged after the retention, values written before incarnations.

use std::time::Duration;

use actix::prelude::*;
use fjall::{Database, KeyspaceCreateOptions};

use super::*;
use crate::frame::RefRecord;

fn h(b: u8) -> Hash {
    Hash([b; 32])
}

fn r(s: &str) -> RefId {
    s.parse().expect("test ref ids are valid")
}

fn start(db: &Database, config: RefcountConfig) -> Addr<RefcountActor> {
    RefcountActor::new(db.clone(), config, None)
        .expect("actor opens its keyspaces")
        .start()
}

async fn add(
    a: &Addr<RefcountActor>,
    hash: Hash,
    id: &str,
    inc: u64,
) -> Result<RefUpdate, RefcountError> {
    let m = AddRef {
        hash,
        ref_id: r(id),
        incarnation: inc,
    };
    a.send(m).await.expect("actor alive")
}

async fn drop_ref(a: &Addr<RefcountActor>, hash: Hash, id: &str, inc: u64) -> RefUpdate {
    let m = DropRef {
        hash,
        ref_id: r(id),
        incarnation: inc,
    };
    a.send(m).await.expect("actor alive").expect("drop")
}

async fn count(a: &Addr<RefcountActor>, hash: Hash) -> u64 {
    a.send(GetRc { hash }).await.unwrap().unwrap().count()
}

async fn records(a: &Addr<RefcountActor>) -> Vec<RefRecord> {
    let q = RecordsUnder {
        prefix: Vec::new(),
        exact: false,
        limit: 100,
    };
    a.send(q).await.unwrap().unwrap()
}

#[actix_rt::test]
async fn a_dropped_name_is_added_again_in_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let a = start(&db, RefcountConfig::default());
    add(&a, h(1), "nightly", 1).await.unwrap();
    drop_ref(&a, h(1), "nightly", 1).await;
    assert_eq!(count(&a, h(1)).await, 0);
    let u = add(&a, h(1), "nightly", 2).await.unwrap();
    assert!(u.changed);
    assert_eq!(count(&a, h(1)).await, 1, "the new incarnation is live");
    // The same name on another block: a different record altogether.
    add(&a, h(2), "nightly", 2).await.unwrap();
    assert_eq!(count(&a, h(2)).await, 1);
}

/// A drop of incarnation 1 replayed (from a hint, or merged from a replica) after the
/// name was added again in incarnation 2 leaves the new incarnation live.
#[actix_rt::test]
async fn a_drop_replayed_after_a_re_add_does_not_kill_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let a = start(&db, RefcountConfig::default());
    add(&a, h(1), "r", 1).await.unwrap();
    drop_ref(&a, h(1), "r", 1).await;
    add(&a, h(1), "r", 2).await.unwrap();
    let replayed = drop_ref(&a, h(1), "r", 1).await;
    assert!(
        !replayed.changed,
        "a drop of an older incarnation changes nothing"
    );
    assert_eq!(count(&a, h(1)).await, 1);
    // The same through anti-entropy's merge, and a replayed old add too.
    let old_drop = RefRecord {
        hash: h(1),
        ref_id: r("r"),
        live: false,
        incarnation: 1,
        dropped_at: crate::rc::now_msec(),
    };
    let n = a
        .send(MergeRefs {
            records: vec![old_drop],
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    add(&a, h(1), "r", 1).await.unwrap();
    assert_eq!(count(&a, h(1)).await, 1);
    let rec = records(&a).await;
    assert_eq!((rec[0].incarnation, rec[0].live), (2, true));
    // A drop of the live incarnation does drop it.
    drop_ref(&a, h(1), "r", 2).await;
    assert_eq!(count(&a, h(1)).await, 0);
}

/// Without incarnations (every add and drop in incarnation 0, as before) the re-add is
/// refused: the test above depends on the incarnation, not on luck.
#[actix_rt::test]
async fn within_one_incarnation_dropped_still_wins() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let a = start(&db, RefcountConfig::default());
    add(&a, h(1), "r", 3).await.unwrap();
    drop_ref(&a, h(1), "r", 3).await;
    assert!(matches!(
        add(&a, h(1), "r", 3).await,
        Err(RefcountError::RefDropped { incarnation: 3, .. })
    ));
    assert_eq!(count(&a, h(1)).await, 0);
}

#[actix_rt::test]
async fn tombstones_are_purged_after_the_retention_and_not_merged_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let retention = Duration::from_secs(3600);
    let a = start(
        &db,
        RefcountConfig {
            tombstone_retention: retention,
            ..Default::default()
        },
    );
    add(&a, h(1), "gone", 1).await.unwrap();
    add(&a, h(1), "kept", 1).await.unwrap();
    drop_ref(&a, h(1), "gone", 1).await;
    let now = crate::rc::now_msec();
    let ms = retention.as_millis() as u64;
    let purge = |now_ms| PurgeTombstones { now_ms, limit: 100 };
    assert_eq!(
        a.send(purge(now + ms / 2)).await.unwrap().unwrap(),
        0,
        "too young"
    );
    assert_eq!(records(&a).await.len(), 2);
    assert_eq!(a.send(purge(now + ms + 1000)).await.unwrap().unwrap(), 1);
    let left = records(&a).await;
    assert_eq!(left.len(), 1, "only the tombstone goes: {left:?}");
    assert_eq!(left[0].ref_id, r("kept"));
    assert_eq!(count(&a, h(1)).await, 1);
    // A replica that still has the expired tombstone does not bring it back here.
    let expired = RefRecord {
        hash: h(1),
        ref_id: r("gone"),
        live: false,
        incarnation: 1,
        dropped_at: now - ms - 1000,
    };
    a.send(MergeRefs {
        records: vec![expired],
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(records(&a).await.len(), 1);
    // The name can be added again after the purge.
    add(&a, h(1), "gone", 2).await.unwrap();
    assert_eq!(count(&a, h(1)).await, 2);
}

/// A value written before incarnations existed reads as incarnation 0; a tombstone of
/// unknown drop time is stamped by the first purge pass and purged a retention later.
#[actix_rt::test]
async fn old_values_are_incarnation_0_and_old_tombstones_get_a_drop_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path()).open().unwrap();
    let refs = db
        .keyspace(REFS_KEYSPACE, KeyspaceCreateOptions::default)
        .unwrap();
    refs.insert(keys::ref_key(&h(1), &r("old-live")), [keys::LIVE])
        .unwrap();
    refs.insert(keys::ref_key(&h(1), &r("old-dead")), [keys::DROPPED])
        .unwrap();
    let retention = Duration::from_secs(60);
    let a = start(
        &db,
        RefcountConfig {
            tombstone_retention: retention,
            ..Default::default()
        },
    );
    a.send(RebuildRc).await.unwrap().unwrap();
    assert_eq!(count(&a, h(1)).await, 1);
    assert!(matches!(
        add(&a, h(1), "old-dead", 0).await,
        Err(RefcountError::RefDropped { .. })
    ));
    add(&a, h(1), "old-dead", 1).await.unwrap();
    drop_ref(&a, h(1), "old-live", 0).await;
    assert_eq!(count(&a, h(1)).await, 1);
    refs.insert(keys::ref_key(&h(2), &r("x")), [keys::DROPPED])
        .unwrap();
    let now = crate::rc::now_msec();
    let purge = |now_ms| PurgeTombstones { now_ms, limit: 100 };
    assert_eq!(
        a.send(purge(now)).await.unwrap().unwrap(),
        0,
        "stamped, not purged"
    );
    let later = now + retention.as_millis() as u64;
    assert_eq!(a.send(purge(later)).await.unwrap().unwrap(), 2);
}
