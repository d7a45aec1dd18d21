//! Multi-process anti-entropy scenarios (RF3): a node that missed writes catches up by
//! hinted handoff and by anti-entropy alone, drops made while a node was down still
//! collect the blocks everywhere, and 3 → 4 → 3 member changes move every block to its
//! new holders without ever leaving fewer than `write_quorum` copies.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{random_bytes, set_keys, wait_for, Cluster};

/// Short timeouts and retries, so the scenarios fit the test bounds.
fn fast(config: &str, extra: &[(&str, &str)]) -> String {
    let mut keys = vec![
        ("block_rw_timeout", "\"5s\""),
        ("need_block_timeout", "\"2s\""),
        ("resync_backoff_base", "\"1s\""),
    ];
    keys.extend_from_slice(extra);
    set_keys(config, &keys)
}

/// 100 blocks of 4 KiB, each with its ref, through node 0; returns (hash, ref) pairs.
fn put_100(c: &Cluster) -> Vec<(String, String)> {
    (0..100)
        .map(|i| {
            let r = format!("obj-{i}");
            (c.put(0, &random_bytes(4096), Some(&r)), r)
        })
        .collect()
}

/// Whether node `i` has `ref` live on `hash` in its own ref records.
fn has_live_ref(c: &Cluster, i: usize, hash: &str, r: &str) -> bool {
    c.has_live_ref(i, hash, r)
}

fn anti_entropy(c: &Cluster, i: usize) -> serde_json::Value {
    c.get_json(i, "/v1/status")["anti_entropy"].clone()
}

/// Node 2 is down during 100 puts; returns what it must catch up on.
fn miss_100_puts(c: &mut Cluster) -> Vec<(String, String)> {
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    c.stop(2);
    let puts = put_100(c);
    for (h, _) in &puts {
        assert!(
            !c.has_block(2, h),
            "node 2 was down, yet holds a block written meanwhile"
        );
    }
    // Calls to node 2 beyond the quorum keep trying until their timeout (block_rw_timeout
    // 5 s): let them end, or node 2 would get the last writes from them on restart.
    std::thread::sleep(Duration::from_secs(6));
    puts
}

fn assert_caught_up(c: &Cluster, puts: &[(String, String)], within: Duration, how: &str) {
    wait_for(
        &format!("node 2 to hold all 100 blocks and refs ({how})"),
        within,
        || {
            let missing_blocks = puts.iter().filter(|(h, _)| !c.has_block(2, h)).count();
            let missing_refs = puts
                .iter()
                .filter(|(h, r)| !has_live_ref(c, 2, h, r))
                .count();
            (missing_blocks == 0 && missing_refs == 0).then_some(())
        },
    );
}

#[test]
fn a_node_down_during_puts_catches_up_by_hinted_handoff() {
    // Anti-entropy off: only the hints can bring node 2 up to date.
    let mut c = Cluster::start(3, 3, "10m", |t| {
        fast(t, &[("anti_entropy_interval", "\"0s\"")])
    });
    let puts = miss_100_puts(&mut c);
    // The failed calls are reported once they end (a call to a down node may wait for
    // its timeout).
    wait_for(
        "node 0 to hold a ref hint and a block hint per put for node 2",
        Duration::from_secs(20),
        || (anti_entropy(&c, 0)["hints_pending"].as_u64()? >= 200).then_some(()),
    );
    c.start_node(2);
    c.wait_ready(2);
    assert_caught_up(&c, &puts, Duration::from_secs(30), "hinted handoff");
    wait_for("every hint to be replayed", Duration::from_secs(10), || {
        (anti_entropy(&c, 0)["hints_pending"].as_u64() == Some(0)).then_some(())
    });
}

#[test]
fn a_node_down_during_puts_catches_up_by_anti_entropy_alone() {
    let mut c = Cluster::start(3, 3, "10m", |t| {
        fast(
            t,
            &[
                ("hinted_handoff", "false"),
                ("anti_entropy_interval", "\"5s\""),
            ],
        )
    });
    let puts = miss_100_puts(&mut c);
    assert_eq!(
        anti_entropy(&c, 0)["hints_pending"].as_u64(),
        Some(0),
        "hinted handoff is off, yet hints were kept"
    );
    c.start_node(2);
    c.wait_ready(2);
    assert_caught_up(&c, &puts, Duration::from_secs(30), "anti-entropy");
    let ae: Vec<serde_json::Value> = (0..3).map(|i| anti_entropy(&c, i)).collect();
    let moved = ae[2]["records_received"].as_u64().unwrap_or(0)
        + ae[0]["records_sent"].as_u64().unwrap_or(0)
        + ae[1]["records_sent"].as_u64().unwrap_or(0);
    assert!(
        moved >= 100,
        "the refs must have come by anti-entropy: {ae:?}"
    );
}

#[test]
fn refs_dropped_while_a_node_is_down_still_collect_the_blocks_everywhere() {
    let mut c = Cluster::start(3, 3, "3s", |t| {
        fast(t, &[("anti_entropy_interval", "\"5s\"")])
    });
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    let puts: Vec<(String, String)> = (0..20)
        .map(|i| {
            let r = format!("gone-{i}");
            (c.put(0, &random_bytes(4096), Some(&r)), r)
        })
        .collect();
    wait_for(
        "every node to hold the 20 blocks",
        Duration::from_secs(20),
        || {
            puts.iter()
                .all(|(h, _)| (0..3).all(|i| c.has_block(i, h)))
                .then_some(())
        },
    );
    c.stop(2);
    for (h, r) in &puts {
        let res = c.request(0, "DELETE", &format!("/v1/blocks/{h}/refs/{r}"), None);
        assert_eq!(
            res.status,
            204,
            "dropping {r}: {}",
            String::from_utf8_lossy(&res.body)
        );
    }
    // Node 2 still holds its blocks with live refs; the others must not delete theirs
    // before node 2 answers that it does not need them.
    std::thread::sleep(Duration::from_secs(2));
    c.start_node(2);
    c.wait_ready(2);
    wait_for(
        "the 20 blocks to be gone from all three nodes (gc_delay 3 s + 10 s)",
        Duration::from_secs(60),
        || {
            let left: usize = puts
                .iter()
                .map(|(h, _)| (0..3).filter(|i| c.has_block(*i, h)).count())
                .sum();
            (left == 0).then_some(())
        },
    );
    for (h, _) in &puts {
        assert_eq!(c.get(1, h).status, 404, "a collected block is still served");
    }
}

