//! `blocknode bench`: throughput and latency through the HTTP API, CPU and memory of the
//! nodes, and the machine's own limits measured in the same run, so every figure comes
//! with a ratio ("you are at N% of what this box can do").
//!
//! Without `--api` it starts a temporary dev cluster (the same code as `dev-cluster`),
//! runs the workloads and removes it; with `--api URL --token T` it targets a running
//! cluster (then CPU, RSS and the `resync` workload are not available).

mod cluster;
mod dedup;
pub mod floor;
pub mod limits;
pub mod procfs;
mod report;
mod workloads;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use cluster::{start_local, Target};
use report::{report, Limits, RunInfo};
use workloads::{drive, get_op, object_workload, put_op, resync_workload, Figures};

/// Compressibility of the generated blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataKind {
    Random,
    Text,
    Zeros,
}

/// Options of `blocknode bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Nodes of the temporary cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Replication factor of the temporary cluster.
    #[arg(long, default_value_t = 3)]
    pub replication: usize,
    /// Keep the temporary cluster in this directory (default: a temp dir, removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Block size, 4KiB .. 16MiB.
    #[arg(long, default_value = "1MiB")]
    pub size: String,
    /// Operations per workload (default 256; ignored with --duration).
    #[arg(long)]
    pub count: Option<usize>,
    /// Run each workload for this long instead of --count (e.g. "20s").
    #[arg(long)]
    pub duration: Option<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Data of the blocks.
    #[arg(long, value_enum, default_value_t = DataKind::Random)]
    pub data: DataKind,
    /// Comma-separated workloads: put, get, mixed, resync, object (PUT then GET of
    /// whole objects of --object-size, rows obj-put and obj-get), dedup (a tree of
    /// files of --object-size in all stored as one stream, then edited and stored
    /// again: new bytes stored and bytes sent against the changed files' bytes).
    #[arg(long, default_value = "put,get")]
    pub workload: String,
    /// Size of each object of the object workload (any size, e.g. 1GiB).
    #[arg(long, default_value = "256MiB")]
    pub object_size: String,
    /// Objects the object workload puts and gets (one at a time: an object upload is
    /// pipelined inside the node).
    #[arg(long, default_value_t = 2)]
    pub objects: usize,
    /// fsync block writes in the temporary cluster (and in the disk limit).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// [`make_data`] in the kind of buffer a node holds a block in (pooled, so aligned for
/// `O_DIRECT` from 512 KiB on), for the limits and floors that time the node's own
/// file write: a plain `Vec` would be written through the page cache instead.
pub fn block_bytes(size: usize, kind: DataKind, seed: u64) -> bytes::Bytes {
    let mut buf = blocknode_actors::bufpool::PooledBuf::with_capacity(size);
    buf.extend_from_slice(&make_data(size, kind, seed));
    buf.freeze()
}

/// Block bytes of the given kind; `seed` makes blocks distinct.
pub fn make_data(size: usize, kind: DataKind, seed: u64) -> Vec<u8> {
    let mut v = match kind {
        DataKind::Zeros => vec![0u8; size],
        DataKind::Random => {
            let mut v = vec![0u8; size];
            rand::fill(&mut v[..]);
            v
        }
        DataKind::Text => {
            let words = [
                "block", "store", "replica", "node", "hash", "quorum", "scrub", "resync",
            ];
            let mut s = String::with_capacity(size + 16);
            let mut i = seed as usize;
            while s.len() < size {
                s.push_str(words[i % words.len()]);
                s.push_str(if i.is_multiple_of(7) { ".\n" } else { " " });
                i = i.wrapping_mul(31).wrapping_add(7);
            }
            s.into_bytes()
        }
    };
    v.truncate(size);
    let tag = seed.to_le_bytes();
    let n = tag.len().min(v.len());
    v[..n].copy_from_slice(&tag[..n]);
    v
}

/// Latency percentile (0..=100) of sorted samples, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}
/// Most bytes of limit and floor files kept until the end of a run (see [`Scratch`]).
const SCRATCH_KEEP_MAX: usize = 2 << 30;

