//! HTTP semantics of immutable blocks on a real node: ETag and
//! immutable caching, `If-None-Match` → 304, single byte ranges → 206 / 416 (also on a
//! compressed block), and `HEAD` answered without reading the block.

mod common;

use std::time::Duration;

use common::raw_http::{RawConn, RawReply};
use common::{random_bytes, Cluster};

/// CPU time (user + system) the process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // Fields after the parenthesised command name: utime is the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn get(c: &mut RawConn, hash: &str, headers: &[(&str, &str)]) -> RawReply {
    c.request("GET", &format!("/v1/blocks/{hash}"), headers, b"")
        .expect("GET over the raw connection")
}

fn assert_immutable_headers(r: &RawReply, hash: &str, what: &str) {
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{hash}\"").as_str()),
        "{what}: ETag"
    );
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable"),
        "{what}: Cache-Control"
    );
}

/// Text-like bytes that zstd compresses well (so the node stores a `.zst` file).
fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(format!("line {i} of a compressible block\n").as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

#[test]
fn block_gets_carry_an_etag_and_answer_if_none_match_with_304() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let data = random_bytes(10_000);
    let hash = c.put(0, &data, Some("r"));
    let mut conn = RawConn::connect(&c.nodes[0].api, &c.nodes[0].token);
    let r = get(&mut conn, &hash, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data, "the whole block");
    assert_immutable_headers(&r, &hash, "GET");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let tag = format!("\"{hash}\"");
    for inm in [
        tag.clone(),
        "*".to_string(),
        format!("\"{}\", {tag}", "0".repeat(64)),
    ] {
        let r = get(&mut conn, &hash, &[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty(), "a 304 has no body");
        assert_immutable_headers(&r, &hash, "304");
    }
    let r = get(
        &mut conn,
        &hash,
        &[("If-None-Match", &format!("\"{}\"", "0".repeat(64)))],
    );
    assert_eq!(r.status, 200, "another tag gets the block");
    assert_eq!(r.body, data);

    // A block that does not exist is not "not modified".
    let absent = "ab".repeat(32);
    let r = get(&mut conn, &absent, &[("If-None-Match", "*")]);
    assert_eq!(r.status, 404, "If-None-Match on a missing block: {:?}", r);
}

#[test]
fn single_byte_ranges_get_206_with_content_range_and_outside_ranges_416() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let plain = random_bytes(100_000);
    let compressible = text(300_000);
    let hp = c.put(0, &plain, Some("r"));
    let hc = c.put(0, &compressible, Some("r"));
    assert!(
        c.block_files(0, &hc)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".zst")),
        "the text block should be stored compressed: {:?}",
        c.block_files(0, &hc)
    );
    let mut conn = RawConn::connect(&c.nodes[0].api, &c.nodes[0].token);
    for (hash, data, kind) in [(&hp, &plain, "plain"), (&hc, &compressible, "compressed")] {
        let len = data.len();
        for (range, first, last, what) in [
            ("bytes=0-0".to_string(), 0, 0, "first byte"),
            (
                format!("bytes={}-{}", len - 1, len - 1),
                len - 1,
                len - 1,
                "last byte",
            ),
            ("bytes=1000-49999".to_string(), 1000, 49_999, "middle"),
            ("bytes=-500".to_string(), len - 500, len - 1, "suffix"),
            ("bytes=99000-".to_string(), 99_000, len - 1, "open end"),
        ] {
            let r = get(&mut conn, hash, &[("Range", &range)]);
            let what = format!("{kind} block, {what} ({range})");
            assert_eq!(r.status, 206, "{what}: {:?}", r.header("content-range"));
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {first}-{last}/{len}").as_str()),
                "{what}"
            );
            assert_eq!(
                r.header("content-length"),
                Some((last - first + 1).to_string().as_str()),
                "{what}: Content-Length"
            );
            assert!(r.body == data[first..=last], "{what}: wrong bytes served");
            assert_immutable_headers(&r, hash, &what);
        }
        let r = get(&mut conn, hash, &[("Range", &format!("bytes={len}-"))]);
        assert_eq!(r.status, 416, "{kind} block: range past the end");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str()),
            "{kind}: 416 names the length"
        );
        // An If-Range with another tag asks for the whole block.
        let r = get(
            &mut conn,
            hash,
            &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
        );
        assert_eq!(r.status, 200, "{kind}: If-Range with another tag");
        assert_eq!(r.body.len(), len);
    }
}

#[test]
fn head_of_a_16_mib_block_answers_without_reading_it() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let mut data = random_bytes(8 << 20);
    data.extend_from_slice(&text(8 << 20));
    let hash = c.put(0, &data, Some("r"));
    let read_before = c.get_json(0, "/v1/status")["storage"]["bytes_read"].as_u64();
    let mut conn = RawConn::connect(&c.nodes[0].api, &c.nodes[0].token);
    // Warm the connection, then measure the node's CPU over many HEADs: one read and
    // hash of 16 MiB costs ~25 ms of CPU here, so 20 of them would be ~500 ms.
    conn.request("HEAD", &format!("/v1/blocks/{hash}"), &[], b"")
        .expect("HEAD");
    let pid = c.pid(0);
    let cpu0 = cpu_time(pid);
    const N: u32 = 20;
    for _ in 0..N {
        let r = conn
            .request("HEAD", &format!("/v1/blocks/{hash}"), &[], b"")
            .expect("HEAD");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-length"),
            Some((16u64 << 20).to_string().as_str()),
            "HEAD gives the plain length"
        );
        assert_immutable_headers(&r, &hash, "HEAD");
    }
    let per_head = (cpu_time(pid) - cpu0) / N;
    eprintln!("server CPU per HEAD of a 16 MiB block: {per_head:?} (mean of {N})");
    let read_after = c.get_json(0, "/v1/status")["storage"]["bytes_read"].as_u64();
    assert_eq!(read_before, read_after, "HEAD read block bytes from disk");
    assert!(
        per_head < Duration::from_millis(5),
        "HEAD took {per_head:?} of server CPU on average (a read and hash would be ~25 ms)"
    );
    let r = conn
        .request("HEAD", &format!("/v1/blocks/{}", "cd".repeat(32)), &[], b"")
        .expect("HEAD of a missing block");
    assert_eq!(r.status, 404);
}

#[test]
fn the_openapi_document_is_served_without_a_token() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let mut conn = RawConn::connect(&c.nodes[0].api, "not-the-token");
    let r = conn
        .request("GET", "/v1/openapi.json", &[], b"")
        .expect("GET /v1/openapi.json");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/v1/blocks/{hash}", "get"),
        ("/v1/blocks", "put"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // The other routes still refuse a wrong token.
    let r = conn
        .request("GET", "/v1/status", &[], b"")
        .expect("GET /v1/status");
    assert_eq!(r.status, 401);
}
