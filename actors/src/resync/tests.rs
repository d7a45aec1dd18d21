//! ResyncActor tests: real storage and refcount actors on temp dirs, the peers replaced
//! by a test double behind the same `Recipient<Call>`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::block::{DataBlock, VerifiedBlock};
use crate::frame::{BlockRpc, ErrorCode};
use crate::hash::{blake2sum, NodeId};
use crate::peer::RpcError;
use crate::placement::FixedPlacement;
use crate::refcount::GetRc;
use crate::refcount::{AddRef, DropRef, RefcountConfig};
use crate::storage::{BlockExists, DeleteIfUnwritten, ReadBlock, WriteBlock};
use crate::storage::{GetStorageStats, StorageConfig};

mod fetch_now;
mod read_repair;
mod settings;
mod sweep;

/// One fake remote node.
#[derive(Default)]
struct FakeNode {
    blocks: HashMap<Hash, DataBlock>,
    needs: HashSet<Hash>,
    fail_puts: bool,
    puts: u64,
}

/// Test double of the peer actor: answers calls from in-memory nodes; GetBlock takes
/// `get_delay` and records how many run at once per hash.
struct FakePeers {
    nodes: HashMap<NodeId, FakeNode>,
    get_delay: Duration,
    in_flight: HashMap<Hash, u32>,
    max_in_flight: u32,
    gets: u64,
    /// `ScheduleResync` requests received, per node.
    resync_asks: HashMap<NodeId, u64>,
}

impl Actor for FakePeers {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct GetDone(Hash);

impl Handler<GetDone> for FakePeers {
    type Result = ();
    fn handle(&mut self, m: GetDone, _: &mut Context<Self>) {
        if let Some(n) = self.in_flight.get_mut(&m.0) {
            *n -= 1;
        }
    }
}

impl Handler<Call> for FakePeers {
    type Result = ResponseFuture<Result<BlockRpc, RpcError>>;

    fn handle(&mut self, c: Call, ctx: &mut Context<Self>) -> Self::Result {
        let node = c.node;
        let Some(n) = self.nodes.get_mut(&node) else {
            return Box::pin(async move {
                Err(RpcError::Unreachable {
                    node,
                    reason: "down".into(),
                })
            });
        };
        let reply = match c.rpc {
            BlockRpc::GetBlock(h) => {
                self.gets += 1;
                let cur = self.in_flight.entry(h).or_insert(0);
                *cur += 1;
                self.max_in_flight = self.max_in_flight.max(*cur);
                let reply = match n.blocks.get(&h) {
                    Some(d) => Ok(BlockRpc::PutBlock {
                        hash: h,
                        data: d.clone(),
                    }),
                    None => Err(RpcError::Remote {
                        node,
                        code: ErrorCode::NotFound,
                        message: "no".into(),
                    }),
                };
                let me = ctx.address();
                let delay = self.get_delay;
                return Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    me.do_send(GetDone(h));
                    reply
                });
            }
            BlockRpc::NeedBlockQuery(h) => Ok(BlockRpc::NeedBlockReply(n.needs.contains(&h))),
            BlockRpc::PutBlock { hash, data } if !n.fail_puts => {
                n.puts += 1;
                n.needs.remove(&hash);
                n.blocks.insert(hash, data);
                Ok(BlockRpc::Ok)
            }
            BlockRpc::PutBlock { .. } => Err(RpcError::Remote {
                node,
                code: ErrorCode::DiskFull,
                message: "full".into(),
            }),
            BlockRpc::ScheduleResync(_) => {
                *self.resync_asks.entry(node).or_default() += 1;
                Ok(BlockRpc::Ok)
            }
            other => Err(RpcError::Protocol {
                node,
                reason: format!("unexpected {}", other.kind()),
            }),
        };
        Box::pin(async move { reply })
    }
}

/// Change the fake cluster from the test.
#[derive(Message)]
#[rtype(result = "()")]
struct Edit(Box<dyn FnOnce(&mut FakePeers) + Send>);

impl Handler<Edit> for FakePeers {
    type Result = ();
    fn handle(&mut self, m: Edit, _: &mut Context<Self>) {
        (m.0)(self)
    }
}

/// The `ScheduleResync` requests the fake nodes received, per node.
#[derive(Message)]
#[rtype(result = "HashMap<NodeId, u64>")]
struct ResyncAsks;

impl Handler<ResyncAsks> for FakePeers {
    type Result = MessageResult<ResyncAsks>;
    fn handle(&mut self, _: ResyncAsks, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.resync_asks.clone())
    }
}

#[derive(Message)]
#[rtype(result = "(u64, u32, u64)")]
struct Stats;

impl Handler<Stats> for FakePeers {
    type Result = MessageResult<Stats>;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        let puts = self.nodes.values().map(|n| n.puts).sum();
        MessageResult((self.gets, self.max_in_flight, puts))
    }
}

