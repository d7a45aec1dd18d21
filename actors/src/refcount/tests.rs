//! Message-level tests of the refcount actor: each starts the actor in an actix System,
//! talks to it through messages, and checks replies and what the fjall keyspaces hold.

use std::time::{Duration, Instant};

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use futures::stream::{FuturesUnordered, StreamExt};

use super::*;

fn h(b: u8) -> Hash {
    Hash([b; 32])
}

fn r(s: &str) -> RefId {
    s.parse().expect("test ref ids are valid")
}

fn open_db(dir: &std::path::Path) -> Database {
    Database::builder(dir).open().expect("open fjall database")
}

fn keyspace(db: &Database, name: &str) -> Keyspace {
    db.keyspace(name, KeyspaceCreateOptions::default)
        .expect("open keyspace")
}

fn start(db: &Database, config: RefcountConfig) -> Addr<RefcountActor> {
    RefcountActor::new(db.clone(), config, None)
        .expect("actor opens its keyspaces")
        .start()
}

async fn add(a: &Addr<RefcountActor>, hash: Hash, id: &str) -> Result<RefUpdate, RefcountError> {
    a.send(AddRef {
        incarnation: 0,
        hash,
        ref_id: r(id),
    })
    .await
    .expect("actor alive")
}

async fn drop_ref(
    a: &Addr<RefcountActor>,
    hash: Hash,
    id: &str,
) -> Result<RefUpdate, RefcountError> {
    a.send(DropRef {
        incarnation: 0,
        hash,
        ref_id: r(id),
    })
    .await
    .expect("actor alive")
}

async fn rc(a: &Addr<RefcountActor>, hash: Hash) -> Result<RcEntry, RefcountError> {
    a.send(GetRc { hash }).await.expect("actor alive")
}

/// Collects the `RcChanged` notices it is sent.
#[derive(Default)]
struct Recorder(Vec<RcChanged>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<RcChanged> for Recorder {
    type Result = ();
    fn handle(&mut self, m: RcChanged, _ctx: &mut Context<Self>) {
        self.0.push(m);
    }
}

#[derive(Message)]
#[rtype(result = "Vec<RcChanged>")]
struct Recorded;

impl Handler<Recorded> for Recorder {
    type Result = MessageResult<Recorded>;
    fn handle(&mut self, _m: Recorded, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.0.clone())
    }
}

/// An actor with no grace period whose `RcChanged` notices go to a [`Recorder`]; also
/// returns its config (to start another actor over the same store).
fn start_recorded_no_grace(db: &Database) -> (Addr<RefcountActor>, Addr<Recorder>, RefcountConfig) {
    let rec = Recorder::default().start();
    let config = RefcountConfig {
        gc_delay: Duration::ZERO,
        ..Default::default()
    };
    let a = RefcountActor::new(db.clone(), config.clone(), Some(rec.clone().recipient()))
        .unwrap()
        .start();
    (a, rec, config)
}

#[actix_rt::test]
async fn add_ref_counts_distinct_refs_and_repeats_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db, RefcountConfig::default());

    let u = add(&a, h(1), "r1").await.unwrap();
    assert_eq!((u.changed, u.rc), (true, RcEntry::Present { count: 1 }));
    let u = add(&a, h(1), "r1").await.unwrap();
    assert_eq!(
        (u.changed, u.rc),
        (false, RcEntry::Present { count: 1 }),
        "a repeated AddRef must not count twice"
    );
    let u = add(&a, h(1), "r2").await.unwrap();
    assert_eq!((u.changed, u.rc), (true, RcEntry::Present { count: 2 }));
    assert_eq!(rc(&a, h(1)).await.unwrap(), RcEntry::Present { count: 2 });
    assert_eq!(rc(&a, h(2)).await.unwrap(), RcEntry::Absent);

    let refs = a.send(ListRefs { hash: h(1) }).await.unwrap().unwrap();
    assert_eq!(
        refs,
        vec![(r("r1"), RefState::Live), (r("r2"), RefState::Live)]
    );

    // The reply came after the write: the keyspaces hold it.
    let refs_ks = keyspace(&db, REFS_KEYSPACE);
    let rc_ks = keyspace(&db, RC_KEYSPACE);
    let stored = refs_ks.get(keys::ref_key(&h(1), &r("r2"))).unwrap();
    let stored = stored.expect("stored");
    assert_eq!(keys::decode_rec(b"k", &stored), RefRec::live(0));
    let stored = rc_ks.get(h(1).as_bytes()).unwrap();
    assert_eq!(stored.as_deref(), Some(&2u64.to_be_bytes()[..]));
}

