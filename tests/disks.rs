//! Several data dirs per node, on real `blocknode` processes: a data dir replaced by an
//! empty one while the node is stopped is refused at start (its marker is missing: an
//! unmounted disk looks the same), and once the operator says it is a new disk it is
//! refilled from peers without a repair call; a data dir that vanishes while the node
//! runs is marked failed while the node keeps serving; a capacity change moves only the
//! blocks that must.
//!
//! Every node's `data_dir` line is replaced by `data_dirs` with three dirs under it
//! (`<data_dir>/d0`, `d1`, `d2`), so `NodeInfo::data_dir` is their parent here.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{random_bytes, set_keys, wait_for, Cluster};

const DIRS: usize = 3;

/// Three data dirs per node with the given capacities, and short timeouts.
fn three_dirs(caps: [&'static str; DIRS]) -> impl Fn(&str) -> String {
    move |config: &str| {
        let data_line = config
            .lines()
            .find(|l| l.trim_start().starts_with("data_dir "))
            .expect("the dev-cluster config has a data_dir line");
        let base = data_line
            .split_once('=')
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .expect("data_dir = \"...\"");
        let entries: Vec<String> = caps
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{{ path = \"{base}/d{i}\", capacity = \"{c}\" }}"))
            .collect();
        let rest: String = config
            .lines()
            .filter(|l| !l.trim_start().starts_with("data_dir "))
            .map(|l| format!("{l}\n"))
            .collect();
        set_keys(
            &format!("data_dirs = [{}]\n{rest}", entries.join(", ")),
            &[
                ("block_rw_timeout", "\"5s\""),
                ("need_block_timeout", "\"2s\""),
                ("resync_backoff_base", "\"1s\""),
            ],
        )
    }
}

fn dir_of(c: &Cluster, node: usize, d: usize) -> PathBuf {
    c.nodes[node].data_dir.join(format!("d{d}"))
}

fn block_file(dir: &Path, hash: &str) -> Option<PathBuf> {
    let leaf = dir.join(&hash[0..2]).join(&hash[2..4]);
    [hash.to_string(), format!("{hash}.zst")]
        .into_iter()
        .map(|n| leaf.join(n))
        .find(|p| p.is_file())
}

/// Which of node `node`'s dirs hold `hash`.
fn dirs_holding(c: &Cluster, node: usize, hash: &str) -> Vec<usize> {
    (0..DIRS)
        .filter(|d| block_file(&dir_of(c, node, *d), hash).is_some())
        .collect()
}

/// (inode, mtime ns) of every block file in a dir, by hash.
fn identities(
    c: &Cluster,
    node: usize,
    d: usize,
    hashes: &[String],
) -> BTreeMap<String, (u64, i64)> {
    hashes
        .iter()
        .filter_map(|h| {
            let m = std::fs::metadata(block_file(&dir_of(c, node, d), h)?).ok()?;
            Some((
                h.clone(),
                (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            ))
        })
        .collect()
}

fn put_blocks(c: &Cluster, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| c.put(0, &random_bytes(5_000 + i), Some(&format!("ref{i}"))))
        .collect()
}

fn disk_states(c: &Cluster, node: usize) -> Vec<String> {
    c.get_json(node, "/v1/status")["storage"]["disks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["state"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Store 30 blocks, wait until node 0 holds each in exactly one dir, and return them with
/// the ones on its second dir (`d1`), which the tests take away.
fn thirty_blocks_some_on_d1(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let hashes = put_blocks(c, 30);
    wait_for(
        "node 0 to hold every block",
        Duration::from_secs(30),
        || {
            hashes
                .iter()
                .all(|h| dirs_holding(c, 0, h).len() == 1)
                .then_some(())
        },
    );
    let on_d1: Vec<String> = hashes
        .iter()
        .filter(|h| dirs_holding(c, 0, h) == vec![1])
        .cloned()
        .collect();
    assert!(!on_d1.is_empty(), "some of 30 blocks should be on d1");
    (hashes, on_d1)
}

/// Exit status of a node that refused a data dir (`exit::CONFIG`, sysexits' EX_CONFIG).
const EXIT_DATA_DIR_REFUSED: i32 = 78;

#[test]
fn a_data_dir_swapped_for_an_empty_one_is_refused_then_refilled_once_declared_new() {
    let mut c = Cluster::start(3, 3, "10m", three_dirs(["1GB", "1GB", "1GB"]));
    let (hashes, lost) = thirty_blocks_some_on_d1(&c);
    c.stop(0);
    let before = [identities(&c, 0, 0, &hashes), identities(&c, 0, 2, &hashes)];
    let d1 = dir_of(&c, 0, 1);
    std::fs::remove_dir_all(&d1).expect("wiping d1");
    std::fs::create_dir(&d1).expect("an empty d1");
    c.start_node(0);
    let status = c
        .wait_exit(0, Duration::from_secs(20))
        .expect("a node with an unmarked empty data dir must exit at start");
    assert_eq!(
        status.code(),
        Some(EXIT_DATA_DIR_REFUSED),
        "exit status; log:\n{}",
        c.log(0)
    );
    let log = c.log(0);
    let line = log
        .lines()
        .find(|l| l.contains("refused"))
        .unwrap_or_else(|| panic!("no refusal line in the log:\n{log}"));
    assert!(
        line.contains(&d1.display().to_string()) && line.contains("blocknode-new-dir"),
        "the line names the dir and what to do: {line}"
    );
    assert!(
        std::fs::read_dir(&d1).expect("d1").next().is_none(),
        "nothing may be written into the refused dir"
    );
    // The operator says it is a new disk for this node.
    std::fs::write(d1.join("blocknode-new-dir"), b"").expect("declaring d1 new");
    c.start_node(0);
    c.wait_ready(0);
    // No repair call: the sweep at start finds them referenced and missing.
    wait_for("d1 refilled from peers", Duration::from_secs(60), || {
        lost.iter()
            .all(|h| dirs_holding(&c, 0, h) == vec![1])
            .then_some(())
    });
    let after = [identities(&c, 0, 0, &hashes), identities(&c, 0, 2, &hashes)];
    assert_eq!(
        before, after,
        "d0 and d2 must not be touched (inodes and mtimes)"
    );
    for h in &lost {
        let r = c.get(0, h);
        assert_eq!(r.status, 200, "GET {h} through node 0");
    }
}

#[test]
fn a_data_dir_gone_while_running_is_failed_and_its_blocks_come_from_peers() {
    let c = Cluster::start(3, 3, "10m", three_dirs(["1GB", "1GB", "1GB"]));
    let (hashes, on_d1) = thirty_blocks_some_on_d1(&c);
    let away = c.nodes[0].data_dir.join("d1.gone");
    std::fs::rename(dir_of(&c, 0, 1), &away).expect("renaming d1 away");
    wait_for("status to show d1 failed", Duration::from_secs(15), || {
        (disk_states(&c, 0) == ["ok", "failed", "ok"]).then_some(())
    });
    assert!(c.is_running(0), "node 0 must stay up");
    for h in &hashes {
        let r = c.get(0, h);
        assert_eq!(r.status, 200, "GET {h} through node 0 with d1 gone");
    }
    // The blocks of the failed dir are fetched again onto the dirs that are left.
    wait_for(
        "d1's blocks refetched onto d0/d2",
        Duration::from_secs(60),
        || {
            on_d1
                .iter()
                .all(|h| {
                    let at = dirs_holding(&c, 0, h);
                    at == vec![0] || at == vec![2]
                })
                .then_some(())
        },
    );
    assert!(
        !dir_of(&c, 0, 1).exists(),
        "the failed dir must not be recreated"
    );
    let metrics = c.request(0, "GET", "/metrics", None);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l.starts_with("blocknode_disk_state{")
            && l.contains("/d1\"")
            && l.ends_with(" 3")),
        "metrics should show d1 failed (3):\n{text}"
    );
}

#[test]
fn a_capacity_change_moves_only_the_blocks_that_must_move() {
    let mut c = Cluster::start(1, 1, "10m", three_dirs(["1GB", "1GB", "1GB"]));
    let hashes = put_blocks(&c, 90);
    let where_before: Vec<usize> = hashes.iter().map(|h| dirs_holding(&c, 0, h)[0]).collect();
    let ids_before: Vec<BTreeMap<String, (u64, i64)>> =
        (0..DIRS).map(|d| identities(&c, 0, d, &hashes)).collect();
    c.stop(0);
    let text = std::fs::read_to_string(&c.nodes[0].config).expect("reading node 0's config");
    let grown = text.replacen("/d2\", capacity = \"1GB\"", "/d2\", capacity = \"2GB\"", 1);
    assert_ne!(grown, text, "the config should name d2's capacity");
    std::fs::write(&c.nodes[0].config, grown).expect("writing node 0's config");
    c.start_node(0);
    c.wait_ready(0);
    let st = wait_for("a rebalance pass", Duration::from_secs(60), || {
        let st = c.get_json(0, "/v1/status")["storage"]["rebalance"].clone();
        (st["passes"].as_u64() >= Some(1)).then_some(st)
    });
    let mut moved = 0;
    for (i, h) in hashes.iter().enumerate() {
        let at = dirs_holding(&c, 0, h);
        assert_eq!(
            at.len(),
            1,
            "block {h} should be in exactly one dir: {at:?}"
        );
        if at[0] == where_before[i] {
            let now = identities(&c, 0, at[0], std::slice::from_ref(h));
            assert_eq!(
                now.get(h),
                ids_before[at[0]].get(h),
                "block {h} stayed but its file changed"
            );
        } else {
            assert_eq!(
                at[0], 2,
                "block {h} moved from d{} to d{}, not into the grown d2",
                where_before[i], at[0]
            );
            moved += 1;
        }
        assert_eq!(c.get(0, h).status, 200, "GET {h} after the move");
    }
    assert!(
        moved > 0,
        "growing d2 from a third to a half should move some of 90 blocks"
    );
    assert_eq!(
        st["moved"].as_u64(),
        Some(moved),
        "status counts the moves: {st}"
    );
    assert_eq!(st["errors"].as_u64(), Some(0), "{st}");
}
