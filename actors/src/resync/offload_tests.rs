//! The GC seam under interleaving: real storage and refcount actors, the offload run with
//! random pauses between its steps while a client re-uploads the block and references it
//! again, at random points. Afterwards a referenced block must exist, every time.
//!
//! The other holders are a test double: they never need the block, and (in the first
//! test) have no copy either, so a block deleted wrongly cannot be fetched back and hide
//! the fault.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use fjall::Database;

use super::deps::{Deps, GcStep, PauseHook};
use super::work::{resync_block, Outcome};
use super::{GetResyncStatus, ResyncActor, ResyncConfig, Schedule, ScheduleReason, SetWorkers};
use crate::block::{DataBlock, VerifiedBlock};
use crate::frame::{BlockRpc, ErrorCode};
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, RpcError};
use crate::placement::FixedPlacement;
use crate::refcount::{AddRef, DropRef, GetRc, RcChanged, RefcountActor, RefcountConfig};
use crate::storage::{StatBlock, StorageActor, StorageConfig, WriteBlock, WriteOutcome};

/// The grace period of these tests: long enough that a block re-uploaded during a round
/// is young for the rest of it, short enough that set-up waits little.
pub(super) const GC_DELAY: Duration = Duration::from_millis(400);
/// Rounds of each interleaving test (1,000 random interleavings).
const ROUNDS: usize = 1000;
/// Rounds run at once (each on its own block).
const PARALLEL: usize = 25;

/// Other holders that never need a block; `copies` says whether they can serve one.
pub(super) struct FakeHolders {
    copies: std::collections::HashMap<Hash, DataBlock>,
    gets: u64,
}

/// How many `GetBlock`s the fake holders answered (fetches back).
#[derive(Message)]
#[rtype(result = "u64")]
struct Gets;

impl Handler<Gets> for FakeHolders {
    type Result = u64;
    fn handle(&mut self, _: Gets, _: &mut Context<Self>) -> u64 {
        self.gets
    }
}

impl Actor for FakeHolders {
    type Context = Context<Self>;
}

impl Handler<Call> for FakeHolders {
    type Result = Result<BlockRpc, RpcError>;
    fn handle(&mut self, c: Call, _: &mut Context<Self>) -> Self::Result {
        match c.rpc {
            BlockRpc::NeedBlockQuery(_) => Ok(BlockRpc::NeedBlockReply(false)),
            BlockRpc::GetBlock(hash) => match self.copies.get(&hash).inspect(|_| self.gets += 1) {
                Some(data) => Ok(BlockRpc::PutBlock {
                    hash,
                    data: data.clone(),
                }),
                None => Err(RpcError::Remote {
                    node: c.node,
                    code: ErrorCode::NotFound,
                    message: "no copy here".into(),
                }),
            },
            other => Err(RpcError::Protocol {
                node: c.node,
                reason: format!("unexpected {}", other.kind()),
            }),
        }
    }
}

/// Swallows rc notices (the first test drives the offload itself).
pub(super) struct Ignore;
impl Actor for Ignore {
    type Context = Context<Self>;
}
impl Handler<RcChanged> for Ignore {
    type Result = ();
    fn handle(&mut self, _: RcChanged, _: &mut Context<Self>) {}
}

pub(super) fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

/// A temp dir with a fresh metadata store and a storage actor over its `data` subdir.
pub(super) fn node_files() -> (tempfile::TempDir, Database, Addr<StorageActor>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::builder(dir.path().join("meta"))
        .open()
        .expect("fjall opens");
    let storage = storage(dir.path());
    (dir, db, storage)
}

fn storage(dir: &Path) -> Addr<StorageActor> {
    StorageActor::new(StorageConfig::one_dir(dir.join("data"), false, None))
        .expect("storage starts on a temp dir")
        .start()
}

pub(super) fn refcount(db: &Database, on_change: Recipient<RcChanged>) -> Addr<RefcountActor> {
    RefcountActor::new(
        db.clone(),
        RefcountConfig {
            gc_delay: GC_DELAY,
            ..Default::default()
        },
        Some(on_change),
    )
    .expect("refcount starts on a temp db")
    .start()
}

