//! Write throughput of `StorageActor` against plain threads doing the same file work.
//!
//! Run: `cargo run --release -p blocknode-actors --example storage_bench [N] [REPS] [DIR]`
//! (defaults: 256 blocks of 1 MiB, 3 repetitions, a temp dir under the system temp dir).
//!
//! Every run writes the N random blocks into a fresh directory with fsync on: temp file,
//! fsync, rename, fsync of the directory, and an fsync of the parents when a `hh/hh`
//! directory is created. The baseline does exactly that from `concurrency` plain threads;
//! the actor does it through `WriteBlock` messages with `concurrency` in flight, once with
//! pre-verified blocks (`WriteBlock::verified`: storage overhead only) and once with
//! unverified ones (`WriteBlock::new`: plus BLAKE2 of every byte). Figures are medians over
//! the repetitions.

use std::path::{Path, PathBuf};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use futures::stream::{self, StreamExt};

use blocknode_actors::fsutil;
use blocknode_actors::storage::{StorageActor, StorageConfig, WriteBlock};
use blocknode_actors::{Hash, VerifiedBlock};

const BLOCK_LEN: usize = 1 << 20;

fn block_dir(root: &Path, h: &Hash) -> PathBuf {
    let b = h.as_bytes();
    root.join(format!("{:02x}", b[0]))
        .join(format!("{:02x}", b[1]))
}

/// The baseline: the same crash-safe writes from plain threads, no actor, no hashing.
fn baseline(root: &Path, blocks: &[VerifiedBlock], concurrency: usize) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for worker in 0..concurrency {
            s.spawn(move || {
                for b in blocks.iter().skip(worker).step_by(concurrency) {
                    let dir = block_dir(root, &b.hash());
                    if !dir.is_dir() {
                        std::fs::create_dir_all(&dir).expect("create block dir");
                        fsutil::sync_dir(dir.parent().expect("has parent")).expect("sync");
                        fsutil::sync_dir(root).expect("sync root");
                    }
                    let path = dir.join(b.hash().to_hex());
                    fsutil::write_atomic(&path, &[b.data().inner_buffer()], true)
                        .expect("baseline write");
                }
            });
        }
    });
    t.elapsed().as_secs_f64()
}

fn through_actor(root: &Path, blocks: &[VerifiedBlock], concurrency: usize, verified: bool) -> f64 {
    let blocks = blocks.to_vec();
    let root = root.to_path_buf();
    System::new().block_on(async move {
        let addr = StorageActor::new(StorageConfig::one_dir(root, true, None))
            .expect("start storage actor")
            .start();
        let t = Instant::now();
        let results: Vec<_> = stream::iter(blocks)
            .map(|b| {
                let msg = if verified {
                    WriteBlock::verified(b)
                } else {
                    WriteBlock::new(b.hash(), b.into_data())
                };
                addr.send(msg)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let elapsed = t.elapsed().as_secs_f64();
        for r in results {
            r.expect("mailbox").expect("actor write");
        }
        elapsed
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let base_dir = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);

    let blocks: Vec<VerifiedBlock> = (0..n)
        .map(|_| {
            let data: Vec<u8> = (0..BLOCK_LEN).map(|_| rand::random::<u8>()).collect();
            VerifiedBlock::hash_plain(Bytes::from(data), None)
        })
        .collect();
    let mib = (n * BLOCK_LEN) as f64 / (1 << 20) as f64;
    println!(
        "{n} blocks of 1 MiB, fsync on, {reps} repetitions, in {}",
        base_dir.display()
    );
    println!(
        "{:<34} {:>5} {:>10} {:>9}  min-max MiB/s",
        "writer", "conc", "MiB/s", "vs base"
    );
    for concurrency in [1usize, 16] {
        let mut times: [Vec<f64>; 3] = Default::default();
        for _ in 0..reps {
            for (i, times) in times.iter_mut().enumerate() {
                let dir = tempfile::tempdir_in(&base_dir).expect("temp dir");
                let secs = match i {
                    0 => baseline(dir.path(), &blocks, concurrency),
                    1 => through_actor(dir.path(), &blocks, concurrency, true),
                    _ => through_actor(dir.path(), &blocks, concurrency, false),
                };
                times.push(secs);
            }
        }
        let rates: Vec<f64> = times.iter().map(|t| mib / median(t.clone())).collect();
        let names = [
            "plain threads (baseline)",
            "StorageActor, WriteBlock::verified",
            "StorageActor, WriteBlock::new",
        ];
        for ((name, rate), t) in names.iter().zip(&rates).zip(&times) {
            let slowest = t.iter().cloned().fold(0.0, f64::max);
            let fastest = t.iter().cloned().fold(f64::INFINITY, f64::min);
            println!(
                "{name:<34} {concurrency:>5} {rate:>10.1} {:>8.2}x  {:.0}-{:.0}",
                rate / rates[0],
                mib / slowest,
                mib / fastest
            );
        }
    }
}