#[actix_rt::test]
async fn drop_ref_is_idempotent_and_last_drop_starts_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let gc_delay = Duration::from_secs(600);
    let a = start(
        &db,
        RefcountConfig {
            gc_delay,
            ..Default::default()
        },
    );
    add(&a, h(1), "r1").await.unwrap();
    add(&a, h(1), "r2").await.unwrap();

    let u = drop_ref(&a, h(1), "r1").await.unwrap();
    assert_eq!((u.changed, u.rc), (true, RcEntry::Present { count: 1 }));
    let u = drop_ref(&a, h(1), "r1").await.unwrap();
    assert_eq!(
        (u.changed, u.rc),
        (false, RcEntry::Present { count: 1 }),
        "a repeated DropRef must not count twice"
    );

    let before = now_msec();
    let u = drop_ref(&a, h(1), "r2").await.unwrap();
    let after = now_msec();
    let gc_ms = gc_delay.as_millis() as u64;
    match u.rc {
        RcEntry::Deletable { at_time } => assert!(
            (before + gc_ms..=after + gc_ms).contains(&at_time),
            "deadline {at_time} should be now + gc_delay"
        ),
        other => panic!("last drop should make the entry deletable, got {other:?}"),
    }
    let refs = a.send(ListRefs { hash: h(1) }).await.unwrap().unwrap();
    assert_eq!(
        refs,
        vec![(r("r1"), RefState::Dropped), (r("r2"), RefState::Dropped)],
        "dropped refs stay as tombstones"
    );
    // A repeated last drop keeps the first deadline.
    let again = drop_ref(&a, h(1), "r2").await.unwrap();
    assert_eq!(again.rc, u.rc);
}

#[actix_rt::test]
async fn dropped_ref_cannot_be_added_again_in_the_same_incarnation_even_if_never_added() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db, RefcountConfig::default());

    add(&a, h(1), "r1").await.unwrap();
    drop_ref(&a, h(1), "r1").await.unwrap();
    let e = add(&a, h(1), "r1").await;
    assert!(
        matches!(&e, Err(RefcountError::RefDropped { hash, ref_id, .. }) if *hash == h(1) && *ref_id == r("r1")),
        "re-adding a dropped ref in its incarnation must fail, got {e:?}"
    );

    // A drop that arrives before its add (another replica's order) records a tombstone.
    let u = drop_ref(&a, h(2), "early").await.unwrap();
    assert_eq!((u.changed, u.rc), (true, RcEntry::Absent));
    let refs_ks = keyspace(&db, REFS_KEYSPACE);
    let stored = refs_ks.get(keys::ref_key(&h(2), &r("early"))).unwrap();
    let stored = keys::decode_rec(b"k", &stored.expect("tombstone stored"));
    assert_eq!((stored.state, stored.incarnation), (RefState::Dropped, 0));
    assert!(stored.dropped_at > 0, "a tombstone keeps its drop time");
    assert!(matches!(
        add(&a, h(2), "early").await,
        Err(RefcountError::RefDropped { .. })
    ));
    assert_eq!(rc(&a, h(2)).await.unwrap(), RcEntry::Absent);
}