struct Rig {
    me: NodeId,
    b: NodeId,
    c: NodeId,
    db: Database,
    storage: Addr<StorageActor>,
    refcount: Addr<RefcountActor>,
    resync: Addr<ResyncActor>,
    peers: Addr<FakePeers>,
}

fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

fn cfg(me: NodeId) -> ResyncConfig {
    let mut c = ResyncConfig::new(me);
    c.block_timeout = Duration::from_millis(50);
    c.need_block_timeout = Duration::from_millis(500);
    c.gc_delay = Duration::from_millis(100);
    c.after_gc_delay = Duration::from_millis(50);
    c.backoff_base = Duration::from_millis(200);
    c
}

/// Storage, refcount (notifying resync) and resync on `dir`; fake peers b and c.
fn rig(dir: &Path, get_delay: Duration) -> Rig {
    rig_with(dir, get_delay, cfg(node(1)))
}

/// [`rig`] with another resync config.
fn rig_with(dir: &Path, get_delay: Duration, config: ResyncConfig) -> Rig {
    rig_with_capacity(dir, get_delay, config, None)
}

/// [`rig_with`] with a data dir capacity (bytes) for the storage actor.
fn rig_with_capacity(
    dir: &Path,
    get_delay: Duration,
    config: ResyncConfig,
    capacity: Option<u64>,
) -> Rig {
    let (me, b, c) = (node(1), node(2), node(3));
    let db = Database::builder(dir.join("meta")).open().unwrap();
    let storage = StorageActor::new(StorageConfig::one_dir(dir.join("data"), false, capacity))
        .unwrap()
        .start();
    let peers = FakePeers {
        nodes: [(b, FakeNode::default()), (c, FakeNode::default())]
            .into_iter()
            .collect(),
        get_delay,
        in_flight: HashMap::new(),
        max_in_flight: 0,
        gets: 0,
        resync_asks: HashMap::new(),
    }
    .start();
    let resync_ctx = Context::<ResyncActor>::new();
    let refcount = RefcountActor::new(
        db.clone(),
        RefcountConfig {
            gc_delay: Duration::from_millis(100),
            ..Default::default()
        },
        Some(resync_ctx.address().recipient()),
    )
    .unwrap()
    .start();
    let resync = resync_ctx.run(
        ResyncActor::new(
            db.clone(),
            config,
            storage.clone(),
            refcount.clone(),
            peers.clone().recipient(),
            Arc::new(FixedPlacement(vec![me, b, c])),
        )
        .unwrap(),
    );
    Rig {
        me,
        b,
        c,
        db,
        storage,
        refcount,
        resync,
        peers,
    }
}

/// Store a block here and add one ref to it; returns its hash.
async fn stored_with_ref(r: &Rig, text: &str, ref_id: &str) -> Hash {
    stored_with_ref_data(r, text, ref_id).await.0
}

