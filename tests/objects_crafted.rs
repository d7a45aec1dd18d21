//! A crafted manifest stored as plain blocks: a tree whose every level lists one child
//! 16,384 times (a DAG claiming 4 TiB over three small nodes). Every object route
//! answers it in bounded time: the walks read each node once. Block ref routes refuse
//! object ref names.

mod common;

use std::time::{Duration, Instant};

use blocknode::objects::manifest::{ChunkerParams, Entry, Node, FANOUT};
use blocknode_actors::hash::blake2sum;
use common::objects::fast;
use common::Cluster;

/// Store `node` as a plain block with the ref `dag`; its hash.
fn put_node(c: &Cluster, node: &Node) -> blocknode_actors::Hash {
    let bytes = node.encode();
    let hash = c.put(0, &bytes, Some("dag"));
    assert_eq!(hash, blake2sum(&bytes).to_hex());
    blake2sum(&bytes)
}

#[test]
fn a_manifest_listing_one_child_again_and_again_is_answered_quickly() {
    let c = Cluster::start(1, 1, "10m", fast);
    let params = ChunkerParams::DEFAULT;
    let chunk = blake2sum(b"x");
    assert_eq!(c.put(0, b"x", Some("dag")), chunk.to_hex());
    let mut hash = chunk;
    let mut len = 1u64;
    for depth in 0..3u8 {
        let node = Node {
            chunker: params,
            size: len * FANOUT as u64,
            depth,
            entries: vec![Entry { hash, len }; FANOUT],
        };
        hash = put_node(&c, &node);
        len = node.size;
    }
    let id = hash.to_hex();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let auth = format!("Bearer {}", c.nodes[0].token);
    let url = |path: &str| format!("{}{path}", c.nodes[0].api);
    let timed = |what: &str, started: Instant| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    };

    let started = Instant::now();
    let mut r = agent
        .get(url(&format!("/v1/objects/{id}/info")))
        .header("Authorization", &auth)
        .call()
        .expect("GET info answers");
    timed("GET info", started);
    let info: serde_json::Value =
        serde_json::from_slice(&r.body_mut().read_to_vec().expect("info body")).expect("JSON");
    assert_eq!(r.status().as_u16(), 200, "{info}");
    assert_eq!(info["blocks"], 3, "{info}");
    assert_eq!(info["size"], (FANOUT as u64).pow(3), "{info}");

    let started = Instant::now();
    let mut r = agent
        .get(url(&format!("/v1/objects/{id}")))
        .header("Authorization", &auth)
        .header("Range", "bytes=0-99")
        .call()
        .expect("ranged GET answers");
    let body = r.body_mut().read_to_vec().expect("range body");
    timed("ranged GET", started);
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(body, vec![b'x'; 100]);

    let started = Instant::now();
    let r = agent
        .get(url(&format!("/v1/objects/{id}")))
        .header("Authorization", &auth)
        .call()
        .expect("GET answers");
    timed("GET (headers)", started);
    assert_eq!(r.status().as_u16(), 200);
    drop(r);

    let started = Instant::now();
    let r = agent
        .put(url(&format!("/v1/objects/{id}/refs/again")))
        .header("Authorization", &auth)
        .send_empty()
        .expect("PUT ref answers");
    timed("PUT object ref", started);
    assert!(r.status().is_success(), "{}", r.status());

    // A block route cannot touch an object's ref on one of its blocks; an upload ref
    // (the CLI's client-side dedup uses one) it can.
    let chunk = chunk.to_hex();
    for method in ["PUT", "DELETE"] {
        let r = c.request(
            0,
            method,
            &format!("/v1/blocks/{chunk}/refs/@obj:{id}:again"),
            None,
        );
        assert_eq!(r.status, 400, "{method} @obj: ref through a block route");
        assert!(String::from_utf8_lossy(&r.body).contains("belong to objects"));
    }
    let r = c.request(
        0,
        "PUT",
        &format!("/v1/blocks/{chunk}/refs/@upload:x"),
        None,
    );
    assert_eq!(r.status, 204);
}
