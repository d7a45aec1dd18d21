//! `blocknode bench`: throughput and latency through the HTTP API, CPU and memory of the
//! nodes, and the machine's own limits measured in the same run, so every figure comes
//! with a ratio ("you are at N% of what this box can do").
//!
//! Without `--api` it starts a temporary dev cluster (the same code as `dev-cluster`),
//! runs the workloads and removes it; with `--api URL --token T` it targets a running
//! cluster (then CPU, RSS and the `resync` workload are not available).

pub mod floor;
pub mod limits;
pub mod procfs;

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::tools::dev_cluster::{self, DevClusterArgs, DevClusterFile};

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
    /// Comma-separated workloads: put, get, mixed, resync.
    #[arg(long, default_value = "put,get")]
    pub workload: String,
    /// fsync block writes in the temporary cluster (and in the disk limit).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
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
                s.push_str(if i % 7 == 0 { ".\n" } else { " " });
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

/// The cluster under test.
struct Target {
    apis: Vec<(String, String)>,
    local: Option<LocalCluster>,
}

struct LocalCluster {
    file: DevClusterFile,
    children: Vec<Child>,
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        dev_cluster::stop_nodes(&mut self.children);
    }
}

impl Target {
    fn pids(&self) -> Vec<u32> {
        self.local
            .as_ref()
            .map(|l| l.children.iter().map(|c| c.id()).collect())
            .unwrap_or_default()
    }
    fn cpu(&self) -> Option<f64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|p| procfs::cpu_seconds(*p)).sum()
    }
    fn peak_rss(&self) -> Option<u64> {
        self.pids()
            .iter()
            .filter_map(|p| procfs::peak_rss(*p))
            .max()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn start_local(args: &BenchArgs) -> anyhow::Result<Target> {
    let (tmp, dir) = match &args.dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("blocknode-bench")
                .tempdir_in(".")?;
            let d = t.path().join("cluster");
            (Some(t), d)
        }
    };
    let file = dev_cluster::init(&DevClusterArgs {
        nodes: args.nodes,
        dir: dir.clone(),
        replication: Some(args.replication),
        gc_delay: "10m".into(),
        init_only: true,
    })?;
    if !args.fsync {
        for n in &file.nodes {
            let t = std::fs::read_to_string(&n.config)?;
            std::fs::write(
                &n.config,
                t.replacen("gc_delay", "data_fsync = false\ngc_delay", 1),
            )?;
        }
    }
    let children = dev_cluster::spawn_nodes(&file)?;
    let local = LocalCluster {
        file,
        children,
        _tmp: tmp,
        dir,
    };
    dev_cluster::wait_healthy(&local.file, Duration::from_secs(30))?;
    let apis: Vec<(String, String)> = local
        .file
        .nodes
        .iter()
        .map(|n| (n.api.clone(), n.token.clone()))
        .collect();
    // Wait until every node sees every peer, so no write starts before quorum can exist.
    let a = agent();
    let start = Instant::now();
    for (api, token) in &apis {
        loop {
            let up = a
                .get(&format!("{api}/v1/status"))
                .header("Authorization", format!("Bearer {token}"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .map(|v| {
                    v["peers"]
                        .as_array()
                        .map_or(0, |p| p.iter().filter(|p| p["up"] == true).count())
                })
                .unwrap_or(0);
            if up + 1 >= apis.len() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the bench cluster's nodes did not all see each other within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Target {
        apis,
        local: Some(local),
    })
}

/// Figures of one workload.
#[derive(Debug, Clone)]
struct Figures {
    ops: usize,
    bytes: u64,
    secs: f64,
    lat: Vec<Duration>,
    cpu_s: Option<f64>,
    rss: Option<u64>,
    errors: usize,
}

impl Figures {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.secs
    }
    /// Server CPU seconds per GiB moved (summed over the node processes).
    fn cpu_per_gib(&self) -> Option<f64> {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        self.cpu_s.filter(|_| gib > 0.0).map(|c| c / gib)
    }
    fn json(&self, limit: Option<f64>, floor: Option<f64>) -> Value {
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
        })
    }
}

/// Run `op(i)` with `concurrency` threads until `count` ops are done or `duration` passed.
fn drive(
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
                                pb.println(format!("{name}: first error: {e:#}"));
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
    }
}