/// [`stored_with_ref`], also returning the block's bytes (for a peer's copy).
async fn stored_with_ref_data(r: &Rig, text: &str, ref_id: &str) -> (Hash, DataBlock) {
    let v = block(text);
    let (h, data) = (v.hash(), v.data().clone());
    r.storage
        .send(WriteBlock::verified(v))
        .await
        .unwrap()
        .unwrap();
    r.refcount
        .send(AddRef {
            incarnation: 0,
            hash: h,
            ref_id: ref_id.parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    (h, data)
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn block(s: &str) -> VerifiedBlock {
    VerifiedBlock::hash_plain(Bytes::from(s.repeat(100)), None)
}

/// Path of a plain block file in Garage's layout.
fn block_path(dir: &Path, h: Hash) -> std::path::PathBuf {
    let hex = h.to_hex();
    dir.join("data")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex)
}

/// Give fake node `n` a copy of block `h`.
async fn put_on(r: &Rig, n: NodeId, h: Hash, data: DataBlock) {
    r.peers
        .send(Edit(Box::new(move |p| {
            p.nodes.get_mut(&n).unwrap().blocks.insert(h, data);
        })))
        .await
        .unwrap();
}

/// Reference `h` (the refcount actor tells resync: rc 0→1).
async fn add_ref(r: &Rig, h: Hash) {
    r.refcount
        .send(AddRef {
            incarnation: 0,
            hash: h,
            ref_id: "a".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
}

/// Reference `h` through a second refcount actor over the same keyspaces that does
/// not tell resync, so a test controls every schedule itself.
async fn add_ref_quietly(r: &Rig, h: Hash) {
    RefcountActor::new(r.db.clone(), RefcountConfig::default(), None)
        .unwrap()
        .start()
        .send(AddRef {
            incarnation: 0,
            hash: h,
            ref_id: "a".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
}

async fn exists(r: &Rig, h: Hash) -> bool {
    r.storage
        .send(BlockExists { hash: h })
        .await
        .unwrap()
        .unwrap()
}

#[actix_rt::test]
async fn a_new_ref_to_a_missing_block_fetches_it_from_another_holder() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("fetch me");
    let (h, data) = (v.hash(), v.data().clone());
    r.peers
        .send(Edit(Box::new(move |p| {
            p.nodes.get_mut(&node(3)).unwrap().blocks.insert(h, data);
        })))
        .await
        .unwrap();
    // rc 0→1 schedules the block after 2 × block timeout.
    r.refcount
        .send(AddRef {
            incarnation: 0,
            hash: h,
            ref_id: "a".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    wait_until("the block to be fetched", || exists(&r, h)).await;
    let errs = r.resync.send(ListResyncErrors).await.unwrap();
    assert!(
        errs.is_empty(),
        "node b lacked it, node c had it: no error expected: {errs:?}"
    );
    let _ = (r.me, r.b, r.c);
}

#[actix_rt::test]
async fn dropped_block_is_offloaded_to_holders_that_need_it_then_deleted() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let h = stored_with_ref(&r, "offload me", "a").await;
    r.peers
        .send(Edit(Box::new(move |p| {
            p.nodes.get_mut(&node(2)).unwrap().needs.insert(h);
        })))
        .await
        .unwrap();
    // rc→0 schedules after gc_delay + after_gc_delay.
    r.refcount
        .send(DropRef {
            incarnation: 0,
            hash: h,
            ref_id: "a".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    wait_until("the block to be deleted here", || async {
        !exists(&r, h).await
    })
    .await;
    let (_, _, puts) = r.peers.send(Stats).await.unwrap();
    assert_eq!(puts, 1, "only node b needed it, so exactly one PutBlock");
    assert_eq!(
        r.refcount.send(GetRc { hash: h }).await.unwrap().unwrap(),
        crate::rc::RcEntry::Absent,
        "rc cleared"
    );
}

#[actix_rt::test]
async fn failed_offload_keeps_the_block_records_the_error_and_retries_after_backoff() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("stubborn");
    let h = v.hash();
    r.storage
        .send(WriteBlock::verified(v))
        .await
        .unwrap()
        .unwrap();
    r.peers
        .send(Edit(Box::new(move |p| {
            let b = p.nodes.get_mut(&node(2)).unwrap();
            b.needs.insert(h);
            b.fail_puts = true;
        })))
        .await
        .unwrap();
    r.resync
        .send(Schedule {
            hash: h,
            delay: Duration::ZERO,
            reason: ScheduleReason::OrphanPut,
        })
        .await
        .unwrap();
    wait_until("the error to be recorded", || async {
        !r.resync.send(ListResyncErrors).await.unwrap().is_empty()
    })
    .await;
    let errs = r.resync.send(ListResyncErrors).await.unwrap();
    assert_eq!(errs[0].hash, h.to_hex());
    assert_eq!(
        errs[0].next_try - errs[0].last_try,
        200,
        "first retry after the backoff base"
    );
    assert!(
        errs[0].error.contains("offload"),
        "error names the failed offload: {}",
        errs[0].error
    );
    assert!(
        exists(&r, h).await,
        "the block must be kept when an offload fails"
    );
    assert_eq!(
        r.resync
            .send(GetBlockError { hash: h })
            .await
            .unwrap()
            .as_deref(),
        Some(errs[0].error.as_str())
    );
    // Second failure: the delay doubles.
    wait_until("a second failure", || async {
        r.resync
            .send(ListResyncErrors)
            .await
            .unwrap()
            .first()
            .is_some_and(|e| e.count >= 2)
    })
    .await;
    let e = &r.resync.send(ListResyncErrors).await.unwrap()[0];
    assert_eq!(
        e.next_try - e.last_try,
        400,
        "second retry after twice the base"
    );
    assert!(
        e.last_try >= errs[0].next_try,
        "the retry ran at {} before its backoff ended at {}",
        e.last_try,
        errs[0].next_try
    );
    // Node b recovers: the retry succeeds, the block moves and the error is cleared.
    r.peers
        .send(Edit(Box::new(|p| {
            p.nodes.get_mut(&node(2)).unwrap().fail_puts = false
        })))
        .await
        .unwrap();
    wait_until("the retry to succeed", || async { !exists(&r, h).await }).await;
    wait_until("the error to be cleared", || async {
        r.resync.send(ListResyncErrors).await.unwrap().is_empty()
    })
    .await;
}

#[actix_rt::test]
async fn one_block_is_never_resynced_by_two_workers_at_once() {
    let d = tempfile::tempdir().unwrap();
    // Every GetBlock takes 60 ms, so schedules land while the block is being fetched.
    let r = rig(d.path(), Duration::from_millis(60));
    r.resync
        .send(SetWorkers { workers: 4 })
        .await
        .unwrap()
        .unwrap();
    r.resync
        .send(SetTranquility { tranquility: 0 })
        .await
        .unwrap()
        .unwrap();
    // Referenced here, held by nobody: every attempt asks b and c, fails, and is retried.
    let h = block("contended").hash();
    add_ref(&r, h).await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(700) {
        r.resync
            .send(Schedule {
                hash: h,
                delay: Duration::ZERO,
                reason: ScheduleReason::ReadFailed,
            })
            .await
            .unwrap();
        r.resync.send(RetryNow { hash: Some(h) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (gets, max, _) = r.peers.send(Stats).await.unwrap();
    assert!(
        gets >= 6,
        "the hash should have been retried several times meanwhile, got {gets} GetBlock"
    );
    assert_eq!(max, 1, "a hash was fetched by two workers at once");
    let st = r.resync.send(GetResyncStatus).await.unwrap();
    assert_eq!(st.workers, 4);
    assert!(
        st.queue_length <= 2,
        "one waiting entry (plus the running one) per hash, got {}",
        st.queue_length
    );
}

#[actix_rt::test]
async fn a_hash_scheduled_again_waits_once_and_the_earlier_time_wakes_a_worker_at_once() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("soon");
    let (h, data) = (v.hash(), v.data().clone());
    put_on(&r, node(2), h, data).await;
    add_ref_quietly(&r, h).await;
    for delay in [3600, 7200, 5400] {
        r.resync
            .send(Schedule {
                hash: h,
                delay: Duration::from_secs(delay),
                reason: ScheduleReason::Manual,
            })
            .await
            .unwrap();
    }
    let st = r.resync.send(GetResyncStatus).await.unwrap();
    assert_eq!(
        st.queue_length, 1,
        "the same hash scheduled three times waits once"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!exists(&r, h).await, "nothing is due for an hour");
    // The worker sleeps until the hour is up; an earlier schedule must wake it now.
    let t = Instant::now();
    r.resync
        .send(Schedule::for_reason(
            h,
            ScheduleReason::ReadFailed,
            &cfg(r.me),
        ))
        .await
        .unwrap();
    wait_until("the block to be fetched", || exists(&r, h)).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a new schedule must wake the sleeping worker, took {:?}",
        t.elapsed()
    );
    wait_until(
        "the queue to empty (the later entry was replaced)",
        || async { r.resync.send(GetResyncStatus).await.unwrap().queue_length == 0 },
    )
    .await;
}

#[actix_rt::test]
async fn a_block_scheduled_while_being_resynced_is_looked_at_again_afterwards() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::from_millis(300));
    r.resync
        .send(SetTranquility { tranquility: 0 })
        .await
        .unwrap()
        .unwrap();
    let v = block("twice");
    let (h, data) = (v.hash(), v.data().clone());
    put_on(&r, node(2), h, data).await;
    add_ref_quietly(&r, h).await;
    r.resync
        .send(Schedule::for_reason(h, ScheduleReason::Manual, &cfg(r.me)))
        .await
        .unwrap();
    wait_until("the block to be busy", || async {
        r.resync.send(GetResyncStatus).await.unwrap().busy == 1
    })
    .await;
    r.resync
        .send(Schedule::for_reason(
            h,
            ScheduleReason::ReadFailed,
            &cfg(r.me),
        ))
        .await
        .unwrap();
    wait_until("both runs to finish", || async {
        let st = r.resync.send(GetResyncStatus).await.unwrap();
        st.ops_ok == 2 && st.queue_length == 0
    })
    .await;
    assert!(exists(&r, h).await);
    let (gets, max, _) = r.peers.send(Stats).await.unwrap();
    assert_eq!(
        (gets, max),
        (1, 1),
        "the second run finds the block present and fetches nothing"
    );
}

#[actix_rt::test]
async fn retry_now_runs_every_errored_block_at_once() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(node(1));
    c.backoff_base = Duration::from_secs(3600);
    let r = rig_with(d.path(), Duration::ZERO, c);
    let blocks: Vec<VerifiedBlock> = (0..3).map(|i| block(&format!("late{i}"))).collect();
    for v in &blocks {
        add_ref_quietly(&r, v.hash()).await;
        r.resync
            .send(Schedule::for_reason(
                v.hash(),
                ScheduleReason::Repair,
                &cfg(r.me),
            ))
            .await
            .unwrap();
    }
    wait_until("three errors (nobody has the blocks)", || async {
        r.resync.send(GetResyncStatus).await.unwrap().errors == 3
    })
    .await;
    let errs = r.resync.send(ListResyncErrors).await.unwrap();
    assert!(
        errs.iter()
            .all(|e| e.count == 1 && e.next_try - e.last_try == 3_600_000),
        "first retry an hour later: {errs:?}"
    );
    for v in &blocks {
        put_on(&r, node(3), v.hash(), v.data().clone()).await;
    }
    assert_eq!(r.resync.send(RetryNow { hash: None }).await.unwrap(), 3);
    for v in &blocks {
        wait_until("the retried block to be fetched", || exists(&r, v.hash())).await;
    }
    wait_until("the errors to be cleared", || async {
        r.resync.send(GetResyncStatus).await.unwrap().errors == 0
    })
    .await;
    assert_eq!(
        r.resync.send(GetResyncStatus).await.unwrap().queue_length,
        0
    );
}

#[actix_rt::test]
async fn a_failed_read_refetches_a_lost_file_now() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("lost");
    let (h, data) = (v.hash(), v.data().clone());
    r.storage
        .send(WriteBlock::verified(v))
        .await
        .unwrap()
        .unwrap();
    add_ref_quietly(&r, h).await;
    put_on(&r, node(3), h, data).await;
    // The file disappears behind the storage actor's back (a disk replaced, say).
    std::fs::remove_file(block_path(d.path(), h)).unwrap();
    assert!(!exists(&r, h).await);
    let c = cfg(r.me);
    assert_eq!(c.delay_for(ScheduleReason::ReadFailed), Duration::ZERO);
    r.resync
        .send(Schedule::for_reason(h, ScheduleReason::ReadFailed, &c))
        .await
        .unwrap();
    wait_until("the block to be fetched back", || exists(&r, h)).await;
}

#[actix_rt::test]
async fn an_orphan_put_is_collected_only_after_gc_delay() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("orphan put");
    let h = v.hash();
    r.storage
        .send(WriteBlock::verified(v))
        .await
        .unwrap()
        .unwrap();
    let c = cfg(r.me);
    assert_eq!(c.delay_for(ScheduleReason::OrphanPut), c.gc_delay);
    let t = Instant::now();
    r.resync
        .send(Schedule::for_reason(h, ScheduleReason::OrphanPut, &c))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        exists(&r, h).await,
        "an orphan must survive its grace period (a ref may still come)"
    );
    wait_until("the orphan to be collected", || async {
        !exists(&r, h).await
    })
    .await;
    assert!(
        t.elapsed() >= c.gc_delay,
        "collected after {:?}, before gc_delay",
        t.elapsed()
    );
}

#[actix_rt::test]
async fn a_corrupt_copy_from_one_holder_is_refused_and_the_next_holder_is_asked() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("good copy");
    let (h, data) = (v.hash(), v.data().clone());
    // Node b (asked first) answers with other bytes under this hash.
    put_on(&r, node(2), h, block("bad copy").data().clone()).await;
    put_on(&r, node(3), h, data).await;
    add_ref_quietly(&r, h).await;
    r.resync
        .send(Schedule::for_reason(h, ScheduleReason::Manual, &cfg(r.me)))
        .await
        .unwrap();
    wait_until("the good copy to be written", || exists(&r, h)).await;
    let got = r
        .storage
        .send(ReadBlock::uncharged(h))
        .await
        .unwrap()
        .unwrap();
    assert!(
        got.verify(&h).is_ok(),
        "the stored copy must match its hash"
    );
    let (gets, _, _) = r.peers.send(Stats).await.unwrap();
    assert_eq!(gets, 2, "b's corrupt copy, then c's good one");
}

#[actix_rt::test]
async fn an_unreachable_holder_keeps_a_deletable_block_here() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let v = block("keep me");
    let h = v.hash();
    r.storage
        .send(WriteBlock::verified(v))
        .await
        .unwrap()
        .unwrap();
    // Node c is down: nobody can tell whether it still needs the block.
    r.peers
        .send(Edit(Box::new(|p| {
            p.nodes.remove(&node(3));
        })))
        .await
        .unwrap();
    r.resync
        .send(Schedule::for_reason(h, ScheduleReason::Manual, &cfg(r.me)))
        .await
        .unwrap();
    wait_until("the error to be recorded", || async {
        r.resync.send(GetResyncStatus).await.unwrap().errors == 1
    })
    .await;
    let err = r.resync.send(GetBlockError { hash: h }).await.unwrap();
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("NeedBlockQuery") || e.contains("needs the block")),
        "the error names the failed query: {err:?}"
    );
    assert!(
        exists(&r, h).await,
        "an unanswered NeedBlockQuery must keep the block"
    );
}

