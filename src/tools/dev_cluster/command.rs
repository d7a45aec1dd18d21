//! The `dev-cluster` command: `--restart` and `--add` hand over to [`super::change`];
//! otherwise it writes a cluster, starts it, watches its nodes (a node that exits is
//! reported with the command that starts it again) until Ctrl-C or SIGTERM, then stops
//! every node.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use super::process::{spawn_nodes, stop_nodes, stop_others, wait_healthy};
use super::{change, init, DevClusterArgs, DevClusterFile, ENV_FILE};

/// How often the foreground `dev-cluster` looks whether its nodes still run.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// `blocknode dev-cluster` (and its `--restart` / `--add`).
pub fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.restart {
        return change::restart(&args.dir, name);
    }
    if args.add {
        return change::add(&args.dir);
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
