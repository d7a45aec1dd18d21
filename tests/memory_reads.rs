//! The RAM budget covers reads, with real processes: a block is charged before it is
//! read from disk or received from a peer (a local GET, a peer's `GetBlock`, a resync
//! fetch), and a node reading a peer's reply never waits behind its own PUTs while that
//! peer keeps the reply in its peer pool. Peak RSS is the kernel's high-water mark
//! (VmHWM), so a burst anywhere in the run counts.

mod common;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::peak_rss;
use common::{random_bytes, set_keys, Cluster};

const MIB: usize = 1 << 20;

/// The tests of this file run one at a time: each loads three nodes to their budget, and
/// its time limits mean little while another one does the same on the same cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The outcome of one request: HTTP status (0 when it failed outright), how long it
/// took, and the body length read (GET).
#[derive(Debug, Clone, Copy)]
struct Timed {
    what: &'static str,
    node: usize,
    status: u16,
    len: usize,
    took: Duration,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// PUT `data` with `ref_id` through `api`.
fn timed_put(node: usize, api: &str, token: &str, data: &[u8], ref_id: &str) -> Timed {
    let start = Instant::now();
    let status = agent(Duration::from_secs(90))
        .put(&format!("{api}/v1/blocks?ref={ref_id}"))
        .header("Authorization", format!("Bearer {token}"))
        .send(data)
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    Timed {
        what: "PUT",
        node,
        status,
        len: data.len(),
        took: start.elapsed(),
    }
}

/// GET `hash` through `api`, reading the body as it comes (the test keeps none of it).
fn timed_get(node: usize, api: &str, token: &str, hash: &str) -> Timed {
    let start = Instant::now();
    let mut len = 0;
    let status = match agent(Duration::from_secs(90))
        .get(&format!("{api}/v1/blocks/{hash}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
    {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let mut body = r.body_mut().as_reader();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(_) => {
                        len = usize::MAX;
                        break;
                    }
                }
            }
            status
        }
        Err(_) => 0,
    };
    Timed {
        what: "GET",
        node,
        status,
        len,
        took: start.elapsed(),
    }
}

/// `base` with its first 8 bytes replaced by `n`: a distinct block of the same size.
fn variant(base: &[u8], n: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    v[..8].copy_from_slice(&n.to_le_bytes());
    v
}

fn budget_keys(budget: &str) -> impl Fn(&str) -> String + '_ {
    move |s| {
        set_keys(
            s,
            &[
                ("block_ram_buffer_max", budget),
                ("compression_level", "\"none\""),
                ("data_fsync", "false"),
            ],
        )
    }
}

