//! RefcountActor tests: messages in, replies and keyspace contents checked.

use std::path::Path;
use std::time::Instant;

use super::*;
use crate::hash::blake2sum;

fn open(dir: &Path) -> Database {
    Database::builder(dir).open().expect("opening fjall")
}

fn start(
    db: Database,
    gc: Duration,
    on_change: Option<Recipient<RcChanged>>,
) -> Addr<RefcountActor> {
    RefcountActor::new(
        db,
        RefcountConfig {
            gc_delay: gc,
            sync: SyncMode::Batched,
        },
        on_change,
    )
    .expect("starting refcount actor")
    .start()
}

fn r(s: &str) -> RefId {
    s.parse().unwrap()
}

/// Collects change notifications.
#[derive(Default)]
struct Changes(Vec<RcChanged>);
impl Actor for Changes {
    type Context = Context<Self>;
}
impl Handler<RcChanged> for Changes {
    type Result = ();
    fn handle(&mut self, m: RcChanged, _: &mut Context<Self>) {
        self.0.push(m);
    }
}
#[derive(Message)]
#[rtype(result = "Vec<RcChanged>")]
struct Take;
impl Handler<Take> for Changes {
    type Result = MessageResult<Take>;
    fn handle(&mut self, _: Take, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::mem::take(&mut self.0))
    }
}

#[actix_rt::test]
async fn refs_are_idempotent_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let a = start(open(d.path()), Duration::from_secs(600), None);
    let h = blake2sum(b"x");
    let u = a
        .send(AddRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        u,
        RefUpdate {
            changed: true,
            rc: RcEntry::Present { count: 1 }
        }
    );
    let u = a
        .send(AddRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!u.changed, "repeated AddRef must not count twice");
    assert_eq!(u.rc.count(), 1);
    a.send(AddRef {
        hash: h,
        ref_id: r("b"),
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(a.send(GetRc { hash: h }).await.unwrap().unwrap().count(), 2);
    let u = a
        .send(DropRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.changed, u.rc.count()), (true, 1));
    let u = a
        .send(DropRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!u.changed, "repeated DropRef must not count twice");
    let refs = a.send(ListRefs { hash: h }).await.unwrap().unwrap();
    assert_eq!(
        refs,
        vec![(r("a"), RefState::Dropped), (r("b"), RefState::Live)]
    );
}

