//! The replica side through its messages: `PutBlockRef` against real storage, refcount
//! and resync actors, with a delay injected between its two steps.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use fjall::Database;

use blocknode_actors::budget::Pool;
use blocknode_actors::frame::{BlockRpc, ErrorCode};
use blocknode_actors::peer::{Call, HandleRpc, RpcError};
use blocknode_actors::placement::FixedPlacement;
use blocknode_actors::refcount::{AddRef, DropRef, GetRc, RefcountActor, RefcountConfig};
use blocknode_actors::resync::{GetResyncStatus, ResyncActor, ResyncConfig};
use blocknode_actors::storage::{
    BlockExists, GetStorageStats, StorageActor, StorageConfig, WriteBlock,
};
use blocknode_actors::tokens::{TokenActor, TokenConfig};
use blocknode_actors::{NodeId, RefId, VerifiedBlock};

use super::RpcDispatcher;

thread_local! {
    /// How long `put_block_ref` waits between its durable block write and its ref (the
    /// actors of a test run on the test's thread).
    static BETWEEN: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The test hook `put_block_ref` awaits between its two steps.
pub(super) async fn between_write_and_ref() {
    let d = BETWEEN.with(|b| b.get());
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// A peer actor with no peers (resync is never meant to reach one here).
struct NoPeers;

impl Actor for NoPeers {
    type Context = Context<Self>;
}

impl Handler<Call> for NoPeers {
    type Result = Result<BlockRpc, RpcError>;
    fn handle(&mut self, m: Call, _ctx: &mut Context<Self>) -> Self::Result {
        Err(RpcError::Unreachable {
            node: m.node,
            reason: "no peers in this test".into(),
        })
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    storage: Addr<StorageActor>,
    refcount: Addr<RefcountActor>,
    resync: Addr<ResyncActor>,
    dispatcher: Addr<RpcDispatcher>,
}

fn rig() -> Rig {
    rig_serving(None)
}

/// [`rig`] whose served `GetBlock`s are charged to `budget` (pool, longest wait).
fn rig_serving(budget: Option<(Pool, Duration)>) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::builder(dir.path().join("meta"))
        .open()
        .expect("fjall opens");
    let me = NodeId([1; 32]);
    let storage = StorageActor::new(StorageConfig::one_dir(dir.path().join("data"), true, None))
        .expect("storage opens")
        .start();
    let resync_ctx = Context::<ResyncActor>::new();
    let refcount = RefcountActor::new(
        db.clone(),
        RefcountConfig::default(),
        Some(resync_ctx.address().recipient()),
    )
    .expect("refcount opens")
    .start();
    let resync = resync_ctx.run(
        ResyncActor::new(
            db.clone(),
            ResyncConfig::new(me),
            storage.clone(),
            refcount.clone(),
            NoPeers.start().recipient(),
            Arc::new(FixedPlacement(vec![me])),
        )
        .expect("resync opens"),
    );
    let tokens = TokenActor::new(db.clone(), TokenConfig::new(me), None)
        .expect("tokens open")
        .start();
    let dispatcher = RpcDispatcher::new(
        storage.clone(),
        refcount.clone(),
        resync.clone(),
        ResyncConfig::new(me),
        tokens,
    );
    let dispatcher = match budget {
        Some((pool, wait)) => dispatcher.with_serve_budget(pool, wait),
        None => dispatcher,
    }
    .start();
    Rig {
        _dir: dir,
        storage,
        refcount,
        resync,
        dispatcher,
    }
}

fn put_block_ref(block: &VerifiedBlock, ref_id: &RefId) -> HandleRpc {
    HandleRpc {
        from: NodeId([2; 32]),
        rpc: BlockRpc::PutBlockRef {
            incarnation: 0,
            hash: block.hash(),
            data: block.data().clone(),
            ref_id: ref_id.clone(),
        },
    }
}

/// The fence of `put_block_ref`: a ref is counted only once the block is durably stored.
/// A watcher reads rc, then presence, as fast as it can while each PUT runs, with a delay
/// injected between the block write and the ref; with the two steps reversed or run
/// together, the watcher sees rc 1 and no block within the delay (checked by hand
/// with the order flipped: it fails on the first iteration).
#[actix_rt::test]
async fn a_put_with_a_ref_never_counts_the_ref_before_the_block_is_stored() {
    let r = rig();
    BETWEEN.with(|b| b.set(Duration::from_millis(3)));
    const ROUNDS: usize = 40;
    let ref_id: RefId = "obj:1".parse().unwrap();
    for i in 0..ROUNDS {
        let block = VerifiedBlock::hash_plain(Bytes::from(format!("block {i}").repeat(50)), None);
        let hash = block.hash();
        let put = r.dispatcher.send(put_block_ref(&block, &ref_id));
        let watch = async {
            let mut looks = 0u32;
            loop {
                let rc = r.refcount.send(GetRc { hash }).await.unwrap().unwrap();
                let stored = r.storage.send(BlockExists { hash }).await.unwrap().unwrap();
                looks += 1;
                assert!(
                    rc.count() == 0 || stored,
                    "round {i}: rc {rc:?} counted while the block is not stored (look {looks})"
                );
                if rc.count() > 0 {
                    return looks;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        };
        let (reply, looks) = futures::join!(put, watch);
        assert_eq!(reply.unwrap(), BlockRpc::Ok, "round {i}");
        assert!(
            looks > 1,
            "round {i}: the watcher must have looked during the put"
        );
    }
    BETWEEN.with(|b| b.set(Duration::ZERO));
}

/// A ref whose incarnation was dropped here is refused with `RefDropped` (the
/// coordinator reads the name again and adds it in a new incarnation); the block is
/// stored and stays unreferenced. A bad block is refused before anything is counted.
#[actix_rt::test]
async fn a_put_with_a_dropped_or_bad_ref_or_block_counts_nothing() {
    let r = rig();
    let block = VerifiedBlock::hash_plain(Bytes::from_static(b"dropped before"), None);
    let hash = block.hash();
    let ref_id: RefId = "obj:gone".parse().unwrap();
    r.refcount
        .send(AddRef {
            incarnation: 0,
            hash,
            ref_id: ref_id.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    r.refcount
        .send(DropRef {
            incarnation: 0,
            hash,
            ref_id: ref_id.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    let reply = r
        .dispatcher
        .send(put_block_ref(&block, &ref_id))
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            BlockRpc::Error {
                code: ErrorCode::RefDropped,
                ..
            }
        ),
        "a dropped ref must be refused as RefDropped: {reply:?}"
    );
    assert_eq!(
        r.refcount
            .send(GetRc { hash })
            .await
            .unwrap()
            .unwrap()
            .count(),
        0
    );
    assert!(r.storage.send(BlockExists { hash }).await.unwrap().unwrap());

    let other = VerifiedBlock::hash_plain(Bytes::from_static(b"other bytes"), None);
    let forged = HandleRpc {
        from: NodeId([2; 32]),
        rpc: BlockRpc::PutBlockRef {
            incarnation: 0,
            hash,
            data: other.data().clone(),
            ref_id: "obj:forged".parse().unwrap(),
        },
    };
    let reply = r.dispatcher.send(forged).await.unwrap();
    assert!(
        matches!(
            reply,
            BlockRpc::Error {
                code: ErrorCode::CorruptData,
                ..
            }
        ),
        "bytes that do not match the hash must be refused: {reply:?}"
    );
    let refs = r
        .refcount
        .send(blocknode_actors::refcount::ListRefs { hash })
        .await
        .unwrap()
        .unwrap();
    assert!(
        refs.iter().all(|(id, _)| id.as_str() != "obj:forged"),
        "no ref may be counted for refused bytes: {refs:?}"
    );
}

/// Which add a `PutBlockRef` makes decides what resync is told. A block this write
/// created needs no new-ref check (`AddStoredRef`: nothing queued). A block that was
/// already here with no ref may be under a GC delete deciding about that copy, so its
/// ref is a plain `AddRef`, whose 0 -> 1 move queues the check that refetches it if
/// the delete went through.
#[actix_rt::test]
async fn a_put_with_a_ref_queues_the_new_ref_check_only_for_a_copy_it_did_not_write() {
    let r = rig();
    let queued = || async { r.resync.send(GetResyncStatus).await.unwrap().queue_length };
    let ref_id: RefId = "obj:1".parse().unwrap();
    let fresh = VerifiedBlock::hash_plain(Bytes::from_static(b"written by this put"), None);
    let reply = r
        .dispatcher
        .send(put_block_ref(&fresh, &ref_id))
        .await
        .unwrap();
    assert_eq!(reply, BlockRpc::Ok);
    // The refcount actor tells resync before it answers, and resync's mailbox is in
    // order: a notice would be counted by now.
    assert_eq!(
        queued().await,
        0,
        "a block this put wrote must not queue a new-ref check"
    );

    let there = VerifiedBlock::hash_plain(Bytes::from_static(b"already stored"), None);
    r.storage
        .send(WriteBlock::verified(there.clone()))
        .await
        .unwrap()
        .unwrap();
    let reply = r
        .dispatcher
        .send(put_block_ref(&there, &ref_id))
        .await
        .unwrap();
    assert_eq!(reply, BlockRpc::Ok);
    assert_eq!(
        r.refcount
            .send(GetRc { hash: there.hash() })
            .await
            .unwrap()
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        queued().await,
        1,
        "a ref to a copy that was already here must queue its new-ref check"
    );
}

/// A peer's `GetBlock` is paid for from the peer pool before the block is read: with no
/// room, it waits (bounded), reads nothing and answers "unavailable" (the reader asks
/// another holder); with room, the reply's bytes carry the charge until dropped.
#[actix_rt::test]
async fn a_served_get_block_is_charged_to_the_peer_pool_before_it_is_read() {
    let pool = Pool::new("peer", 512 << 10);
    let r = rig_serving(Some((pool.clone(), Duration::from_millis(300))));
    let block = VerifiedBlock::hash_plain(Bytes::from(vec![7u8; 300 << 10]), None);
    let hash = block.hash();
    r.storage
        .send(WriteBlock::verified(block))
        .await
        .unwrap()
        .unwrap();
    let get = || HandleRpc {
        from: NodeId([2; 32]),
        rpc: BlockRpc::GetBlock(hash),
    };
    let hog = pool.charge(412 << 10).await.unwrap();
    let refused = r.dispatcher.send(get()).await.unwrap();
    assert!(
        matches!(
            refused,
            BlockRpc::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        ),
        "{refused:?}"
    );
    let stats = r.storage.send(GetStorageStats).await.unwrap();
    assert_eq!(stats.bytes_read, 0, "read before it was paid for");
    drop(hog);
    let served = r.dispatcher.send(get()).await.unwrap();
    let BlockRpc::PutBlock { data, .. } = served else {
        panic!("GetBlock answered {served:?}");
    };
    assert_eq!(data.inner_buffer().len(), 300 << 10);
    assert_eq!(pool.available(), 212 << 10, "the reply is charged");
    drop(data);
    assert_eq!(pool.available(), 512 << 10, "and returns it when dropped");
}