#[actix_rt::test]
async fn deletable_entry_is_cleared_only_after_gc_delay() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(
        &db,
        RefcountConfig {
            gc_delay: Duration::from_millis(200),
            ..Default::default()
        },
    );
    add(&a, h(1), "r1").await.unwrap();
    let clear = |a: Addr<RefcountActor>, hash| async move {
        a.send(ClearIfDeletable { hash }).await.unwrap().unwrap()
    };
    assert!(
        !clear(a.clone(), h(1)).await,
        "a referenced block is not deletable"
    );
    drop_ref(&a, h(1), "r1").await.unwrap();
    assert!(
        !clear(a.clone(), h(1)).await,
        "must not clear during the grace period"
    );
    assert!(matches!(
        rc(&a, h(1)).await.unwrap(),
        RcEntry::Deletable { .. }
    ));

    actix_rt::time::sleep(Duration::from_millis(250)).await;
    assert!(clear(a.clone(), h(1)).await, "grace period is over");
    assert_eq!(rc(&a, h(1)).await.unwrap(), RcEntry::Absent);
    let rc_ks = keyspace(&db, RC_KEYSPACE);
    assert!(
        rc_ks.get(h(1).as_bytes()).unwrap().is_none(),
        "rc key removed"
    );
    assert!(!clear(a.clone(), h(1)).await, "nothing left to clear");
    assert!(
        !clear(a.clone(), h(9)).await,
        "an unknown block has no entry to clear"
    );
}

#[actix_rt::test]
async fn new_ref_during_grace_period_keeps_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(
        &db,
        RefcountConfig {
            gc_delay: Duration::from_millis(50),
            ..Default::default()
        },
    );
    add(&a, h(1), "old").await.unwrap();
    drop_ref(&a, h(1), "old").await.unwrap();
    let u = add(&a, h(1), "new").await.unwrap();
    assert_eq!(u.rc, RcEntry::Present { count: 1 });
    actix_rt::time::sleep(Duration::from_millis(80)).await;
    let cleared = a.send(ClearIfDeletable { hash: h(1) }).await.unwrap();
    assert!(
        !cleared.unwrap(),
        "a block referenced again must not be cleared"
    );
}

#[actix_rt::test]
async fn rc_changes_are_announced_only_across_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let rec = Recorder::default().start();
    let a = RefcountActor::new(
        db.clone(),
        RefcountConfig::default(),
        Some(rec.clone().recipient()),
    )
    .unwrap()
    .start();

    add(&a, h(1), "r1").await.unwrap(); // 0 -> 1
    add(&a, h(1), "r2").await.unwrap(); // 1 -> 2: silent
    add(&a, h(1), "r2").await.unwrap(); // repeat: silent
    drop_ref(&a, h(1), "r1").await.unwrap(); // 2 -> 1: silent
    let last = drop_ref(&a, h(1), "r2").await.unwrap(); // 1 -> 0
    drop_ref(&a, h(3), "never").await.unwrap(); // 0 -> 0: silent

    // Notices are sent before the replies of their batch, so they are queued already.
    let seen = rec.send(Recorded).await.unwrap();
    assert_eq!(
        seen,
        vec![
            RcChanged {
                hash: h(1),
                old: RcEntry::Absent,
                new: RcEntry::Present { count: 1 },
                fenced: false,
            },
            RcChanged {
                hash: h(1),
                old: RcEntry::Present { count: 1 },
                new: last.rc,
                fenced: false,
            },
        ],
        "exactly the 0->1 and 1->0 transitions must be announced"
    );
}

