//! AntiEntropyActor tests: node A's actor with a real refcount actor; node B is another
//! real refcount actor behind a test double of the peer actor that answers A's calls the
//! way the node's dispatcher does.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::frame::{self, BlockRpc, ErrorCode, RefRecord};
use crate::hash::Hash;
use crate::layout::{Layout, LayoutChanged, LayoutMember, LayoutPlacement};
use crate::peer::{Call, CallsFailed, RpcError};
use crate::placement::FixedPlacement;
use crate::refcount::RefcountActor;
use crate::refcount::{
    AddRef, DropRef, GetRc, MergeRefs, RecordsUnder, RefcountConfig, RefcountError,
};
use crate::resync::{Schedule, ScheduleReason};
use crate::storage::ReadBlock;
use crate::{RcEntry, RefId};

mod overflow;

fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

fn refcount(dir: &Path) -> (Database, Addr<RefcountActor>) {
    let db = Database::builder(dir).open().unwrap();
    let a = RefcountActor::new(
        db.clone(),
        RefcountConfig {
            gc_delay: Duration::from_secs(600),
            ..Default::default()
        },
        None,
    )
    .unwrap()
    .start();
    (db, a)
}

/// Node B as A's peer actor sees it.
struct FakePeer {
    b: Addr<RefcountActor>,
    up: bool,
    layout: Option<Hash>,
    /// ScheduleResync requests B received.
    resyncs: Vec<Hash>,
    /// Requests B answered.
    calls: u64,
    /// Hint-related requests B received, in arrival order (kind, hash).
    log: Vec<(&'static str, Hash)>,
    /// Blocks being pushed to B right now, and the most at once.
    pushing: u32,
    max_pushing: u32,
}

/// A push to B ended (its delay is over).
#[derive(Message)]
#[rtype(result = "()")]
struct PushDone;

impl Handler<PushDone> for FakePeer {
    type Result = ();
    fn handle(&mut self, _m: PushDone, _ctx: &mut Context<Self>) {
        self.pushing -= 1;
    }
}

impl Actor for FakePeer {
    type Context = Context<Self>;
}

fn rc_reply<T>(
    r: Result<Result<T, RefcountError>, MailboxError>,
    ok: fn(T) -> BlockRpc,
) -> Result<BlockRpc, RpcError> {
    match r {
        Ok(Ok(v)) => Ok(ok(v)),
        Ok(Err(RefcountError::RefDropped { .. })) => Err(RpcError::Remote {
            node: node(2),
            code: ErrorCode::RefDropped,
            message: "dropped".into(),
        }),
        Ok(Err(e)) => Err(RpcError::Remote {
            node: node(2),
            code: ErrorCode::Internal,
            message: e.to_string(),
        }),
        Err(e) => Err(RpcError::Remote {
            node: node(2),
            code: ErrorCode::Unavailable,
            message: e.to_string(),
        }),
    }
}

impl Handler<Call> for FakePeer {
    type Result = ResponseFuture<Result<BlockRpc, RpcError>>;

