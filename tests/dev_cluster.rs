//! `blocknode dev-cluster` as a user runs it: one admin token and an `export` line, a
//! killed node reported with the command that restarts it, `--restart` bringing it back,
//! and Ctrl-C (SIGTERM) stopping every node, the restarted one included.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{bin, wait_for};

/// The foreground `dev-cluster` and the directory of its cluster; on drop, it is stopped
/// and any node still running (by the pid its lock file names) is killed.
struct DevCluster {
    child: Child,
    dir: PathBuf,
    out: PathBuf,
    _tmp: tempfile::TempDir,
}

impl DevCluster {
    fn start(nodes: usize) -> DevCluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let out = tmp.path().join("dev-cluster.out");
        let child = Command::new(bin())
            .args(["dev-cluster", "--nodes", &nodes.to_string(), "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting blocknode dev-cluster");
        let c = DevCluster {
            child,
            dir,
            out,
            _tmp: tmp,
        };
        wait_for("the cluster to run", Duration::from_secs(60), || {
            c.output().contains("cluster running").then_some(())
        });
        c
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn cluster(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("cluster.json")).unwrap()).unwrap()
    }

    /// The pid of the process running node `name`, as its metadata lock names it.
    fn node_pid(&self, name: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(name).join("meta/blocknode.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }
}

/// Whether `pid` runs (and is not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let nodes: Vec<u32> = ["node1", "node2", "node3"]
            .iter()
            .filter_map(|n| self.node_pid(n))
            .collect();
        signal(self.child.id(), "-TERM");
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in nodes.into_iter().filter(|p| alive(*p)) {
            signal(pid, "-KILL");
        }
    }
}

fn health(api: &str) -> bool {
    ureq::get(&format!("{api}/health")).call().is_ok()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_killed_node_is_reported_and_restarted_by_dev_cluster() {
    let mut c = DevCluster::start(2);
    let out = c.output();
    let token_file = c.dir.join("admin.token");
    assert!(
        out.contains("export BLOCKNODE_API=")
            && out.contains(&format!("$(cat {})", token_file.display())),
        "the export line is printed:\n{out}"
    );
    assert!(
        out.contains("node.log"),
        "the log paths are printed:\n{out}"
    );
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&c.dir.join("cluster.json")), 0o600);
    let cluster = c.cluster();
    let api2 = cluster["nodes"][1]["api"].as_str().unwrap().to_string();
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    for n in cluster["nodes"].as_array().unwrap() {
        assert_eq!(n["token"], token.as_str(), "one admin token for every node");
    }

    let pid = c.node_pid("node2").expect("node2 runs");
    signal(pid, "-KILL");
    wait_for(
        "dev-cluster to report node2's exit",
        Duration::from_secs(20),
        || c.output().contains("--restart node2").then_some(()),
    );
    assert!(!health(&api2), "node2 was killed");

    let restart = Command::new(bin())
        .args(["dev-cluster", "--dir"])
        .arg(&c.dir)
        .args(["--restart", "node2"])
        .output()
        .expect("running dev-cluster --restart");
    let said = String::from_utf8_lossy(&restart.stdout);
    assert!(
        restart.status.success(),
        "--restart failed: {}{said}",
        String::from_utf8_lossy(&restart.stderr)
    );
    assert!(said.contains("node2 started"), "{said}");
    assert!(health(&api2), "node2 answers again");
    let again = c.node_pid("node2").expect("node2 runs again");
    assert_ne!(again, pid);

    // A second restart of a running node is refused in one line.
    let twice = Command::new(bin())
        .args(["dev-cluster", "--dir"])
        .arg(&c.dir)
        .args(["--restart", "node2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(
        !twice.status.success() && err.contains("is running"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Ctrl-C of the foreground dev-cluster stops the restarted node too.
    signal(c.child.id(), "-TERM");
    wait_for("dev-cluster to stop", Duration::from_secs(40), || {
        c.child.try_wait().unwrap().map(|_| ())
    });
    assert!(
        !alive(again),
        "the restarted node is stopped with the cluster"
    );
}
