//! Live layout changes on real processes, with no node restarted by the change: a
//! 3-node RF3 cluster with 300 blocks and a write load grows by two joining nodes
//! (`blocknode layout assign` + `apply`), then shrinks by one (`layout remove`), with a
//! node stopped during the second change that comes back and converges. A sampler looks
//! at the block files of every node every 100 ms and must never see a block on fewer
//! than `write_quorum` nodes; no write of the load may fail; at the end every block is on
//! exactly its holders.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{quic_addr, random_bytes, set_keys, wait_for, Cluster};

const WRITE_QUORUM: usize = 2;

/// Whether a copy of `hash` is stored in `data_dir` (plain or compressed).
fn stored(data_dir: &std::path::Path, hash: &str) -> bool {
    let d = data_dir.join(&hash[..2]).join(&hash[2..4]);
    d.join(hash).exists() || d.join(format!("{hash}.zst")).exists()
}

/// The layout version node `i` has, and whether a transition runs there.
fn layout_state(c: &Cluster, i: usize) -> (u64, bool) {
    let v = c.get_json(i, "/v1/layout");
    (
        v["version"].as_u64().unwrap_or(0),
        v["in_transition"].as_bool().unwrap_or(true),
    )
}

/// Wait until every node in `nodes` has layout `version` with its transition over and
/// every block in `hashes` is stored on exactly its holders among `all`.
fn wait_converged(c: &Cluster, nodes: &[usize], all: &[usize], version: u64, hashes: &[String]) {
    wait_for(
        &format!("layout {version} without transition on nodes {nodes:?}"),
        Duration::from_secs(180),
        || {
            nodes
                .iter()
                .all(|&i| layout_state(c, i) == (version, false))
                .then_some(())
        },
    );
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone()).collect();
    wait_for(
        &format!("every block on exactly its holders under layout {version}"),
        Duration::from_secs(120),
        || {
            let wrong = hashes
                .iter()
                .filter(|h| {
                    let info = c.get_json(nodes[0], &format!("/v1/blocks/{h}/info"));
                    let want: BTreeSet<String> = info["holders"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x["node"].as_str().map(str::to_string))
                        .collect();
                    let have: BTreeSet<String> = all
                        .iter()
                        .filter(|&&i| stored(&c.nodes[i].data_dir, h))
                        .map(|&i| ids[i].clone())
                        .collect();
                    want != have
                })
                .count();
            (wrong == 0).then_some(())
        },
    );
}

/// The write load: PUTs with refs through the given nodes, in turn, until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    hashes: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(c: &Cluster, through: &[usize]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let hashes = Arc::new(Mutex::new(Vec::new()));
        let targets: Vec<(String, String)> = through
            .iter()
            .map(|&i| (c.nodes[i].api.clone(), c.nodes[i].token.clone()))
            .collect();
        let (s, o, f, h) = (stop.clone(), ok.clone(), failed.clone(), hashes.clone());
        let thread = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                let (api, token) = &targets[n % targets.len()];
                let url = format!("{api}/v1/blocks?ref=load-{n}");
                let r = agent
                    .put(&url)
                    .header("Authorization", &format!("Bearer {token}"))
                    .send(&random_bytes(2048)[..]);
                match r {
                    Ok(mut r) if r.status() == 201 => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&r.body_mut().read_to_vec().unwrap_or_default())
                                .unwrap_or_default();
                        if let Some(hash) = v["hash"].as_str() {
                            h.lock().unwrap().push(hash.to_string());
                        }
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(mut r) => f.lock().unwrap().push(format!(
                        "PUT via {api}: HTTP {} {}",
                        r.status(),
                        String::from_utf8_lossy(&r.body_mut().read_to_vec().unwrap_or_default())
                    )),
                    Err(e) => f.lock().unwrap().push(format!("PUT via {api}: {e}")),
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Load {
            stop,
            ok,
            failed,
            hashes,
            thread: Some(thread),
        }
    }

    /// Stop and give the hashes written.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread panicked");
        }
        let failed = self.failed.lock().unwrap().clone();
        assert!(
            failed.is_empty(),
            "{} writes of the load failed (of {} ok), first: {:?}",
            failed.len(),
            self.ok.load(Ordering::Relaxed),
            failed.first()
        );
        assert!(
            self.ok.load(Ordering::Relaxed) > 0,
            "the load wrote nothing"
        );
        self.hashes.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every 100 ms, the fewest nodes any of `hashes` is stored on.