#[test]
fn each_scheduling_source_has_the_delay_the_design_gives() {
    let c = cfg(node(1));
    assert_eq!(c.delay_for(ScheduleReason::NewRef), 2 * c.block_timeout);
    assert_eq!(
        c.delay_for(ScheduleReason::Dropped),
        c.gc_delay + c.after_gc_delay
    );
    assert_eq!(c.delay_for(ScheduleReason::OrphanPut), c.gc_delay);
    for now in [
        ScheduleReason::ReadFailed,
        ScheduleReason::Repair,
        ScheduleReason::Scrub,
        ScheduleReason::Manual,
    ] {
        assert_eq!(c.delay_for(now), Duration::ZERO, "{now:?} runs now");
    }
    let d = ResyncConfig::new(node(1));
    assert_eq!(
        d.delay_for(ScheduleReason::Dropped),
        Duration::from_secs(610),
        "default: gc_delay 10 min + 10 s"
    );
}

/// Ordinary reads trust a copy's stored checksum; scrub must not: a file whose bytes and
/// attribute were rewritten together is caught only by its BLAKE2 check.
#[actix_rt::test]
async fn scrub_catches_a_file_rewritten_with_a_matching_stored_checksum() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let mut hashes = Vec::new();
    for i in 0..3 {
        let (h, data) = stored_with_ref_data(&r, &format!("forged{i}"), "a").await;
        put_on(&r, node(2), h, data).await;
        hashes.push(h);
    }
    let forged = hashes[1];
    let file = block_path(d.path(), forged);
    let other = b"not the block this name stands for".repeat(50);
    std::fs::write(&file, &other).unwrap();
    let value = crate::storage::checksum::value(&forged, false, &other);
    let c = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a value of the length passed.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            crate::storage::checksum::XATTR_NAME.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    r.resync.send(ScrubCommand::Start).await.unwrap().unwrap();
    wait_until("scrub to finish", || async {
        r.resync.send(GetResyncStatus).await.unwrap().scrub.state == ScrubState::Idle
    })
    .await;
    let st = r.resync.send(GetResyncStatus).await.unwrap().scrub;
    assert_eq!(
        (st.checked, st.corruptions),
        (3, 1),
        "scrub should check every block and find the forged one"
    );
    assert!(
        std::path::PathBuf::from(format!("{}.corrupted", file.display())).exists(),
        "the forged file should be quarantined"
    );
    wait_until("the forged block to be fetched again", || async {
        std::fs::read(&file)
            .map(|b| blake2sum(&b) == forged)
            .unwrap_or(false)
    })
    .await;
}

