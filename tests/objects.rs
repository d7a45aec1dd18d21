//! Objects of any size on a 3-node cluster with replication factor 3, through the CLI and
//! the HTTP API as a user would: a large object streamed in and out with the CLI's
//! memory bounded, byte ranges across chunk boundaries, deduplication, objects sharing
//! chunks under GC, and an upload cut off mid-body.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blocknode::objects::chunker::Chunker;
use blocknode::objects::manifest::ChunkerParams;
use blocknode_actors::hash::blake2sum;
use common::load::peak_rss;
use common::raw_http::RawConn;
use common::{bin, set_keys, wait_for, Cluster};

/// Short timeouts so failure paths finish well inside the test bounds; random data is
/// stored plain.
fn fast(config: &str) -> String {
    set_keys(
        config,
        &[
            ("block_rw_timeout", "\"10s\""),
            ("need_block_timeout", "\"2s\""),
            ("resync_backoff_base", "\"1s\""),
            ("compression_level", "\"none\""),
        ],
    )
}

/// Incompressible bytes, fast even in a debug build (xorshift, 8 bytes a step).
fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The chunks the cluster cuts `data` into (the same chunker, default parameters):
/// `(hash hex, start, len)`. With `eof` false, only those cut before the stream's end.
fn chunks_of(data: &[u8], eof: bool) -> Vec<(String, usize, usize)> {
    let mut c = Chunker::new(ChunkerParams::DEFAULT);
    let mut out = Vec::new();
    let mut at = 0;
    for piece in data.chunks(64 << 10) {
        c.push(piece);
        while let Some(ch) = c.next_chunk(false) {
            out.push((blake2sum(&ch).to_hex(), at, ch.len()));
            at += ch.len();
        }
    }
    while let Some(ch) = c.next_chunk(eof) {
        out.push((blake2sum(&ch).to_hex(), at, ch.len()));
        at += ch.len();
    }
    out
}

