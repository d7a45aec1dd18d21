//! The report of `blocknode bench`: the table printed at the end of a run and the same
//! figures as JSON (`--json`), each workload next to its same-run limit and CPU floor.

use anyhow::Context;
use serde_json::{json, Value};

use super::floor::Floor;
use super::workloads::Figures;
use super::BenchArgs;

/// What the table's columns mean, printed under it.
const COLUMNS: &str = "\
columns: MiB/s and blocks/s: client throughput; p50/p90/p99/max ms: latency of one request;
  cpu s/GiB: CPU time of the node processes per GiB moved (cpu ms/op: per request);
  floor: the same-run CPU floor, what the parts a request cannot avoid cost on this
  machine (hashing, checksum, QUIC transfer, file write or read, HTTP); x floor: cpu
  divided by floor; peak RSS: the largest node's peak memory; limit: what the machine
  allows (PUT: the disk rate per replica; GET: every core at the floor) and ratio: the
  throughput as a share of it. docs/performance.md explains them further.";

/// What was run: the options and the resolved size, count and duration.
pub(super) struct RunInfo<'a> {
    pub args: &'a BenchArgs,
    pub size: usize,
    pub count: usize,
    pub duration: Option<std::time::Duration>,
    /// A temporary local cluster (not `--api`).
    pub local: bool,
}

/// The machine's limits measured in the same run, MiB/s.
pub(super) struct Limits {
    /// Median of the three disk runs.
    pub disk: f64,
    /// The three disk runs, sorted.
    pub disk_runs: Vec<f64>,
    /// The disk divided by the replicas sharing it.
    pub put_limit: f64,
    pub blake2: f64,
    pub zstd: f64,
    pub quinn: f64,
    pub get_limit: f64,
}

/// Print the table and write `--json` if asked.
pub(super) fn report(
    run: &RunInfo<'_>,
    l: &Limits,
    floor: &Floor,
    results: &[(String, Figures, Option<f64>)],
) -> anyhow::Result<()> {
    println!(
        "\nblocknode bench: {} blocks of {} ({} data), concurrency {}, {}",
        run.duration.map_or(run.count.to_string(), |d| format!(
            "{} of",
            humantime::format_duration(d)
        )),
        bytesize::ByteSize::b(run.size as u64).display().iec(),
        format!("{:?}", run.args.data).to_lowercase(),
        run.args.concurrency,
        match run.local {
            true => format!(
                "local cluster of {} nodes, RF{} (fsync {})",
                run.args.nodes, run.args.replication, run.args.fsync
            ),
            false => "remote cluster".to_string(),
        }
    );
    println!(
        "limits: disk {:.0} MiB/s (median of {:.0}/{:.0}/{:.0}; {:.0} per replica), BLAKE2 one core {:.0} MiB/s, zstd-1 {:.0} MiB/s, quinn stream {:.0} MiB/s",
        l.disk, l.disk_runs[0], l.disk_runs[1], l.disk_runs[2],
        l.put_limit, l.blake2, l.zstd, l.quinn
    );
    let p = &floor.parts;
    println!(
        "CPU floor (s/GiB, this run): BLAKE2 {:.2}, stored checksum {:.3}, QUIC transfer {:.2}, file write {:.2}, file read {:.2}, HTTP receive {:.2}, HTTP send {:.2} -> put {:.2} ({:.3} ms/op), get {:.2} ({:.3} ms/op)",
        p.blake2, p.checksum, p.quic, p.file_write, p.file_read, p.http_receive, p.http_send,
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
    for (name, f, limit) in results {
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
            println!(
                "         {} errors, the first: {}",
                f.errors,
                f.first_error.as_deref().unwrap_or("(no message)")
            );
        }
        wj.insert(name.clone(), j);
    }
    println!("{COLUMNS}");
    if let Some(p) = &run.args.json {
        let doc = json!({
            "config": {"size": run.size, "count": run.count, "concurrency": run.args.concurrency, "data": format!("{:?}", run.args.data).to_lowercase(),
                       "nodes": run.args.nodes, "replication": run.args.replication, "fsync": run.args.fsync, "local": run.local},
            "limits": {"disk_mib_s": l.disk, "disk_runs_mib_s": l.disk_runs, "disk_per_replica_mib_s": l.put_limit, "blake2_one_core_mib_s": l.blake2,
                       "zstd1_mib_s": l.zstd, "quinn_stream_mib_s": l.quinn, "get_limit_mib_s": l.get_limit},
            "cpu_floor": floor.json(),
            "workloads": wj,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