#[test]
fn refs_and_rc_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let answers = |db: Database| async move {
        let a = start(&db, RefcountConfig::default());
        let rc1 = rc(&a, h(1)).await.unwrap();
        let rc2 = rc(&a, h(2)).await.unwrap();
        let refs = a.send(ListRefs { hash: h(1) }).await.unwrap().unwrap();
        let list = a
            .send(ListRcHashes {
                after: None,
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        (rc1, rc2, refs, list)
    };

    let first = System::new().block_on(async {
        let db = open_db(dir.path());
        let a = start(&db, RefcountConfig::default());
        add(&a, h(1), "r1").await.unwrap();
        add(&a, h(1), "r2").await.unwrap();
        add(&a, h(2), "x").await.unwrap();
        drop_ref(&a, h(2), "x").await.unwrap();
        drop_ref(&a, h(1), "r2").await.unwrap();
        answers(db).await
    });
    // The System, the actor and every Database handle are gone here.
    let second = System::new().block_on(async { answers(open_db(dir.path())).await });

    assert_eq!(first.0, RcEntry::Present { count: 1 });
    assert!(matches!(first.1, RcEntry::Deletable { .. }));
    assert_eq!(
        first, second,
        "answers after reopening must equal those before"
    );
}

#[actix_rt::test]
async fn corrupt_rc_entry_is_reported_and_repaired_by_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let gc_delay = Duration::from_secs(600);
    let a = start(
        &db,
        RefcountConfig {
            gc_delay,
            ..Default::default()
        },
    );
    add(&a, h(1), "r1").await.unwrap();
    add(&a, h(1), "r2").await.unwrap();
    add(&a, h(2), "r1").await.unwrap();
    add(&a, h(4), "ok").await.unwrap();

    let refs_ks = keyspace(&db, REFS_KEYSPACE);
    let rc_ks = keyspace(&db, RC_KEYSPACE);
    rc_ks.insert(h(1).as_bytes(), vec![1u8, 2, 3]).unwrap(); // garbage
    rc_ks.insert(h(2).as_bytes(), 7u64.to_be_bytes()).unwrap(); // wrong count
    rc_ks.insert(h(3).as_bytes(), 1u64.to_be_bytes()).unwrap(); // no live ref at all
    refs_ks
        .insert(keys::ref_key(&h(5), &r("lost")), [keys::LIVE])
        .unwrap(); // rc missing

    match rc(&a, h(1)).await {
        Err(RefcountError::CorruptEntry { hash, source }) => {
            assert_eq!(hash, h(1));
            assert_eq!(source.0, vec![1, 2, 3]);
        }
        other => panic!("corrupt bytes must be a CorruptEntry error, got {other:?}"),
    }
    let clear = a.send(ClearIfDeletable { hash: h(1) }).await.unwrap();
    assert!(matches!(clear, Err(RefcountError::CorruptEntry { .. })));

    let before = now_msec();
    let report = a.send(RebuildRc).await.unwrap().unwrap();
    assert_eq!(
        report,
        RebuildReport {
            entries: 5,
            fixed: 4
        },
        "h1..h5 examined; all but h4 wrong"
    );
    assert_eq!(rc(&a, h(1)).await.unwrap(), RcEntry::Present { count: 2 });
    assert_eq!(rc(&a, h(2)).await.unwrap(), RcEntry::Present { count: 1 });
    match rc(&a, h(3)).await.unwrap() {
        RcEntry::Deletable { at_time } => assert!(at_time >= before + 600_000),
        other => panic!("an entry without live refs must become deletable, got {other:?}"),
    }
    assert_eq!(rc(&a, h(4)).await.unwrap(), RcEntry::Present { count: 1 });
    assert_eq!(rc(&a, h(5)).await.unwrap(), RcEntry::Present { count: 1 });
    let stored = rc_ks.get(h(1).as_bytes()).unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(&2u64.to_be_bytes()[..]),
        "fix persisted"
    );

    let again = a.send(RebuildRc).await.unwrap().unwrap();
    assert_eq!(again.fixed, 0, "a second rebuild must find nothing to fix");
}

#[actix_rt::test]
async fn add_ref_on_corrupt_rc_recounts_from_refs() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db, RefcountConfig::default());
    add(&a, h(1), "r1").await.unwrap();
    add(&a, h(1), "r2").await.unwrap();
    keyspace(&db, RC_KEYSPACE)
        .insert(h(1).as_bytes(), vec![0xff; 5])
        .unwrap();

    let u = add(&a, h(1), "r3").await.unwrap();
    assert_eq!(u.rc, RcEntry::Present { count: 3 }, "2 recounted + 1 new");
    // Even a no-op repairs the stored bytes.
    keyspace(&db, RC_KEYSPACE)
        .insert(h(1).as_bytes(), vec![0xff; 5])
        .unwrap();
    let u = add(&a, h(1), "r3").await.unwrap();
    assert_eq!((u.changed, u.rc), (false, RcEntry::Present { count: 3 }));
    assert_eq!(rc(&a, h(1)).await.unwrap(), RcEntry::Present { count: 3 });
}

