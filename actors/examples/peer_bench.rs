//! Throughput of PeerActor `PutBlock` calls against bare quinn streams, same process,
//! same TLS setup, loopback.
//!
//! Each side runs on its own thread: the client PeerActor (and the driver sending it
//! `Call`s) in the main System, the server PeerActor and its handler (which only answers
//! `Ok`) in an Arbiter. The bare run does the same with plain quinn endpoints: one
//! stream per 1 MiB request, a 2-byte reply, the same number in flight.
//!
//! Run: `cargo run --release -p blocknode-actors --example peer_bench [MiB] [in_flight]`
//! CPU time is the whole process's (both sides), from /proc/self/stat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use blocknode_actors::frame::FrameLimits;
use blocknode_actors::peer::{
    bind_udp, quic_client_config, quic_endpoint_config, quic_server_config, Call, GetPeerStatus,
    HandleRpc, PeerActor, PeerAddr, PeerConfig, PeerTuning, Priority, BLOCK_RW_TIMEOUT,
};
use blocknode_actors::tls::{self, TlsIdentity};
use blocknode_actors::{blake2sum, BlockRpc, DataBlock, NodeId};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

const BLOCK: usize = 1 << 20;

struct OkHandler;
impl Actor for OkHandler {
    type Context = Context<Self>;
}
impl Handler<HandleRpc> for OkHandler {
    type Result = MessageResult<HandleRpc>;
    fn handle(&mut self, _msg: HandleRpc, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(BlockRpc::Ok)
    }
}

/// utime + stime of this process, in seconds (Linux clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the command name: field 3 is state, so utime (14) and stime (15) are at 11, 12.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

struct Figures {
    mib_s: f64,
    cpu_s_per_gib: f64,
}

fn report(what: &str, bytes: usize, wall: Duration, cpu: f64) -> Figures {
    let mib = bytes as f64 / (1 << 20) as f64;
    let f = Figures {
        mib_s: mib / wall.as_secs_f64(),
        cpu_s_per_gib: cpu / (mib / 1024.0),
    };
    println!(
        "{what:<28} {mib:>6.0} MiB in {:>6.2} s: {:>7.1} MiB/s, {:>5.2} CPU s/GiB",
        wall.as_secs_f64(),
        f.mib_s,
        f.cpu_s_per_gib
    );
    f
}

