//! Tests of the layout model (pure) and of the layout actor, through its messages only.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use fjall::Database;

use super::*;
use crate::hash::blake2sum;
use crate::peer::RpcError;
use crate::placement::{partition_of, Placement};

fn id(i: usize) -> NodeId {
    NodeId(blake2sum(format!("layout-node-{i}").as_bytes()).0)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16))
}

fn member(i: usize) -> LayoutMember {
    LayoutMember {
        id: id(i),
        addr: addr(i),
        zone: format!("z{i}"),
        capacity: 1,
    }
}

fn assign_change(i: usize) -> LayoutChange {
    LayoutChange::Assign {
        id: id(i),
        addr: addr(i),
        zone: format!("z{i}"),
        capacity: 1,
    }
}

fn three() -> Layout {
    Layout::initial((0..3).map(member).collect(), 3).expect("3 nodes, rf 3")
}

fn open_db(dir: &std::path::Path) -> Database {
    Database::builder(dir).open().expect("open fjall")
}

fn actor(db: Database, me: usize, initial: Option<Layout>) -> LayoutActor {
    LayoutActor::new(db, LayoutConfig::new(id(me), initial)).expect("layout actor")
}

#[test]
fn partition_bits_take_the_first_bits() {
    let mut h = [0u8; 32];
    h[0] = 0xab;
    h[1] = 0x80;
    assert_eq!(partition_bits(&h, 256), 0xab);
    assert_eq!(partition_bits(&h, 512), 0xab * 2 + 1);
    assert_eq!(partition_bits(&h, 1), 0);
    assert_eq!(partition_bits(&h, 2), 1);
}

#[test]
fn initial_layout_is_version_one_and_valid() {
    let l = three();
    assert_eq!(l.version, 1);
    assert_eq!(l.partitions, 256);
    l.validate().expect("valid");
    assert!(!l.in_transition());
    let mut reordered = (0..3).map(member).collect::<Vec<_>>();
    reordered.reverse();
    let again = Layout::initial(reordered, 3).expect("same members");
    assert_eq!(l.digest(), again.digest(), "member order must not matter");
}

#[test]
fn adding_a_node_moves_its_share_and_keeps_the_old_table() {
    let l = three();
    let next = l.with_changes(&[assign_change(3)]).expect("4 nodes");
    assert_eq!(next.version, 2);
    next.validate().expect("valid");
    assert_eq!(next.previous.as_ref(), Some(&l.table));
    assert!(next.in_transition());
    let moves = l.moves_to(&next);
    // 4 equal nodes, rf 3: the new one takes a quarter of the replicas, and only it.
    assert_eq!(moves.replicas_moved, 192, "{moves:?}");
    let new = moves
        .nodes
        .iter()
        .find(|n| n.id == id(3))
        .expect("new node");
    assert_eq!((new.before, new.after), (0, 192));
    assert_ne!(l.digest(), next.digest());
    // The digest ignores the previous table: ending the transition changes nothing.
    assert_eq!(next.settled().digest(), next.digest());
}

#[test]
fn removing_a_node_keeps_it_as_retiring_until_settled() {
    let l = Layout::initial((0..4).map(member).collect(), 3).expect("4 nodes");
    let next = l
        .with_changes(&[LayoutChange::Remove { id: id(0) }])
        .expect("3 left");
    assert!(next.member(&id(0)).is_none());
    assert!(
        next.names(&id(0)),
        "a removed node hands over before it leaves"
    );
    assert!(next.table.iter().all(|row| !row.contains(&id(0))));
    assert!(!next.settled().names(&id(0)));
    assert!(matches!(
        next.with_changes(&[LayoutChange::Remove { id: id(1) }]),
        Err(LayoutInvalid::Assign(_))
    ));
}

#[test]
fn growing_the_partition_count_moves_nothing_by_itself() {
    // 50 nodes need 512 partitions at rf 3 (20 replicas per node).
    let members: Vec<LayoutMember> = (0..30).map(member).collect();
    let l = Layout::initial(members, 3).expect("30 nodes");
    assert_eq!(l.partitions, 256);
    let changes: Vec<LayoutChange> = (30..50).map(assign_change).collect();
    let next = l.with_changes(&changes).expect("50 nodes");
    assert_eq!(next.partitions, 512);
    let prev = next.previous.as_ref().expect("previous");
    let h = blake2sum(b"some block");
    assert_eq!(
        prev[partition_of(&h, 512)],
        l.table[partition_of(&h, 256)],
        "a hash keeps its old holders in the expanded previous table"
    );
}

