//! The cluster a bench runs against: a temporary local dev cluster (whose node
//! processes give CPU and RSS figures) or a remote one named by `--api`.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use super::{procfs, BenchArgs};
use crate::tools::dev_cluster::{self, DevClusterArgs, DevClusterFile};

/// The cluster under test.
pub(super) struct Target {
    pub apis: Vec<(String, String)>,
    pub local: Option<LocalCluster>,
}

pub(super) struct LocalCluster {
    pub file: DevClusterFile,
    pub children: Vec<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Nodes drain HTTP on SIGTERM: say why the bench is still running.
        eprintln!("stopping the bench's local cluster (a few seconds)");
        dev_cluster::stop_nodes(&mut self.children);
    }
}

impl Target {
    pub fn pids(&self) -> Vec<u32> {
        self.local
            .as_ref()
            .map(|l| l.children.iter().map(|c| c.id()).collect())
            .unwrap_or_default()
    }
    pub fn cpu(&self) -> Option<f64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|p| procfs::cpu_seconds(*p)).sum()
    }
    pub fn peak_rss(&self) -> Option<u64> {
        self.pids()
            .iter()
            .filter_map(|p| procfs::peak_rss(*p))
            .max()
    }
}

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

pub(super) fn start_local(args: &BenchArgs) -> anyhow::Result<Target> {
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
        ..Default::default()
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