#[actix_rt::test]
async fn list_rc_hashes_pages_in_ascending_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(
        &db,
        RefcountConfig {
            gc_delay: Duration::ZERO,
            ..Default::default()
        },
    );
    for b in [4u8, 1, 3, 2, 5] {
        add(&a, h(b), "r").await.unwrap();
    }
    // h3 goes through deletable to absent and leaves the list.
    drop_ref(&a, h(3), "r").await.unwrap();
    assert!(a
        .send(ClearIfDeletable { hash: h(3) })
        .await
        .unwrap()
        .unwrap());

    let page = |after, limit| {
        let a = a.clone();
        async move {
            a.send(ListRcHashes { after, limit })
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(page(None, 2).await, vec![h(1), h(2)]);
    assert_eq!(page(Some(h(2)), 2).await, vec![h(4), h(5)]);
    assert_eq!(page(Some(h(5)), 2).await, Vec::<Hash>::new());
    assert_eq!(page(None, 0).await, Vec::<Hash>::new());
    assert_eq!(page(None, 100).await, vec![h(1), h(2), h(4), h(5)]);
}

#[actix_rt::test]
async fn thousand_concurrent_add_refs_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db, RefcountConfig::default());
    let replies = futures::future::join_all((0..1000).map(|i| {
        a.send(AddRef {
            incarnation: 0,
            hash: h(7),
            ref_id: r(&format!("ref-{i}")),
        })
    }))
    .await;
    for (i, rep) in replies.into_iter().enumerate() {
        let u = rep.expect("actor alive").expect("AddRef succeeds");
        assert!(u.changed, "AddRef #{i} should have changed the refs");
    }
    assert_eq!(
        rc(&a, h(7)).await.unwrap(),
        RcEntry::Present { count: 1000 }
    );
    let refs_ks = keyspace(&db, REFS_KEYSPACE);
    assert_eq!(refs_ks.prefix(h(7).as_bytes()).count(), 1000);
}

#[actix_rt::test]
async fn per_op_sync_mode_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(
        &db,
        RefcountConfig {
            sync: SyncMode::PerOp,
            ..Default::default()
        },
    );
    let replies = futures::future::join_all((0..50).map(|i| {
        a.send(AddRef {
            incarnation: 0,
            hash: h(8),
            ref_id: r(&format!("p{i}")),
        })
    }))
    .await;
    assert!(replies.into_iter().all(|x| matches!(x, Ok(Ok(_)))));
    drop_ref(&a, h(8), "p0").await.unwrap();
    assert_eq!(rc(&a, h(8)).await.unwrap(), RcEntry::Present { count: 49 });
}

/// AddRef throughput with one journal sync per op vs group commit. Run with
/// `cargo test --release -p blocknode-actors add_ref_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release"]
fn add_ref_throughput_per_op_vs_batched() {
    const OPS: usize = 2000;
    const IN_FLIGHT: usize = 64;
    for sync in [SyncMode::PerOp, SyncMode::Batched] {
        let dir = tempfile::tempdir().unwrap();
        let elapsed = System::new().block_on(async {
            let db = open_db(dir.path());
            let a = start(
                &db,
                RefcountConfig {
                    sync,
                    ..Default::default()
                },
            );
            let t0 = Instant::now();
            let mut inflight = FuturesUnordered::<Request<RefcountActor, AddRef>>::new();
            let mut done = 0;
            for i in 0..OPS {
                if inflight.len() == IN_FLIGHT {
                    inflight.next().await.unwrap().unwrap().unwrap();
                    done += 1;
                }
                inflight.push(a.send(AddRef {
                    incarnation: 0,
                    hash: h((i % 251) as u8),
                    ref_id: r(&format!("bench-{i}")),
                }));
            }
            while let Some(x) = inflight.next().await {
                x.unwrap().unwrap();
                done += 1;
            }
            assert_eq!(done, OPS);
            t0.elapsed()
        });
        println!(
            "{sync:?}: {OPS} AddRef, {IN_FLIGHT} in flight: {:.2?} = {:.0} ops/s",
            elapsed,
            OPS as f64 / elapsed.as_secs_f64()
        );
    }
}

