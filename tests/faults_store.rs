//! Faults in the metadata store and bad admin input, on real
//! processes: a node whose journal fsync fails exits at once with one clear line and
//! catches up after a restart; admin requests as `curl` sends them work, and every bad
//! one gets the documented JSON error.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fiu::tool_available;
use common::{random_bytes, set_keys, wait_for, Cluster};

/// Exit status of a node whose metadata store failed (`store_watch::EXIT_STORE_FAILED`).
const EXIT_STORE_FAILED: i32 = 74;

/// Short timeouts so catching up fits the test's bounds.
fn fast(config: &str) -> String {
    set_keys(
        config,
        &[
            ("block_rw_timeout", "\"3s\""),
            ("need_block_timeout", "\"2s\""),
            ("resync_backoff_base", "\"1s\""),
            ("anti_entropy_interval", "\"5s\""),
        ],
    )
}

/// Log lines at WARN or ERROR level.
fn warn_or_error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect()
}

#[test]
fn a_failed_journal_fsync_exits_with_one_line_and_the_node_catches_up_after_restart() {
    if !tool_available("fiu-run") || !tool_available("fiu-ctrl") {
        println!("skipped: fiu-run/fiu-ctrl (Debian package fiu-utils) not available");
        return;
    }
    let mut c = Cluster::init(3, 3, "10m", fast);
    c.start_node(0);
    c.start_node(1);
    c.start_node_under_fiu(2);
    for i in 0..3 {
        c.wait_ready(i);
    }
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    // Writes through node 0 (write quorum 2 of 3) go on during the whole test, from a
    // client of their own (the test keeps the cluster to watch node 2).
    let acked: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let (api, token) = (c.nodes[0].api.clone(), c.nodes[0].token.clone());
    let (status, took, fault_log_start) = std::thread::scope(|s| {
        s.spawn(|| {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = format!("w{n}");
                n += 1;
                let reply = agent
                    .put(&format!("{api}/v1/blocks?ref={r}"))
                    .header("Authorization", &format!("Bearer {token}"))
                    .send(&random_bytes(4096)[..]);
                if let Ok(mut reply) = reply {
                    if reply.status() == 201 {
                        let j: serde_json::Value = reply.body_mut().read_json().unwrap_or_default();
                        let h = j["hash"].as_str().unwrap_or_default().to_string();
                        // A second ref to the same block: a journal write on every
                        // holder with no block write (a PUT's ref goes with its block,
                        // so a holder whose block write failed never writes its ref).
                        let _ = agent
                            .put(&format!("{api}/v1/blocks/{h}/refs/{r}-second"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .send_empty();
                        acked.lock().unwrap().push((h, r));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        wait_for(
            "a few writes before the fault",
            Duration::from_secs(20),
            || (acked.lock().unwrap().len() >= 20).then_some(()),
        );
        let fault_log_start = c.log(2).len();
        // Every fsync in node 2 fails from now on (block files and journal), with EIO
        // (failinfo is the errno; without it libfiu picks one at random).
        c.fiu_enable(2, "enable name=posix/io/sync/fsync,failinfo=5");
        let t = Instant::now();
        let status = c.wait_exit(2, Duration::from_secs(5));
        let took = t.elapsed();
        // Writes go on a little while node 2 is down.
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (status, took, fault_log_start)
    });
    let log = c.log(2);
    let status = status.unwrap_or_else(|| {
        panic!(
            "node 2 still runs 5 s after its fsyncs started failing (health: {:?}); log:\n{log}",
            c.health_status(2)
        )
    });
    assert_eq!(
        status.code(),
        Some(EXIT_STORE_FAILED),
        "node 2 should exit with status {EXIT_STORE_FAILED} when its store fails, took {took:?}; log:\n{log}"
    );
    let failure = &log[fault_log_start.min(log.len())..];
    let lines = warn_or_error_lines(failure);
    let ours: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("metadata store in"))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "exactly one line should say the metadata store failed; warnings and errors:\n{}",
        lines.join("\n")
    );
    // The cause: the I/O error itself, or (when an actor that only saw the poison
    // reported first) a pointer to fjall's line with it just above.
    assert!(
        ours[0].contains(&format!(
            "{}",
            c.nodes[2].data_dir.with_file_name("meta").display()
        )) && (ours[0].contains("Input/output error") || ours[0].contains("logged above")),
        "the line should name the path and the cause: {}",
        ours[0]
    );
    assert!(
        lines.iter().any(|l| l.contains("Input/output error")),
        "the log should show the I/O error:\n{}",
        lines.join("\n")
    );
    // The injected fsync errors also reach block files: when they do before the journal
    // fails, the data dir fails too, and its lines (the dir's I/O errors, its failure,
    // the sweep and the writes and resyncs it refuses) belong to that second failure.
    let store_lines: Vec<_> = lines
        .iter()
        .filter(|l| {
            ![
                "I/O error on a data dir",
                "data dir failed",
                "refused block: I/O error",
                "no data dir can take new blocks",
                "no data dir has room for a new block",
            ]
            .iter()
            .any(|dir_line| l.contains(dir_line))
        })
        .collect();
    assert!(
        store_lines.len() <= 8,
        "{} warning/error lines for one failure (a handful at most):\n{}",
        store_lines.len(),
        lines.join("\n")
    );
    println!(
        "node 2 exited {took:?} after the fault with {} warning/error lines",
        lines.len()
    );

    // Restarted without the fault, it serves at once and gets what it missed.
    let acked = acked.into_inner().unwrap();
    c.start_node(2);
    c.wait_ready(2);
    let t = Instant::now();
    wait_for(
        &format!(
            "node 2 to hold every one of the {} acknowledged blocks and refs",
            acked.len()
        ),
        Duration::from_secs(60),
        || {
            let missing = acked
                .iter()
                .filter(|(h, r)| !c.has_block(2, h) || !c.has_live_ref(2, h, r))
                .count();
            (missing == 0).then_some(())
        },
    );
    println!(
        "node 2 caught up on {} blocks {:?} after its restart",
        acked.len(),
        t.elapsed()
    );
    let h = c.put(2, b"written after the restart", Some("after"));
    assert!(c.has_live_ref(2, &h, "after"), "node 2 records refs again");
}

/// `curl -s -w '\n%{http_code}' ARGS URL` against node 0 with its token: (status, body).
fn curl(c: &Cluster, args: &[&str], path: &str) -> (u16, serde_json::Value, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", c.nodes[0].token))
        .args(args)
        .arg(format!("{}{path}", c.nodes[0].api))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let status = code.trim().parse().unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json, body.to_string())
}

/// Assert a JSON 400 `bad_request` whose message contains every one of `words`.
fn assert_json_400(what: &str, got: (u16, serde_json::Value, String), words: &[&str]) {
    let (status, json, body) = got;
    assert_eq!(status, 400, "{what}: expected 400, got {status}: {body}");
    assert_eq!(
        json["code"].as_str(),
        Some("bad_request"),
        "{what}: expected the JSON error format, got {body:?}"
    );
    let msg = json["error"].as_str().unwrap_or_default();
    for w in words {
        assert!(
            msg.contains(w),
            "{what}: the error should mention {w:?}: {msg:?}"
        );
    }
}

#[test]
fn admin_requests_as_curl_sends_them_work_and_bad_ones_get_json_errors() {
    if !tool_available("curl") {
        println!("skipped: curl not available");
        return;
    }
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    // `curl -d` sends application/x-www-form-urlencoded.
    let (status, json, body) = curl(
        &c,
        &["-X", "PUT", "-d", r#"{"resync_workers":3}"#],
        "/v1/workers",
    );
    assert_eq!(status, 200, "PUT /v1/workers with curl -d: {body}");
    assert_eq!(json["resync_workers"], 3, "{body}");
    assert_eq!(c.get_json(0, "/v1/workers")["resync_workers"], 3);

    assert_json_400(
        "malformed JSON",
        curl(
            &c,
            &["-X", "PUT", "-d", r#"{"resync_workers":"#],
            "/v1/workers",
        ),
        &["JSON"],
    );
    assert_json_400(
        "a bad query string",
        curl(
            &c,
            &["-X", "PUT", "--data-binary", "x"],
            "/v1/blocks?ref=a&ref=b",
        ),
        &["query"],
    );
    let (status, json, body) = curl(&c, &[], "/v1/blocks/%FF%FE");
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("bad_request")),
        "a path that does not decode: {body}"
    );
    let before = c.get_json(0, "/v1/workers");
    for value in ["4000000000", "4294967297", "101"] {
        assert_json_400(
            &format!("resync_tranquility {value}"),
            curl(
                &c,
                &[
                    "-X",
                    "PUT",
                    "-d",
                    &format!(r#"{{"resync_tranquility":{value}}}"#),
                ],
                "/v1/workers",
            ),
            &["resync_tranquility", "between 0 and 100"],
        );
    }
    assert_json_400(
        "resync_workers 9",
        curl(
            &c,
            &["-X", "PUT", "-d", r#"{"resync_workers":9}"#],
            "/v1/workers",
        ),
        &["resync_workers", "between 1 and 8"],
    );
    // A refused request changes nothing (no value is applied before all are checked).
    assert_json_400(
        "workers in range with tranquility out of range",
        curl(
            &c,
            &[
                "-X",
                "PUT",
                "-d",
                r#"{"resync_workers":5,"resync_tranquility":4294967297}"#,
            ],
            "/v1/workers",
        ),
        &["resync_tranquility"],
    );
    assert_eq!(
        c.get_json(0, "/v1/workers"),
        before,
        "refused requests must not change the settings"
    );

    // A malformed optional body is refused and starts nothing; no body still works.
    assert_json_400(
        "POST /v1/repair with a malformed body",
        curl(&c, &["-X", "POST", "-d", "rebuild_rc=yes"], "/v1/repair"),
        &["JSON"],
    );
    let repair = &c.get_json(0, "/v1/status")["resync"]["repair"];
    assert_eq!(
        (repair["running"].as_bool(), repair["queued"].as_u64()),
        (Some(false), Some(0)),
        "a refused repair must not start: {repair}"
    );
    let (status, _, body) = curl(&c, &["-X", "POST"], "/v1/repair");
    assert_eq!(status, 202, "POST /v1/repair without a body: {body}");
}
