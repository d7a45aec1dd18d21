//! The dev cluster's processes: start nodes (each logging to its `node.log`), wait until
//! they answer, find the one running a node, and stop them all, those started later by
//! `--restart` or `--add` included.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{DevClusterFile, DevNode};
use crate::node::preflight::LOCK_FILE;

/// How long a stopping node gets after SIGTERM before it is killed (its shutdown drains
/// HTTP for up to 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Start one node as a child process, appending its output to its `node.log`.
pub fn spawn_node(n: &DevNode) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the blocknode binary")?;
    let log_path = n.log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    Command::new(&exe)
        .arg("run")
        .arg("--config")
        .arg(&n.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", n.name))
}

/// Start every node of an initialised cluster as a child process (logs in
/// `<node dir>/node.log`).
pub fn spawn_nodes(file: &DevClusterFile) -> anyhow::Result<Vec<Child>> {
    file.nodes.iter().map(spawn_node).collect()
}

/// The pid of the process running node `n`, if one runs: the pid its metadata lock file
/// names, when that process is a blocknode running `n`'s config (Linux `/proc`).
pub fn running_pid(n: &DevNode) -> Option<u32> {
    let text = std::fs::read_to_string(n.dir().join("meta").join(LOCK_FILE)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = n.config.to_string_lossy();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (` Z `) still has its pid but no longer runs.
    let zombie = state
        .rsplit(')')
        .next()
        .is_some_and(|s| s.trim_start().starts_with('Z'));
    (!zombie && args.iter().any(|a| *a == config.as_bytes())).then_some(pid)
}

/// Wait (bounded) until every node answers `/health`.
pub fn wait_healthy(file: &DevClusterFile, timeout: Duration) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let start = Instant::now();
    for n in &file.nodes {
        loop {
            if agent.get(&format!("{}/health", n.api)).call().is_ok() {
                break;
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not answer within {} s; see {}",
                    n.name,
                    timeout.as_secs(),
                    n.log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Send SIGTERM to `pid`.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// SIGTERM every child, then wait (bounded) and SIGKILL the ones that hang.
pub fn stop_nodes(children: &mut [Child]) {
    for c in children.iter_mut() {
        // A child already reaped may have handed its pid on: signal only live ones.
        if let Ok(None) = c.try_wait() {
            terminate(c.id());
        }
    }
    let start = Instant::now();
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if start.elapsed() > STOP_GRACE => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Stop the nodes of the cluster in `dir` that run outside `children` (restarted or
/// added by another `dev-cluster` command), bounded like [`stop_nodes`].
pub fn stop_others(dir: &Path) {
    let Ok(file) = DevClusterFile::load(dir) else {
        return;
    };
    let others: Vec<(&DevNode, u32)> = file
        .nodes
        .iter()
        .filter_map(|n| running_pid(n).map(|pid| (n, pid)))
        .collect();
    for (_, pid) in &others {
        terminate(*pid);
    }
    let start = Instant::now();
    for (n, pid) in others {
        while running_pid(n) == Some(pid) && start.elapsed() < STOP_GRACE {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running_pid(n) == Some(pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
