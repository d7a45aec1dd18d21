//! PeerActor tests: two and three peer actors in one System on loopback, with a
//! test-double handler standing in for the node's dispatcher.

use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::block::DataBlock;
use crate::hash::blake2sum;
use crate::tls::{generate_ca, generate_node_cert};

/// A handler storing blocks in memory; optionally never answers `GetBlock`.
struct MemStore {
    blocks: HashMap<Hash, DataBlock>,
    requests: u64,
    hang_on_get: bool,
}

impl Actor for MemStore {
    type Context = Context<Self>;
}

impl Handler<HandleRpc> for MemStore {
    type Result = ResponseFuture<BlockRpc>;

    fn handle(&mut self, msg: HandleRpc, _: &mut Context<Self>) -> Self::Result {
        self.requests += 1;
        let reply = match msg.rpc {
            BlockRpc::PutBlock { hash, data } => match data.verify(&hash) {
                Ok(()) => {
                    self.blocks.insert(hash, data);
                    BlockRpc::Ok
                }
                Err(e) => BlockRpc::error(ErrorCode::CorruptData, e.to_string()),
            },
            BlockRpc::GetBlock(h) if self.hang_on_get => {
                let _ = h;
                return Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    BlockRpc::Ok
                });
            }
            BlockRpc::GetBlock(h) => match self.blocks.get(&h) {
                Some(d) => BlockRpc::PutBlock {
                    hash: h,
                    data: d.clone(),
                },
                None => BlockRpc::error(ErrorCode::NotFound, "no such block"),
            },
            other => BlockRpc::error(
                ErrorCode::BadRequest,
                format!("unexpected {}", other.kind()),
            ),
        };
        Box::pin(async move { reply })
    }
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Requests;

impl Handler<Requests> for MemStore {
    type Result = u64;
    fn handle(&mut self, _: Requests, _: &mut Context<Self>) -> u64 {
        self.requests
    }
}

fn store(hang_on_get: bool) -> Addr<MemStore> {
    MemStore {
        blocks: HashMap::new(),
        requests: 0,
        hang_on_get,
    }
    .start()
}

/// `n` node identities signed by one CA in `dir`.
fn identities(dir: &Path, n: usize) -> Vec<TlsIdentity> {
    let ca = dir.join("ca");
    generate_ca(&ca).unwrap();
    (0..n)
        .map(|i| {
            let d = dir.join(format!("n{i}"));
            generate_node_cert(&ca, &format!("n{i}"), &d).unwrap();
            load(&d)
        })
        .collect()
}

fn load(d: &Path) -> TlsIdentity {
    TlsIdentity::load(&d.join("ca.crt"), &d.join("node.crt"), &d.join("node.key")).unwrap()
}

fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn config(members: &[PeerAddr]) -> PeerConfig {
    let mut c = PeerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        members.to_vec(),
        blake2sum(b"layout"),
    );
    c.ping_interval = Duration::from_millis(500);
    c.reconnect_max = Duration::from_millis(500);
    c.idle_timeout = Duration::from_secs(3);
    c
}

fn start_peer(
    members: &[PeerAddr],
    socket: UdpSocket,
    id: &TlsIdentity,
    h: &Addr<MemStore>,
) -> Addr<PeerActor> {
    PeerActor::with_socket(config(members), socket, id.clone(), h.clone().recipient())
        .unwrap()
        .start()
}