#[actix_rt::test]
async fn forget_partition_removes_only_that_partition_without_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let rec = Recorder::default().start();
    let a = RefcountActor::new(
        db.clone(),
        RefcountConfig::default(),
        Some(rec.clone().recipient()),
    )
    .unwrap()
    .start();
    // Partition 7: two blocks (one live, one only a tombstone); partition 8: one block.
    let mut in7 = [7u8; 32];
    in7[1] = 0; // sorts before [7; 32]: the rc range must start at [7, 0, ..]
    let in7 = Hash(in7);
    add(&a, in7, "a").await.unwrap();
    add(&a, in7, "b").await.unwrap();
    drop_ref(&a, h(7), "gone").await.unwrap();
    add(&a, h(8), "keep").await.unwrap();
    drop_ref(&a, h(8), "dead").await.unwrap();

    // A limit of 2 takes two messages for the three refs of partition 7.
    let first = a
        .send(ForgetPartition {
            partition: 7,
            limit: 2,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.more,
        "limit reached, more must be reported: {first:?}"
    );
    let second = a
        .send(ForgetPartition {
            partition: 7,
            limit: 2,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.refs + second.refs, 3, "{first:?} then {second:?}");
    let after = rc(&a, in7).await.unwrap();
    assert!(
        matches!(after, RcEntry::Deletable { at_time } if at_time > now_msec()),
        "a forgotten block must wait out the grace period, got {after:?}"
    );
    assert!(
        a.send(ListRefs { hash: in7 })
            .await
            .unwrap()
            .unwrap()
            .is_empty(),
        "forgotten refs are still listed"
    );
    // Forgotten, not dropped: the same ref id can be added again (no tombstone left).
    add(&a, h(7), "gone")
        .await
        .expect("a forgotten tombstone must not refuse a later add");
    // Partition 8 is untouched, including its tombstone.
    assert_eq!(rc(&a, h(8)).await.unwrap(), RcEntry::Present { count: 1 });
    assert!(matches!(
        add(&a, h(8), "dead").await,
        Err(RefcountError::RefDropped { .. })
    ));
    let seen = rec.send(Recorded).await.unwrap();
    assert!(
        seen.iter()
            .any(|c| c.hash == in7 && c.old == RcEntry::Present { count: 2 } && c.new == after),
        "the fall to zero must be announced so resync offloads the block: {seen:?}"
    );
    // And it is durable: reopen and look again.
    drop(a);
    let refs = keyspace(&db, REFS_KEYSPACE);
    let n7 = refs.prefix([7u8]).count();
    assert_eq!(
        n7, 1,
        "only the re-added ref may remain in partition 7 on disk"
    );
}

#[actix_rt::test]
async fn the_gc_fence_is_refused_for_a_needed_block_flags_a_new_ref_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let (a, rec, config) = start_recorded_no_grace(&db);
    add(&a, h(1), "r1").await.unwrap();
    let fence = |hash| a.send(FenceForDelete { hash });
    assert!(
        !fence(h(1)).await.unwrap().unwrap(),
        "a referenced block must not be fenced"
    );
    drop_ref(&a, h(1), "r1").await.unwrap();
    assert!(
        fence(h(1)).await.unwrap().unwrap(),
        "a deletable block is fenced"
    );
    assert!(
        !fence(h(1)).await.unwrap().unwrap(),
        "a second fence on the same hash is refused"
    );
    // A new ref meets the fence: its notice says so (resync then fetches at once).
    add(&a, h(1), "r2").await.unwrap();
    let seen = rec.send(Recorded).await.unwrap();
    let last = seen.last().expect("the 0 -> 1 move is announced");
    assert!(
        last.fenced && last.new.count() == 1,
        "a ref that meets the fence must be flagged: {last:?}"
    );
    // Storage deleted the block meanwhile: the fence is lifted, the ref kept, and resync
    // told again to fetch.
    let cleared = a
        .send(EndGcFence {
            hash: h(1),
            deleted: true,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!cleared, "a referenced entry must not be cleared");
    assert_eq!(rc(&a, h(1)).await.unwrap().count(), 1);
    add(&a, h(1), "r3").await.unwrap();
    drop_ref(&a, h(1), "r2").await.unwrap();
    drop_ref(&a, h(1), "r3").await.unwrap();
    assert!(
        fence(h(1)).await.unwrap().unwrap(),
        "the fence can be set again"
    );
    // A crash mid-delete: a new actor over the same store finds the fence, lifts it,
    // and a block referenced again meanwhile is announced as fenced.
    add(&a, h(1), "r4").await.unwrap();
    drop(a);
    let rec2 = Recorder::default().start();
    let b = RefcountActor::new(db.clone(), config, Some(rec2.clone().recipient()))
        .unwrap()
        .start();
    assert_eq!(rc(&b, h(1)).await.unwrap().count(), 1);
    // The lift is durable before the next write's reply.
    add(&b, h(2), "x").await.unwrap();
    let seen = rec2.send(Recorded).await.unwrap();
    assert!(
        seen.iter().any(|c| c.hash == h(1) && c.fenced),
        "a stale fence on a referenced block must ask for a fetch: {seen:?}"
    );
    assert!(
        !keyspace(&db, FENCE_KEYSPACE)
            .contains_key(h(1).as_bytes())
            .unwrap(),
        "the stale fence must be lifted"
    );
}

#[actix_rt::test]
async fn a_stored_ref_counts_like_add_ref_but_tells_resync_only_when_it_meets_a_fence() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let (a, rec, _) = start_recorded_no_grace(&db);
    let stored = |hash, id: &str| {
        a.send(AddStoredRef {
            incarnation: 0,
            hash,
            ref_id: r(id),
        })
    };
    let u = stored(h(1), "r1").await.unwrap().unwrap();
    assert_eq!((u.changed, u.rc), (true, RcEntry::Present { count: 1 }));
    assert_eq!(
        keyspace(&db, RC_KEYSPACE)
            .get(h(1).as_bytes())
            .unwrap()
            .as_deref(),
        Some(&1u64.to_be_bytes()[..]),
        "the count must be durable before the reply"
    );
    // The same ref by AddRef changes nothing; a dropped one cannot come back this way.
    assert!(!add(&a, h(1), "r1").await.unwrap().changed);
    drop_ref(&a, h(1), "r1").await.unwrap();
    assert!(matches!(
        stored(h(1), "r1").await.unwrap(),
        Err(RefcountError::RefDropped { .. })
    ));
    let seen = rec.send(Recorded).await.unwrap();
    assert_eq!(
        seen.iter().map(|c| c.new.count()).collect::<Vec<_>>(),
        vec![0],
        "only the drop to zero may be announced, not the stored ref's 0 -> 1: {seen:?}"
    );
    // Under a GC fence the copy just found may be deleted a moment later: announced.
    assert!(a
        .send(FenceForDelete { hash: h(1) })
        .await
        .unwrap()
        .unwrap());
    stored(h(1), "r2").await.unwrap().unwrap();
    let seen = rec.send(Recorded).await.unwrap();
    let last = seen.last().expect("announced");
    assert!(
        last.fenced && last.new.count() == 1 && seen.len() == 2,
        "a stored ref that meets the fence must be announced as fenced: {seen:?}"
    );
}