/// Every 100 ms, the number of nodes whose data dir holds each block; keeps the minimum.
struct Sampler {
    stop: Arc<AtomicBool>,
    min: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(c: &Cluster, hashes: &[String]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(AtomicUsize::new(usize::MAX));
        let dirs: Vec<std::path::PathBuf> = c.nodes.iter().map(|n| n.data_dir.clone()).collect();
        let hashes = hashes.to_vec();
        let (s, m) = (stop.clone(), min.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for h in &hashes {
                    let copies = dirs
                        .iter()
                        .filter(|d| {
                            let p = d.join(&h[0..2]).join(&h[2..4]);
                            p.join(h).is_file() || p.join(format!("{h}.zst")).is_file()
                        })
                        .count();
                    m.fetch_min(copies, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            stop,
            min,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.min.load(Ordering::Relaxed)
    }
}

/// Node index of each holder of `hash`, as node `via` computes the placement.
fn holders(c: &Cluster, via: usize, hash: &str) -> Vec<usize> {
    let by_id: HashMap<&str, usize> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let info = c.get_json(via, &format!("/v1/blocks/{hash}/info"));
    let mut out: Vec<usize> = info["holders"]
        .as_array()
        .expect("info lists holders")
        .iter()
        .map(|h| by_id[h["node"].as_str().expect("holder id")])
        .collect();
    out.sort();
    out
}

/// Wait until every block is on exactly its holders among `nodes` (placement from `via`).
fn wait_on_exactly_holders(
    c: &Cluster,
    via: usize,
    nodes: &[usize],
    hashes: &[String],
    what: &str,
) {
    let want: Vec<Vec<usize>> = hashes.iter().map(|h| holders(c, via, h)).collect();
    wait_for(what, Duration::from_secs(90), || {
        let wrong: Vec<String> = hashes
            .iter()
            .zip(&want)
            .filter_map(|(h, w)| {
                let on: Vec<usize> = nodes
                    .iter()
                    .copied()
                    .filter(|i| c.has_block(*i, h))
                    .collect();
                (on != *w).then(|| format!("{} on {on:?}, holders {w:?}", &h[..8]))
            })
            .collect();
        if !wrong.is_empty() {
            eprintln!(
                "{what}: {} blocks not yet placed, e.g. {}",
                wrong.len(),
                wrong[0]
            );
        }
        wrong.is_empty().then_some(())
    });
}

#[test]
fn three_to_four_to_three_nodes_moves_blocks_and_never_drops_below_quorum() {
    let extra = [
        ("anti_entropy_interval", "\"3s\""),
        ("need_block_timeout", "\"2s\""),
    ];
    let mut c = Cluster::init(4, 3, "2s", |t| fast(t, &extra));
    for i in 0..3 {
        c.set_members(i, &[0, 1, 2]);
        c.start_node(i);
    }
    for i in 0..3 {
        c.wait_ready(i);
    }
    for i in 0..3 {
        wait_for("3 nodes to see each other", Duration::from_secs(20), || {
            let s = c.get_json(i, "/v1/status");
            let up = s["peers"]
                .as_array()?
                .iter()
                .filter(|p| p["up"] == true)
                .count();
            (up == 2).then_some(())
        });
    }
    let hashes: Vec<String> = (0..40)
        .map(|i| c.put(i % 3, &random_bytes(8192), Some(&format!("m-{i}"))))
        .collect();
    wait_for(
        "every block on all 3 nodes",
        Duration::from_secs(20),
        || {
            hashes
                .iter()
                .all(|h| (0..3).all(|i| c.has_block(i, h)))
                .then_some(())
        },
    );
    let sampler = Sampler::start(&c, &hashes);

    // 3 -> 4: the new node starts with the 4-node list, then each old node in turn.
    c.start_node(3);
    c.wait_ready(3);
    for i in 0..3 {
        c.set_members(i, &[0, 1, 2, 3]);
        c.restart(i);
    }
    wait_on_exactly_holders(
        &c,
        0,
        &[0, 1, 2, 3],
        &hashes,
        "3 -> 4: blocks on exactly their new holders",
    );
    let moved = hashes.iter().filter(|h| c.has_block(3, h)).count();
    assert!(moved > 0, "the fourth node received no block");

    // 4 -> 3: every remaining node gets the 3-node list; the removed one is stopped last.
    for i in 0..3 {
        c.set_members(i, &[0, 1, 2]);
        c.restart(i);
    }
    wait_on_exactly_holders(
        &c,
        0,
        &[0, 1, 2],
        &hashes,
        "4 -> 3: blocks back on the 3 nodes",
    );
    c.stop(3);
    let min = sampler.finish();
    assert!(
        min >= 2,
        "a block had only {min} copies during the change (write_quorum is 2)"
    );
    for h in &hashes {
        assert_eq!(
            c.get(0, h).status,
            200,
            "block {h} unreadable after the change"
        );
    }
}