    fn handle(&mut self, c: Call, ctx: &mut Context<Self>) -> Self::Result {
        let target = c.node;
        if target != node(2) || !self.up {
            return Box::pin(async move {
                Err(RpcError::Unreachable {
                    node: target,
                    reason: "down".into(),
                })
            });
        }
        self.calls += 1;
        let b = self.b.clone();
        match &c.rpc {
            BlockRpc::AddRef { hash, .. } => self.log.push(("add_ref", *hash)),
            BlockRpc::ScheduleResync(h) => self.log.push(("schedule_resync", *h)),
            BlockRpc::PutBlock { hash, .. } => {
                // Takes a while, so pushes run at once only if A sends them at once.
                self.log.push(("put_block", *hash));
                self.pushing += 1;
                self.max_pushing = self.max_pushing.max(self.pushing);
                let me = ctx.address();
                return Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    me.do_send(PushDone);
                    Ok(BlockRpc::Ok)
                });
            }
            _ => {}
        }
        if let BlockRpc::ScheduleResync(h) = c.rpc {
            self.resyncs.push(h);
            return Box::pin(async { Ok(BlockRpc::Ok) });
        }
        Box::pin(async move {
            match c.rpc {
                BlockRpc::RefDigestQuery { prefix, known } => {
                    let known = (!known.is_empty()).then_some(known);
                    rc_reply(
                        b.send(DigestPrefix { prefix, known }).await,
                        BlockRpc::RefDigestReply,
                    )
                }
                BlockRpc::RefRecordsQuery {
                    prefix,
                    exact,
                    limit,
                } => rc_reply(
                    b.send(RecordsUnder {
                        prefix,
                        exact,
                        limit: limit as usize,
                    })
                    .await,
                    BlockRpc::RefRecords,
                ),
                BlockRpc::MergeRefs(records) => {
                    rc_reply(b.send(MergeRefs { records }).await, |_| BlockRpc::Ok)
                }
                BlockRpc::AddRef { hash, ref_id, .. } => rc_reply(
                    b.send(AddRef {
                        incarnation: 0,
                        hash,
                        ref_id,
                    })
                    .await,
                    |_| BlockRpc::Ok,
                ),
                BlockRpc::DropRef { hash, ref_id, .. } => rc_reply(
                    b.send(DropRef {
                        incarnation: 0,
                        hash,
                        ref_id,
                    })
                    .await,
                    |_| BlockRpc::Ok,
                ),
                other => Err(RpcError::Protocol {
                    node: node(2),
                    reason: format!("unexpected {}", other.kind()),
                }),
            }
        })
    }
}

impl Handler<GetPeerStatus> for FakePeer {
    type Result = MessageResult<GetPeerStatus>;

    fn handle(&mut self, _m: GetPeerStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(vec![crate::peer::PeerInfo {
            id: node(2),
            addr: "127.0.0.1:1".parse().unwrap(),
            up: self.up,
            last_seen: None,
            rtt: None,
            layout_digest: self.layout,
            stats: None,
        }])
    }
}

#[derive(Message)]
#[rtype(result = "(u64, Vec<Hash>)")]
struct Peek;

