//! The operators' kit on a real node: quiet default logs,
//! `--log-format json`, and metric names that follow Prometheus conventions.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::raw_http::RawConn;
use common::{bin, wait_for, Cluster};

/// A node process this test started itself (the harness pins `RUST_LOG=info`, and the
/// default filter is what is under test); killed on drop.
struct OwnNode(Child);

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start node 0 of `c` with `extra` arguments before `run`, no `RUST_LOG`, stderr to
/// `log`; wait for `/health`.
fn start_own(c: &Cluster, extra: &[&str], log: &std::path::Path) -> OwnNode {
    let f = std::fs::File::create(log).expect("creating the log file");
    let child = Command::new(bin())
        .args(extra)
        .arg("run")
        .arg("--config")
        .arg(&c.nodes[0].config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("cloning the log handle"))
        .stderr(f)
        .spawn()
        .expect("spawning blocknode run");
    let node = OwnNode(child);
    wait_for(
        "the node to answer /health",
        Duration::from_secs(60),
        || {
            std::net::TcpStream::connect(c.nodes[0].api.trim_start_matches("http://"))
                .ok()
                .and_then(|_| {
                    RawConn::connect(&c.nodes[0].api, "")
                        .request("GET", "/health", &[], b"")
                        .ok()
                })
                .filter(|r| r.status == 200)
        },
    );
    node
}

#[test]
fn default_logs_are_quiet_and_json_logs_are_one_object_per_line() {
    let c = Cluster::init(1, 1, "10m", |s| s.to_string());
    let text_log = c.dir.path().join("text.log");
    {
        let _n = start_own(&c, &[], &text_log);
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = std::fs::read_to_string(&text_log).expect("reading the text log");
    assert!(
        text.contains("blocknode ready"),
        "our own info lines stay:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a log that is not a terminal"
    );
    // `<timestamp> <LEVEL> <target>: <message>`
    let noisy: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.len() > 2 && t[1] == "INFO" && !t[2].starts_with("blocknode")
        })
        .collect();
    assert!(
        noisy.is_empty(),
        "dependency INFO lines at start:\n{}",
        noisy.join("\n")
    );

    let json_log = c.dir.path().join("json.log");
    {
        let _n = start_own(&c, &["--log-format", "json"], &json_log);
        std::thread::sleep(Duration::from_millis(500));
    }
    let json = std::fs::read_to_string(&json_log).expect("reading the JSON log");
    let mut ready = false;
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(key).is_some(), "no {key:?} in {line}");
        }
        ready |= v["fields"]["message"] == "blocknode ready";
    }
    assert!(ready, "the ready line should be in the JSON log:\n{json}");
}

/// Why a metric family breaks the Prometheus naming conventions, if it does.
fn naming_problem(name: &str, kind: &str, samples: &[&str]) -> Option<String> {
    if !name.starts_with("blocknode_") {
        return Some("not under the blocknode_ prefix".into());
    }
    if kind == "counter"
        && !samples
            .iter()
            .all(|s| s.starts_with(&format!("{name}_total")))
    {
        return Some("a counter's samples must end in _total".into());
    }
    if kind != "counter" && name.ends_with("_total") {
        return Some("only counters end in _total".into());
    }
    for (word, unit) in [("bytes", "_bytes"), ("seconds", "_seconds")] {
        if name.contains(word) && !name.ends_with(unit) {
            return Some(format!("a metric in {word} must end in {unit}"));
        }
    }
    for bad in ["_ms", "_millis", "_kib", "_mib", "_secs", "_count_total"] {
        if name.ends_with(bad) || name.contains(&format!("{bad}_")) {
            return Some(format!("non-base unit {bad}"));
        }
    }
    None
}

#[test]
fn every_metric_name_follows_prometheus_conventions() {
    // Two nodes, so the per-peer and RPC families have samples.
    let c = Cluster::start(2, 2, "10m", |s| s.to_string());
    c.wait_peers_up(0);
    c.put(0, b"one block for the counters", Some("r"));
    let r = c.request(0, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("metrics are UTF-8");
    let mut families = 0;
    let mut problems = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest
            .split_once(' ')
            .expect("TYPE line has a name and a type");
        let samples: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .copied()
            .collect();
        families += 1;
        if let Some(p) = naming_problem(name, kind, &samples) {
            problems.push(format!("{name} ({kind}): {p}"));
        }
    }
    assert!(
        families >= 15,
        "expected the node's metric families, got:\n{text}"
    );
    assert!(
        problems.is_empty(),
        "metric names off convention:\n{}",
        problems.join("\n")
    );
    // Every metric the Grafana dashboard queries exists under that name.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-dashboard.json"
        ))
        .expect("reading docs/grafana-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dash["panels"].as_array().expect("dashboard panels") {
        for target in panel["targets"].as_array().expect("panel targets") {
            let expr = target["expr"].as_str().expect("target expr");
            for (at, _) in expr.match_indices("blocknode_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried += 1;
                // A family with no samples yet (no peers, no RPCs) still has its TYPE line.
                let family = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_total"))
                    .unwrap_or(&name);
                assert!(
                    text.lines().any(|l| l.starts_with(&name))
                        || text.contains(&format!("# TYPE {family} ")),
                    "panel {:?} queries {name}, which /metrics does not have",
                    panel["title"]
                );
            }
        }
    }
    assert!(queried >= 15, "the dashboard should query the metrics");
    for want in [
        "blocknode_stored_bytes",
        "blocknode_api_read_bytes_total",
        "blocknode_disk_written_bytes_total",
        "blocknode_resync_ops_total",
        "blocknode_anti_entropy_last_full_sync_timestamp_seconds",
    ] {
        assert!(text.contains(want), "{want} missing from /metrics");
    }
}