#[actix_rt::test]
async fn scrub_quarantines_a_flipped_byte_refetches_it_and_resumes_after_restart() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let mut hashes = Vec::new();
    for i in 0..20 {
        let (h, data) = stored_with_ref_data(&r, &format!("scrub{i}"), "a").await;
        r.peers
            .send(Edit(Box::new(move |p| {
                p.nodes.get_mut(&node(2)).unwrap().blocks.insert(h, data);
            })))
            .await
            .unwrap();
        hashes.push(h);
    }
    hashes.sort();
    // Rot the last block in scrub order.
    let rotten = hashes[19];
    let hex = rotten.to_hex();
    let file = d
        .path()
        .join("data")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    // Slow scrub, so it can be paused part-way.
    r.resync
        .send(SetScrubTranquility { tranquility: 100 })
        .await
        .unwrap()
        .unwrap();
    r.resync.send(ScrubCommand::Start).await.unwrap().unwrap();
    wait_until("scrub to check a few blocks", || async {
        r.resync.send(GetResyncStatus).await.unwrap().scrub.checked >= 3
    })
    .await;
    r.resync.send(ScrubCommand::Pause).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let paused = r.resync.send(GetResyncStatus).await.unwrap().scrub;
    assert_eq!(paused.state, ScrubState::Paused);
    // "Restart": a new actor over the same metadata resumes from the persisted position.
    let r2 = ResyncActor::new(
        r.db.clone(),
        cfg(r.me),
        r.storage.clone(),
        r.refcount.clone(),
        r.peers.clone().recipient(),
        Arc::new(FixedPlacement(vec![r.me, r.b, r.c])),
    )
    .unwrap()
    .start();
    let st = r2.send(GetResyncStatus).await.unwrap().scrub;
    assert_eq!(
        (st.state, st.checked, st.position.clone()),
        (ScrubState::Paused, paused.checked, paused.position.clone())
    );
    r2.send(SetScrubTranquility { tranquility: 0 })
        .await
        .unwrap()
        .unwrap();
    r2.send(ScrubCommand::Resume).await.unwrap().unwrap();
    wait_until("scrub to finish", || async {
        r2.send(GetResyncStatus).await.unwrap().scrub.state == ScrubState::Idle
    })
    .await;
    let st = r2.send(GetResyncStatus).await.unwrap().scrub;
    assert_eq!(
        st.checked, 20,
        "the resumed scrub continues where it stopped (no block checked twice)"
    );
    assert_eq!(st.corruptions, 1);
    assert!(
        r2.send(ScrubCommand::Pause).await.unwrap().is_err(),
        "pausing an idle scrub is refused"
    );
    // The rotten copy was quarantined and a good one fetched back.
    wait_until("the rotten block to be fetched again", || async {
        std::fs::read(&file)
            .map(|b| blake2sum(&b) == rotten)
            .unwrap_or(false)
    })
    .await;
    assert!(std::path::PathBuf::from(format!("{}.corrupted", file.display())).exists());
}