/// PUT a block with a ref (as a real client does: an unreferenced block is an orphan
/// that GC collects and repair does not restore).
fn put_op(
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

fn get_op(a: &ureq::Agent, api: &(String, String), hash: &str, size: usize) -> anyhow::Result<u64> {
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
fn resync_workload(target: &mut Target, size: usize) -> anyhow::Result<Figures> {
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
    })
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
            ["put", "get", "mixed", "resync"].contains(&w.as_str()),
            "unknown workload {w:?}"
        );
    }
    let mut target = match api {
        Some(api) => Target {
            apis: vec![(
                api.trim_end_matches('/').to_string(),
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
    std::fs::create_dir_all(&limit_dir)?;
    // At least 256 files (or 64 MiB), so the limit is not a few milliseconds of page cache.
    let limit_files = count.max(256).max((64 << 20) / size).min(4096);
    // The median of three runs: on a shared VM one run can be off by 3x either way.
    let mut disk_runs = Vec::new();
    for _ in 0..3 {
        let run = limits::disk_write(&limit_dir, limit_files, size, args.concurrency, args.fsync);
        let _ = std::fs::remove_dir_all(&limit_dir);
        disk_runs.push(run?);
        std::fs::create_dir_all(&limit_dir)?;
    }
    let _ = std::fs::remove_dir_all(&limit_dir);
    disk_runs.sort_by(|a, b| a.total_cmp(b));
    let disk = disk_runs[1];
    let blake = limits::blake2_one_core(&sample);
    let zstd = limits::zstd_one_core(&sample);
    let quinn = limits::quinn_stream(256 << 20)?;
    eprintln!("measuring the CPU floor of each workload ...");
    let floor_dir = limit_dir.with_file_name("cpu-floor");
    std::fs::create_dir_all(&floor_dir)?;
    let parts = floor::measure(&floor_dir, size, args.concurrency, args.fsync);
    let _ = std::fs::remove_dir_all(&floor_dir);
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
    let get_limit = 2.0 * blake;

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

    println!(
        "\nblocknode bench: {} blocks of {} ({:?} data), concurrency {}, {}",
        duration.map_or(count.to_string(), |d| format!("{d:?} of")),
        bytesize::ByteSize::b(size as u64).display().iec(),
        args.data,
        args.concurrency,
        match &target.local {
            Some(_) => format!(
                "local cluster of {} nodes, RF{} (fsync {})",
                args.nodes, args.replication, args.fsync
            ),
            None => "remote cluster".to_string(),
        }
    );
    println!(
        "limits: disk {disk:.0} MiB/s (median of {:.0}/{:.0}/{:.0}; {:.0} per replica), BLAKE2 one core {blake:.0} MiB/s, zstd-1 {zstd:.0} MiB/s, quinn stream {quinn:.0} MiB/s",
        disk_runs[0], disk_runs[1], disk_runs[2],
        put_limit
    );
    let p = &floor.parts;
    println!(
        "CPU floor (s/GiB, this run): BLAKE2 {:.2}, QUIC transfer {:.2}, file write {:.2}, file read {:.2}, HTTP receive {:.2}, HTTP send {:.2} -> put {:.2} ({:.3} ms/op), get {:.2} ({:.3} ms/op)",
        p.blake2, p.quic, p.file_write, p.file_read, p.http_receive, p.http_send,
        floor.put(), floor.ms_per_op(floor.put()), floor.get(), floor.ms_per_op(floor.get())
    );
    println!(
        "{:<8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7}",
        "workload",
        "MiB/s",
        "blocks/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu s/GiB",
        "floor",
        "x floor",
        "cpu ms/op",
        "peak RSS",
        "limit",
        "ratio"
    );
    let mut wj = serde_json::Map::new();
    for (name, f, limit) in &results {
        let fl = floor.of(name);
        let j = f.json(*limit, fl);
        let opt = |v: &Value, digits: usize| {
            v.as_f64()
                .map_or("-".to_string(), |x| format!("{x:.digits$}"))
        };
        println!(
            "{:<8} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7}",
            name,
            f.mib_s(),
            f.ops as f64 / f.secs,
            j["p50_ms"].as_f64().unwrap_or(0.0),
            j["p90_ms"].as_f64().unwrap_or(0.0),
            j["p99_ms"].as_f64().unwrap_or(0.0),
            j["max_ms"].as_f64().unwrap_or(0.0),
            opt(&j["cpu_s_per_gib"], 2),
            fl.map_or("-".into(), |x| format!("{x:.2}")),
            opt(&j["ratio_to_floor"], 2),
            opt(&j["cpu_ms_per_op"], 3),
            f.rss.map_or("-".into(), |r| format!("{}MiB", r >> 20)),
            limit.map_or("-".into(), |l| format!("{l:.0}")),
            j["ratio_to_limit"]
                .as_f64()
                .map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
        );
        if f.errors > 0 {
            println!("         {} errors", f.errors);
        }
        wj.insert(name.clone(), j);
    }
    if let Some(p) = &args.json {
        let doc = json!({
            "config": {"size": size, "count": count, "concurrency": args.concurrency, "data": format!("{:?}", args.data).to_lowercase(),
                       "nodes": args.nodes, "replication": args.replication, "fsync": args.fsync, "local": target.local.is_some()},
            "limits": {"disk_mib_s": disk, "disk_runs_mib_s": disk_runs, "disk_per_replica_mib_s": put_limit, "blake2_one_core_mib_s": blake,
                       "zstd1_mib_s": zstd, "quinn_stream_mib_s": quinn, "get_limit_mib_s": get_limit},
            "cpu_floor": floor.json(),
            "workloads": wj,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", p.display()))?;
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