pub(super) fn holders(copies: &[VerifiedBlock]) -> Addr<FakeHolders> {
    FakeHolders {
        copies: copies
            .iter()
            .map(|b| (b.hash(), b.clone().into_data()))
            .collect(),
        gets: 0,
    }
    .start()
}

/// Random pauses of 0–`max_us` µs before every GC step.
pub(super) fn jitter(max_us: u64) -> PauseHook {
    Arc::new(move |_step: GcStep, _hash: Hash| {
        Duration::from_micros(rand::random::<u64>() % (max_us + 1))
    })
}

pub(super) fn pause_up_to(max_us: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % (max_us + 1)))
}

pub(super) fn random_blocks(n: usize) -> Vec<VerifiedBlock> {
    (0..n)
        .map(|_| {
            let data: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
            VerifiedBlock::hash_plain(Bytes::from(data), None)
        })
        .collect()
}

/// Store every block and give it a ref that is dropped at once; then wait until both
/// the rc deadline and the file's grace are over: every block is ripe for GC.
pub(super) async fn ripe_for_gc(
    storage: &Addr<StorageActor>,
    rc: &Addr<RefcountActor>,
    blocks: &[VerifiedBlock],
) {
    for chunk in blocks.chunks(100) {
        futures::future::join_all(chunk.iter().map(|b| async move {
            let hash = b.hash();
            storage
                .send(WriteBlock::verified(b.clone()))
                .await
                .expect("storage alive")
                .expect("set-up write");
            let ref_id = "snapshot-1".parse().expect("valid ref id");
            rc.send(AddRef {
                incarnation: 0,
                hash,
                ref_id,
            })
            .await
            .expect("refcount alive")
            .expect("set-up AddRef");
            let ref_id = "snapshot-1".parse().expect("valid ref id");
            rc.send(DropRef {
                incarnation: 0,
                hash,
                ref_id,
            })
            .await
            .expect("refcount alive")
            .expect("set-up DropRef");
        }))
        .await;
    }
    tokio::time::sleep(GC_DELAY + Duration::from_millis(100)).await;
}

/// Whether the block is referenced and whether it is stored.
pub(super) async fn referenced_and_stored(
    storage: &Addr<StorageActor>,
    rc: &Addr<RefcountActor>,
    hash: Hash,
) -> (bool, bool) {
    let referenced = rc
        .send(GetRc { hash })
        .await
        .expect("refcount alive")
        .expect("rc readable")
        .is_needed();
    let stored = storage
        .send(StatBlock { hash })
        .await
        .expect("storage alive")
        .expect("stat works")
        .is_some();
    (referenced, stored)
}

#[actix_rt::test]
async fn gc_interleaved_with_a_re_upload_and_a_new_ref_never_loses_a_referenced_block() {
    let (_dir, db, storage) = node_files();
    let rc = refcount(&db, Ignore.start().recipient());
    let blocks = random_blocks(ROUNDS);
    ripe_for_gc(&storage, &rc, &blocks).await;

    let (me, b, c) = (node(1), node(2), node(3));
    let deps = Deps {
        self_id: me,
        storage: storage.clone(),
        refcount: rc.clone(),
        // The other holders have no copy: a wrong delete cannot be repaired behind the
        // test's back.
        peers: holders(&[]).recipient(),
        placement: Arc::new(FixedPlacement(vec![me, b, c])),
        block_timeout: Duration::from_secs(5),
        need_block_timeout: Duration::from_secs(5),
        may_delete: true,
        gc_delay: GC_DELAY,
        pause: Some(jitter(1500)),
        budget: None,
    };
    let started = Instant::now();
    let (mut lost, mut rewritten, mut already, mut gc_errors) = (Vec::new(), 0, 0, 0);
    for chunk in blocks.chunks(PARALLEL) {
        let rounds = chunk.iter().map(|block| {
            let deps = deps.clone();
            let (storage, rc) = (storage.clone(), rc.clone());
            async move {
                let hash = block.hash();
                let gc = resync_block(deps, hash);
                // The client: a dedup re-upload of the same bytes, then its new ref, each
                // after a random pause, so they land anywhere among the GC's steps.
                let client = async {
                    pause_up_to(200_000).await;
                    let w = storage
                        .send(WriteBlock::verified(block.clone()))
                        .await
                        .expect("storage alive")
                        .expect("re-upload must succeed");
                    pause_up_to(2000).await;
                    let ref_id = "snapshot-2".parse().expect("valid ref id");
                    rc.send(AddRef {
                        incarnation: 0,
                        hash,
                        ref_id,
                    })
                    .await
                    .expect("refcount alive")
                    .expect("AddRef must succeed");
                    w
                };
                let (gc, w) = futures::join!(gc, client);
                let state = referenced_and_stored(&storage, &rc, hash).await;
                (hash, gc, w, state)
            }
        });
        for (hash, gc, w, (referenced, stored)) in futures::future::join_all(rounds).await {
            match w {
                WriteOutcome::Written => rewritten += 1,
                _ => already += 1,
            }
            if !matches!(gc, Ok(Outcome::Done) | Ok(Outcome::Later(_))) {
                gc_errors += 1;
            }
            if referenced && !stored {
                lost.push(hash);
            }
        }
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}: re-upload found the block {already} times, re-created it \
         {rewritten} times (deleted by GC first), {gc_errors} GC errors",
        started.elapsed()
    );
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} rounds left a referenced block missing (first: {})",
        lost.len(),
        lost[0]
    );
    assert_eq!(gc_errors, 0, "the GC look must not fail in this set-up");
    assert!(
        rewritten > 0 && already > 0,
        "the rounds must cover both orders (GC first, client first): \
         {rewritten} re-created, {already} found present"
    );
}