async fn wait_up(a: &Addr<PeerActor>, peer: NodeId) {
    let t = Instant::now();
    loop {
        let st = a.send(GetPeerStatus).await.unwrap();
        if st.iter().any(|p| p.id == peer && p.up) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "peer {peer:?} never came up: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
async fn put_and_get_round_trip_between_two_peers() {
    let d = tempfile::tempdir().unwrap();
    let ids = identities(d.path(), 2);
    let socks = [bind(), bind()];
    let members: Vec<PeerAddr> = ids
        .iter()
        .zip(&socks)
        .map(|(i, s)| PeerAddr {
            id: i.node_id(),
            addr: s.local_addr().unwrap(),
        })
        .collect();
    let [s0, s1] = socks;
    let (h0, h1) = (store(false), store(false));
    let a = start_peer(&members, s0, &ids[0], &h0);
    let _b = start_peer(&members, s1, &ids[1], &h1);
    let b_id = ids[1].node_id();
    wait_up(&a, b_id).await;
    let data = Bytes::from((0..(1 << 20)).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let hash = blake2sum(&data);
    let put = BlockRpc::PutBlock {
        hash,
        data: DataBlock::Plain(data.clone()),
    };
    assert_eq!(
        a.send(call(b_id, put, BLOCK_RW_TIMEOUT))
            .await
            .unwrap()
            .unwrap(),
        BlockRpc::Ok
    );
    match a
        .send(call(b_id, BlockRpc::GetBlock(hash), BLOCK_RW_TIMEOUT))
        .await
        .unwrap()
        .unwrap()
    {
        BlockRpc::PutBlock { hash: h, data: got } => {
            assert_eq!(h, hash);
            assert_eq!(
                got.verify_get(&hash).unwrap(),
                data,
                "bytes differ after the round trip"
            );
        }
        other => panic!("expected PutBlock, got {other:?}"),
    }
    // An error reply is an RpcError::Remote naming the code.
    let e = a
        .send(call(
            b_id,
            BlockRpc::GetBlock(blake2sum(b"nope")),
            BLOCK_RW_TIMEOUT,
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            e,
            Err(RpcError::Remote {
                code: ErrorCode::NotFound,
                ..
            })
        ),
        "got {e:?}"
    );
    // Data that does not match its hash is refused by the receiver.
    let bad = BlockRpc::PutBlock {
        hash,
        data: DataBlock::Plain(Bytes::from_static(b"forged")),
    };
    let e = a.send(call(b_id, bad, BLOCK_RW_TIMEOUT)).await.unwrap();
    assert!(
        matches!(
            e,
            Err(RpcError::Remote {
                code: ErrorCode::CorruptData,
                ..
            })
        ),
        "got {e:?}"
    );
    // A call to this node itself goes to the local handler.
    let local = a
        .send(call(
            ids[0].node_id(),
            BlockRpc::GetBlock(hash),
            BLOCK_RW_TIMEOUT,
        ))
        .await
        .unwrap();
    assert!(matches!(
        local,
        Err(RpcError::Remote {
            code: ErrorCode::NotFound,
            ..
        })
    ));
    let st = a.send(GetPeerStatus).await.unwrap();
    assert!(st[0].rtt.is_some() && st[0].layout_digest == Some(blake2sum(b"layout")));
}

#[actix_rt::test]
async fn call_many_reaches_quorum_with_one_peer_down_and_fails_with_two() {
    let d = tempfile::tempdir().unwrap();
    let ids = identities(d.path(), 3);
    let socks = [bind(), bind(), bind()];
    let members: Vec<PeerAddr> = ids
        .iter()
        .zip(&socks)
        .map(|(i, s)| PeerAddr {
            id: i.node_id(),
            addr: s.local_addr().unwrap(),
        })
        .collect();
    let [s0, s1, s2] = socks;
    drop(s2); // node 2 is down: nothing listens on its port.
    let (h0, h1) = (store(false), store(false));
    let a = start_peer(&members, s0, &ids[0], &h0);
    let _b = start_peer(&members, s1, &ids[1], &h1);
    wait_up(&a, ids[1].node_id()).await;
    let nodes: Vec<NodeId> = ids.iter().map(|i| i.node_id()).collect();
    let data = Bytes::from_static(b"quorum block");
    let hash = blake2sum(&data);
    let put = BlockRpc::PutBlock {
        hash,
        data: DataBlock::Plain(data),
    };
    let many = |quorum, nodes: Vec<NodeId>| CallMany {
        nodes,
        rpc: put.clone(),
        quorum,
        timeout: Duration::from_secs(2),
        priority: Priority::Client,
        interrupt_after_quorum: false,
    };
    let ok = a
        .send(many(2, nodes.clone()))
        .await
        .unwrap()
        .expect("2 of 3 should succeed");
    assert_eq!(ok.len(), 2);
    let err = a
        .send(many(3, nodes.clone()))
        .await
        .unwrap()
        .expect_err("3 of 3 must fail");
    assert_eq!(
        err.errors.len(),
        1,
        "the error of the down node is listed: {err}"
    );
    assert_eq!(err.errors[0].0, nodes[2]);
    // Two down (the live one excluded by asking node 2 twice): quorum 2 is impossible.
    let err = a
        .send(many(2, vec![nodes[0], nodes[2], nodes[2]]))
        .await
        .unwrap()
        .expect_err("2 of 3 with two down must fail");
    assert_eq!(err.errors.len(), 2, "{err}");
}

#[actix_rt::test]
async fn a_peer_that_never_answers_times_out() {
    let d = tempfile::tempdir().unwrap();
    let ids = identities(d.path(), 2);
    let socks = [bind(), bind()];
    let members: Vec<PeerAddr> = ids
        .iter()
        .zip(&socks)
        .map(|(i, s)| PeerAddr {
            id: i.node_id(),
            addr: s.local_addr().unwrap(),
        })
        .collect();
    let [s0, s1] = socks;
    let a = start_peer(&members, s0, &ids[0], &store(false));
    let _b = start_peer(&members, s1, &ids[1], &store(true));
    wait_up(&a, ids[1].node_id()).await;
    let t = Instant::now();
    let r = a
        .send(call(
            ids[1].node_id(),
            BlockRpc::GetBlock(blake2sum(b"x")),
            Duration::from_millis(300),
        ))
        .await
        .unwrap();
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "got {r:?}");
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(300) && el < Duration::from_secs(2),
        "timed out after {el:?}"
    );
}

#[actix_rt::test]
async fn a_restarted_peer_is_used_again_without_restarting_the_caller() {
    let d = tempfile::tempdir().unwrap();
    let ids = identities(d.path(), 2);
    let socks = [bind(), bind()];
    let members: Vec<PeerAddr> = ids
        .iter()
        .zip(&socks)
        .map(|(i, s)| PeerAddr {
            id: i.node_id(),
            addr: s.local_addr().unwrap(),
        })
        .collect();
    let b_addr = members[1].addr;
    let b_id = ids[1].node_id();
    let [s0, s1] = socks;
    let a = start_peer(&members, s0, &ids[0], &store(false));
    let b = start_peer(&members, s1, &ids[1], &store(false));
    wait_up(&a, b_id).await;
    b.send(Shutdown).await.unwrap();
    drop(b);
    // Wait until A notices, then bring B back on the same port.
    let t = Instant::now();
    loop {
        let st = a.send(GetPeerStatus).await.unwrap();
        if !st[0].up {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "A never noticed B going down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    let sock = loop {
        match UdpSocket::bind(b_addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "port of B not released: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let _b2 = start_peer(&members, sock, &ids[1], &store(false));
    let t = Instant::now();
    loop {
        let r = a
            .send(call(
                b_id,
                BlockRpc::GetBlock(blake2sum(b"z")),
                Duration::from_secs(2),
            ))
            .await
            .unwrap();
        if matches!(
            r,
            Err(RpcError::Remote {
                code: ErrorCode::NotFound,
                ..
            })
        ) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "B not reachable again after restart: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start A (a member list naming `intruder_id`, or not), start the intruder with its own
/// identity, and check the intruder cannot call A and A's handler never sees a request.
async fn assert_refused(a_ident: &TlsIdentity, intruder: &TlsIdentity, a_lists_intruder: bool) {
    let (sa, sx) = (bind(), bind());
    let a_member = PeerAddr {
        id: a_ident.node_id(),
        addr: sa.local_addr().unwrap(),
    };
    let x_member = PeerAddr {
        id: intruder.node_id(),
        addr: sx.local_addr().unwrap(),
    };
    let a_members = if a_lists_intruder {
        vec![a_member.clone(), x_member.clone()]
    } else {
        vec![a_member.clone()]
    };
    let ha = store(false);
    let a = start_peer(&a_members, sa, a_ident, &ha);
    let x = start_peer(&[a_member.clone(), x_member], sx, intruder, &store(false));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let r = x
            .send(call(
                a_member.id,
                BlockRpc::GetBlock(blake2sum(b"secret")),
                Duration::from_secs(1),
            ))
            .await
            .unwrap();
        assert!(
            !matches!(r, Ok(_) | Err(RpcError::Remote { .. })),
            "the intruder got an answer from A: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = x.send(GetPeerStatus).await.unwrap();
    assert!(
        st.iter().all(|p| !p.up),
        "the intruder must never see A up: {st:?}"
    );
    if a_lists_intruder {
        let st = a.send(GetPeerStatus).await.unwrap();
        assert!(
            st.iter().all(|p| !p.up),
            "A must not accept the intruder as a peer: {st:?}"
        );
    }
    assert_eq!(
        ha.send(Requests).await.unwrap(),
        0,
        "A's handler must never see the intruder's requests"
    );
    x.send(Shutdown).await.unwrap();
    a.send(Shutdown).await.unwrap();
}

#[actix_rt::test]
async fn certificates_from_another_ca_self_signed_or_of_non_members_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let ids = identities(d.path(), 2);
    // Another CA's node.
    let other = d.path().join("other");
    generate_ca(&other.join("ca")).unwrap();
    generate_node_cert(&other.join("ca"), "evil", &other.join("evil")).unwrap();
    let foreign = load(&other.join("evil"));
    assert_refused(&ids[0], &foreign, true).await;
    // A self-signed node certificate (its own CA).
    let ss = d.path().join("selfsigned");
    std::fs::create_dir_all(&ss).unwrap();
    let kp = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec![crate::tls::NODE_SERVER_NAME.to_string()]).unwrap();
    let cert = params.self_signed(&kp).unwrap();
    std::fs::write(ss.join("node.crt"), cert.pem()).unwrap();
    std::fs::write(ss.join("ca.crt"), cert.pem()).unwrap();
    std::fs::write(ss.join("node.key"), kp.serialize_pem()).unwrap();
    let selfsigned = load(&ss);
    assert_refused(&ids[0], &selfsigned, true).await;
    // A valid certificate of the right CA whose id is not a member.
    assert_refused(&ids[0], &ids[1], false).await;
}