#[test]
fn validate_refuses_broken_tables() {
    let mut l = three();
    l.table[5].pop();
    assert!(matches!(
        l.validate(),
        Err(LayoutInvalid::Holders { partition: 5, .. })
    ));
    let mut l = three();
    l.table[7][0] = id(9);
    assert!(matches!(
        l.validate(),
        Err(LayoutInvalid::UnknownHolder { partition: 7, .. })
    ));
    let mut l = three();
    l.partitions = 300;
    assert!(matches!(l.validate(), Err(LayoutInvalid::Partitions(300))));
    let mut l = three();
    l.table[1][1] = l.table[1][0];
    assert!(matches!(
        l.validate(),
        Err(LayoutInvalid::RepeatedHolder { partition: 1, .. })
    ));
}

#[test]
fn layout_bytes_round_trip_and_garbage_is_refused() {
    let l = three().with_changes(&[assign_change(3)]).expect("4");
    let bytes = encode_layout(&l).expect("encode");
    assert!(
        bytes.len() < 16 << 10,
        "compressed layout is {} bytes",
        bytes.len()
    );
    assert_eq!(decode_layout(&bytes).expect("decode"), l);
    assert!(matches!(
        decode_layout(b"not zstd"),
        Err(LayoutError::BadOffer(_))
    ));
}

/// Collects every [`LayoutChanged`] it gets.
#[derive(Default)]
struct Spy {
    got: Vec<LayoutChanged>,
}

impl Actor for Spy {
    type Context = Context<Self>;
}

impl Handler<LayoutChanged> for Spy {
    type Result = ();
    fn handle(&mut self, m: LayoutChanged, _ctx: &mut Context<Self>) {
        self.got.push(m);
    }
}

#[derive(Message)]
#[rtype(result = "Vec<(u64, bool)>")]
struct Seen;

impl Handler<Seen> for Spy {
    type Result = MessageResult<Seen>;
    fn handle(&mut self, _m: Seen, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.got
                .iter()
                .map(|c| (c.layout.version, c.agreed))
                .collect(),
        )
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[actix_rt::test]
async fn stage_apply_and_revert_through_messages_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path());
    let a = actor(db.clone(), 0, Some(three())).start();
    let spy = Spy::default().start();
    a.send(SubscribeLayout {
        to: spy.clone().recipient(),
    })
    .await
    .expect("subscribe");

    let err = a.send(ApplyLayout { version: 2 }).await.expect("send");
    assert!(matches!(err, Err(LayoutError::NothingStaged)), "{err:?}");
    let err = a
        .send(StageChange {
            change: LayoutChange::Remove { id: id(7) },
        })
        .await
        .expect("send");
    assert!(matches!(err, Err(LayoutError::NotAMember(_))), "{err:?}");

    let view = a
        .send(StageChange {
            change: assign_change(3),
        })
        .await
        .expect("send")
        .expect("staged");
    assert_eq!(
        view.current.version, 1,
        "staging does not change the layout"
    );
    let (next, moves) = view.preview.expect("preview");
    assert_eq!(next.version, 2);
    assert_eq!(moves.replicas_moved, 192);

    let err = a.send(ApplyLayout { version: 3 }).await.expect("send");
    assert!(
        matches!(
            err,
            Err(LayoutError::WrongVersion {
                expected: 2,
                got: 3
            })
        ),
        "{err:?}"
    );
    let applied = a
        .send(ApplyLayout { version: 2 })
        .await
        .expect("send")
        .expect("applied");
    assert_eq!(applied.version, 2);
    settle().await;
    let seen = spy.send(Seen).await.expect("spy");
    assert_eq!(
        seen,
        vec![(1, true), (2, true)],
        "subscriber saw the switch"
    );

    // Stage a removal, then revert it.
    a.send(StageChange {
        change: LayoutChange::Remove { id: id(1) },
    })
    .await
    .expect("send")
    .expect("staged");
    assert_eq!(
        a.send(RevertLayout).await.expect("send").expect("revert"),
        1
    );
    assert!(a.send(GetLayout).await.expect("send").staged.is_empty());
    a.send(StageChange {
        change: LayoutChange::Remove { id: id(1) },
    })
    .await
    .expect("send")
    .expect("staged");

    // A restart (same metadata store, same configured [[members]]) keeps version 2 and
    // what is staged.
    let restarted = actor(db, 0, Some(three())).start();
    let view = restarted.send(GetLayout).await.expect("send");
    assert_eq!(view.current.version, 2);
    assert_eq!(view.current.digest(), next.digest());
    assert_eq!(view.staged, vec![LayoutChange::Remove { id: id(1) }]);
}