impl Handler<Peek> for FakePeer {
    type Result = MessageResult<Peek>;
    fn handle(&mut self, _m: Peek, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((self.calls, self.resyncs.clone()))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct SetPeer {
    up: bool,
    layout: Option<Hash>,
}

impl Handler<SetPeer> for FakePeer {
    type Result = ();
    fn handle(&mut self, m: SetPeer, _ctx: &mut Context<Self>) {
        self.up = m.up;
        self.layout = m.layout;
    }
}

/// Records what A's actor sends to resync.
#[derive(Default)]
struct ResyncSpy {
    scheduled: Vec<(Hash, ScheduleReason)>,
}

impl Actor for ResyncSpy {
    type Context = Context<Self>;
}

impl Handler<Schedule> for ResyncSpy {
    type Result = ();
    fn handle(&mut self, m: Schedule, _ctx: &mut Context<Self>) {
        self.scheduled.push((m.hash, m.reason));
    }
}

#[derive(Message)]
#[rtype(result = "Vec<(Hash, ScheduleReason)>")]
struct SpyPeek;

impl Handler<SpyPeek> for ResyncSpy {
    type Result = MessageResult<SpyPeek>;
    fn handle(&mut self, _m: SpyPeek, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.scheduled.clone())
    }
}

const LAYOUT: Hash = Hash([0xAA; 32]);

struct Rig {
    a: Addr<RefcountActor>,
    a_db: Database,
    b: Addr<RefcountActor>,
    peer: Addr<FakePeer>,
    spy: Addr<ResyncSpy>,
    ae: Addr<AntiEntropyActor>,
}

/// A and B; `holders` is the placement of every partition.
fn rig(
    dir: &Path,
    holders: Vec<NodeId>,
    b_up: bool,
    tweak: impl FnOnce(&mut AntiEntropyConfig),
) -> Rig {
    rig_reading(dir, holders, b_up, tweak, None)
}

/// [`rig`] where A's own block reads go to `read_block`.
fn rig_reading(
    dir: &Path,
    holders: Vec<NodeId>,
    b_up: bool,
    tweak: impl FnOnce(&mut AntiEntropyConfig),
    read_block: Option<Recipient<ReadBlock>>,
) -> Rig {
    let (a_db, a) = refcount(&dir.join("a"));
    let (_b_db, b) = refcount(&dir.join("b"));
    let peer = FakePeer {
        b: b.clone(),
        up: b_up,
        layout: Some(LAYOUT),
        resyncs: Vec::new(),
        calls: 0,
        log: Vec::new(),
        pushing: 0,
        max_pushing: 0,
    }
    .start();
    let spy = ResyncSpy::default().start();
    let mut config = AntiEntropyConfig::new(node(1));
    config.first_round_after = Duration::from_secs(3600);
    config.peer_poll = Duration::from_millis(50);
    config.tranquility = 0;
    config.rpc_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let ae = AntiEntropyActor::new(
        a_db.clone(),
        config,
        AntiEntropyLinks {
            refcount: a.clone(),
            peers: peer.clone().recipient(),
            peer_status: peer.clone().recipient(),
            schedule: spy.clone().recipient(),
            placement: Arc::new(FixedPlacement(holders)),
            read_block,
            read_budget: None,
        },
    )
    .unwrap()
    .start();
    Rig {
        a,
        a_db,
        b,
        peer,
        spy,
        ae,
    }
}

/// Node B up, announcing `layout`.
async fn set_peer_up(r: &Rig, layout: Hash) {
    r.peer
        .send(SetPeer {
            up: true,
            layout: Some(layout),
        })
        .await
        .unwrap();
}

fn rid(s: String) -> RefId {
    s.parse().unwrap()
}

/// Hash number `i`, spread over the partitions.
fn hash_n(i: u32) -> Hash {
    crate::hash::blake2sum(&i.to_le_bytes())
}

fn rec(i: u32, live: bool) -> RefRecord {
    RefRecord {
        incarnation: 0,
        dropped_at: 0,
        hash: hash_n(i),
        ref_id: rid(format!("ref-{i}")),
        live,
    }
}

async fn merge(a: &Addr<RefcountActor>, records: Vec<RefRecord>) {
    for chunk in records.chunks(1000) {
        a.send(MergeRefs {
            records: chunk.to_vec(),
        })
        .await
        .unwrap()
        .unwrap();
    }
}

async fn everything(a: &Addr<RefcountActor>) -> PrefixDigestPair {
    let d = a
        .send(DigestPrefix {
            prefix: vec![],
            known: None,
        })
        .await
        .unwrap()
        .unwrap();
    (d.count, d.digest)
}

type PrefixDigestPair = (u64, Vec<u8>);

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn round(r: &Rig) -> AntiEntropyStatus {
    assert!(
        r.ae.send(SyncNow).await.unwrap(),
        "a round was already running"
    );
    let mut st = r.ae.send(GetAntiEntropyStatus).await.unwrap();
    let t = Instant::now();
    while st.round_running {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "round did not end: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = r.ae.send(GetAntiEntropyStatus).await.unwrap();
    }
    st
}

/// Bytes of sending every record of `n` in pages of [`reconcile::LEAF`] (the naive sync).
fn bytes_of_sending_all(records: &[RefRecord]) -> u64 {
    records
        .chunks(reconcile::LEAF)
        .map(|c| {
            frame::encode(&BlockRpc::RefRecords(c.to_vec()))
                .unwrap()
                .len() as u64
        })
        .sum()
}

/// Two replicas of `n` refs that differ in 10 records (4 only on A, 4 only on B, 2 live on
/// A and dropped on B); returns (bytes exchanged by anti-entropy, bytes of sending all).
async fn differing_replicas(n: u32, dir: &Path) -> (u64, u64, AntiEntropyStatus, Rig) {
    // B comes up once both hold their records: its comeback starts the sync.
    let r = rig(dir, vec![node(1), node(2)], false, |_| {});
    let common: Vec<RefRecord> = (0..n).map(|i| rec(i, i % 7 != 0)).collect();
    merge(&r.a, common.clone()).await;
    merge(&r.b, common.clone()).await;
    merge(&r.a, (n..n + 4).map(|i| rec(i, true)).collect()).await;
    merge(&r.b, (n + 4..n + 8).map(|i| rec(i, true)).collect()).await;
    merge(&r.a, (n + 8..n + 10).map(|i| rec(i, true)).collect()).await;
    merge(&r.b, (n + 8..n + 10).map(|i| rec(i, false)).collect()).await;
    assert_ne!(everything(&r.a).await, everything(&r.b).await);
    set_peer_up(&r, LAYOUT).await;
    let mut st = r.ae.send(GetAntiEntropyStatus).await.unwrap();
    let t = Instant::now();
    while st.partitions_in_sync < 256 || st.partitions_queued > 0 || st.partitions_syncing > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "sync after the comeback did not end: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = r.ae.send(GetAntiEntropyStatus).await.unwrap();
    }
    let mut all = common;
    all.extend((n..n + 10).map(|i| rec(i, true)));
    (
        st.bytes_sent + st.bytes_received,
        bytes_of_sending_all(&all),
        st,
        r,
    )
}

