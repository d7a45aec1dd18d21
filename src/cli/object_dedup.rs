//! `blocknode object put --dedup-on-client`: the CLI cuts the file itself (the same
//! FastCDC parameters and manifest tree as a node, so the same bytes get the same id),
//! asks the cluster which chunks it lacks (`POST /v1/blocks/missing`, a few chunks at a
//! time), sends only those, stores the manifest nodes and gives the object its ref.
//!
//! Like a node's upload, every block first gets a ref private to this upload
//! (`@upload:<start>:<random>`, which every node drops once it is 24 hours old): a chunk the cluster already stores and references gets it as
//! a bare ref right after the question (so GC cannot take it in between), a missing one
//! with its bytes. The object's ref is then added (`PUT /v1/objects/{id}/refs/{ref}`)
//! and the upload ref dropped from every block; on failure it is dropped too.

use std::collections::HashSet;
use std::io::Read;

use anyhow::Context;
use serde_json::Value;

use blocknode_actors::hash::blake2sum;
use blocknode_actors::{Hash, RefId};

use super::args::query_escape;
use super::client::Client;
use crate::objects::manifest::{ChunkerParams, Entry, TreeBuilder};

/// Chunks asked about at once: at most 4 × 4 MiB held while the answer comes.
const BATCH: usize = 4;

/// What a deduplicated upload did.
pub struct DedupReport {
    pub id: Hash,
    pub size: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Chunk bytes sent (manifest nodes not counted).
    pub sent: u64,
}

/// One upload from the client side.
struct ClientUpload<'a> {
    c: &'a Client,
    upload_ref: RefId,
    touched: HashSet<Hash>,
}

impl ClientUpload<'_> {
    /// Store `bytes` (whose hash is `hash`) with the upload ref.
    fn put_with_bytes(&mut self, hash: Hash, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.touched.insert(hash);
        let path = format!("/v1/blocks?ref={}", query_escape(self.upload_ref.as_str()));
        let answer = self.c.call("PUT", &path, Some(bytes), false)?;
        let v: Value = serde_json::from_slice(&answer).context("the block put's answer")?;
        if v["hash"].as_str() != Some(&*hash.to_hex()) {
            anyhow::bail!("the node stored block {hash} under another name: {v}");
        }
        Ok(())
    }

    /// A bare upload ref on a block the cluster has; `false` when it was refused.
    fn bare_ref(&mut self, hash: Hash) -> bool {
        self.touched.insert(hash);
        let path = format!("/v1/blocks/{hash}/refs/{}", self.upload_ref);
        self.c.call("PUT", &path, None, false).is_ok()
    }

    /// One batch: ask which chunks are missing, then ref or send each.
    fn send_batch(&mut self, batch: Vec<(Hash, Vec<u8>)>) -> anyhow::Result<(u64, u64)> {
        let hashes: Vec<String> = batch.iter().map(|(h, _)| h.to_hex()).collect();
        let v = self.c.json(
            "POST",
            "/v1/blocks/missing",
            Some(serde_json::json!({ "hashes": hashes })),
        )?;
        let missing: HashSet<&str> = v["missing"]
            .as_array()
            .context("the missing-blocks answer has no list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let (mut new, mut sent) = (0, 0);
        let mut done = HashSet::new();
        for (hash, bytes) in batch {
            if !done.insert(hash) {
                continue;
            }
            if !missing.contains(&*hash.to_hex()) && self.bare_ref(hash) {
                continue;
            }
            new += 1;
            sent += bytes.len() as u64;
            self.put_with_bytes(hash, bytes)?;
        }
        Ok((new, sent))
    }

    /// Drop the upload ref from every block it may be on (best effort).
    fn release(&mut self) {
        for h in self.touched.drain() {
            let path = format!("/v1/blocks/{h}/refs/{}", self.upload_ref);
            if let Err(e) = self.c.call("DELETE", &path, None, false) {
                eprintln!(
                    "warning: dropping upload ref {} of block {h}: {e:#}",
                    self.upload_ref
                );
            }
        }
    }
}

/// Cut `reader`, send what the cluster lacks, commit the object with ref `r`.
pub fn put_dedup(
    c: &Client,
    reader: impl Read,
    r: &RefId,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<DedupReport> {
    let upload_ref = blocknode_actors::upload_ref::new_upload_ref(blocknode_actors::rc::now_msec());
    let mut up = ClientUpload {
        c,
        upload_ref,
        touched: HashSet::new(),
    };
    let res = run(&mut up, reader, r, progress);
    up.release();
    res
}

fn run(
    up: &mut ClientUpload<'_>,
    reader: impl Read,
    r: &RefId,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<DedupReport> {
    let started = std::time::Instant::now();
    let p = ChunkerParams::DEFAULT;
    let chunker =
        fastcdc::v2020::StreamCDC::new(reader, p.min as usize, p.avg as usize, p.max as usize);
    let mut builder = TreeBuilder::new(p);
    let mut report = DedupReport {
        id: Hash([0; 32]),
        size: 0,
        chunks: 0,
        new_chunks: 0,
        sent: 0,
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut nodes = Vec::new();
    let mut chunks = chunker.peekable();
    while let Some(chunk) = chunks.next() {
        let chunk = chunk.context("reading the input")?;
        let hash = blake2sum(&chunk.data);
        report.size += chunk.length as u64;
        report.chunks += 1;
        progress.inc(chunk.length as u64);
        nodes.extend(builder.push(Entry {
            hash,
            len: chunk.length as u64,
        }));
        batch.push((hash, chunk.data));
        if batch.len() == BATCH || chunks.peek().is_none() {
            let (new, sent) = up.send_batch(std::mem::take(&mut batch))?;
            report.new_chunks += new;
            report.sent += sent;
        }
        for n in nodes.drain(..) {
            up.put_with_bytes(n.hash, n.bytes.to_vec())?;
        }
    }
    let (id, sealed) = builder.finish();
    for n in sealed {
        up.put_with_bytes(n.hash, n.bytes.to_vec())?;
    }
    if crate::objects::outlived_upload_ref(started.elapsed()) {
        anyhow::bail!("the upload ran longer than its upload ref lives (23 hours); store the data as several objects");
    }
    up.c.json("PUT", &format!("/v1/objects/{id}/refs/{r}"), None)?;
    report.id = id;
    Ok(report)
}
