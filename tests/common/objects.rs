//! Helpers of the object tests: data, the chunks a node cuts, puts and refs.

use blocknode::objects::chunker::Chunker;
use blocknode::objects::manifest::ChunkerParams;
use blocknode_actors::hash::blake2sum;

use super::{set_keys, Cluster};

/// Short timeouts so failure paths finish well inside the test bounds; random data is
/// stored plain.
pub fn fast(config: &str) -> String {
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
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
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
pub fn chunks_of(data: &[u8], eof: bool) -> Vec<(String, usize, usize)> {
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
pub fn put_object(c: &Cluster, i: usize, data: &[u8], r: &str) -> serde_json::Value {
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
pub fn live_refs(c: &Cluster, i: usize, hash: &str) -> Vec<String> {
    let v = c.get_json(i, &format!("/v1/blocks/{hash}/info"));
    v["local"]["refs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "live")
        .filter_map(|r| r["ref"].as_str().map(str::to_string))
        .collect()
}