async fn bench_peer_actor(
    a: TlsIdentity,
    b: TlsIdentity,
    tuning: &PeerTuning,
    total: usize,
    in_flight: usize,
) -> Figures {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let arbiter = Arbiter::new();
    let handler = OkHandler::start_in_arbiter(&arbiter.handle(), |_| OkHandler);
    let b_id = b.node_id();
    let a_id = a.node_id();
    let server = PeerActor::with_tuning(
        PeerConfig {
            listen: any,
            members: vec![],
            limits: FrameLimits::default(),
            layout_digest: blake2sum(b"bench"),
        },
        tuning.clone(),
        b,
        handler.recipient(),
    )
    .unwrap();
    let b_addr = server.local_addr();
    let client = PeerActor::with_tuning(
        PeerConfig {
            listen: any,
            members: vec![PeerAddr {
                id: b_id,
                addr: b_addr,
            }],
            limits: FrameLimits::default(),
            layout_digest: blake2sum(b"bench"),
        },
        tuning.clone(),
        a,
        OkHandler.start().recipient(),
    )
    .unwrap();
    let client_addr = client.local_addr();
    let server = PeerActor::start_in_arbiter(&arbiter.handle(), move |_| server);
    server
        .send(blocknode_actors::peer::SetMembers {
            members: vec![PeerAddr {
                id: a_id,
                addr: client_addr,
            }],
        })
        .await
        .unwrap();
    let client = client.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client
        .send(GetPeerStatus)
        .await
        .unwrap()
        .iter()
        .any(|p| p.id == b_id && p.up)
    {
        assert!(Instant::now() < deadline, "server never came up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let data = Bytes::from(vec![0x5au8; BLOCK]);
    let hash = blake2sum(&data);
    let rpc = BlockRpc::PutBlock {
        hash,
        data: DataBlock::Plain(data),
    };
    let n = total / BLOCK;
    let call = || {
        client.send(Call {
            node: b_id,
            rpc: rpc.clone(),
            timeout: BLOCK_RW_TIMEOUT,
            priority: Priority::Client,
        })
    };
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    while sent < n.min(in_flight) {
        pending.push(call());
        sent += 1;
    }
    while let Some(r) = pending.next().await {
        assert_eq!(r.unwrap().unwrap(), BlockRpc::Ok);
        if sent < n {
            pending.push(call());
            sent += 1;
        }
    }
    let f = report(
        "PeerActor PutBlock",
        n * BLOCK,
        t0.elapsed(),
        cpu_seconds() - cpu0,
    );
    client.send(blocknode_actors::peer::Shutdown).await.unwrap();
    server.send(blocknode_actors::peer::Shutdown).await.unwrap();
    arbiter.stop();
    f
}

async fn bench_bare_quinn(
    a: TlsIdentity,
    b: TlsIdentity,
    tuning: &PeerTuning,
    total: usize,
    in_flight: usize,
) -> Figures {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server_cfg = quic_server_config(&b, [a.node_id()], tuning).unwrap();
    let server_sock = bind_udp(any, tuning).unwrap();
    let server_addr = server_sock.local_addr().unwrap();
    let server_ep_cfg = quic_endpoint_config(tuning);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let ep = quinn::Endpoint::new(
                server_ep_cfg,
                Some(server_cfg),
                server_sock,
                Arc::new(quinn::TokioRuntime),
            )
            .unwrap();
            let conn = ep.accept().await.unwrap().await.unwrap();
            let serve = async {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::task::spawn_local(async move {
                        while let Ok(Some(_chunk)) = recv.read_chunk(usize::MAX, true).await {}
                        let _ = send.write_all(b"ok").await;
                        let _ = send.finish();
                    });
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = stop_rx => {}
            }
            ep.close(0u32.into(), b"done");
            ep.wait_idle().await;
        });
    });

    let client_sock = bind_udp(any, tuning).unwrap();
    let ep = quinn::Endpoint::new(
        quic_endpoint_config(tuning),
        None,
        client_sock,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let cfg = quic_client_config(&a, b.node_id(), tuning).unwrap();
    let conn = ep
        .connect_with(cfg, server_addr, tls::NODE_SAN)
        .unwrap()
        .await
        .unwrap();
    let data = Bytes::from(vec![0x5au8; BLOCK]);
    let one = |conn: quinn::Connection, data: Bytes| async move {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_chunk(data).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(16).await.unwrap()
    };
    let n = total / BLOCK;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    while sent < n.min(in_flight) {
        pending.push(one(conn.clone(), data.clone()));
        sent += 1;
    }
    while let Some(r) = pending.next().await {
        assert_eq!(r, b"ok");
        if sent < n {
            pending.push(one(conn.clone(), data.clone()));
            sent += 1;
        }
    }
    let f = report(
        "bare quinn streams",
        n * BLOCK,
        t0.elapsed(),
        cpu_seconds() - cpu0,
    );
    let _ = stop_tx.send(());
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    let _ = server.join();
    f
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let in_flight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let total = total_mib << 20;

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    tls::generate_ca(&ca).unwrap();
    let ident = |name: &str| -> TlsIdentity {
        let d = dir.path().join(name);
        let _: NodeId = tls::generate_node_cert(&ca, name, &d).unwrap();
        TlsIdentity::load_dir(&d).unwrap()
    };
    let (a, b) = (ident("a"), ident("b"));
    println!("{total_mib} MiB of 1 MiB requests, {in_flight} in flight, loopback, 2 threads");

    let sys = System::new();
    sys.block_on(async move {
        let d = PeerTuning::default;
        let variants = [
            (
                "quinn's MTU bound (1452), GSO",
                PeerTuning {
                    mtu_upper_bound: 1452,
                    segmentation_offload: true,
                    ..d()
                },
            ),
            ("default tuning (MTU <= 6500, GSO)", d()),
            (
                "MTU <= 65527, no GSO",
                PeerTuning {
                    mtu_upper_bound: 65527,
                    segmentation_offload: false,
                    ..d()
                },
            ),
            (
                "MTU <= 6500, GSO, ACK every 8",
                PeerTuning {
                    ack_eliciting_threshold: Some(8),
                    ..d()
                },
            ),
            (
                "MTU <= 65527, no GSO, ACK every 8",
                PeerTuning {
                    mtu_upper_bound: 65527,
                    segmentation_offload: false,
                    ack_eliciting_threshold: Some(8),
                    ..d()
                },
            ),
        ];
        // An optional third argument picks variants by index ("0,2").
        let pick: Option<Vec<usize>> = std::env::args()
            .nth(3)
            .map(|a| a.split(',').filter_map(|i| i.parse().ok()).collect());
        for (i, (label, tuning)) in variants.into_iter().enumerate() {
            if pick.as_ref().is_some_and(|p| !p.contains(&i)) {
                continue;
            }
            println!("-- {label}");
            let p = bench_peer_actor(a.clone(), b.clone(), &tuning, total, in_flight).await;
            let q = bench_bare_quinn(a.clone(), b.clone(), &tuning, total, in_flight).await;
            println!(
                "PeerActor / bare quinn: throughput {:.2}, CPU per GiB {:.2}",
                p.mib_s / q.mib_s,
                p.cpu_s_per_gib / q.cpu_s_per_gib
            );
        }
    });
}
