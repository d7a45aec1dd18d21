//! Connections that fit HTTP clients (issue #18 item 5) on a real node: pooled clients
//! keep connections idle for tens of seconds, and a body that stalls is cut off and
//! gives its RAM budget back.

mod common;

use std::time::{Duration, Instant};

use common::raw_http::RawConn;
use common::{random_bytes, set_keys, Cluster};

fn put_on(conn: &mut RawConn, data: &[u8], what: &str) {
    let len = data.len().to_string();
    let r = conn
        .request(
            "PUT",
            "/v1/blocks?unreferenced=true",
            &[("Content-Length", &len)],
            data,
        )
        .unwrap_or_else(|e| panic!("{what}: the PUT failed on the wire: {e}"));
    assert_eq!(
        r.status,
        201,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn a_connection_left_idle_for_30_s_still_takes_a_put() {
    // Default timeouts: what a user gets.
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let (api, token) = (&c.nodes[0].api, &c.nodes[0].token);
    // One connection that never sent a request (actix's 5 s first-request timeout
    // answered 408), one that was used and then left idle (its 5 s keep-alive closed it).
    let mut fresh = RawConn::connect(api, token);
    let mut used = RawConn::connect(api, token);
    put_on(&mut used, &random_bytes(1000), "first PUT");
    std::thread::sleep(Duration::from_secs(31));
    put_on(
        &mut fresh,
        &random_bytes(64 << 10),
        "PUT on a connection opened 31 s ago",
    );
    put_on(
        &mut used,
        &random_bytes(64 << 10),
        "PUT after 31 s of keep-alive idle",
    );
}

#[test]
fn a_stalled_body_is_cut_off_and_frees_its_budget() {
    // The RAM budget holds exactly one PUT of the largest block (2 × max_block_size).
    let c = Cluster::start(1, 1, "10m", |s| {
        set_keys(
            s,
            &[
                ("http_body_read_timeout", "\"2s\""),
                ("max_block_size", "\"1MiB\""),
                ("block_ram_buffer_max", "\"2MiB\""),
            ],
        )
    });
    let (api, token) = (&c.nodes[0].api, &c.nodes[0].token);
    let mut stalled = RawConn::connect(api, token);
    let full = (1u64 << 20).to_string();
    stalled
        .send(
            "PUT",
            "/v1/blocks?unreferenced=true",
            &[("Content-Length", &full)],
            &random_bytes(300 << 10),
        )
        .expect("sending the first part of the body");
    let t0 = Instant::now();
    let r = stalled
        .read_reply(false)
        .expect("the node should answer the stalled PUT, not hang");
    let waited = t0.elapsed();
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    let j: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error body");
    assert_eq!(j["code"], "body_timeout", "{j}");
    assert!(
        waited < Duration::from_secs(20),
        "cut off after {waited:?}; http_body_read_timeout is 2 s"
    );
    assert!(
        stalled.closed_within(Duration::from_secs(10)),
        "the node should close the stalled connection"
    );
    // The whole budget is free again: a largest-size PUT is admitted at once.
    let mut next = RawConn::connect(api, token);
    let t1 = Instant::now();
    put_on(
        &mut next,
        &random_bytes(1 << 20),
        "PUT after the stalled one",
    );
    assert!(
        t1.elapsed() < Duration::from_secs(20),
        "the PUT after the cut-off waited {:?} for the budget",
        t1.elapsed()
    );
}