#[actix_rt::test]
async fn repair_deletes_an_orphan_file_and_fetches_a_missing_referenced_block() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let orphan = block("orphan");
    let oh = orphan.hash();
    r.storage
        .send(WriteBlock::verified(orphan))
        .await
        .unwrap()
        .unwrap();
    let missing = block("missing");
    let (mh, mdata) = (missing.hash(), missing.data().clone());
    // A ref recorded while the resync actor was not told (as after a wiped data dir).
    let db2 = r.db.clone();
    let quiet = RefcountActor::new(db2, RefcountConfig::default(), None)
        .unwrap()
        .start();
    quiet
        .send(AddRef {
            incarnation: 0,
            hash: mh,
            ref_id: "a".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    r.peers
        .send(Edit(Box::new(move |p| {
            p.nodes.get_mut(&node(2)).unwrap().blocks.insert(mh, mdata);
        })))
        .await
        .unwrap();
    r.resync
        .send(StartRepair { rebuild_rc: true })
        .await
        .unwrap()
        .unwrap();
    wait_until("repair to fix both", || async {
        exists(&r, mh).await && !exists(&r, oh).await
    })
    .await;
    let st = r.resync.send(GetResyncStatus).await.unwrap();
    assert!(
        st.repair.queued >= 2,
        "repair queued the rc entry and the file: {:?}",
        st.repair
    );
    // The counts are exact once the background census is done (it may still be walking
    // on a loaded machine).
    wait_until("the start-up census to finish", || async {
        !r.storage.send(GetStorageStats).await.unwrap().counting
    })
    .await;
    assert_eq!(r.storage.send(GetStorageStats).await.unwrap().blocks, 1);
}

#[actix_rt::test]
async fn settings_persist_across_a_restart_and_bad_values_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    assert!(matches!(
        r.resync.send(SetWorkers { workers: 9 }).await.unwrap(),
        Err(ResyncError::BadWorkers { value: 9 })
    ));
    assert!(matches!(
        r.resync.send(SetWorkers { workers: 0 }).await.unwrap(),
        Err(ResyncError::BadWorkers { value: 0 })
    ));
    r.resync
        .send(SetWorkers { workers: 3 })
        .await
        .unwrap()
        .unwrap();
    r.resync
        .send(SetTranquility { tranquility: 7 })
        .await
        .unwrap()
        .unwrap();
    r.resync
        .send(SetScrubTranquility { tranquility: 9 })
        .await
        .unwrap()
        .unwrap();
    let r2 = ResyncActor::new(
        r.db.clone(),
        cfg(r.me),
        r.storage.clone(),
        r.refcount.clone(),
        r.peers.clone().recipient(),
        Arc::new(FixedPlacement(vec![r.me])),
    )
    .unwrap()
    .start();
    let st = r2.send(GetResyncStatus).await.unwrap();
    assert_eq!(
        (st.workers, st.tranquility, st.scrub.tranquility),
        (3, 7, 9)
    );
}