#[actix_rt::test]
async fn a_round_repairs_both_sides_exchanging_only_the_differences() {
    let d = tempfile::tempdir().unwrap();
    let n = 3000;
    let (ae_bytes, all_bytes, st, r) = differing_replicas(n, d.path()).await;
    assert_eq!(
        everything(&r.a).await,
        everything(&r.b).await,
        "replicas still differ after a round: {st:?}"
    );
    assert_eq!(st.records_received, 6, "4 new on B + 2 tombstones: {st:?}");
    assert_eq!(st.records_sent, 4, "4 new on A: {st:?}");
    assert_eq!(st.partitions_in_sync, 256, "{st:?}");
    // Dropped wins: the two refs live on A and dropped on B are dropped on both now.
    for i in n + 8..n + 10 {
        let rc = r.a.send(GetRc { hash: hash_n(i) }).await.unwrap().unwrap();
        assert_eq!(
            rc.count(),
            0,
            "ref {i} must be dropped on A after the merge"
        );
    }
    // Blocks that gained a live ref here are scheduled for a fetch now.
    let scheduled = r.spy.send(SpyPeek).await.unwrap();
    let fetched: HashSet<Hash> = scheduled.iter().map(|(h, _)| *h).collect();
    for i in n + 4..n + 8 {
        assert!(
            fetched.contains(&hash_n(i)),
            "no resync scheduled for new ref {i}"
        );
    }
    assert!(
        ae_bytes * 3 < all_bytes,
        "anti-entropy exchanged {ae_bytes} bytes, sending everything is {all_bytes}"
    );
    // A full round finds nothing to do.
    let again = round(&r).await;
    assert!(again.last_full_sync.is_some(), "{again:?}");
    assert_eq!(again.records_received, st.records_received);
    assert_eq!(again.records_sent, st.records_sent);
}

/// The bytes a round exchanges for 100,000 refs differing in 10 (docs/operations.md): `cargo test --release -p blocknode-actors -- --ignored
/// anti_entropy_bytes_for_100k --nocapture`.
#[actix_rt::test]
#[ignore]
async fn anti_entropy_bytes_for_100k_refs_differing_in_10() {
    let d = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (ae_bytes, all_bytes, st, _r) = differing_replicas(100_000, d.path()).await;
    println!(
        "100000 refs, 10 differing: anti-entropy {} bytes ({} sent, {} received; {} records moved), sending all {} bytes: {:.4}% ({:.1} s)",
        ae_bytes,
        st.bytes_sent,
        st.bytes_received,
        st.records_sent + st.records_received,
        all_bytes,
        100.0 * ae_bytes as f64 / all_bytes as f64,
        t.elapsed().as_secs_f64()
    );
}

