//! The dev cluster's processes: start nodes (each logging to its `node.log`), wait until
//! they answer, watch them (a node that dies is reported with the command that restarts
//! it), and stop them all, those started later by `--restart` or `--add` included.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{init, DevClusterArgs, DevClusterFile, DevNode, ENV_FILE};
use crate::node::preflight::LOCK_FILE;

/// How often the foreground `dev-cluster` looks whether its nodes still run.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

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
fn stop_others(dir: &Path) {
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

/// `blocknode dev-cluster` (and its `--restart` / `--add`).
pub fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.restart {
        return super::change::restart(&args.dir, name);
    }
    if args.add {
        return super::change::add(&args.dir);
    }
    let file = init(&args)?;
    let dir = args.dir.canonicalize()?;
    println!("wrote {} nodes to {}", file.nodes.len(), dir.display());
    for n in &file.nodes {
        println!(
            "  {}  id {}  api {}  log {}",
            n.name,
            &n.id[..16],
            n.api,
            n.log().display()
        );
    }
    if args.init_only {
        println!("{}", file.export_line(&dir));
        return Ok(());
    }
    let mut children = spawn_nodes(&file)?;
    if let Err(e) = wait_healthy(&file, Duration::from_secs(30)) {
        stop_nodes(&mut children);
        return Err(e);
    }
    println!(
        "cluster running. Point the client at it (also in {}):",
        dir.join(ENV_FILE).display()
    );
    println!("  {}", file.export_line(&dir));
    println!(
        "Ctrl-C stops it. `blocknode dev-cluster --dir {d} --restart NODE` starts a node \
         again, `--add` adds one.",
        d = dir.display()
    );
    watch(&file, &dir, &mut children)?;
    println!("stopping the nodes");
    stop_nodes(&mut children);
    stop_others(&dir);
    Ok(())
}

/// Until Ctrl-C or SIGTERM: report each node that exits (and reap it), with the command
/// that starts it again.
fn watch(file: &DevClusterFile, dir: &Path, children: &mut [Child]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reported = vec![false; children.len()];
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(WATCH_PERIOD);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {}
            }
            for (i, c) in children.iter_mut().enumerate() {
                if reported[i] {
                    continue;
                }
                if let Ok(Some(status)) = c.try_wait() {
                    reported[i] = true;
                    let n = &file.nodes[i];
                    println!(
                        "{} (pid {}) exited ({status}); log {}; start it again with: \
                         blocknode dev-cluster --dir {} --restart {}",
                        n.name,
                        c.id(),
                        n.log().display(),
                        dir.display(),
                        n.name
                    );
                }
            }
        }
        anyhow::Ok(())
    })
}
