//! Message-level tests: two or three PeerActors in one System on loopback, with
//! certificates from [`crate::tls`] in a temp dir and a test-double handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use super::*;
use crate::block::DataBlock;
use crate::frame::{self, BlockRpc, ErrorCode, FrameLimits};
use crate::hash::blake2sum;
use crate::tls::{self, TlsIdentity};

/// Stores blocks in a map; counts every request; optionally answers late.
struct TestHandler {
    blocks: HashMap<Hash, DataBlock>,
    seen: Vec<(NodeId, &'static str)>,
    delay: Option<Duration>,
}

impl Actor for TestHandler {
    type Context = Context<Self>;
}

impl Handler<HandleRpc> for TestHandler {
    type Result = ResponseFuture<BlockRpc>;

    fn handle(&mut self, msg: HandleRpc, _ctx: &mut Context<Self>) -> Self::Result {
        self.seen.push((msg.from, msg.rpc.kind()));
        // Like the storage actor, the double keeps its own copy of a block and drops the
        // received buffer (and the RAM budget charge on it) once the "write" is done.
        let mut received = None;
        let reply = match msg.rpc {
            BlockRpc::PutBlock { hash, data } => {
                let copy = bytes::Bytes::copy_from_slice(data.inner_buffer());
                let stored = if data.is_compressed() {
                    DataBlock::Compressed(copy)
                } else {
                    DataBlock::Plain(copy)
                };
                self.blocks.insert(hash, stored);
                received = Some(data);
                BlockRpc::Ok
            }
            BlockRpc::GetBlock(hash) => match self.blocks.get(&hash) {
                Some(data) => BlockRpc::PutBlock {
                    hash,
                    data: data.clone(),
                },
                None => BlockRpc::error(ErrorCode::NotFound, "no such block"),
            },
            _ => BlockRpc::Ok,
        };
        let delay = self.delay;
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            drop(received);
            reply
        })
    }
}

#[derive(Message)]
#[rtype(result = "Vec<(NodeId, &'static str)>")]
struct Seen;

impl Handler<Seen> for TestHandler {
    type Result = MessageResult<Seen>;
    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.seen.clone())
    }
}

fn handler(delay: Option<Duration>) -> Addr<TestHandler> {
    TestHandler {
        blocks: HashMap::new(),
        seen: Vec::new(),
        delay,
    }
    .start()
}

fn tuning() -> PeerTuning {
    PeerTuning {
        connect_timeout: Duration::from_secs(1),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        redial_after: Duration::from_millis(100),
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(3),
        socket_buffer: 0,
        ..PeerTuning::default()
    }
}

/// A cluster CA in a temp dir, and node identities signed by it.
struct Certs {
    dir: tempfile::TempDir,
    ca: PathBuf,
    n: usize,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        tls::generate_ca(&ca).unwrap();
        Certs { dir, ca, n: 0 }
    }

    fn next_dir(&mut self) -> PathBuf {
        self.n += 1;
        self.dir.path().join(format!("n{}", self.n))
    }

    fn node(&mut self) -> TlsIdentity {
        let d = self.next_dir();
        tls::generate_node_cert(&self.ca, "node", &d).unwrap();
        TlsIdentity::load_dir(&d).unwrap()
    }

    /// A node certificate from another CA, loaded trusting *our* CA (so only the other
    /// side's check can refuse it).
    fn node_of_other_ca(&mut self) -> TlsIdentity {
        let other_ca = self.dir.path().join(format!("other-ca{}", self.n));
        tls::generate_ca(&other_ca).unwrap();
        let d = self.next_dir();
        tls::generate_node_cert(&other_ca, "intruder", &d).unwrap();
        self.load_trusting_our_ca(&d)
    }

    fn self_signed_node(&mut self) -> TlsIdentity {
        let d = self.next_dir();
        tls::generate_self_signed_for_tests(&d);
        self.load_trusting_our_ca(&d)
    }

    fn load_trusting_our_ca(&self, d: &Path) -> TlsIdentity {
        TlsIdentity::load(
            &self.ca.join(tls::CA_CERT_FILE),
            &d.join(tls::NODE_CERT_FILE),
            &d.join(tls::NODE_KEY_FILE),
        )
        .unwrap()
    }
}

struct Node {
    id: NodeId,
    addr: SocketAddr,
    peer: Addr<PeerActor>,
    handler: Addr<TestHandler>,
    identity: TlsIdentity,
}

fn digest() -> Hash {
    blake2sum(b"layout")
}

fn start_node(
    identity: TlsIdentity,
    listen: SocketAddr,
    members: Vec<PeerAddr>,
    delay: Option<Duration>,
) -> Node {
    start_tuned(identity, listen, members, delay, tuning())
}