#[actix_rt::test]
async fn missed_writes_are_hinted_persisted_and_replayed_when_the_peer_comes_up() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), vec![node(1), node(2)], false, |_| {});
    let h = hash_n(1);
    let unreachable = || RpcError::Unreachable {
        node: node(2),
        reason: "down".into(),
    };
    for (rpc, err) in [
        (
            BlockRpc::AddRef {
                incarnation: 0,
                hash: h,
                ref_id: rid("x".into()),
            },
            unreachable(),
        ),
        (
            BlockRpc::AddRef {
                incarnation: 0,
                hash: h,
                ref_id: rid("x".into()),
            },
            unreachable(),
        ),
        (
            BlockRpc::PutBlock {
                hash: h,
                data: crate::DataBlock::Plain(bytes::Bytes::from_static(b"x")),
            },
            unreachable(),
        ),
        // A refusal B would repeat is not a missed write.
        (
            BlockRpc::AddRef {
                incarnation: 0,
                hash: h,
                ref_id: rid("refused".into()),
            },
            RpcError::Remote {
                node: node(2),
                code: ErrorCode::RefDropped,
                message: "dropped".into(),
            },
        ),
    ] {
        r.ae.do_send(CallsFailed {
            rpc,
            failed: vec![(node(2), err)],
        });
    }
    let st = r.ae.send(GetAntiEntropyStatus).await.unwrap();
    assert_eq!(
        st.hints_pending, 2,
        "one AddRef hint (deduplicated) and one block hint"
    );
    let hints = r
        .a_db
        .keyspace(HINTS_KEYSPACE, KeyspaceCreateOptions::default)
        .unwrap();
    assert_eq!(hints.iter().count(), 2, "hints must be in the keyspace");
    assert_eq!(
        r.b.send(GetRc { hash: h }).await.unwrap().unwrap(),
        RcEntry::Absent
    );

    set_peer_up(&r, LAYOUT).await;
    wait_for("the hints to be replayed", 10, || async {
        r.ae.send(GetAntiEntropyStatus).await.unwrap().hints_pending == 0
    })
    .await;
    assert_eq!(
        r.b.send(GetRc { hash: h }).await.unwrap().unwrap().count(),
        1,
        "B must hold the replayed ref"
    );
    let (_, resyncs) = r.peer.send(Peek).await.unwrap();
    assert_eq!(
        resyncs,
        vec![h],
        "the missed block is asked for once, after its ref"
    );
    assert_eq!(
        hints.iter().count(),
        0,
        "replayed hints must leave the keyspace"
    );
}

#[actix_rt::test]
async fn hints_are_off_when_disabled() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), vec![node(1), node(2)], false, |c| {
        c.hinted_handoff = false
    });
    r.ae.do_send(CallsFailed {
        rpc: BlockRpc::DropRef {
            incarnation: 0,
            hash: hash_n(1),
            ref_id: rid("x".into()),
        },
        failed: vec![(
            node(2),
            RpcError::Unreachable {
                node: node(2),
                reason: "down".into(),
            },
        )],
    });
    assert_eq!(
        r.ae.send(GetAntiEntropyStatus).await.unwrap().hints_pending,
        0
    );
}

/// The layout actor's word: every partition on B alone, agreed or not (B disagreeing).
fn b_alone(agreed: bool) -> LayoutChanged {
    let b = LayoutMember {
        id: node(2),
        addr: "127.0.0.1:1".parse().unwrap(),
        zone: "z".into(),
        capacity: 1,
    };
    let layout = Layout::initial(vec![b], 1).unwrap();
    LayoutChanged {
        placement: Arc::new(LayoutPlacement::new(&layout)),
        layout: Arc::new(layout),
        agreed,
        disagreeing: if agreed { Vec::new() } else { vec![node(2)] },
    }
}

/// Wait until no round runs (a layout change starts one by itself).
async fn idle(r: &Rig) {
    wait_for("the running round to end", 30, || async {
        !r.ae.send(GetAntiEntropyStatus).await.unwrap().round_running
    })
    .await;
}