/// The files of the limit and floor measurements. This VM's root filesystem is ext4
/// without a journal, which checks every inode deleted in the last 35 s when it
/// allocates a new one: deleting thousands of small files right before a workload made
/// its file creation cost several times more (perf of a 4 KiB PUT run: `recently_deleted`
/// 15% and `find_get_block_common` 12% of the nodes' CPU). So when they fit in
/// [`SCRATCH_KEEP_MAX`], they are deleted only at the end of the run (on drop);
/// larger ones (16 MiB blocks) go at once, where inode costs do not show.
struct Scratch {
    keep: bool,
    dirs: Vec<PathBuf>,
}

impl Scratch {
    fn new(keep: bool) -> Self {
        Scratch {
            keep,
            dirs: Vec::new(),
        }
    }

    /// Create a measurement directory.
    fn dir(&mut self, dir: PathBuf) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// A measurement is over: remove its files now, or at the end of the run.
    fn done_with(&mut self, dir: PathBuf) {
        if self.keep {
            self.dirs.push(dir);
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// The parent of the measurement directories: removed with them.
    fn keep_or_remove(&mut self, parent: &std::path::Path) {
        self.done_with(parent.to_path_buf());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `blocknode bench`.
pub fn run(args: BenchArgs, api: Option<String>, token: Option<String>) -> anyhow::Result<()> {
    let size = args
        .size
        .parse::<bytesize::ByteSize>()
        .map_err(|e| anyhow::anyhow!("--size {:?}: {e}", args.size))?
        .as_u64() as usize;
    anyhow::ensure!(
        (4096..=16 << 20).contains(&size),
        "--size must be between 4KiB and 16MiB"
    );
    let duration = args
        .duration
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .context("--duration")?;
    let count = args.count.unwrap_or(256);
    let workloads: Vec<String> = args
        .workload
        .split(',')
        .map(|w| w.trim().to_string())
        .collect();
    for w in &workloads {
        anyhow::ensure!(
            ["put", "get", "mixed", "resync", "object", "dedup"].contains(&w.as_str()),
            "unknown workload {w:?}"
        );
    }
    let mut target = match api {
        Some(api) => Target {
            apis: vec![(
                crate::cli::client::api_base(&api),
                token.context("--api needs --token")?,
            )],
            local: None,
        },
        None => start_local(&args)?,
    };
    let rf = if target.local.is_some() {
        args.replication.max(1)
    } else {
        1
    };

    eprintln!("measuring this machine's limits ...");
    let sample = make_data(size.max(1 << 20), args.data, 0);
    let limit_dir = match &target.local {
        Some(l) => l.dir.join("disk-limit"),
        None => PathBuf::from(".blocknode-bench-disk-limit"),
    };
    // At least 256 files (or 64 MiB), so the limit is not a few milliseconds of page cache.
    let limit_files = count.max(256).max((64 << 20) / size).min(4096);
    let mut scratch = Scratch::new(3 * limit_files * size <= SCRATCH_KEEP_MAX);
    // The median of three runs: on a shared VM one run can be off by 3x either way.
    let mut disk_runs = Vec::new();
    for k in 0..3 {
        let dir = scratch.dir(limit_dir.join(k.to_string()))?;
        let run = limits::disk_write(&dir, limit_files, size, args.concurrency, args.fsync);
        scratch.done_with(dir);
        disk_runs.push(run?);
    }
    disk_runs.sort_by(|a, b| a.total_cmp(b));
    let disk = disk_runs[1];
    let blake = limits::blake2_one_core(&sample);
    let zstd = limits::zstd_one_core(&sample);
    let quinn = limits::quinn_stream(256 << 20)?;
    eprintln!("measuring the CPU floor of each workload ...");
    let floor_dir = scratch.dir(limit_dir.with_file_name("cpu-floor"))?;
    let parts = floor::measure(&floor_dir, size, args.concurrency, args.fsync);
    scratch.done_with(floor_dir);
    scratch.keep_or_remove(&limit_dir);
    let floor = floor::Floor {
        parts: parts?,
        replication: rf,
        nodes: if target.local.is_some() {
            args.nodes.max(1)
        } else {
            1
        },
    };
    let put_limit = disk / rf as f64;
    // A GET's bound on this box: every core spent at the same-run floor's CPU per byte
    // (one file read, one checksum pass, one HTTP send per block; no disk wait, the
    // blocks are cached or the disk outruns that).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let get_limit = cores * 1024.0 / floor.get().max(1e-9);

    let bases: Vec<Vec<u8>> = (0..8).map(|k| make_data(size, args.data, k)).collect();
    let block = |i: usize| {
        let mut b = bases[i % bases.len()].clone();
        let tag = (i as u64 + 1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes();
        let n = tag.len().min(b.len());
        b[..n].copy_from_slice(&tag[..n]);
        b
    };
    let hashes: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut results: Vec<(String, Figures, Option<f64>)> = Vec::new();
    let mut dedup_rows = Vec::new();
    for w in &workloads {
        let apis = &target.apis;
        let fig = match w.as_str() {
            "put" => drive(&target, &args, "put", count, duration, |a, i| {
                let h = put_op(a, &apis[i % apis.len()], &block(i), i)?;
                if let Ok(mut v) = hashes.lock() {
                    v.push(h);
                }
                Ok(size as u64)
            }),
            "get" => {
                let hs = hashes.lock().map(|v| v.clone()).unwrap_or_default();
                anyhow::ensure!(!hs.is_empty(), "run put before get");
                drive(&target, &args, "get", count, duration, |a, i| {
                    get_op(a, &apis[i % apis.len()], &hs[i % hs.len()], size)
                })
            }
            "mixed" => {
                let hs = hashes.lock().map(|v| v.clone()).unwrap_or_default();
                drive(&target, &args, "mixed", count, duration, |a, i| {
                    if i % 2 == 0 || hs.is_empty() {
                        put_op(a, &apis[i % apis.len()], &block(count + i), count + i)?;
                        Ok(size as u64)
                    } else {
                        get_op(a, &apis[i % apis.len()], &hs[i % hs.len()], size)
                    }
                })
            }
            "object" => {
                let object_size = args
                    .object_size
                    .parse::<bytesize::ByteSize>()
                    .map_err(|e| anyhow::anyhow!("--object-size {:?}: {e}", args.object_size))?
                    .as_u64();
                let (put, get) = object_workload(&target, &args, object_size)?;
                results.push(("obj-put".into(), put, Some(put_limit)));
                results.push(("obj-get".into(), get, Some(get_limit)));
                continue;
            }
            "dedup" => {
                let total = args
                    .object_size
                    .parse::<bytesize::ByteSize>()
                    .map_err(|e| anyhow::anyhow!("--object-size {:?}: {e}", args.object_size))?
                    .as_u64();
                dedup_rows = dedup::dedup_workload(&target, total)?;
                continue;
            }
            _ => resync_workload(&mut target, size)?,
        };
        let limit = match w.as_str() {
            "put" | "mixed" => Some(put_limit),
            "get" => Some(get_limit),
            _ => results
                .iter()
                .find(|(n, _, _)| n == "put")
                .map(|(_, f, _)| f.mib_s()),
        };
        results.push((w.clone(), fig, limit));
    }

    report(
        &RunInfo {
            args: &args,
            size,
            count,
            duration,
            local: target.local.is_some(),
        },
        &Limits {
            disk,
            disk_runs,
            put_limit,
            blake2: blake,
            zstd,
            quinn,
            get_limit,
        },
        &floor,
        &results,
    )?;
    if !dedup_rows.is_empty() {
        dedup::print_rows(&dedup_rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_kinds_have_the_compressibility_they_promise() {
        let r = make_data(1 << 16, DataKind::Random, 1);
        let t = make_data(1 << 16, DataKind::Text, 1);
        let z = make_data(1 << 16, DataKind::Zeros, 1);
        let c = |d: &[u8]| zstd::bulk::compress(d, 1).unwrap().len();
        assert!(c(&r) > r.len() * 9 / 10, "random data should not compress");
        assert!(c(&t) < t.len() / 2, "text should compress at least 2x");
        assert!(c(&z) < z.len() / 50);
        assert_ne!(
            make_data(100, DataKind::Zeros, 1),
            make_data(100, DataKind::Zeros, 2),
            "seeds make blocks distinct"
        );
    }

    #[test]
    fn percentiles_pick_from_sorted_samples() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), 51.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
