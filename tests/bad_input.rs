//! Bad input over HTTP (issue #8): each request gets a clear JSON error with the right
//! status, nothing is lost, and the node keeps serving afterwards.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{random_bytes, Cluster};

fn code(r: &common::Reply) -> String {
    r.json()["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn malformed_requests_get_clear_errors_and_the_node_keeps_serving() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let good = c.put(0, b"still here", Some("keep"));
    let h = &good;
    for (path, why) in [
        ("/v1/blocks/abc".to_string(), "hash too short"),
        (format!("/v1/blocks/{}0", h), "hash too long"),
        (format!("/v1/blocks/{}", h.to_uppercase()), "uppercase hex"),
        (format!("/v1/blocks/{}zz", &h[..62]), "non-hex"),
    ] {
        let r = c.request(0, "GET", &path, None);
        assert_eq!(r.status, 400, "{why}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(code(&r), "bad_request", "{why}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("hash"),
            "{why}: the error names the hash"
        );
    }
    // Ref names with path tricks.
    let r = c.request(0, "PUT", &format!("/v1/blocks/{h}/refs/.."), None);
    assert_eq!(
        (r.status, code(&r)),
        (400, "bad_request".into()),
        "`..` as a ref name"
    );
    let r = c.request(0, "PUT", &format!("/v1/blocks/{h}/refs/a%2Fb"), None);
    assert!(
        r.status == 400 || r.status == 404,
        "`/` in a ref name: {}",
        r.status
    );
    let r = c.request(0, "PUT", &format!("/v1/blocks/{h}/refs/a/b"), None);
    assert_eq!(
        (r.status, code(&r)),
        (404, "no_route".into()),
        "`/` in a ref path"
    );
    let r = c.request(0, "PUT", "/v1/blocks?ref=a%20b", Some(b"x"));
    assert_eq!(r.status, 400, "a space in ?ref=");
    // Unknown routes and methods.
    let r = c.request(0, "GET", "/v2/nothing", None);
    assert_eq!((r.status, code(&r)), (404, "no_route".into()));
    let r = c.request(0, "POST", &format!("/v1/blocks/{h}"), None);
    assert_eq!(
        (r.status, code(&r)),
        (404, "no_route".into()),
        "wrong method"
    );
    let r = c.request(0, "POST", "/v1/resync/retry", Some(b"{\"hash\": \"nope\"}"));
    assert_eq!(r.status, 400, "retry with a bad hash");
    let r = c.request(0, "PUT", "/v1/workers", Some(b"{\"resync_workers\": 99}"));
    assert_eq!(r.status, 400, "workers out of range");
    // The node still serves, and the block is intact.
    let r = c.get(0, &good);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"still here"[..]));
}

#[test]
fn the_empty_block_round_trips() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let h = c.put(0, b"", None);
    assert_eq!(h, blocknode_actors::blake2sum(b"").to_hex());
    let r = c.get(0, &h);
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn missing_or_wrong_tokens_get_the_same_401() {
    let c = Cluster::start(1, 1, "10m", |s| s.to_string());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/v1/status", c.nodes[0].api);
    let mut none = agent.get(&url).call().unwrap();
    let mut wrong = agent
        .get(&url)
        .header("Authorization", "Bearer nope")
        .call()
        .unwrap();
    let mut almost = agent
        .get(&url)
        .header("Authorization", format!("Bearer {}x", c.nodes[0].token))
        .call()
        .unwrap();
    let bodies: Vec<String> = [&mut none, &mut wrong, &mut almost]
        .iter_mut()
        .map(|r| {
            assert_eq!(r.status().as_u16(), 401);
            r.body_mut().read_to_string().unwrap()
        })
        .collect();
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "401 bodies must not differ: {bodies:?}"
    );
    assert!(
        !bodies[0].contains(&c.nodes[0].token[..8]),
        "no detail leaked"
    );
    assert_eq!(
        agent
            .get(&format!("{}/health", c.nodes[0].api))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn an_oversized_body_is_refused_before_it_is_read() {
    let c = Cluster::start(1, 1, "10m", |s| {
        s.replace(
            "replication_factor = 1",
            "replication_factor = 1\nmax_block_size = \"1MiB\"",
        )
    });
    let addr = c.nodes[0].api.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Announce 4 GiB and send none of it: the answer must come anyway.
    write!(
        s,
        "PUT /v1/blocks?unreferenced=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 4294967296\r\n\r\n",
        c.nodes[0].token
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(
        head.starts_with("HTTP/1.1 413"),
        "expected 413 before the body was sent, got {head}"
    );
    assert!(head.contains("too_large"), "JSON error code: {head}");
    // A body over the limit without a declared length is cut off too.
    let r = c.request(
        0,
        "PUT",
        "/v1/blocks?unreferenced=true",
        Some(&random_bytes((1 << 20) + 1)),
    );
    assert_eq!(r.status, 413);
    // Exactly the limit is fine.
    c.put(0, &random_bytes(1 << 20), None);
}
