//! Scoped API tokens (issue #18 item 3) on a real 3-node cluster: every scope allowed and
//! refused on every route class, the identical 401, revocation seen by another node
//! within seconds, a node down during a revoke refusing the token once back, no secret
//! stored in clear in any metadata directory, and a node that joins through a layout
//! change knowing the tokens made (and revoked) before it joined.

mod common;

use std::time::Duration;

use common::raw_http::RawConn;
use common::{quic_addr, random_bytes, set_keys, wait_for, Cluster};

/// One request to node `i` of `c` with `token`: (status, body text).
fn call(
    c: &Cluster,
    i: usize,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let len = body.len().to_string();
    let headers: Vec<(&str, &str)> = if method == "PUT" || method == "POST" {
        vec![("Content-Length", len.as_str())]
    } else {
        vec![]
    };
    let r = RawConn::connect(&c.nodes[i].api, token)
        .request(method, path, &headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on node {i}: {e}"));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Create a token through the CLI on node `i`; returns its secret.
fn create(c: &Cluster, i: usize, scope: &str, name: &str) -> String {
    let (ok, out, err) = c.cli(i, &["token", "create", "--scope", scope, "--name", name]);
    assert!(
        ok,
        "token create --scope {scope} --name {name} failed: {err}"
    );
    let secret = out.trim().to_string();
    assert_eq!(secret.len(), 64, "token create printed {out:?}");
    secret
}

#[test]
fn every_scope_is_allowed_and_refused_on_every_route_class() {
    let c = Cluster::start(3, 3, "10m", |s| s.to_string());
    c.wait_peers_up(0);
    let read = create(&c, 0, "read", "backup");
    let write = create(&c, 0, "write", "ingest");
    let admin = create(&c, 0, "admin", "ops");
    let hash = c.put(0, &random_bytes(1000), Some("seed"));
    // Routes by class, each with the scope it needs; asked on node 1, which learnt the
    // tokens from node 0's push.
    // Each token adds and drops its own ref (a dropped ref id cannot be re-added).
    let routes = |scope: &str| -> Vec<(&str, String, Vec<u8>, &str)> {
        vec![
            ("GET", format!("/v1/blocks/{hash}"), vec![], "read"),
            ("HEAD", format!("/v1/blocks/{hash}"), vec![], "read"),
            ("GET", format!("/v1/blocks/{hash}/info"), vec![], "read"),
            (
                "PUT",
                "/v1/blocks?unreferenced=true".to_string(),
                b"scoped".to_vec(),
                "write",
            ),
            (
                "PUT",
                format!("/v1/blocks/{hash}/refs/r-{scope}"),
                vec![],
                "write",
            ),
            (
                "DELETE",
                format!("/v1/blocks/{hash}/refs/r-{scope}"),
                vec![],
                "write",
            ),
            ("GET", "/v1/status".to_string(), vec![], "admin"),
            ("GET", "/metrics".to_string(), vec![], "admin"),
            ("GET", "/v1/workers".to_string(), vec![], "admin"),
            ("GET", "/v1/tokens".to_string(), vec![], "admin"),
        ]
    };
    let rank = |s: &str| ["read", "write", "admin"].iter().position(|x| *x == s);
    for (scope, secret) in [("read", &read), ("write", &write), ("admin", &admin)] {
        for (method, path, body, needs) in &routes(scope) {
            let (status, text) = call(&c, 1, secret, method, path, body);
            if rank(scope) >= rank(needs) {
                assert!(
                    (200..300).contains(&status),
                    "{scope} token on {method} {path} (needs {needs}): {status} {text}"
                );
            } else {
                assert_eq!(status, 403, "{scope} token on {method} {path}: {text}");
                assert!(
                    text.contains("\"code\":\"forbidden\""),
                    "403 body is not the JSON error: {text}"
                );
            }
        }
    }
    let (s1, missing) = call(&c, 1, "", "GET", &format!("/v1/blocks/{hash}"), b"");
    let (s2, wrong) = call(
        &c,
        1,
        &"0".repeat(64),
        "GET",
        &format!("/v1/blocks/{hash}"),
        b"",
    );
    assert_eq!((s1, s2), (401, 401), "missing / wrong token");
    assert_eq!(
        missing, wrong,
        "the 401 bodies of a missing and a wrong token differ"
    );

    let (ok, out, err) = c.cli(2, &["token", "list"]);
    assert!(ok, "token list failed: {err}");
    for (name, scope) in [("backup", "read"), ("ingest", "write"), ("ops", "admin")] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains(scope)),
            "token list on node 2 lacks {name} {scope}: {out}"
        );
    }
    // Only hashes are stored: no secret appears in any node's metadata directory.
    for n in 0..3 {
        let meta = c.nodes[n]
            .data_dir
            .parent()
            .expect("a node dir holds data/")
            .join("meta");
        assert!(meta.is_dir(), "no metadata dir at {}", meta.display());
        for f in common::files_with_suffix(&meta, "") {
            let bytes = std::fs::read(&f).unwrap_or_default();
            for s in [&read, &write, &admin] {
                assert!(
                    !bytes.windows(64).any(|w| w == s.as_bytes()),
                    "{} holds a token secret in clear",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn a_revoke_is_seen_by_every_node_and_by_one_that_was_down() {
    let mut c = Cluster::start(3, 3, "10m", |s| s.to_string());
    c.wait_peers_up(0);
    let secret = create(&c, 0, "read", "backup");
    let hash = c.put(0, &random_bytes(100), Some("seed"));
    let path = format!("/v1/blocks/{hash}/info");
    wait_for(
        "node 2 to accept the new token",
        Duration::from_secs(10),
        || (call(&c, 2, &secret, "GET", &path, b"").0 == 200).then_some(()),
    );
    c.kill(2);
    let (ok, _, err) = c.cli(0, &["token", "revoke", "backup"]);
    assert!(ok, "token revoke failed: {err}");
    let start = std::time::Instant::now();
    wait_for(
        "node 1 to refuse the revoked token",
        Duration::from_secs(3),
        || (call(&c, 1, &secret, "GET", &path, b"").0 == 401).then_some(()),
    );
    eprintln!(
        "node 1 refused the revoked token {:?} after the revoke",
        start.elapsed()
    );
    c.start_node(2);
    c.wait_ready(2);
    wait_for(
        "node 2, down during the revoke, to refuse the token",
        Duration::from_secs(15),
        || (call(&c, 2, &secret, "GET", &path, b"").0 == 401).then_some(()),
    );
}

#[test]
fn a_node_that_joins_later_accepts_older_tokens_and_refuses_older_revokes() {
    let mut c = Cluster::init(4, 3, "10m", |s| s.to_string());
    // Nodes 0-2 are layout version 1; node 3 joins through node 0 with no layout.
    for i in 0..3 {
        c.set_members(i, &[0, 1, 2]);
    }
    c.set_members(3, &[]);
    let text = std::fs::read_to_string(&c.nodes[3].config).expect("reading node 3's config");
    let seed = format!("[\"{}\"]", quic_addr(&c, 0));
    std::fs::write(
        &c.nodes[3].config,
        set_keys(&text, &[("bootstrap_peers", &seed)]),
    )
    .expect("writing node 3's config");
    for i in 0..4 {
        c.start_node(i);
    }
    for i in 0..4 {
        c.wait_ready(i);
    }
    c.wait_n_peers_up(0, 2);
    let live = create(&c, 0, "read", "backup");
    let gone = create(&c, 0, "read", "old");
    let (ok, _, err) = c.cli(0, &["token", "revoke", "old"]);
    assert!(ok, "token revoke failed: {err}");
    let (status, _) = call(&c, 3, &live, "GET", "/v1/tokens", b"");
    assert_eq!(
        status, 401,
        "node 3 knows the token before any layout names it (the test would prove nothing)"
    );
    let (ok, _, err) = c.cli(
        0,
        &[
            "layout",
            "assign",
            &c.nodes[3].id,
            "--zone",
            "z4",
            "--capacity",
            "1",
            "--addr",
            &quic_addr(&c, 3),
        ],
    );
    assert!(ok, "layout assign failed: {err}");
    let (ok, _, err) = c.cli(0, &["layout", "apply", "--version", "2"]);
    assert!(ok, "layout apply failed: {err}");
    // A read-scope token on an admin route: 403 once node 3 knows it, 401 before.
    let start = std::time::Instant::now();
    wait_for(
        "node 3, named by layout 2, to know the token created before it joined",
        Duration::from_secs(30),
        || (call(&c, 3, &live, "GET", "/v1/tokens", b"").0 == 403).then_some(()),
    );
    eprintln!(
        "node 3 knew the older token {:?} after the layout apply",
        start.elapsed()
    );
    let (status, text) = call(&c, 3, &gone, "GET", "/v1/tokens", b"");
    assert_eq!(
        status, 401,
        "node 3 accepts a token revoked before it joined: {text}"
    );
    // Later revokes reach node 3 too (pushed at once, or by its next pull).
    let (ok, _, err) = c.cli(0, &["token", "revoke", "backup"]);
    assert!(ok, "token revoke failed: {err}");
    wait_for(
        "node 3 to refuse a token revoked after it joined",
        Duration::from_secs(10),
        || (call(&c, 3, &live, "GET", "/v1/tokens", b"").0 == 401).then_some(()),
    );
}