/// A resync actor over `storage` and `rc` with random pauses in its GC steps.
fn resync_with_jitter(
    ctx: Context<ResyncActor>,
    db: &Database,
    config: ResyncConfig,
    storage: &Addr<StorageActor>,
    rc: &Addr<RefcountActor>,
    peers: Recipient<Call>,
    pause: Option<PauseHook>,
) -> Addr<ResyncActor> {
    let (me, b, c) = (node(1), node(2), node(3));
    let mut actor = ResyncActor::new(
        db.clone(),
        config,
        storage.clone(),
        rc.clone(),
        peers,
        Arc::new(FixedPlacement(vec![me, b, c])),
    )
    .expect("resync starts on a temp db");
    actor.deps.pause = pause;
    ctx.run(actor)
}

/// Wait until resync has nothing queued or running.
async fn until_idle(resync: &Addr<ResyncActor>, within: Duration) {
    let t = Instant::now();
    loop {
        let s = resync.send(GetResyncStatus).await.expect("resync alive");
        if s.queue_length == 0 && s.busy == 0 {
            return;
        }
        assert!(
            t.elapsed() < within,
            "resync still busy after {within:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config() -> ResyncConfig {
    let mut c = ResyncConfig::new(node(1));
    // A new ref is normally looked at after 2 × this: far beyond the test's patience,
    // so only the fence's immediate fetch can bring a block back in time.
    c.block_timeout = Duration::from_secs(60);
    c.need_block_timeout = Duration::from_secs(5);
    c.gc_delay = GC_DELAY;
    c.after_gc_delay = Duration::from_millis(50);
    c.backoff_base = Duration::from_secs(60);
    c
}

#[actix_rt::test]
async fn a_ref_that_lands_between_the_fence_and_the_delete_fetches_the_block_back_at_once() {
    let (_dir, db, storage) = node_files();
    let ctx = Context::<ResyncActor>::new();
    let rc = refcount(&db, ctx.address().recipient());
    let blocks = random_blocks(50);
    ripe_for_gc(&storage, &rc, &blocks).await;
    // The other holders can serve every block. Each look, once its fence is set and
    // before storage deletes, has a client reference the block again
    // (`PUT /v1/blocks/{hash}/refs/{ref}`, no re-upload): the worst point for a ref.
    let fake = holders(&blocks);
    let rc2 = rc.clone();
    let hook: PauseHook = Arc::new(move |step, hash| {
        if step == GcStep::Delete {
            let ref_id = "snapshot-2".parse().expect("valid ref id");
            rc2.do_send(AddRef {
                incarnation: 0,
                hash,
                ref_id,
            });
            // Long enough for the refcount actor to apply it before the delete.
            return Duration::from_millis(5);
        }
        Duration::ZERO
    });
    let resync = resync_with_jitter(
        ctx,
        &db,
        config(),
        &storage,
        &rc,
        fake.clone().recipient(),
        Some(hook),
    );
    resync
        .send(SetWorkers { workers: 8 })
        .await
        .expect("resync alive")
        .expect("8 workers is allowed");
    // The blocks' own "dropped" looks are due now: each is fenced, referenced again,
    // deleted, and must then be fetched back at once (a plain new ref would wait
    // 2 × block_timeout, two minutes here).
    let t = Instant::now();
    let mut missing = blocks.len();
    while t.elapsed() < Duration::from_secs(20) {
        missing = 0;
        for b in &blocks {
            if referenced_and_stored(&storage, &rc, b.hash()).await != (true, true) {
                missing += 1;
            }
        }
        if missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fetched = fake.send(Gets).await.expect("fake holders alive");
    assert_eq!(
        missing,
        0,
        "{missing} of {} blocks referenced during their GC delete are not back after \
         {:?} ({fetched} fetched); a ref that meets the fence must fetch at once",
        blocks.len(),
        t.elapsed()
    );
    assert_eq!(
        fetched,
        blocks.len() as u64,
        "every block must have been deleted under its fence and fetched back once"
    );
}

#[actix_rt::test]
async fn a_block_written_then_looked_at_at_once_then_referenced_survives() {
    let (_dir, db, storage) = node_files();
    let ctx = Context::<ResyncActor>::new();
    let rc = refcount(&db, ctx.address().recipient());
    // No holder has a copy: a wrong delete would be final.
    let resync = resync_with_jitter(
        ctx,
        &db,
        config(),
        &storage,
        &rc,
        holders(&[]).recipient(),
        None,
    );
    let block = random_blocks(1).remove(0);
    let hash = block.hash();
    // A PUT's block lands first (an orphan: its ref is still on its way)...
    storage
        .send(WriteBlock::verified(block))
        .await
        .expect("storage alive")
        .expect("write");
    // ... a repair (or scrub, or a peer's ScheduleResync) looks at it with no delay...
    resync.do_send(Schedule {
        hash,
        delay: Duration::ZERO,
        reason: ScheduleReason::Repair,
    });
    let t = Instant::now();
    loop {
        let s = resync.send(GetResyncStatus).await.expect("resync alive");
        if s.ops_ok + s.ops_error > 0 {
            assert_eq!(s.ops_error, 0, "the look must not fail");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the look never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        referenced_and_stored(&storage, &rc, hash).await.1,
        "an orphan younger than gc_delay must not be deleted by a look"
    );
    // ... then the ref arrives.
    let ref_id = "r".parse().expect("valid ref id");
    rc.send(AddRef {
        incarnation: 0,
        hash,
        ref_id,
    })
    .await
    .expect("refcount alive")
    .expect("AddRef");
    // The look after the file's grace finds it referenced and keeps it.
    tokio::time::sleep(GC_DELAY + Duration::from_millis(200)).await;
    until_idle(&resync, Duration::from_secs(10)).await;
    assert_eq!(
        referenced_and_stored(&storage, &rc, hash).await,
        (true, true),
        "the block must survive: written, looked at, then referenced"
    );
}

#[actix_rt::test]
async fn a_referenced_block_whose_fetch_schedule_was_lost_is_fetched_after_a_start() {
    let (_dir, db, storage) = node_files();
    let block = random_blocks(1).remove(0);
    let hash = block.hash();
    // What a crash between the durable rc 0 -> 1 and the unsynced queue write leaves:
    // rc = 1, no block here, no queue entry (the notice went nowhere).
    let rc = refcount(&db, Ignore.start().recipient());
    let ref_id = "r".parse().expect("valid ref id");
    rc.send(AddRef {
        incarnation: 0,
        hash,
        ref_id,
    })
    .await
    .expect("refcount alive")
    .expect("AddRef");
    // The node starts again; another holder has the block; nobody calls repair.
    let fake = holders(std::slice::from_ref(&block));
    let resync = resync_with_jitter(
        Context::new(),
        &db,
        config(),
        &storage,
        &rc,
        fake.recipient(),
        None,
    );
    let t = Instant::now();
    while referenced_and_stored(&storage, &rc, hash).await != (true, true) {
        let s = resync.send(GetResyncStatus).await.expect("resync alive");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a referenced block missing here must be fetched after a start without any \
             schedule or repair (a plain new ref waits 2 minutes here): {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
