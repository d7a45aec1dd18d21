//! The RAM budget under load spread over several coordinators, with
//! real processes: client PUTs and peer ingress take from separate pools, so nodes
//! cannot wait on each other; a stopped holder cannot make a coordinator's memory grow
//! past its budget.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{peak_rss, timed_put, Stopped, TimedPut};
use common::{random_bytes, set_keys, Cluster};

const MIB: usize = 1 << 20;

#[test]
fn two_16mib_puts_through_each_of_three_nodes_at_once_all_succeed_on_a_32mib_budget() {
    // On the single shared pool every node's two PUTs held the whole budget while they
    // waited for the others' PutBlocks, which waited for the same budget: all 503 after
    // the block timeout. The timeout is shortened so that failure shows in 20 s.
    let c = Cluster::start(3, 3, "10m", |s| {
        set_keys(
            s,
            &[
                ("block_ram_buffer_max", "\"32MiB\""),
                ("block_rw_timeout", "\"20s\""),
                ("compression_level", "\"none\""),
                ("data_fsync", "false"),
            ],
        )
    });
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    let bufs: Vec<Vec<u8>> = (0..6).map(|_| random_bytes(16 * MIB)).collect();
    for round in 0..3 {
        let threads: Vec<_> = (0..6)
            .map(|k| {
                let node = &c.nodes[k % 3];
                let (api, token) = (node.api.clone(), node.token.clone());
                // A new block every round: its first byte says which round.
                let mut data = bufs[k].clone();
                data[0] = round;
                std::thread::spawn(move || {
                    (
                        k % 3,
                        timed_put(&api, &token, &data, Duration::from_secs(60)),
                    )
                })
            })
            .collect();
        let results: Vec<(usize, TimedPut)> = threads
            .into_iter()
            .map(|t| t.join().expect("a PUT thread panicked"))
            .collect();
        eprintln!("round {round}: {results:?}");
        assert!(
            results.iter().all(|(_, r)| r.status == 201),
            "round {round}: every PUT should be stored, got (node, result): {results:?}"
        );
        let slowest = results
            .iter()
            .map(|(_, r)| r.took)
            .max()
            .unwrap_or_default();
        assert!(
            slowest < Duration::from_secs(15),
            "round {round}: a PUT took {slowest:?} (limit 15 s): {results:?}"
        );
    }
}

#[test]
fn a_stopped_holder_keeps_the_coordinators_peak_rss_within_its_budget() {
    // Calls to the stopped holder keep their block bytes until they time out or the
    // connection dies; the budget follows the bytes, so new PUTs wait instead of piling
    // up more of them in the coordinator.
    let budget = 64 * MIB as u64;
    let c = Cluster::start(3, 3, "10m", |s| {
        set_keys(
            s,
            &[
                ("block_ram_buffer_max", "\"64MiB\""),
                ("compression_level", "\"none\""),
                ("data_fsync", "false"),
            ],
        )
    });
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    let coordinator = c.pid(0);
    let _stopped = Stopped::new(c.pid(2));
    let bufs: Vec<Arc<Vec<u8>>> = (0..4).map(|_| Arc::new(random_bytes(16 * MIB))).collect();
    let (api, token) = (c.nodes[0].api.clone(), c.nodes[0].token.clone());
    // About 10 PUTs a second for 20 s, each on its own thread so a waiting PUT does not
    // slow the rate.
    let mut threads = Vec::new();
    for i in 0..200 {
        let data = bufs[i % bufs.len()].clone();
        let (api, token) = (api.clone(), token.clone());
        threads.push(std::thread::spawn(move || {
            timed_put(&api, &token, &data, Duration::from_secs(60))
        }));
        std::thread::sleep(Duration::from_millis(100));
    }
    let results: Vec<TimedPut> = threads
        .into_iter()
        .map(|t| t.join().expect("a PUT thread panicked"))
        .collect();
    let ok = results.iter().filter(|r| r.status == 201).count();
    let peak = peak_rss(coordinator);
    eprintln!(
        "coordinator peak RSS {} MiB with a {} MiB budget; {ok} of {} PUTs stored",
        peak >> 20,
        budget >> 20,
        results.len()
    );
    assert!(peak > 0, "could not read the coordinator's VmHWM");
    assert!(
        ok > 0,
        "no PUT was stored with one holder stopped (quorum 2 of 3 should be reachable)"
    );
    assert!(
        peak < budget + 64 * MIB as u64,
        "coordinator peak RSS {} MiB is over the budget ({} MiB) + 64 MiB",
        peak >> 20,
        budget >> 20
    );
}
