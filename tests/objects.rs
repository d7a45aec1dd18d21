//! Objects of any size on a 3-node cluster with replication factor 3, through the CLI and
//! the HTTP API as a user would: a large object streamed in and out with the CLI's
//! memory bounded, byte ranges across chunk boundaries, a chunk lost mid-response, and
//! deduplication (on the node and on the client).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blocknode_actors::hash::blake2sum;
use common::load::peak_rss;
use common::objects::{chunks_of, fast, live_refs, pseudo_random, put_object};
use common::raw_http::RawConn;
use common::{bin, wait_for, Cluster};

/// The object's size in MiB: 64 unless `BLOCKNODE_TEST_OBJECT_MIB` says otherwise (e.g.
/// 1024 for a run by hand; the test holds the object's bytes twice in its own memory).
fn large_object_mib() -> usize {
    std::env::var("BLOCKNODE_TEST_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|m| *m > 0)
        .unwrap_or(64)
}

#[test]
fn a_large_object_streams_through_the_cli_with_bounded_memory_and_reads_back_whole() {
    let mib = large_object_mib();
    let c = Cluster::start(3, 3, "10m", fast);
    let data = pseudo_random((mib << 20) + 12_345, 1);
    let file = c.dir.path().join("big.bin");
    std::fs::write(&file, &data).expect("writing the test file");

    // Put through the CLI, watching its peak RSS.
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(["--api", &c.nodes[0].api, "--token", &c.nodes[0].token])
        .args(["object", "put"])
        .arg(&file)
        .args(["--ref", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the CLI");
    let mut peak = 0;
    while child.try_wait().expect("polling the CLI").is_none() {
        peak = peak.max(peak_rss(child.id()));
        assert!(
            started.elapsed() < Duration::from_secs(120.max(2 * mib as u64)),
            "object put still running after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("the CLI's output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "object put failed: {stderr}");
    let id = stdout.trim().to_string();
    assert_eq!(id.len(), 64, "the CLI prints the id: {stdout:?}");
    assert!(stderr.contains("new:"), "the dedup figure: {stderr:?}");
    eprintln!(
        "{mib} MiB put through the CLI in {:?}; CLI peak RSS {} MiB",
        started.elapsed(),
        peak >> 20
    );
    assert!(
        peak > 0 && peak < 40 << 20,
        "CLI peak RSS {} MiB for a {mib} MiB file",
        peak >> 20
    );

    // The node that cut it stays inside its RAM budget (256 MiB by default) + 64 MiB.
    let node_peak = peak_rss(c.pid(0));
    eprintln!("coordinating node peak RSS {} MiB", node_peak >> 20);
    for i in 1..3 {
        let p = peak_rss(c.pid(i));
        eprintln!("node {i} peak RSS {} MiB", p >> 20);
        assert!(p < (256 + 64) << 20, "node {i} peak RSS {} MiB", p >> 20);
    }
    assert!(
        node_peak < (256 + 64) << 20,
        "node peak RSS {} MiB",
        node_peak >> 20
    );

    // Read back through another node with the CLI: the same bytes.
    let back = c.dir.path().join("back.bin");
    let (ok, _, err) = c.cli(
        1,
        &[
            "object",
            "get",
            &id,
            "-o",
            back.to_str().expect("utf-8 path"),
        ],
    );
    assert!(ok, "object get failed: {err}");
    let got = std::fs::read(&back).expect("reading the object back");
    assert_eq!(got.len(), data.len());
    assert_eq!(
        blake2sum(&got),
        blake2sum(&data),
        "the bytes read back differ"
    );
    drop(got);

    // HEAD answers the size; info counts the chunks the chunker cuts.
    let chunks = chunks_of(&data, true);
    let mut conn = RawConn::connect(&c.nodes[2].api, &c.nodes[2].token);
    let head = conn
        .request("HEAD", &format!("/v1/objects/{id}"), &[], &[])
        .expect("HEAD");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(&*data.len().to_string())
    );
    assert_eq!(head.header("etag"), Some(&*format!("\"{id}\"")));
    let info = c.get_json(2, &format!("/v1/objects/{id}/info"));
    assert_eq!(info["chunks"].as_u64(), Some(chunks.len() as u64));
    assert_eq!(info["size"].as_u64(), Some(data.len() as u64));
    let (ok, info_text, err) = c.cli(2, &["object", "info", &id]);
    assert!(ok && info_text.contains("chunks"), "object info: {err}");

    // If-None-Match with the id: 304.
    let r = conn
        .request(
            "GET",
            &format!("/v1/objects/{id}"),
            &[("If-None-Match", &format!("\"{id}\""))],
            &[],
        )
        .expect("conditional GET");
    assert_eq!(r.status, 304);

    // Ranges across chunk boundaries, against the bytes (a property test over a live
    // cluster: starts at, just before and just after the chunk boundaries).
    let boundaries: Vec<usize> = chunks.iter().map(|(_, s, _)| *s).collect();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 40,
        ..Default::default()
    });
    let strategy = (0..boundaries.len(), -3000i64..3000, 1usize..3_000_000);
    let conn = std::cell::RefCell::new(conn);
    runner
        .run(&strategy, |(b, delta, len)| {
            let first = (boundaries[b] as i64 + delta).clamp(0, data.len() as i64 - 1) as usize;
            let last = (first + len - 1).min(data.len() - 1);
            let r = conn
                .borrow_mut()
                .request(
                    "GET",
                    &format!("/v1/objects/{id}"),
                    &[("Range", &format!("bytes={first}-{last}"))],
                    &[],
                )
                .expect("range GET");
            proptest::prop_assert_eq!(r.status, 206);
            let want = format!("bytes {first}-{last}/{}", data.len());
            proptest::prop_assert_eq!(r.header("content-range"), Some(want.as_str()));
            proptest::prop_assert!(
                r.body == data[first..=last],
                "range {}-{} differs",
                first,
                last
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("range property: {e}"));
    let mut conn = conn.into_inner();
    let r = conn
        .request(
            "GET",
            &format!("/v1/objects/{id}"),
            &[("Range", &format!("bytes={}-", data.len()))],
            &[],
        )
        .expect("range GET past the end");
    assert_eq!(r.status, 416);

    // The same bytes again under another ref: nothing new is stored.
    let again = put_object(&c, 1, &data, "big-again");
    assert_eq!(again["id"].as_str(), Some(&*id));
    assert_eq!(again["new_chunks"].as_u64(), Some(0), "{again}");
    assert_eq!(again["new_bytes"].as_u64(), Some(0), "{again}");
    // A chunk missing from the batch query is one the cluster lacks.
    let asked = serde_json::json!({ "hashes": [chunks[0].0, blake2sum(b"nowhere").to_hex()] });
    let missing = c.request(
        0,
        "POST",
        "/v1/blocks/missing",
        Some(asked.to_string().as_bytes()),
    );
    assert_eq!(missing.status, 200);
    assert_eq!(
        missing.json()["missing"],
        serde_json::json!([blake2sum(b"nowhere").to_hex()])
    );
}

#[test]
fn a_chunk_lost_after_the_headers_went_out_cuts_the_body_short_and_is_logged() {
    let c = Cluster::start(3, 3, "10m", fast);
    let data = pseudo_random(12 << 20, 6);
    let chunks = chunks_of(&data, true);
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let id = put_object(&c, 0, &data, "o")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A chunk well after the first is gone from every holder.
    let (lost, lost_at, _) = chunks[chunks.len() / 2].clone();
    for i in 0..3 {
        wait_for("the chunk on every holder", Duration::from_secs(10), || {
            c.has_block(i, &lost).then_some(())
        });
        for f in c.block_files(i, &lost) {
            std::fs::remove_file(f).expect("removing a chunk file");
        }
    }
    let host = c.nodes[1].api.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    std::io::Write::write_all(
        &mut s,
        format!(
            "GET /v1/objects/{id} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n",
            c.nodes[1].token
        )
        .as_bytes(),
    )
    .expect("sending the GET");
    let mut raw = Vec::new();
    // The node closes the connection when the body cannot go on (or reset it).
    let _ = std::io::Read::read_to_end(&mut s, &mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
    let body = &raw[end + 4..];
    assert!(
        body.len() <= lost_at,
        "{} bytes sent, the lost chunk starts at {lost_at}",
        body.len()
    );
    assert!(
        body == &data[..body.len()],
        "the bytes sent are the object's"
    );
    wait_for(
        "the lost chunk named in the log",
        Duration::from_secs(10),
        || c.log(1).contains(&lost[..8]).then_some(()),
    );
}

#[test]
fn dedup_on_client_gets_the_same_id_and_sends_only_what_changed() {
    let c = Cluster::start(3, 3, "10m", fast);
    let v1 = pseudo_random(16 << 20, 7);
    let mut v2 = v1.clone();
    v2.splice(8 << 20..8 << 20, pseudo_random(100, 8));
    let (f1, f2) = (c.dir.path().join("v1.bin"), c.dir.path().join("v2.bin"));
    std::fs::write(&f1, &v1).expect("writing v1");
    std::fs::write(&f2, &v2).expect("writing v2");
    let put = |f: &std::path::Path, r: &str, dedup: bool| {
        let mut args = vec!["object", "put", f.to_str().expect("utf-8"), "--ref", r];
        if dedup {
            args.push("--dedup-on-client");
        }
        let (ok, out, err) = c.cli(0, &args);
        assert!(ok, "object put {r}: {err}");
        (out.trim().to_string(), err)
    };
    let sent = |err: &str| -> u64 {
        err.split("sent ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no sent figure in {err:?}"))
    };
    let (plain, _) = put(&f1, "plain", false);
    // From stdin, and back to stdout: the same id and bytes.
    let mut child = Command::new(bin())
        .args(["--api", &c.nodes[2].api, "--token", &c.nodes[2].token])
        .args(["object", "put", "-", "--ref", "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the CLI");
    let mut stdin = child.stdin.take().expect("the CLI's stdin");
    let feeder = {
        let v1 = v1.clone();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &v1))
    };
    let out = child.wait_with_output().expect("the CLI's output");
    feeder
        .join()
        .expect("feeding stdin")
        .expect("writing stdin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), plain);
    let out = Command::new(bin())
        .args(["--api", &c.nodes[1].api, "--token", &c.nodes[1].token])
        .args(["object", "get", &plain, "-o", "-"])
        .output()
        .expect("running the CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == v1,
        "object get -o - writes the bytes to stdout"
    );
    let (id1, err1) = put(&f1, "d1", true);
    assert_eq!(id1, plain, "the CLI and the node cut and name alike");
    assert_eq!(sent(&err1), 0, "nothing to send again: {err1}");
    let (id2, err2) = put(&f2, "d2", true);
    let chunks2 = chunks_of(&v2, true);
    let (_, _, biggest) = chunks2.iter().max_by_key(|c| c.2).cloned().expect("chunks");
    assert!(
        sent(&err2) <= 2 * biggest as u64,
        "an insert of 100 bytes sent {} bytes: {err2}",
        sent(&err2)
    );
    let got = c.request(1, "GET", &format!("/v1/objects/{id2}"), None);
    assert_eq!(got.status, 200);
    assert!(got.body == v2, "v2 reads back whole");
    // No upload ref is left on any of v2's blocks.
    for (h, _, _) in &chunks2 {
        let refs = live_refs(&c, 0, h);
        assert!(
            !refs.iter().any(|r| r.starts_with("@upload:")),
            "{h}: {refs:?}"
        );
        assert!(refs.contains(&format!("@obj:{id2}:d2")), "{h}: {refs:?}");
    }
}