fn start_tuned(
    identity: TlsIdentity,
    listen: SocketAddr,
    members: Vec<PeerAddr>,
    delay: Option<Duration>,
    tuning: PeerTuning,
) -> Node {
    let h = handler(delay);
    let config = PeerConfig {
        listen,
        members,
        limits: FrameLimits::default(),
        layout_digest: digest(),
    };
    let actor =
        PeerActor::with_tuning(config, tuning, identity.clone(), h.clone().recipient()).unwrap();
    Node {
        id: actor.node_id(),
        addr: actor.local_addr(),
        peer: actor.start(),
        handler: h,
        identity,
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn member(n: &Node) -> PeerAddr {
    PeerAddr {
        id: n.id,
        addr: n.addr,
    }
}

/// `n` nodes that all know each other (wired with SetMembers once the ports are known).
async fn cluster(certs: &mut Certs, n: usize, delays: &[Option<Duration>]) -> Vec<Node> {
    let nodes: Vec<Node> = (0..n)
        .map(|i| {
            start_node(
                certs.node(),
                any_port(),
                vec![],
                delays.get(i).copied().flatten(),
            )
        })
        .collect();
    let members: Vec<PeerAddr> = nodes.iter().map(member).collect();
    for node in &nodes {
        node.peer
            .send(SetMembers {
                members: members.clone(),
            })
            .await
            .unwrap();
    }
    for a in &nodes {
        for b in &nodes {
            if a.id != b.id {
                wait_up(&a.peer, b.id, Duration::from_secs(5)).await;
            }
        }
    }
    nodes
}

async fn status_of(peer: &Addr<PeerActor>, id: NodeId) -> Option<PeerInfo> {
    peer.send(GetPeerStatus)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.id == id)
}

async fn wait_up(peer: &Addr<PeerActor>, id: NodeId, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if status_of(peer, id).await.is_some_and(|p| p.up) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peer {id:?} not up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn block(len: usize, seed: u8) -> (Hash, DataBlock) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    (blake2sum(&data), DataBlock::Plain(Bytes::from(data)))
}

/// A small request the test handler answers with `Ok`.
fn probe() -> BlockRpc {
    BlockRpc::NeedBlockQuery(blake2sum(b"probe"))
}

fn call(node: NodeId, rpc: BlockRpc, timeout: Duration) -> Call {
    Call {
        node,
        rpc,
        timeout,
        priority: Priority::Client,
    }
}

#[actix_rt::test]
async fn put_then_get_round_trips_the_block_bytes() {
    let mut certs = Certs::new();
    let nodes = cluster(&mut certs, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (hash, data) = block(1 << 20, 7);

    let put = BlockRpc::PutBlock {
        hash,
        data: data.clone(),
    };
    let reply = a
        .peer
        .send(call(b.id, put, BLOCK_RW_TIMEOUT))
        .await
        .unwrap();
    assert_eq!(reply.unwrap(), BlockRpc::Ok, "PutBlock not acknowledged");

    let got = a
        .peer
        .send(call(b.id, BlockRpc::GetBlock(hash), BLOCK_RW_TIMEOUT))
        .await
        .unwrap()
        .expect("GetBlock failed");
    match got {
        BlockRpc::PutBlock { hash: h, data: d } => {
            assert_eq!(h, hash);
            assert_eq!(d.inner_buffer(), data.inner_buffer(), "block bytes differ");
        }
        other => panic!("GetBlock answered {other:?}"),
    }
    let seen = b.handler.send(Seen).await.unwrap();
    assert_eq!(seen, vec![(a.id, "put_block"), (a.id, "get_block")]);

    // A missing block is a Remote error, not a transport one.
    let missing = a
        .peer
        .send(call(
            b.id,
            BlockRpc::GetBlock(blake2sum(b"nope")),
            BLOCK_RW_TIMEOUT,
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            missing,
            Err(RpcError::Remote {
                code: ErrorCode::NotFound,
                ..
            })
        ),
        "{missing:?}"
    );

    // A call to this node goes to the local handler, not the network.
    let local = a
        .peer
        .send(call(a.id, BlockRpc::GetBlock(hash), BLOCK_RW_TIMEOUT))
        .await
        .unwrap();
    assert!(matches!(
        local,
        Err(RpcError::Remote {
            code: ErrorCode::NotFound,
            ..
        })
    ));
    assert_eq!(
        a.handler.send(Seen).await.unwrap(),
        vec![(a.id, "get_block")]
    );

    // Unknown node.
    let unknown = a
        .peer
        .send(call(NodeId([9; 32]), BlockRpc::Ok, BLOCK_RW_TIMEOUT))
        .await
        .unwrap();
    assert!(matches!(unknown, Err(RpcError::UnknownNode { .. })));
}

/// Two nodes with `tuning` (socket buffers as the node sets them) that know each other.
async fn tuned_pair(certs: &mut Certs, tuning: PeerTuning) -> (Node, Node) {
    let a = start_tuned(certs.node(), any_port(), vec![], None, tuning.clone());
    let b = start_tuned(certs.node(), any_port(), vec![], None, tuning);
    for n in [&a, &b] {
        n.peer
            .send(SetMembers {
                members: vec![member(&a), member(&b)],
            })
            .await
            .unwrap();
    }
    wait_up(&a.peer, b.id, Duration::from_secs(5)).await;
    wait_up(&b.peer, a.id, Duration::from_secs(5)).await;
    (a, b)
}

#[actix_rt::test]
async fn blocks_cross_intact_with_large_mtus_with_and_without_segment_offload() {
    // The default (MTU up to GSO_MAX_MTU, GSO on), a bound past it with GSO off, and
    // the same bound with GSO asked for (left off by the transport config) and fewer
    // ACKs: every variant must move 1 MiB blocks both ways, byte for byte.
    let variants = [
        ("default", PeerTuning::default()),
        (
            "MTU <= 65527, no GSO",
            PeerTuning {
                mtu_upper_bound: 65527,
                segmentation_offload: false,
                ..PeerTuning::default()
            },
        ),
        (
            "MTU <= 65527, GSO asked for",
            PeerTuning {
                mtu_upper_bound: 65527,
                segmentation_offload: true,
                ack_eliciting_threshold: Some(8),
                ..PeerTuning::default()
            },
        ),
    ];
    let mut certs = Certs::new();
    for (label, t) in variants {
        let t = PeerTuning {
            connect_timeout: Duration::from_secs(2),
            ..t
        };
        let (a, b) = tuned_pair(&mut certs, t).await;
        let puts: Vec<_> = (0..12u8)
            .map(|seed| {
                let (hash, data) = block(1 << 20, seed);
                let put = a.peer.send(call(
                    b.id,
                    BlockRpc::PutBlock { hash, data },
                    Duration::from_secs(20),
                ));
                async move { (hash, put.await) }
            })
            .collect();
        for (hash, r) in futures::future::join_all(puts).await {
            assert_eq!(
                r.unwrap().unwrap(),
                BlockRpc::Ok,
                "{label}: PutBlock {} failed",
                hash.short()
            );
        }
        for seed in 0..12u8 {
            let (hash, data) = block(1 << 20, seed);
            let got = a
                .peer
                .send(call(
                    b.id,
                    BlockRpc::GetBlock(hash),
                    Duration::from_secs(20),
                ))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{label}: GetBlock {} failed: {e}", hash.short()));
            match got {
                BlockRpc::PutBlock { data: d, .. } => assert!(
                    d.inner_buffer() == data.inner_buffer(),
                    "{label}: block {} came back different",
                    hash.short()
                ),
                other => panic!("{label}: GetBlock answered {}", other.kind()),
            }
        }
        for n in [&a, &b] {
            n.peer.send(Shutdown).await.unwrap();
        }
    }
}

#[actix_rt::test]
async fn peer_status_reports_up_rtt_and_layout_digest() {
    let mut certs = Certs::new();
    let nodes = cluster(&mut certs, 2, &[]).await;
    // Let at least one ping round pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status_of(&nodes[0].peer, nodes[1].id)
        .await
        .expect("peer listed");
    assert!(st.up);
    assert_eq!(st.addr, nodes[1].addr);
    assert_eq!(st.layout_digest, Some(digest()));
    assert!(
        st.rtt.is_some_and(|r| r < Duration::from_secs(1)),
        "{:?}",
        st.rtt
    );
    assert!(st
        .last_seen
        .is_some_and(|t| t.elapsed() < Duration::from_secs(1)));
    let all = nodes[0].peer.send(GetPeerStatus).await.unwrap();
    assert_eq!(all.len(), 1, "self must not be listed");
}

fn counts(blocks: u64, age_ms: u64) -> crate::frame::NodeStats {
    crate::frame::NodeStats {
        blocks,
        bytes: blocks * 1000 + 1,
        capacity: Some(1 << 30),
        age_ms,
    }
}

/// Node `of`'s counts as `at` sees them, once they equal `want` (within `within`).
async fn wait_stats(
    at: &Addr<PeerActor>,
    of: NodeId,
    want: crate::frame::NodeStats,
    within: Duration,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let seen = status_of(at, of).await.and_then(|p| p.stats);
        if let Some((s, sampled)) = seen {
            if (s.blocks, s.bytes, s.capacity) == (want.blocks, want.bytes, want.capacity) {
                return sampled;
            }
        }
        assert!(
            Instant::now() < deadline,
            "peer {of:?}'s counts {want:?} not seen within {within:?}; last seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn peers_learn_each_others_counts_from_pings_with_their_age() {
    let mut certs = Certs::new();
    let nodes = cluster(&mut certs, 2, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status_of(&nodes[0].peer, nodes[1].id)
        .await
        .expect("listed");
    assert!(st.stats.is_none(), "no counts pushed yet: {:?}", st.stats);
    nodes[1]
        .peer
        .send(SetLocalStats(counts(5, 0)))
        .await
        .unwrap();
    let sampled = wait_stats(
        &nodes[0].peer,
        nodes[1].id,
        counts(5, 0),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        sampled.elapsed() < Duration::from_secs(1),
        "fresh counts are aged by at most a ping: {:?}",
        sampled.elapsed()
    );
    // Counts the node sampled 3 s ago are 3 s old here too.
    nodes[1]
        .peer
        .send(SetLocalStats(counts(6, 3000)))
        .await
        .unwrap();
    let sampled = wait_stats(
        &nodes[0].peer,
        nodes[1].id,
        counts(6, 0),
        Duration::from_secs(2),
    )
    .await;
    let age = sampled.elapsed();
    assert!(
        age >= Duration::from_secs(3) && age < Duration::from_secs(4),
        "age carried over: {age:?}"
    );
    // An age beyond MAX_ANNOUNCED_AGE is not taken (as fresh or otherwise).
    nodes[1]
        .peer
        .send(SetLocalStats(counts(7, u64::MAX)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let kept = status_of(&nodes[0].peer, nodes[1].id)
        .await
        .and_then(|p| p.stats);
    assert_eq!(
        kept.map(|(s, _)| s.blocks),
        Some(6),
        "counts with an impossible age are ignored: {kept:?}"
    );
    // The other direction too, and a node's own counts are not listed as a peer's.
    nodes[0]
        .peer
        .send(SetLocalStats(counts(9, 0)))
        .await
        .unwrap();
    wait_stats(
        &nodes[1].peer,
        nodes[0].id,
        counts(9, 0),
        Duration::from_secs(2),
    )
    .await;
    let all = nodes[0].peer.send(GetPeerStatus).await.unwrap();
    assert_eq!(all.len(), 1, "self must not be listed");
}

#[actix_rt::test]
async fn counts_known_before_connecting_travel_in_the_hello() {
    let mut certs = Certs::new();
    // Pings too rare to matter: only the hellos can carry the counts.
    let slow = PeerTuning {
        ping_interval: Duration::from_secs(60),
        ..tuning()
    };
    let a = start_tuned(certs.node(), any_port(), vec![], None, slow.clone());
    let b = start_tuned(certs.node(), any_port(), vec![], None, slow);
    a.peer.send(SetLocalStats(counts(3, 0))).await.unwrap();
    b.peer.send(SetLocalStats(counts(4, 0))).await.unwrap();
    let members = vec![member(&a), member(&b)];
    for n in [&a, &b] {
        n.peer
            .send(SetMembers {
                members: members.clone(),
            })
            .await
            .unwrap();
    }
    wait_stats(&a.peer, b.id, counts(4, 0), Duration::from_secs(3)).await;
    wait_stats(&b.peer, a.id, counts(3, 0), Duration::from_secs(3)).await;
}

fn call_many(nodes: Vec<NodeId>, quorum: usize) -> CallMany {
    let (hash, data) = block(4096, 1);
    CallMany {
        nodes,
        rpc: BlockRpc::PutBlock { hash, data },
        quorum,
        timeout: Duration::from_secs(10),
        priority: Priority::Background,
        interrupt_after_quorum: false,
        also: Vec::new(),
        report_failures: None,
    }
}

#[actix_rt::test]
async fn call_many_reaches_quorum_with_one_peer_down_and_fails_with_two_down() {
    let mut certs = Certs::new();
    let nodes = cluster(&mut certs, 3, &[]).await;
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    let a = &nodes[0];

    nodes[2].peer.send(Shutdown).await.unwrap();
    let start = Instant::now();
    let oks = a
        .peer
        .send(call_many(ids.clone(), 2))
        .await
        .unwrap()
        .expect("2 of 3 with one down");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let mut answered: Vec<NodeId> = oks.iter().map(|(n, _)| *n).collect();
    answered.sort();
    let mut expected = vec![ids[0], ids[1]];
    expected.sort();
    assert_eq!(answered, expected, "the quorum came from the wrong nodes");

    nodes[1].peer.send(Shutdown).await.unwrap();
    let start = Instant::now();
    let err = a
        .peer
        .send(call_many(ids.clone(), 2))
        .await
        .unwrap()
        .expect_err("2 of 3 with two down");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(err.oks, 1);
    let mut failed: Vec<NodeId> = err.errors.iter().map(|(n, _)| *n).collect();
    failed.sort();
    let mut expected = vec![ids[1], ids[2]];
    expected.sort();
    assert_eq!(
        failed, expected,
        "errors not listed for both down peers: {err}"
    );
}

#[actix_rt::test]
async fn a_handler_that_does_not_answer_in_time_gives_timeout() {
    let mut certs = Certs::new();
    let slow = Some(Duration::from_secs(20));
    let nodes = cluster(&mut certs, 2, &[slow, slow]).await;
    let t = Duration::from_millis(500);
    for target in [nodes[1].id, nodes[0].id] {
        let start = Instant::now();
        let res = nodes[0].peer.send(call(target, probe(), t)).await.unwrap();
        let took = start.elapsed();
        assert!(matches!(res, Err(RpcError::Timeout { .. })), "{res:?}");
        assert!(
            took >= t && took < t + Duration::from_millis(700),
            "took {took:?}"
        );
    }
    // Pings are answered by the peer actor itself, so the peer stays up.
    assert!(status_of(&nodes[0].peer, nodes[1].id).await.unwrap().up);
}

/// Bind `addr` again once the previous owner has let go of it.
async fn restart_on(identity: TlsIdentity, addr: SocketAddr, members: Vec<PeerAddr>) -> Node {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = handler(None);
        let config = PeerConfig {
            listen: addr,
            members: members.clone(),
            limits: FrameLimits::default(),
            layout_digest: digest(),
        };
        match PeerActor::with_tuning(config, tuning(), identity.clone(), h.clone().recipient()) {
            Ok(actor) => {
                return Node {
                    id: actor.node_id(),
                    addr: actor.local_addr(),
                    peer: actor.start(),
                    handler: h,
                    identity,
                }
            }
            Err(PeerError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("cannot restart the peer on {addr}: {e}"),
        }
    }
}

#[actix_rt::test]
async fn a_restarted_peer_is_used_again_without_restarting_the_caller() {
    let mut certs = Certs::new();
    let nodes = cluster(&mut certs, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    b.peer.send(Shutdown).await.unwrap();

    let start = Instant::now();
    let res = a
        .peer
        .send(call(b.id, probe(), Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(res.is_err(), "a call to a stopped peer succeeded");
    assert!(
        start.elapsed() < Duration::from_millis(2_500),
        "call hung past its timeout"
    );
    wait_down(&a.peer, b.id).await;

    let b2 = restart_on(b.identity.clone(), b.addr, vec![member(a), member(b)]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = a
            .peer
            .send(call(b2.id, probe(), Duration::from_secs(1)))
            .await
            .unwrap();
        if res.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted peer not used again: {res:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        b2.handler.send(Seen).await.unwrap(),
        vec![(a.id, "need_block_query")]
    );
    wait_up(&a.peer, b.id, Duration::from_secs(2)).await;
}

async fn wait_down(peer: &Addr<PeerActor>, id: NodeId) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(peer, id).await.is_some_and(|p| p.up) {
        assert!(Instant::now() < deadline, "peer {id:?} still up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `intruder` dials `a` (which it trusts) and calls it: refused, and `a`'s handler sees
/// nothing. When `a` lists the intruder as a member, `a`'s own dial to it fails too.
async fn assert_refused(a_members_intruder: bool, intruder: TlsIdentity, certs: &mut Certs) {
    let a = start_node(certs.node(), any_port(), vec![], None);
    let x = start_node(intruder, any_port(), vec![member(&a)], None);
    if a_members_intruder {
        a.peer
            .send(SetMembers {
                members: vec![member(&a), member(&x)],
            })
            .await
            .unwrap();
    }
    let (hash, data) = block(1024, 3);
    let start = Instant::now();
    let res = x
        .peer
        .send(call(
            a.id,
            BlockRpc::PutBlock { hash, data },
            Duration::from_secs(3),
        ))
        .await
        .unwrap();
    // The server's TLS alert comes back as the connection's close reason.
    assert!(
        matches!(&res, Err(RpcError::Unreachable { reason, .. }) if reason.contains("invalid peer certificate")),
        "the refused node's call did not fail on its certificate: {res:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(3_500),
        "call hung past its timeout"
    );
    // Give `a`'s dial to the intruder (if any) time to fail.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        a.handler.send(Seen).await.unwrap().is_empty(),
        "the server's handler saw a request from a refused node"
    );
    assert!(
        !status_of(&x.peer, a.id).await.unwrap().up,
        "intruder sees the node up"
    );
    if a_members_intruder {
        assert!(
            !status_of(&a.peer, x.id).await.unwrap().up,
            "node sees the intruder up"
        );
    }
    assert!(x.handler.send(Seen).await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_certificate_from_another_ca_is_refused() {
    let mut certs = Certs::new();
    let intruder = certs.node_of_other_ca();
    assert_refused(true, intruder, &mut certs).await;
}

#[actix_rt::test]
async fn a_self_signed_certificate_is_refused() {
    let mut certs = Certs::new();
    let intruder = certs.self_signed_node();
    assert_refused(true, intruder, &mut certs).await;
}

#[actix_rt::test]
async fn a_valid_certificate_of_a_non_member_is_refused() {
    let mut certs = Certs::new();
    let intruder = certs.node();
    assert_refused(false, intruder, &mut certs).await;
}

/// A raw quinn client with a member's identity, to send bytes the PeerActor never would.
async fn raw_connection(from: &TlsIdentity, to: &Node) -> (quinn::Endpoint, quinn::Connection) {
    let ep = quinn::Endpoint::client(any_port()).unwrap();
    let cfg = conn::client_config(from, to.id, &tuning()).unwrap();
    let c = ep
        .connect_with(cfg, to.addr, tls::NODE_SAN)
        .unwrap()
        .await
        .unwrap();
    (ep, c)
}

async fn raw_exchange(c: &quinn::Connection, bytes: &[u8]) -> Result<BlockRpc, String> {
    let (mut send, mut recv) = c.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    frame::read_frame(&mut recv, &FrameLimits::default())
        .await
        .map_err(|e| e.to_string())
}

#[actix_rt::test]
async fn bad_frames_get_bad_request_and_the_connection_keeps_working() {
    let mut certs = Certs::new();
    let nodes = cluster(&mut certs, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (_ep, c) = raw_connection(&a.identity, b).await;

    let good = frame::encode(&BlockRpc::GetBlock(blake2sum(b"x")))
        .unwrap()
        .to_vec();
    let mut oversized = Vec::new();
    oversized.extend_from_slice(&8u32.to_be_bytes());
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut garbage = vec![0, 0, 0, 4, 0, 0, 0, 0];
    garbage.extend_from_slice(b"\xc1\xc1\xc1\xc1");
    let reply_as_request = frame::encode(&BlockRpc::Pong(1)).unwrap().to_vec();
    for (what, bytes) in [
        ("oversized", oversized),
        ("truncated", good[..good.len() - 2].to_vec()),
        ("garbage", garbage),
        ("reply as request", reply_as_request),
    ] {
        let reply = raw_exchange(&c, &bytes).await;
        assert!(
            matches!(
                reply,
                Ok(BlockRpc::Error {
                    code: ErrorCode::BadRequest,
                    ..
                })
            ),
            "{what}: {reply:?}"
        );
    }
    // The same connection still serves good requests, and the handler saw only them.
    let reply = raw_exchange(&c, &good).await;
    assert!(
        matches!(
            reply,
            Ok(BlockRpc::Error {
                code: ErrorCode::NotFound,
                ..
            })
        ),
        "{reply:?}"
    );
    assert_eq!(
        b.handler.send(Seen).await.unwrap(),
        vec![(a.id, "get_block")]
    );
    let ok = a
        .peer
        .send(call(b.id, probe(), Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(ok.unwrap(), BlockRpc::Ok);
}

#[actix_rt::test]
async fn a_flood_of_streams_from_one_peer_leaves_the_node_responsive_to_others() {
    let mut certs = Certs::new();
    let slow = Some(Duration::from_millis(300));
    let nodes = cluster(&mut certs, 3, &[None, None, slow]).await;
    let target = nodes[2].id;
    // Node 0 opens 2,000 requests at once; quinn lets 64 streams in at a time.
    let flood: Vec<_> = (0..2000)
        .map(|_| {
            nodes[0]
                .peer
                .send(call(target, probe(), Duration::from_secs(30)))
        })
        .collect();
    let flood = futures::future::join_all(flood);
    let other = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        let r = nodes[1]
            .peer
            .send(call(target, probe(), Duration::from_secs(10)))
            .await
            .unwrap();
        (r, start.elapsed())
    };
    let (results, (r, took)) = futures::join!(flood, other);
    assert!(
        r.is_ok(),
        "another peer's request failed during the flood: {r:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "another peer waited {took:?} behind the flood"
    );
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(ok, 2000, "the flood itself is served, only paced");
    assert!(status_of(&nodes[0].peer, target).await.unwrap().up);
}

/// A node on its own (no members yet) with `budget`, its handler taking `delay`.
fn budgeted_node(
    identity: TlsIdentity,
    budget: crate::budget::RamBudget,
    delay: Option<Duration>,
) -> Node {
    let h = handler(delay);
    let cfg = PeerConfig {
        listen: any_port(),
        members: vec![],
        limits: FrameLimits::default(),
        layout_digest: digest(),
    };
    let tun = PeerTuning {
        ram_budget: Some(budget),
        ..tuning()
    };
    let actor = PeerActor::with_tuning(cfg, tun, identity.clone(), h.clone().recipient()).unwrap();
    Node {
        id: actor.node_id(),
        addr: actor.local_addr(),
        peer: actor.start(),
        handler: h,
        identity,
    }
}

/// Node B with `budget`, its handler taking `delay` per request, as a member beside `a`
/// (both sides know each other and B is up at `a`).
async fn start_budgeted(
    certs: &mut Certs,
    a: &Node,
    budget: crate::budget::RamBudget,
    delay: Option<Duration>,
) -> (NodeId, Addr<PeerActor>) {
    let b = budgeted_node(certs.node(), budget, delay);
    let members = vec![member(a), member(&b)];
    for p in [&a.peer, &b.peer] {
        p.send(SetMembers {
            members: members.clone(),
        })
        .await
        .unwrap();
    }
    wait_up(&a.peer, b.id, Duration::from_secs(5)).await;
    (b.id, b.peer)
}

/// Every byte of `pool` is free again (nothing still holds a charge).
fn assert_all_free(pool: &crate::budget::Pool, what: &str) {
    assert_eq!(pool.available(), pool.capacity(), "{what}");
}

/// `from` sends a 1 MiB block (made from `seed`) to `to`; its hash and the reply.
async fn put_1mib(from: &Node, to: NodeId, seed: u8) -> (Hash, Result<BlockRpc, RpcError>) {
    let (hash, data) = block(1 << 20, seed);
    let r = from
        .peer
        .send(call(
            to,
            BlockRpc::PutBlock { hash, data },
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    (hash, r)
}

fn two_mib_pools() -> crate::budget::RamBudget {
    crate::budget::RamBudget {
        client: crate::budget::Pool::new("client", 2 << 20),
        peer: crate::budget::Pool::new("peer", 2 << 20),
    }
}

#[actix_rt::test]
async fn incoming_payloads_wait_for_the_ram_budget() {
    let mut certs = Certs::new();
    let a = start_node(certs.node(), any_port(), vec![], None);
    // B may hold 2 MiB of incoming block bytes; its handler takes 300 ms per request.
    let budget = two_mib_pools();
    let (b_id, _b) = start_budgeted(
        &mut certs,
        &a,
        budget.clone(),
        Some(Duration::from_millis(300)),
    )
    .await;
    let start = Instant::now();
    let puts: Vec<_> = (0..8u8)
        .map(|i| {
            let (hash, data) = block(1 << 20, i);
            a.peer.send(call(
                b_id,
                BlockRpc::PutBlock { hash, data },
                Duration::from_secs(30),
            ))
        })
        .collect();
    for r in futures::future::join_all(puts).await {
        assert!(matches!(r, Ok(Ok(BlockRpc::Ok))), "{r:?}");
    }
    // Two 1 MiB payloads fit at a time, so eight take at least four handler rounds.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1150),
        "payloads did not wait for the budget: {took:?}"
    );
    assert_all_free(&budget.peer, "every reservation is returned");
}

#[actix_rt::test]
async fn a_peers_block_is_admitted_while_client_work_holds_the_whole_client_pool() {
    // The cross-node deadlock of a shared pool, at one node: its client PUTs hold their budget while
    // they wait for peers; a peer's PutBlock must not wait behind them.
    let mut certs = Certs::new();
    let budget = two_mib_pools();
    let a = start_node(certs.node(), any_port(), vec![], None);
    let b = start_budgeted(&mut certs, &a, budget.clone(), None).await;
    let b_id = b.0;
    let _client_puts = budget.client.charge(2 << 20).await.unwrap();
    let (_, r) = put_1mib(&a, b_id, 9).await;
    assert!(
        matches!(r, Ok(BlockRpc::Ok)),
        "the peer's PutBlock waited behind client work instead of being admitted: {r:?}"
    );
    assert_all_free(&budget.peer, "the ingress charge came back");
}

#[actix_rt::test]
async fn a_get_reply_read_by_a_call_is_charged_until_its_bytes_are_dropped() {
    let mut certs = Certs::new();
    let a_budget = two_mib_pools();
    let a = budgeted_node(certs.node(), a_budget.clone(), None);
    let (b_id, _b) = start_budgeted(&mut certs, &a, two_mib_pools(), None).await;
    let (hash, put) = put_1mib(&a, b_id, 4).await;
    assert!(matches!(put, Ok(BlockRpc::Ok)), "{put:?}");
    let got = a
        .peer
        .send(call(b_id, BlockRpc::GetBlock(hash), Duration::from_secs(5)))
        .await
        .unwrap();
    let Ok(BlockRpc::PutBlock { data, .. }) = got else {
        panic!("GetBlock answered {got:?}");
    };
    assert_eq!(
        a_budget.client.available(),
        1 << 20,
        "the 1 MiB reply should be charged to the caller's client pool"
    );
    drop(data);
    assert_eq!(
        a_budget.client.available(),
        2 << 20,
        "dropping the reply returns it"
    );
}

#[actix_rt::test]
async fn a_reply_without_room_is_dropped_unread_and_asked_again_once_there_is_room() {
    // The caller never reads a reply into memory it has not charged, and never keeps a
    // peer's reply waiting for that memory: it drops the stream (the peer's charge for
    // the reply comes back), waits holding nothing, and asks again.
    let mut certs = Certs::new();
    let a_budget = two_mib_pools();
    let a = budgeted_node(certs.node(), a_budget.clone(), None);
    let b = budgeted_node(certs.node(), two_mib_pools(), None);
    let members = vec![member(&a), member(&b)];
    for p in [&a.peer, &b.peer] {
        p.send(SetMembers {
            members: members.clone(),
        })
        .await
        .unwrap();
    }
    wait_up(&a.peer, b.id, Duration::from_secs(5)).await;
    let (hash, put) = put_1mib(&a, b.id, 6).await;
    assert!(matches!(put, Ok(BlockRpc::Ok)), "{put:?}");
    let gets =
        |seen: Vec<(NodeId, &'static str)>| seen.iter().filter(|(_, k)| *k == "get_block").count();
    let hog = a_budget.client.charge(2 << 20).await.unwrap();
    let get = actix_rt::spawn(a.peer.send(call(
        b.id,
        BlockRpc::GetBlock(hash),
        Duration::from_secs(10),
    )));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!get.is_finished(), "no room: the reply must not be read");
    assert_eq!(gets(b.handler.send(Seen).await.unwrap()), 1);
    drop(hog);
    let got = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .expect("the call did not go on once there was room")
        .unwrap()
        .unwrap();
    let Ok(BlockRpc::PutBlock { data, .. }) = got else {
        panic!("GetBlock answered {got:?}");
    };
    assert_eq!(
        gets(b.handler.send(Seen).await.unwrap()),
        2,
        "asked again with the room in hand"
    );
    assert_eq!(a_budget.client.available(), 1 << 20, "the reply is charged");
    drop(data);
    assert_all_free(&a_budget.client, "dropping the reply returns it");
}

#[test]
fn initials_get_a_handshake_only_from_members_validated_and_under_the_cap() {
    assert_eq!(admit_incoming(false, true, 0, 16), Admission::Ignore);
    assert_eq!(admit_incoming(true, true, 16, 16), Admission::Ignore);
    assert_eq!(admit_incoming(true, false, 0, 16), Admission::Retry);
    assert_eq!(admit_incoming(true, true, 15, 16), Admission::Handshake);
}

#[actix_rt::test]
async fn an_initial_from_a_non_member_address_gets_no_answer() {
    let mut certs = Certs::new();
    let a = start_node(certs.node(), any_port(), vec![], None);
    let from = certs.node();
    let try_from = |bind: &str| {
        let ep = quinn::Endpoint::client(bind.parse().unwrap()).unwrap();
        let cfg = conn::client_config(&from, a.id, &tuning()).unwrap();
        let connecting = ep.connect_with(cfg, a.addr, tls::NODE_SAN).unwrap();
        async move {
            let r = tokio::time::timeout(Duration::from_secs(2), connecting).await;
            drop(ep);
            r
        }
    };
    // 127.0.0.2 is loopback too, but no member (nor this host's address) has it.
    let stranger = try_from("127.0.0.2:0").await;
    assert!(
        stranger.is_err(),
        "a stranger's Initial was answered: {stranger:?}"
    );
    // From this host's address the handshake runs (and TLS refuses the non-member).
    let local = try_from("127.0.0.1:0").await;
    assert!(
        local.is_ok(),
        "the handshake from a known address did not complete or fail in time"
    );
}

fn hedged(node: NodeId, hash: Hash, timeout: Duration) -> (HedgedCall, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel();
    let msg = HedgedCall {
        call: call(node, BlockRpc::GetBlock(hash), timeout),
        cancel: rx,
    };
    (msg, tx)
}

#[actix_rt::test]
async fn reads_are_planned_fast_peers_first_and_down_peers_last_without_redialling() {
    let mut certs = Certs::new();
    let slow = Some(Duration::from_millis(150));
    let nodes = cluster(&mut certs, 3, &[None, slow, None]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let h = blake2sum(b"planned");
    // Placement order b, c, a: a is local, c answers faster than b.
    for _ in 0..12 {
        for n in [b.id, c.id] {
            let (msg, _keep) = hedged(n, h, Duration::from_secs(5));
            let res = a.peer.send(msg).await.unwrap();
            assert!(
                matches!(
                    res,
                    Err(RpcError::Remote {
                        code: ErrorCode::NotFound,
                        ..
                    })
                ),
                "{res:?}"
            );
        }
    }
    let plan = a
        .peer
        .send(PlanRead {
            holders: vec![b.id, c.id, a.id],
        })
        .await
        .unwrap();
    let order: Vec<NodeId> = plan.order.iter().map(|(n, _)| *n).collect();
    assert_eq!(order, vec![a.id, c.id, b.id], "local, fast, slow");
    let b_hedge = plan.order[2].1;
    assert!(
        b_hedge >= Duration::from_millis(140) && b_hedge <= health::MAX_HEDGE_DELAY,
        "hedge delay of the 150 ms peer: {b_hedge:?}"
    );

    c.peer.send(Shutdown).await.unwrap();
    let _ = a
        .peer
        .send(call(c.id, probe(), Duration::from_secs(1)))
        .await;
    wait_down(&a.peer, c.id).await;
    // Past `redial_after`: a client call used to dial again and wait for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let res = a
        .peer
        .send(call(c.id, probe(), Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(matches!(res, Err(RpcError::Unreachable { .. })), "{res:?}");
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "a client call to a down peer waited {:?} (redialled on the client path?)",
        start.elapsed()
    );
    let plan = a
        .peer
        .send(PlanRead {
            holders: vec![c.id, b.id],
        })
        .await
        .unwrap();
    let order: Vec<NodeId> = plan.order.iter().map(|(n, _)| *n).collect();
    assert_eq!(order, vec![b.id, c.id], "the down peer goes last");
}

#[actix_rt::test]
async fn dropping_the_cancel_sender_ends_a_hedged_call_at_once() {
    let mut certs = Certs::new();
    let hung = Some(Duration::from_secs(20));
    let nodes = cluster(&mut certs, 2, &[None, hung]).await;
    let (msg, tx) = hedged(nodes[1].id, blake2sum(b"x"), Duration::from_secs(10));
    let start = Instant::now();
    let reply = nodes[0].peer.send(msg);
    actix_rt::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(tx);
    });
    let res = reply.await.unwrap();
    assert!(matches!(res, Err(RpcError::Unreachable { .. })), "{res:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a cancelled read ran on for {:?}",
        start.elapsed()
    );
}

#[path = "layout_tests.rs"]
mod layout_tests;