#[actix_rt::test]
async fn a_dropped_ref_cannot_be_added_again() {
    let d = tempfile::tempdir().unwrap();
    let a = start(open(d.path()), Duration::from_secs(600), None);
    let h = blake2sum(b"y");
    // Dropping a ref never seen records a tombstone (a late add from a replica loses).
    let u = a
        .send(DropRef {
            hash: h,
            ref_id: r("z"),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.rc, RcEntry::Absent);
    let e = a
        .send(AddRef {
            hash: h,
            ref_id: r("z"),
        })
        .await
        .unwrap();
    assert!(
        matches!(e, Err(RefcountError::RefDropped { .. })),
        "got {e:?}"
    );
    assert_eq!(
        a.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Absent
    );
}

#[actix_rt::test]
async fn last_drop_starts_the_grace_period_and_clear_waits_for_it() {
    let d = tempfile::tempdir().unwrap();
    let a = start(open(d.path()), Duration::from_millis(300), None);
    let h = blake2sum(b"g");
    a.send(AddRef {
        hash: h,
        ref_id: r("a"),
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        !a.send(ClearIfDeletable { hash: h }).await.unwrap().unwrap(),
        "a live block is not deletable"
    );
    let t0 = now_msec();
    let u = a
        .send(DropRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
    match u.rc {
        RcEntry::Deletable { at_time } => {
            assert!(at_time >= t0 + 300 && at_time <= now_msec() + 300)
        }
        other => panic!("expected Deletable, got {other:?}"),
    }
    assert!(
        !a.send(ClearIfDeletable { hash: h }).await.unwrap().unwrap(),
        "cleared before the grace period"
    );
    actix_rt::time::sleep(Duration::from_millis(350)).await;
    assert!(
        a.send(ClearIfDeletable { hash: h }).await.unwrap().unwrap(),
        "not cleared after the grace period"
    );
    assert_eq!(
        a.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Absent
    );
    // A new ref during a grace period wins.
    a.send(AddRef {
        hash: h,
        ref_id: r("b"),
    })
    .await
    .unwrap()
    .unwrap();
    a.send(DropRef {
        hash: h,
        ref_id: r("b"),
    })
    .await
    .unwrap()
    .unwrap();
    let u = a
        .send(AddRef {
            hash: h,
            ref_id: r("c"),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.rc, RcEntry::Present { count: 1 });
}

#[actix_rt::test]
async fn transitions_between_zero_and_nonzero_are_notified() {
    let d = tempfile::tempdir().unwrap();
    let changes = Changes::default().start();
    let a = start(
        open(d.path()),
        Duration::from_secs(600),
        Some(changes.clone().recipient()),
    );
    let h = blake2sum(b"n");
    for m in ["a", "b"] {
        a.send(AddRef {
            hash: h,
            ref_id: r(m),
        })
        .await
        .unwrap()
        .unwrap();
    }
    for m in ["a", "b"] {
        a.send(DropRef {
            hash: h,
            ref_id: r(m),
        })
        .await
        .unwrap()
        .unwrap();
    }
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let got = changes.send(Take).await.unwrap();
    assert_eq!(got.len(), 2, "only 0→1 and 1→0 are notified: {got:?}");
    assert_eq!(
        (got[0].old, got[0].new),
        (RcEntry::Absent, RcEntry::Present { count: 1 })
    );
    assert_eq!(got[1].old, RcEntry::Present { count: 1 });
    assert!(matches!(got[1].new, RcEntry::Deletable { .. }));
}

#[actix_rt::test]
async fn state_survives_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let h = blake2sum(b"p");
    {
        let db = open(d.path());
        let a = start(db, Duration::from_secs(600), None);
        a.send(AddRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
        a.send(AddRef {
            hash: h,
            ref_id: r("b"),
        })
        .await
        .unwrap()
        .unwrap();
        a.send(DropRef {
            hash: h,
            ref_id: r("b"),
        })
        .await
        .unwrap()
        .unwrap();
    }
    // The actor above is dropped with this System's handles; reopen the directory.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    let a = start(open(d.path()), Duration::from_secs(600), None);
    assert_eq!(
        a.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Present { count: 1 }
    );
    let refs = a.send(ListRefs { hash: h }).await.unwrap().unwrap();
    assert_eq!(
        refs,
        vec![(r("a"), RefState::Live), (r("b"), RefState::Dropped)]
    );
}

#[actix_rt::test]
async fn corrupt_rc_value_is_an_error_and_rebuild_repairs_it() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let a = start(db.clone(), Duration::from_secs(600), None);
    let h = blake2sum(b"c");
    let other = blake2sum(b"other");
    for m in ["a", "b", "c"] {
        a.send(AddRef {
            hash: h,
            ref_id: r(m),
        })
        .await
        .unwrap()
        .unwrap();
    }
    a.send(AddRef {
        hash: other,
        ref_id: r("a"),
    })
    .await
    .unwrap()
    .unwrap();
    // Corrupt the value behind the actor's back, as a disk fault would.
    let rc = db.keyspace("rc", KeyspaceCreateOptions::default).unwrap();
    rc.insert(h.as_bytes().to_vec(), b"garbage".to_vec())
        .unwrap();
    let e = a.send(GetRc { hash: h }).await.unwrap();
    assert!(
        matches!(e, Err(RefcountError::CorruptEntry { .. })),
        "got {e:?}"
    );
    let rep = a.send(RebuildRc).await.unwrap().unwrap();
    assert_eq!(
        rep,
        RebuildReport {
            entries: 2,
            fixed: 1
        }
    );
    assert_eq!(
        a.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Present { count: 3 }
    );
    // A mutation on a corrupt entry recounts instead of failing.
    rc.insert(h.as_bytes().to_vec(), vec![1, 2, 3]).unwrap();
    let u = a
        .send(DropRef {
            hash: h,
            ref_id: r("a"),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.rc, RcEntry::Present { count: 2 });
    assert_eq!(
        a.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Present { count: 2 }
    );
}

#[actix_rt::test]
async fn list_rc_hashes_pages_in_order() {
    let d = tempfile::tempdir().unwrap();
    let a = start(open(d.path()), Duration::from_secs(600), None);
    let mut want: Vec<Hash> = (0..50u32).map(|i| blake2sum(&i.to_le_bytes())).collect();
    for h in &want {
        a.send(AddRef {
            hash: *h,
            ref_id: r("x"),
        })
        .await
        .unwrap()
        .unwrap();
    }
    want.sort();
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = a
            .send(ListRcHashes { after, limit: 8 })
            .await
            .unwrap()
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        got.extend(page);
    }
    assert_eq!(got, want);
}

#[actix_rt::test]
async fn a_thousand_concurrent_adds_are_exact() {
    let d = tempfile::tempdir().unwrap();
    let a = start(open(d.path()), Duration::from_secs(600), None);
    let h = blake2sum(b"many");
    let futs: Vec<_> = (0..1000)
        .map(|i| {
            a.send(AddRef {
                hash: h,
                ref_id: r(&format!("r{i}")),
            })
        })
        .collect();
    for res in futures::future::join_all(futs).await {
        res.unwrap().unwrap();
    }
    assert_eq!(
        a.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Present { count: 1000 }
    );
}

/// AddRef ops/s with one journal sync per op vs group commit, in the same run.
/// `cargo test --release -p blocknode-actors refcount_sync_bench -- --ignored --nocapture`
#[actix_rt::test]
#[ignore]
async fn refcount_sync_bench() {
    use futures::StreamExt;
    for mode in [SyncMode::PerOp, SyncMode::Batched] {
        let d = tempfile::tempdir_in(".").unwrap();
        let a = RefcountActor::new(
            open(d.path()),
            RefcountConfig {
                gc_delay: Duration::from_secs(600),
                sync: mode,
            },
            None,
        )
        .unwrap()
        .start();
        let n = 2000;
        let t = Instant::now();
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut i = 0;
        while i < 64 {
            pending.push(a.send(AddRef {
                hash: blake2sum(&(i as u32).to_le_bytes()),
                ref_id: r("b"),
            }));
            i += 1;
        }
        while let Some(res) = pending.next().await {
            res.unwrap().unwrap();
            if i < n {
                pending.push(a.send(AddRef {
                    hash: blake2sum(&(i as u32).to_le_bytes()),
                    ref_id: r("b"),
                }));
                i += 1;
            }
        }
        println!(
            "{mode:?}: {:.0} AddRef/s (64 in flight)",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
}