struct Sampler {
    stop: Arc<AtomicBool>,
    min: Arc<Mutex<(usize, String)>>,
    samples: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(dirs: Vec<PathBuf>, hashes: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let min = Arc::new(Mutex::new((usize::MAX, String::new())));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, m, n) = (stop.clone(), min.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for h in &hashes {
                    let copies = dirs.iter().filter(|d| stored(d, h)).count();
                    let mut g = m.lock().unwrap();
                    if copies < g.0 {
                        *g = (copies, h.clone());
                    }
                }
                n.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            stop,
            min,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler thread panicked");
        }
        let (min, hash) = self.min.lock().unwrap().clone();
        assert!(
            min >= WRITE_QUORUM,
            "block {hash} was seen on {min} nodes, below write_quorum {WRITE_QUORUM}"
        );
        (min, self.samples.load(Ordering::Relaxed))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn cli_ok(c: &Cluster, i: usize, args: &[&str]) -> String {
    let (ok, out, err) = c.cli(i, args);
    assert!(ok, "blocknode {args:?} failed: {err}{out}");
    out
}

#[test]
fn a_cluster_grows_and_shrinks_by_command_without_dropping_below_quorum() {
    let fast = |t: &str| {
        set_keys(
            t,
            &[
                ("anti_entropy_interval", "\"5s\""),
                ("write_quorum", &WRITE_QUORUM.to_string()),
            ],
        )
    };
    let mut c = Cluster::init(5, 3, "2s", fast);
    // Nodes 0-2 are the cluster (layout version 1); 3 and 4 join through node 0.
    for i in 0..3 {
        c.set_members(i, &[0, 1, 2]);
    }
    let seed = quic_addr(&c, 0);
    for i in 3..5 {
        c.set_members(i, &[]);
        let text = std::fs::read_to_string(&c.nodes[i].config).unwrap();
        let text = set_keys(&text, &[("bootstrap_peers", &format!("[\"{seed}\"]"))]);
        std::fs::write(&c.nodes[i].config, text).unwrap();
    }
    for i in 0..5 {
        c.start_node(i);
    }
    for i in 0..5 {
        c.wait_ready(i);
    }
    for i in 0..3 {
        c.wait_n_peers_up(i, 2);
    }
    let r = c.request(3, "GET", &format!("/v1/blocks/{}", "0".repeat(64)), None);
    assert_eq!(r.status, 503, "a joining node serves no data");
    assert_eq!(r.json()["code"], "not_in_layout");

    let blocks: Vec<String> = (0..300)
        .map(|i| c.put(i % 3, &random_bytes(1024), Some(&format!("seed-{i}"))))
        .collect();
    let dirs: Vec<PathBuf> = c.nodes.iter().map(|n| n.data_dir.clone()).collect();
    let sampler = Sampler::start(dirs.clone(), blocks.clone());
    let load = Load::start(&c, &[0, 1, 2]);

    // Grow: assign the two joining nodes, look at what it would move, apply.
    for i in 3..5 {
        let out = cli_ok(
            &c,
            0,
            &[
                "layout",
                "assign",
                &c.nodes[i].id,
                "--zone",
                &format!("z{}", i + 1),
                "--capacity",
                "1",
                "--addr",
                &quic_addr(&c, i),
            ],
        );
        assert!(out.contains("would move"), "assign prints the moves: {out}");
    }
    let (ok, _, err) = c.cli(0, &["layout", "apply", "--version", "3"]);
    assert!(
        !ok && err.contains("current + 1"),
        "apply of a skipped version: {err}"
    );
    let out = cli_ok(&c, 0, &["layout", "apply", "--version", "2"]);
    assert!(out.contains("replicas"), "apply prints what moves: {out}");
    wait_for(
        "a joining node to get layout 2",
        Duration::from_secs(30),
        || (layout_state(&c, 3).0 == 2 && layout_state(&c, 4).0 == 2).then_some(()),
    );
    // The transition shows in `blocknode status` while it runs.
    let status = cli_ok(&c, 0, &["status"]);
    assert!(status.contains("layout   version 2"), "{status}");
    let metrics = c.request(0, "GET", "/metrics", None);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l == "blocknode_layout_version 2"),
        "/metrics should give layout version 2:\n{text}"
    );
    for want in [
        "blocknode_layout_transition_active",
        "blocknode_layout_transition_remaining_bytes",
        "blocknode_layout_transition_eta_seconds",
    ] {
        assert!(text.contains(want), "{want} missing from /metrics");
    }
    std::thread::sleep(Duration::from_secs(8));
    let mut hashes = blocks.clone();
    hashes.extend(load.finish());
    wait_converged(&c, &[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 2, &hashes);
    let (min, samples) = sampler.finish();
    eprintln!(
        "grow: {} blocks, sampler {samples} samples, fewest copies {min}",
        hashes.len()
    );

    // Shrink: remove node 1 while node 2 is stopped; node 2 comes back and converges.
    let sampler = Sampler::start(dirs, hashes.clone());
    // Through nodes that stay up: node 2 is stopped, node 1 is being removed.
    let load = Load::start(&c, &[0, 3, 4]);
    c.stop(2);
    let out = cli_ok(&c, 0, &["layout", "remove", &c.nodes[1].id]);
    assert!(out.contains("would move"), "remove prints the moves: {out}");
    cli_ok(&c, 0, &["layout", "apply", "--version", "3"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        layout_state(&c, 0),
        (3, true),
        "the transition waits for the stopped old holder"
    );
    c.start_node(2);
    c.wait_ready(2);
    std::thread::sleep(Duration::from_secs(5));
    hashes.extend(load.finish());
    wait_converged(&c, &[0, 2, 3, 4], &[0, 1, 2, 3, 4], 3, &hashes);
    let (min, samples) = sampler.finish();
    eprintln!(
        "shrink: {} blocks, sampler {samples} samples, fewest copies {min}",
        hashes.len()
    );
    assert!(
        hashes.iter().all(|h| !stored(&c.nodes[1].data_dir, h)),
        "the removed node still holds blocks"
    );
}