#[test]
fn puts_and_gets_through_every_node_on_a_32mib_budget_finish_in_time_within_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let budget = 32 * MIB as u64;
    let c = Cluster::start(3, 3, "10m", budget_keys("\"32MiB\""));
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    let base = random_bytes(16 * MIB);
    // Eight blocks every node GETs each round (RF3: each holds them all).
    let stored: Vec<String> = (0..8u64)
        .map(|n| {
            c.put(
                (n % 3) as usize,
                &variant(&base, n),
                Some(&format!("get-{n}")),
            )
        })
        .collect();
    let stored = Arc::new(stored);
    for round in 0..3u64 {
        // One block per node is read from the peers: its copy there is removed (the GET
        // fetches it from a peer and asks for a resync, which fetches it again).
        for i in 0..3usize {
            let victim = &stored[(round as usize * 3 + i) % stored.len()];
            for f in c.block_files(i, victim) {
                let _ = std::fs::remove_file(f);
            }
        }
        let mut threads = Vec::new();
        for i in 0..3usize {
            let (api, token) = (c.nodes[i].api.clone(), c.nodes[i].token.clone());
            for k in 0..2u64 {
                let data = variant(&base, 1000 + round * 100 + i as u64 * 10 + k);
                let (api, token) = (api.clone(), token.clone());
                let r = format!("put-{round}-{i}-{k}");
                threads.push(std::thread::spawn(move || {
                    timed_put(i, &api, &token, &data, &r)
                }));
            }
            for g in 0..8usize {
                let (api, token, stored) = (api.clone(), token.clone(), stored.clone());
                threads.push(std::thread::spawn(move || {
                    timed_get(i, &api, &token, &stored[g])
                }));
            }
        }
        let results: Vec<Timed> = threads
            .into_iter()
            .map(|t| t.join().expect("a request thread panicked"))
            .collect();
        let slowest: Vec<Duration> = (0..3)
            .map(|i| {
                let mine = results.iter().filter(|r| r.node == i);
                mine.map(|r| r.took).max().unwrap_or_default()
            })
            .collect();
        eprintln!("round {round}: slowest request through each node {slowest:?}");
        for r in &results {
            eprintln!("  {} node {} {} in {:?}", r.what, r.node, r.status, r.took);
        }
        let failed: Vec<&Timed> = results
            .iter()
            .filter(|r| {
                let want = if r.what == "PUT" { 201 } else { 200 };
                r.status != want || (r.what == "GET" && r.len != 16 * MIB)
            })
            .collect();
        assert!(
            failed.is_empty(),
            "round {round}: requests failed: {failed:?}"
        );
        let slow: Vec<&Timed> = results
            .iter()
            .filter(|r| r.took >= Duration::from_secs(15))
            .collect();
        assert!(
            slow.is_empty(),
            "round {round}: requests slower than 15 s: {slow:?}"
        );
    }
    let peaks: Vec<u64> = (0..3).map(|i| peak_rss(c.pid(i))).collect();
    eprintln!(
        "peak RSS per node (MiB): {:?}, budget 32 MiB",
        peaks.iter().map(|p| p >> 20).collect::<Vec<_>>()
    );
    for (i, peak) in peaks.iter().enumerate() {
        assert!(*peak > 0, "could not read node {i}'s VmHWM");
        assert!(
            *peak < budget + 64 * MIB as u64,
            "node {i}: peak RSS {} MiB is over the budget (32 MiB) + 64 MiB",
            peak >> 20
        );
    }
}

#[test]
fn sixty_four_gets_of_distinct_16mib_blocks_through_one_node_stay_within_its_budget() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // RF1 over three nodes: about a third of the blocks are read from node 0's disk,
    // the rest are served by its peers' GetBlock.
    let budget = 64 * MIB as u64;
    // The GETs queue for the client pool (two 16 MiB bodies at a time): the last ones
    // wait longer than the default 30 s a request may wait for memory before it is
    // answered 503. This test is about memory, not latency: let them wait.
    let c = Cluster::start(3, 1, "10m", |s| {
        set_keys(
            &budget_keys("\"64MiB\"")(s),
            &[("block_rw_timeout", "\"90s\"")],
        )
    });
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    let base = random_bytes(16 * MIB);
    let hashes: Vec<String> = (0..64u64)
        .map(|n| c.put(0, &variant(&base, n), Some(&format!("b-{n}"))))
        .collect();
    drop(base);
    let (api, token) = (c.nodes[0].api.clone(), c.nodes[0].token.clone());
    let threads: Vec<_> = hashes
        .into_iter()
        .map(|h| {
            let (api, token) = (api.clone(), token.clone());
            std::thread::spawn(move || timed_get(0, &api, &token, &h))
        })
        .collect();
    let results: Vec<Timed> = threads
        .into_iter()
        .map(|t| t.join().expect("a GET thread panicked"))
        .collect();
    let slowest = results.iter().map(|r| r.took).max().unwrap_or_default();
    let peaks: Vec<u64> = (0..3).map(|i| peak_rss(c.pid(i))).collect();
    eprintln!(
        "64 GETs: slowest {slowest:?}; peak RSS per node (MiB): {:?}, budget 64 MiB",
        peaks.iter().map(|p| p >> 20).collect::<Vec<_>>()
    );
    let failed: Vec<&Timed> = results
        .iter()
        .filter(|r| r.status != 200 || r.len != 16 * MIB)
        .collect();
    assert!(failed.is_empty(), "GETs failed: {failed:?}");
    for (i, peak) in peaks.iter().enumerate() {
        assert!(*peak > 0, "could not read node {i}'s VmHWM");
        assert!(
            *peak < budget + 64 * MIB as u64,
            "node {i}: peak RSS {} MiB is over the budget (64 MiB) + 64 MiB",
            peak >> 20
        );
    }
}