#[actix_rt::test]
async fn offers_are_verified_before_they_are_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = actor(open_db(dir.path()), 0, Some(three())).start();
    let next = three().with_changes(&[assign_change(3)]).expect("v2");
    let offer = |from: usize, layout: &Layout, announced: LayoutStamp| OfferLayout {
        from: id(from),
        announced,
        layout: layout.clone(),
    };

    let r = a.send(offer(9, &next, next.stamp())).await.expect("send");
    assert!(
        matches!(r, Err(LayoutError::UntrustedSender { .. })),
        "{r:?}"
    );
    let forged = LayoutStamp {
        version: 2,
        digest: blake2sum(b"other"),
    };
    let r = a.send(offer(1, &next, forged)).await.expect("send");
    assert!(
        matches!(r, Err(LayoutError::DigestMismatch { .. })),
        "{r:?}"
    );
    let mut broken = next.clone();
    broken.table[0].clear();
    let r = a
        .send(offer(1, &broken, broken.stamp()))
        .await
        .expect("send");
    assert!(matches!(r, Err(LayoutError::Invalid(_))), "{r:?}");
    let r = a
        .send(offer(1, &three(), three().stamp()))
        .await
        .expect("send");
    assert!(matches!(r, Err(LayoutError::NotNewer { .. })), "{r:?}");

    assert!(a
        .send(offer(1, &next, next.stamp()))
        .await
        .expect("send")
        .expect("taken"));
    assert_eq!(a.send(GetLayout).await.expect("send").current.version, 2);
}

#[actix_rt::test]
async fn a_joining_node_takes_a_layout_from_a_member_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = actor(open_db(dir.path()), 3, None).start();
    let view = a.send(GetLayout).await.expect("send");
    assert_eq!(view.current.version, 0);
    assert!(!view.current.names(&id(3)));
    let next = three().with_changes(&[assign_change(3)]).expect("v2");
    let r = a
        .send(OfferLayout {
            from: id(8),
            announced: next.stamp(),
            layout: next.clone(),
        })
        .await
        .expect("send");
    assert!(
        matches!(r, Err(LayoutError::UntrustedSender { .. })),
        "{r:?}"
    );
    a.send(OfferLayout {
        from: id(0),
        announced: next.stamp(),
        layout: next.clone(),
    })
    .await
    .expect("send")
    .expect("taken");
    assert!(a.send(GetLayout).await.expect("send").current.names(&id(3)));
}

/// A peer that answers `LayoutQuery` with a fixed layout and `HandoverQuery` with
/// `left` blocks (under the version asked).
struct LayoutPeer {
    layout: Layout,
    queries: usize,
    left: u64,
}

impl Actor for LayoutPeer {
    type Context = Context<Self>;
}

impl Handler<crate::peer::Call> for LayoutPeer {
    type Result = Result<BlockRpc, RpcError>;
    fn handle(&mut self, c: crate::peer::Call, _ctx: &mut Context<Self>) -> Self::Result {
        match c.rpc {
            BlockRpc::LayoutQuery => {
                self.queries += 1;
                Ok(BlockRpc::LayoutReply {
                    data: encode_layout(&self.layout).map_err(|e| RpcError::Unreachable {
                        node: c.node,
                        reason: e.to_string(),
                    })?,
                })
            }
            BlockRpc::HandoverQuery { version } => Ok(BlockRpc::HandoverReply(HandoverLeft {
                version,
                partitions: self.left.min(1),
                blocks: self.left,
                bytes: self.left * 1000,
            })),
            other => Err(RpcError::Unreachable {
                node: c.node,
                reason: format!("unexpected {}", other.kind()),
            }),
        }
    }
}

