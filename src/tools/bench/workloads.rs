//! The workloads of `blocknode bench`: a pool of client threads driving one operation
//! (PUT with a ref, GET, or both), and the resync of a wiped node; each gives its
//! [`Figures`] (throughput, latencies, server CPU and RSS, errors).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::cluster::{agent, Target};
use super::{percentile, procfs, BenchArgs};
use crate::tools::dev_cluster::{self, DevClusterFile};

/// Figures of one workload.
#[derive(Debug, Clone)]
pub(super) struct Figures {
    pub ops: usize,
    pub bytes: u64,
    pub secs: f64,
    /// Latencies of the operations that succeeded, sorted.
    pub lat: Vec<Duration>,
    pub cpu_s: Option<f64>,
    pub rss: Option<u64>,
    pub errors: usize,
    /// The first error's message, kept for the printout and the JSON (a run with one
    /// failure in a thousand must still say what failed).
    pub first_error: Option<String>,
}

impl Figures {
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.secs
    }
    /// Server CPU seconds per GiB moved (summed over the node processes).
    pub fn cpu_per_gib(&self) -> Option<f64> {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        self.cpu_s.filter(|_| gib > 0.0).map(|c| c / gib)
    }
    pub fn json(&self, limit: Option<f64>, floor: Option<f64>) -> Value {
        let cpu = self.cpu_per_gib();
        json!({
            "mib_s": self.mib_s(),
            "blocks_s": self.ops as f64 / self.secs,
            "p50_ms": percentile(&self.lat, 50.0),
            "p90_ms": percentile(&self.lat, 90.0),
            "p99_ms": percentile(&self.lat, 99.0),
            "max_ms": percentile(&self.lat, 100.0),
            "cpu_s_per_gib": cpu,
            "cpu_ms_per_op": self.cpu_s.filter(|_| self.ops > 0).map(|c| c * 1000.0 / self.ops as f64),
            "floor_cpu_s_per_gib": floor,
            "ratio_to_floor": cpu.zip(floor).map(|(c, f)| c / f),
            "peak_rss_bytes": self.rss,
            "limit_mib_s": limit,
            "ratio_to_limit": limit.map(|l| self.mib_s() / l),
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// Run `op(i)` with `concurrency` threads until `count` ops are done or `duration` passed.
pub(super) fn drive(
    target: &Target,
    args: &BenchArgs,
    name: &str,
    count: usize,
    duration: Option<Duration>,
    op: impl Fn(&ureq::Agent, usize) -> anyhow::Result<u64> + Sync,
) -> Figures {
    let next = AtomicUsize::new(0);
    let lat = Mutex::new(Vec::with_capacity(count));
    let bytes = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let pb = match duration {
        Some(_) => indicatif::ProgressBar::new_spinner(),
        None => indicatif::ProgressBar::new(count as u64),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>7} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_prefix(name.to_string());
    let cpu0 = target.cpu();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.concurrency.max(1) {
            s.spawn(|| {
                let a = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if duration.map_or(i >= count, |d| start.elapsed() >= d) {
                        return;
                    }
                    let t = Instant::now();
                    match op(&a, i) {
                        Ok(n) => {
                            bytes.fetch_add(n as usize, Ordering::Relaxed);
                            if let Ok(mut l) = lat.lock() {
                                l.push(t.elapsed());
                            }
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                let msg = format!("op {i}: {e:#}");
                                pb.println(format!("{name}: first error: {msg}"));
                                if let Ok(mut f) = first_error.lock() {
                                    *f = Some(msg);
                                }
                            }
                        }
                    }
                    pb.inc(1);
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut lat = lat.into_inner().unwrap_or_default();
    lat.sort();
    Figures {
        ops: lat.len(),
        bytes: bytes.into_inner() as u64,
        secs,
        lat,
        cpu_s: match (cpu0, target.cpu()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        rss: target.peak_rss(),
        errors: errors.into_inner(),
        first_error: first_error.into_inner().unwrap_or_default(),
    }
}

/// PUT a block with a ref (as a real client does: an unreferenced block is an orphan
/// that GC collects and repair does not restore).
pub(super) fn put_op(
    a: &ureq::Agent,
    api: &(String, String),
    data: &[u8],
    i: usize,
) -> anyhow::Result<String> {
    let mut r = a
        .put(&format!("{}/v1/blocks?ref=bench-{i}", api.0))
        .header("Authorization", format!("Bearer {}", api.1))
        .send(data)?;
    let status = r.status().as_u16();
    let body: Value = r.body_mut().read_json().unwrap_or_default();
    if status != 201 {
        bail!("PUT answered {status}: {body}");
    }
    body["hash"]
        .as_str()
        .map(str::to_string)
        .context("PUT reply without hash")
}

pub(super) fn get_op(
    a: &ureq::Agent,
    api: &(String, String),
    hash: &str,
    size: usize,
) -> anyhow::Result<u64> {
    let mut r = a
        .get(&format!("{}/v1/blocks/{hash}", api.0))
        .header("Authorization", format!("Bearer {}", api.1))
        .call()?;
    let status = r.status().as_u16();
    let body = r.body_mut().with_config().limit(64 << 20).read_to_vec()?;
    if status != 200 || body.len() != size {
        bail!(
            "GET answered {status} with {} bytes, expected {size}",
            body.len()
        );
    }
    Ok(body.len() as u64)
}

/// Incompressible bytes generated as they are read (xorshift; `seed` makes objects
/// distinct), so an object of any size is streamed without being held.
struct GeneratedBody {
    left: u64,
    x: u64,
}

impl std::io::Read for GeneratedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for piece in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            piece.copy_from_slice(&self.x.to_le_bytes()[..piece.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The object workload: `args.objects` objects of `size` bytes PUT one after another
/// (`obj-put`), then each read back whole (`obj-get`).
pub(super) fn object_workload(
    target: &Target,
    args: &BenchArgs,
    size: u64,
) -> anyhow::Result<(Figures, Figures)> {
    let one = BenchArgs {
        concurrency: 1,
        ..args.clone()
    };
    let apis = &target.apis;
    let ids: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let put = drive(target, &one, "obj-put", args.objects, None, |a, i| {
        let api = &apis[i % apis.len()];
        let mut body = GeneratedBody {
            left: size,
            x: (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        };
        let mut r = a
            .put(&format!("{}/v1/objects?ref=bench-object-{i}", api.0))
            .header("Authorization", format!("Bearer {}", api.1))
            .send(ureq::SendBody::from_reader(&mut body))?;
        let status = r.status().as_u16();
        let v: Value = r.body_mut().read_json().unwrap_or_default();
        if status != 201 {
            bail!("object PUT answered {status}: {v}");
        }
        let id = v["id"].as_str().context("object PUT reply without id")?;
        if let Ok(mut ids) = ids.lock() {
            ids.push(id.to_string());
        }
        Ok(size)
    });
    let ids = ids.into_inner().unwrap_or_default();
    anyhow::ensure!(!ids.is_empty(), "no object was stored");
    let get = drive(target, &one, "obj-get", ids.len(), None, |a, i| {
        let api = &apis[i % apis.len()];
        let r = a
            .get(&format!("{}/v1/objects/{}", api.0, ids[i]))
            .header("Authorization", format!("Bearer {}", api.1))
            .call()?;
        let status = r.status().as_u16();
        let n = std::io::copy(&mut r.into_body().into_reader(), &mut std::io::sink())?;
        if status != 200 || n != size {
            bail!("object GET answered {status} with {n} bytes, expected {size}");
        }
        Ok(n)
    });
    Ok((put, get))
}

fn block_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.len() == 64 || (n.len() == 68 && n.ends_with(".zst"))
            }) {
                n += 1;
            }
        }
    }
    n
}

/// Wipe the last node while stopped, restart it, repair with tranquility 0 and 4
/// workers, and time until it holds every block it held before.
pub(super) fn resync_workload(target: &mut Target, size: usize) -> anyhow::Result<Figures> {
    let local = target
        .local
        .as_mut()
        .context("the resync workload needs the local cluster (no --api)")?;
    let i = local.file.nodes.len() - 1;
    let node = local.file.nodes[i].clone();
    let want = block_files(&node.data_dir);
    anyhow::ensure!(
        want > 0,
        "run put before resync: node {} holds no block",
        node.name
    );
    dev_cluster::stop_nodes(std::slice::from_mut(&mut local.children[i]));
    std::fs::remove_dir_all(&node.data_dir)
        .with_context(|| format!("wiping {}", node.data_dir.display()))?;
    let mut fresh = dev_cluster::spawn_nodes(&DevClusterFile {
        nodes: vec![node.clone()],
    })?;
    local.children[i] = fresh.remove(0);
    dev_cluster::wait_healthy(
        &DevClusterFile {
            nodes: vec![node.clone()],
        },
        Duration::from_secs(30),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let a = agent();
    let auth = format!("Bearer {}", node.token);
    a.put(&format!("{}/v1/workers", node.api))
        .header("Authorization", &auth)
        .send_json(json!({"resync_workers": 4, "resync_tranquility": 0}))?;
    let cpu0 = procfs::cpu_seconds(local.children[i].id());
    let start = Instant::now();
    a.post(&format!("{}/v1/repair", node.api))
        .header("Authorization", &auth)
        .send_empty()?;
    let pb = indicatif::ProgressBar::new(want as u64);
    pb.set_prefix("resync");
    loop {
        let have = block_files(&node.data_dir);
        pb.set_position(have as u64);
        if have >= want {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("resync: {have} of {want} blocks after 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let pid = local.children[i].id();
    Ok(Figures {
        ops: want,
        bytes: (want * size) as u64,
        secs,
        lat: Vec::new(),
        cpu_s: match (cpu0, procfs::cpu_seconds(pid)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        rss: procfs::peak_rss(pid),
        errors: 0,
        first_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(concurrency: usize) -> BenchArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let mut a = Cli::parse_from(["bench"]).bench;
        a.concurrency = concurrency;
        a
    }

    #[test]
    fn drive_counts_errors_and_keeps_the_first_message() {
        let target = Target {
            apis: Vec::new(),
            local: None,
        };
        let f = drive(&target, &args(1), "put", 10, None, |_, i| {
            if i == 3 || i == 7 {
                anyhow::bail!("PUT answered 503 for block {i}")
            }
            Ok(100)
        });
        assert_eq!((f.ops, f.errors, f.bytes), (8, 2, 800));
        assert_eq!(
            f.first_error.as_deref(),
            Some("op 3: PUT answered 503 for block 3"),
            "the first failure's message is kept"
        );
        let j = f.json(None, None);
        assert_eq!(j["errors"], 2);
        assert_eq!(j["first_error"], "op 3: PUT answered 503 for block 3");
    }
}