/// PUT an object through node `i` from memory; returns the JSON answer.
fn put_object(c: &Cluster, i: usize, data: &[u8], r: &str) -> serde_json::Value {
    let reply = c.request(i, "PUT", &format!("/v1/objects?ref={r}"), Some(data));
    assert_eq!(
        reply.status,
        201,
        "PUT object through node {i}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// Node `i`'s live refs of `hash`.
fn live_refs(c: &Cluster, i: usize, hash: &str) -> Vec<String> {
    let v = c.get_json(i, &format!("/v1/blocks/{hash}/info"));
    v["local"]["refs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "live")
        .filter_map(|r| r["ref"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_large_object_streams_through_the_cli_with_bounded_memory_and_reads_back_whole() {
    let c = Cluster::start(3, 3, "10m", fast);
    let data = pseudo_random((64 << 20) + 12_345, 1);
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
            started.elapsed() < Duration::from_secs(120),
            "object put still running after 120 s"
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
        "64 MiB put through the CLI in {:?}; CLI peak RSS {} MiB",
        started.elapsed(),
        peak >> 20
    );
    assert!(
        peak > 0 && peak < 40 << 20,
        "CLI peak RSS {} MiB for a 64 MiB file",
        peak >> 20
    );

    // The node that cut it stays inside its RAM budget (256 MiB by default) + 64 MiB.
    let node_peak = peak_rss(c.pid(0));
    eprintln!("coordinating node peak RSS {} MiB", node_peak >> 20);
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
fn dropping_one_of_two_objects_that_share_chunks_collects_only_its_own() {
    let c = Cluster::start(3, 3, "1s", fast);
    let shared = pseudo_random(6 << 20, 2);
    let a: Vec<u8> = [shared.clone(), pseudo_random(3 << 20, 3)].concat();
    let b: Vec<u8> = [shared, pseudo_random(3 << 20, 4)].concat();
    let ca: HashSet<String> = chunks_of(&a, true).into_iter().map(|c| c.0).collect();
    let cb: HashSet<String> = chunks_of(&b, true).into_iter().map(|c| c.0).collect();
    let own_a: Vec<&String> = ca.difference(&cb).collect();
    assert!(!own_a.is_empty() && ca.intersection(&cb).count() > 0);

    let ida = put_object(&c, 0, &a, "a")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let idb = put_object(&c, 1, &b, "b")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Every block carries its object's ref, and no upload ref is left live.
    for h in ca.iter().chain([&ida]) {
        let refs = live_refs(&c, 0, h);
        assert!(refs.contains(&format!("@obj:{ida}:a")), "{h}: {refs:?}");
        assert!(
            !refs.iter().any(|r| r.starts_with("@upload:")),
            "{h}: {refs:?}"
        );
    }
    let r = c.request(2, "DELETE", &format!("/v1/objects/{ida}/refs/a"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));

    // rc → 0 schedules the delete after gc_delay + 10 s.
    wait_for(
        "A's own chunks and manifest to be collected everywhere",
        Duration::from_secs(60),
        || {
            own_a
                .iter()
                .map(|h| h.as_str())
                .chain([ida.as_str()])
                .all(|h| (0..3).all(|i| !c.has_block(i, h)))
                .then_some(())
        },
    );
    for h in &cb {
        for i in 0..3 {
            assert!(c.has_block(i, h), "B's chunk {h} must stay on node {i}");
        }
    }
    let got = c.request(2, "GET", &format!("/v1/objects/{idb}"), None);
    assert_eq!(got.status, 200);
    assert!(got.body == b, "B reads back whole");
    assert_eq!(
        c.request(0, "GET", &format!("/v1/objects/{ida}"), None)
            .status,
        404
    );
}

#[test]
fn a_body_cut_off_mid_upload_leaves_no_ref_and_its_chunks_are_collected() {
    let c = Cluster::start(3, 3, "1s", fast);
    let data = pseudo_random(12 << 20, 5);
    // The chunks the node can cut from the first 12 MiB without the end of the body.
    let cut = chunks_of(&data, false);
    assert!(cut.len() >= 3, "{} chunks cut", cut.len());
    let mut conn = RawConn::connect(&c.nodes[0].api, &c.nodes[0].token);
    let declared = (32u64 << 20).to_string();
    conn.send(
        "PUT",
        "/v1/objects?ref=cut",
        &[("Content-Length", &declared)],
        &data,
    )
    .expect("sending the first part of the body");
    wait_for(
        "the first chunk to be stored before the cut",
        Duration::from_secs(20),
        || (0..3).any(|i| c.has_block(i, &cut[0].0)).then_some(()),
    );
    drop(conn);
    // No live ref on any chunk once the upload noticed the cut.
    wait_for(
        "the cut upload's refs to be dropped",
        Duration::from_secs(20),
        || {
            cut.iter()
                .all(|(h, _, _)| (0..3).all(|i| live_refs(&c, i, h).is_empty()))
                .then_some(())
        },
    );
    wait_for(
        "the cut upload's chunks to be collected everywhere",
        Duration::from_secs(60),
        || {
            cut.iter()
                .all(|(h, _, _)| (0..3).all(|i| !c.has_block(i, h)))
                .then_some(())
        },
    );
    assert!(
        c.log(0).contains("cut off") || c.log(0).contains("upload"),
        "the node logs nothing about the cut"
    );
}

/// The seam between an upload's "the holders have this chunk" and its bare ref: objects
/// A are dropped, then the same bytes are uploaded as B at random moments around the
/// time GC collects A's blocks (gc_delay + 10 s after the drop), many at once. A chunk
/// reported stored but unreferenced must go up with its bytes (whose write stops a
/// delete decided before it), never as a bare ref that GC's delete can overtake: every
/// B reads back whole, and its blocks stay.
#[test]
fn dropping_objects_while_the_same_chunks_are_uploaded_again_never_loses_the_new_ones() {
    const N: usize = 120;
    let c = Cluster::start(3, 3, "1s", fast);
    let objs: Vec<Vec<u8>> = (0..N)
        .map(|i| pseudo_random(64 << 10, 1000 + i as u64))
        .collect();
    let ids: Vec<String> = objs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            put_object(&c, i % 3, d, "a")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let r = c.request(i % 3, "DELETE", &format!("/v1/objects/{id}/refs/a"), None);
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    }
    let dropped = Instant::now();
    let apis: Vec<(String, String)> = c
        .nodes
        .iter()
        .map(|n| (n.api.clone(), n.token.clone()))
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (objs, ids, apis) = (&objs, &ids, &apis);
            s.spawn(move || {
                for i in (t..N).step_by(4) {
                    let at = Duration::from_millis(rand::random_range(9_000..14_000));
                    if let Some(wait) = at.checked_sub(dropped.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let (api, token) = &apis[i % 3];
                    let mut res = ureq::put(&format!("{api}/v1/objects?ref=b"))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send(&objs[i][..])
                        .unwrap_or_else(|e| panic!("object {i}: PUT failed: {e}"));
                    let v: serde_json::Value = serde_json::from_slice(
                        &res.body_mut().read_to_vec().expect("the PUT answer"),
                    )
                    .expect("JSON");
                    assert_eq!(v["id"].as_str(), Some(&*ids[i]), "object {i}");
                }
            });
        }
    });
    // Past every GC decision about A's blocks, and time for resync to settle.
    while dropped.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, id) in ids.iter().enumerate() {
        let got = c.request((i + 1) % 3, "GET", &format!("/v1/objects/{id}"), None);
        assert_eq!(
            got.status, 200,
            "object {i} ({id}) lost after the interleaving"
        );
        assert!(got.body == objs[i], "object {i} reads back different bytes");
    }
    let chunk = |i: usize| chunks_of(&objs[i], true)[0].0.clone();
    wait_for(
        "every B block on every holder",
        Duration::from_secs(30),
        || {
            (0..N)
                .all(|i| (0..3).all(|n| c.has_block(n, &ids[i]) && c.has_block(n, &chunk(i))))
                .then_some(())
        },
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