#[actix_rt::test]
async fn a_newer_stamp_is_fetched_and_agreement_follows_the_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next = three().with_changes(&[assign_change(3)]).expect("v2");
    let peer = LayoutPeer {
        layout: next.clone(),
        queries: 0,
        left: 0,
    }
    .start();
    let a = actor(open_db(dir.path()), 0, Some(three()))
        .with_peers(peer.recipient())
        .start();
    let spy = Spy::default().start();
    a.send(SubscribeLayout {
        to: spy.clone().recipient(),
    })
    .await
    .expect("subscribe");

    // Peer 2 still announces version 1, peer 1 announces version 2: fetched, switched.
    a.send(PeerLayoutSeen {
        peer: id(2),
        stamp: three().stamp(),
    })
    .await
    .expect("send");
    a.send(PeerLayoutSeen {
        peer: id(1),
        stamp: next.stamp(),
    })
    .await
    .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = a.send(GetLayout).await.expect("send");
        if v.current.version == 2 {
            // Node 2 announced version 1: not agreed until it announces version 2.
            assert_eq!(v.disagreeing.len(), 1, "{:?}", v.disagreeing);
            assert_eq!(v.disagreeing[0].0, id(2));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "layout v2 never fetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.send(PeerLayoutSeen {
        peer: id(2),
        stamp: next.stamp(),
    })
    .await
    .expect("send");
    settle().await;
    let seen = spy.send(Seen).await.expect("spy");
    assert_eq!(seen.first(), Some(&(1, true)));
    assert!(seen.contains(&(1, false)), "v1 disagreement seen: {seen:?}");
    assert_eq!(
        seen.last(),
        Some(&(2, true)),
        "agreement after the switch: {seen:?}"
    );
}

/// Stage node 3 and apply version 2.
async fn grow_to_four(a: &Addr<LayoutActor>) {
    a.send(StageChange {
        change: assign_change(3),
    })
    .await
    .expect("send")
    .expect("staged");
    a.send(ApplyLayout { version: 2 })
        .await
        .expect("send")
        .expect("applied");
}

#[actix_rt::test]
async fn ending_a_transition_drops_the_previous_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = actor(open_db(dir.path()), 0, Some(three())).start();
    grow_to_four(&a).await;
    let r = a.send(EndTransition { version: 1 }).await.expect("send");
    assert!(matches!(r, Err(LayoutError::NotCurrent { .. })), "{r:?}");
    let before = a.send(GetLayout).await.expect("send").current;
    assert!(before.in_transition());
    let p = LayoutPlacement::new(&before);
    let h = blake2sum(b"x");
    assert_eq!(
        p.previous_nodes(&h),
        before.previous.as_ref().expect("prev")[partition_of(&h, 256)]
    );
    a.send(EndTransition { version: 2 })
        .await
        .expect("send")
        .expect("ended");
    let after = a.send(GetLayout).await.expect("send").current;
    assert!(!after.in_transition());
    assert_eq!(after.digest(), before.digest());
    assert!(LayoutPlacement::new(&after).previous_nodes(&h).is_empty());
}

#[derive(Message)]
#[rtype(result = "()")]
struct SetLeft(u64);

impl Handler<SetLeft> for LayoutPeer {
    type Result = ();
    fn handle(&mut self, m: SetLeft, _ctx: &mut Context<Self>) {
        self.left = m.0;
    }
}

#[actix_rt::test]
async fn the_transition_ends_when_every_old_holder_has_handed_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = LayoutPeer {
        layout: three(),
        queries: 0,
        left: 5,
    }
    .start();
    let a = actor(open_db(dir.path()), 0, Some(three()))
        .with_peers(peer.clone().recipient())
        .start();
    // Adding node 3 moves a quarter of the replicas off nodes 0..2 (the old holders).
    grow_to_four(&a).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let v = a.send(GetLayout).await.expect("send");
        if let Some(t) = v.transition {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.version, 2);
    assert!(status.partitions_moving > 0);
    assert!(status.blocks_left > 0, "{status:?}");
    assert!(
        a.send(GetLayout)
            .await
            .expect("send")
            .current
            .in_transition(),
        "blocks are left: the transition goes on"
    );
    peer.send(SetLeft(0)).await.expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a
        .send(GetLayout)
        .await
        .expect("send")
        .current
        .in_transition()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transition did not end once nothing was left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