#[actix_rt::test]
async fn queued_items_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let h = block("later").hash();
    r.resync
        .send(Schedule {
            hash: h,
            delay: Duration::from_secs(3600),
            reason: ScheduleReason::Manual,
        })
        .await
        .unwrap();
    let r2 = ResyncActor::new(
        r.db.clone(),
        cfg(r.me),
        r.storage.clone(),
        r.refcount.clone(),
        r.peers.clone().recipient(),
        Arc::new(FixedPlacement(vec![r.me])),
    )
    .unwrap()
    .start();
    assert_eq!(r2.send(GetResyncStatus).await.unwrap().queue_length, 1);
    // RetryNow of that hash makes it due now; with no ref and no file, resync does nothing.
    assert_eq!(r2.send(RetryNow { hash: Some(h) }).await.unwrap(), 1);
}

/// `n` distinct blocks of `size` pseudo-random (incompressible) bytes.
fn random_blocks(n: usize, size: usize) -> Vec<VerifiedBlock> {
    (0..n)
        .map(|i| {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
            let mut buf = Vec::with_capacity(size);
            while buf.len() < size {
                // xorshift64: fast and good enough to defeat compression.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.extend_from_slice(&x.to_le_bytes());
            }
            buf.truncate(size);
            VerifiedBlock::hash_plain(Bytes::from(buf), None)
        })
        .collect()
}