#[actix_rt::test]
async fn a_partition_no_longer_held_is_handed_over_then_forgotten_only_when_layouts_agree() {
    let d = tempfile::tempdir().unwrap();
    // Every partition is held by A: then a layout puts them all on B alone.
    let r = rig(d.path(), vec![node(1)], true, |_| {});
    set_peer_up(&r, LAYOUT).await;
    let recs: Vec<RefRecord> = (0..300).map(|i| rec(i, i % 3 != 0)).collect();
    merge(&r.a, recs).await;
    r.ae.send(b_alone(false)).await.unwrap();
    idle(&r).await;
    let st = round(&r).await;
    assert!(st.partitions_waiting_for_layout > 0, "{st:?}");
    assert!(
        !st.layout_agreed && st.layout_differs == vec![node(2).to_hex()],
        "{st:?}"
    );
    assert_eq!(
        everything(&r.a).await.0,
        300,
        "nothing may be forgotten while layouts differ"
    );

    r.ae.send(b_alone(true)).await.unwrap();
    idle(&r).await;
    let st = round(&r).await;
    assert_eq!(st.partitions_not_held, 256, "{st:?}");
    assert_eq!(
        everything(&r.b).await.0,
        300,
        "B must have every record A had"
    );
    assert_eq!(
        everything(&r.a).await.0,
        0,
        "A must have forgotten the partitions"
    );
    assert_eq!(st.records_sent, 300);
}

/// A's block store as the replay sees it: the blocks in the map, NotFound otherwise.
struct LocalBlocks(std::collections::HashMap<Hash, crate::DataBlock>);

impl Actor for LocalBlocks {
    type Context = Context<Self>;
}

impl Handler<ReadBlock> for LocalBlocks {
    type Result = Result<crate::DataBlock, crate::storage::StorageError>;
    fn handle(&mut self, m: ReadBlock, _ctx: &mut Context<Self>) -> Self::Result {
        self.0
            .get(&m.hash)
            .cloned()
            .ok_or(crate::storage::StorageError::NotFound { hash: m.hash })
    }
}

#[derive(Message)]
#[rtype(result = "(Vec<(&'static str, Hash)>, u32)")]
struct PeekLog;

impl Handler<PeekLog> for FakePeer {
    type Result = MessageResult<PeekLog>;
    fn handle(&mut self, _m: PeekLog, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((self.log.clone(), self.max_pushing))
    }
}

#[actix_rt::test]
async fn hinted_blocks_held_here_are_pushed_in_parallel_after_their_refs() {
    let d = tempfile::tempdir().unwrap();
    let held: std::collections::HashMap<Hash, crate::DataBlock> = (0..10)
        .map(|i| {
            let data = bytes::Bytes::from(format!("block {i}"));
            (crate::hash::blake2sum(&data), crate::DataBlock::Plain(data))
        })
        .collect();
    let not_held: Vec<Hash> = (0..5).map(hash_n).collect();
    let local = LocalBlocks(held.clone()).start();
    let r = rig_reading(
        d.path(),
        vec![node(1), node(2)],
        false,
        |_| {},
        Some(local.recipient()),
    );
    let all: Vec<Hash> = held
        .keys()
        .copied()
        .chain(not_held.iter().copied())
        .collect();
    for (i, h) in all.iter().enumerate() {
        for rpc in [
            BlockRpc::AddRef {
                incarnation: 0,
                hash: *h,
                ref_id: rid(format!("r:{i}")),
            },
            BlockRpc::PutBlock {
                hash: *h,
                data: crate::DataBlock::Plain(bytes::Bytes::from_static(b"x")),
            },
        ] {
            r.ae.do_send(CallsFailed {
                rpc,
                failed: vec![(
                    node(2),
                    RpcError::Unreachable {
                        node: node(2),
                        reason: "down".into(),
                    },
                )],
            });
        }
    }
    set_peer_up(&r, LAYOUT).await;
    wait_for("the hints to be replayed", 10, || async {
        r.ae.send(GetAntiEntropyStatus).await.unwrap().hints_pending == 0
    })
    .await;
    let (log, max_pushing) = r.peer.send(PeekLog).await.unwrap();
    for h in &all {
        let pos = |kind: &str| log.iter().position(|(k, x)| *k == kind && x == h);
        let add = pos("add_ref").expect("every ref replayed");
        let (block, other) = if held.contains_key(h) {
            ("put_block", "schedule_resync")
        } else {
            ("schedule_resync", "put_block")
        };
        let at = pos(block).unwrap_or_else(|| panic!("{block} missing for {h:?}: {log:?}"));
        assert!(add < at, "the ref must reach B before its block: {log:?}");
        assert_eq!(pos(other), None, "{other} sent for {h:?}");
    }
    assert!(
        max_pushing > 1,
        "pushes went one at a time (at most {max_pushing} at once)"
    );
}