/// Throughput of resync fetching missing referenced blocks from the peer double (no
/// network, no fsync: the resync pipeline itself — actor hops, verification, file
/// writes). `BENCH_BLOCKS` (default 1000) blocks of 1 MiB, tranquility 0, 1 then 4
/// workers. Run with:
/// `cargo test --release -p blocknode-actors resync_fetch_throughput -- --ignored --nocapture`
#[actix_rt::test]
#[ignore]
async fn resync_fetch_throughput_of_missing_1mib_blocks_with_1_and_4_workers() {
    let n: usize = std::env::var("BENCH_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let size = 1 << 20;
    let t = Instant::now();
    let blocks = random_blocks(n, size);
    println!("generated and hashed {n} blocks in {:?}", t.elapsed());
    for workers in [1usize, 4] {
        let d = tempfile::tempdir().unwrap();
        let r = rig(d.path(), Duration::ZERO);
        r.resync
            .send(SetWorkers { workers })
            .await
            .unwrap()
            .unwrap();
        r.resync
            .send(SetTranquility { tranquility: 0 })
            .await
            .unwrap()
            .unwrap();
        let all: Vec<(Hash, DataBlock)> = blocks
            .iter()
            .map(|v| (v.hash(), v.data().clone()))
            .collect();
        let hashes: Vec<Hash> = all.iter().map(|(h, _)| *h).collect();
        r.peers
            .send(Edit(Box::new(move |p| {
                p.nodes.get_mut(&node(2)).unwrap().blocks.extend(all);
            })))
            .await
            .unwrap();
        let quiet = RefcountActor::new(r.db.clone(), RefcountConfig::default(), None)
            .unwrap()
            .start();
        futures::future::join_all(hashes.iter().map(|h| {
            quiet.send(AddRef {
                incarnation: 0,
                hash: *h,
                ref_id: "a".parse().unwrap(),
            })
        }))
        .await;
        let t = Instant::now();
        for h in &hashes {
            r.resync
                .send(Schedule::for_reason(*h, ScheduleReason::Repair, &cfg(r.me)))
                .await
                .unwrap();
        }
        loop {
            let stored = r.storage.send(GetStorageStats).await.unwrap().blocks;
            if stored as usize >= n {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "only {stored} of {n} blocks fetched in 10 min"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t.elapsed();
        println!(
            "workers {workers}, tranquility 0: {n} × 1 MiB resynced in {took:.2?} = {:.0} MiB/s, {:.2} ms per block",
            n as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1000.0 / n as f64
        );
        let st = r.resync.send(GetResyncStatus).await.unwrap();
        assert_eq!(st.errors, 0, "no resync error expected");
    }
}

#[actix_rt::test]
async fn no_block_is_deleted_while_member_lists_disagree() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    r.resync
        .send(SetLayoutAgreement { agreed: false })
        .await
        .unwrap();
    let h = stored_with_ref(&r, "keep me while layouts differ", "a").await;
    r.refcount
        .send(DropRef {
            incarnation: 0,
            hash: h,
            ref_id: "a".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    // gc_delay (100 ms) + after_gc_delay (50 ms) passed many times over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        exists(&r, h).await,
        "a deletable block was deleted while the member lists disagreed"
    );
    let status = r.resync.send(GetResyncStatus).await.unwrap();
    assert!(
        status.queue_length >= 1,
        "the put-off block must stay queued: {status:?}"
    );
    r.resync
        .send(SetLayoutAgreement { agreed: true })
        .await
        .unwrap();
    wait_until("the block to be deleted once the layouts agree", || async {
        !exists(&r, h).await
    })
    .await;
}

#[actix_rt::test]
async fn a_block_refused_by_a_full_disk_is_fetched_soon_after_space_frees() {
    let d = tempfile::tempdir().unwrap();
    let mut config = cfg(node(1));
    // The exponential backoff would wait a minute: the space probe must not.
    config.backoff_base = Duration::from_secs(60);
    // Room for one 1000-byte block only.
    let r = rig_with_capacity(d.path(), Duration::ZERO, config, Some(1500));
    r.resync
        .send(SetTranquility { tranquility: 0 })
        .await
        .unwrap()
        .unwrap();
    let filler = stored_with_ref(&r, "filler-abc", "f:1").await;
    let missed = block("missed-xyz");
    let h = missed.hash();
    let data = missed.into_data();
    let b = r.b;
    r.peers
        .send(Edit(Box::new(move |p| {
            p.nodes.get_mut(&b).unwrap().blocks.insert(h, data);
        })))
        .await
        .unwrap();
    r.refcount
        .send(AddRef {
            incarnation: 0,
            hash: h,
            ref_id: "m:1".parse().unwrap(),
        })
        .await
        .unwrap()
        .unwrap();
    let resync = r.resync.clone();
    wait_until("the fetch to fail on the full disk", || {
        let resync = resync.clone();
        async move {
            resync
                .send(GetBlockError { hash: h })
                .await
                .unwrap()
                .is_some_and(|e| e.contains("no space left"))
        }
    })
    .await;
    assert!(!r
        .storage
        .send(BlockExists { hash: h })
        .await
        .unwrap()
        .unwrap());
    // An operator (or GC) frees space.
    let look = r
        .storage
        .send(crate::storage::OpenGcLook { hash: filler })
        .await
        .unwrap()
        .unwrap();
    r.storage
        .send(DeleteIfUnwritten {
            hash: filler,
            since: look.since,
        })
        .await
        .unwrap()
        .unwrap();
    let freed = Instant::now();
    let storage = r.storage.clone();
    wait_until("the missed block to be fetched", || {
        let storage = storage.clone();
        async move {
            storage
                .send(BlockExists { hash: h })
                .await
                .unwrap()
                .unwrap()
        }
    })
    .await;
    assert!(
        freed.elapsed() < SPACE_PROBE_INTERVAL + Duration::from_secs(2),
        "fetched {:?} after space was freed",
        freed.elapsed()
    );
}
