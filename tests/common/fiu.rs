//! Harness additions for I/O faults in real processes: start a node under libfiu's
//! POSIX preload (`fiu-run -x`), turn failure points on in the running process
//! (`fiu-ctrl`), and wait for a node to exit by itself.

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{bin, Cluster};

/// Whether `tool` can be run (`tool -h` starts at all: fiu-run and fiu-ctrl have no
/// `--version`).
pub fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Cluster {
    /// Base path of the libfiu control pipes of the nodes (`-f` of fiu-run/fiu-ctrl).
    fn fiu_ctrl_prefix(&self) -> PathBuf {
        self.dir.path().join("fiu-ctrl")
    }

    /// Start node `i` (it must be stopped) under `fiu-run -x`, with no failure point
    /// enabled yet; [`Cluster::fiu_enable`] turns one on later.
    pub fn start_node_under_fiu(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} is already running");
        // fiu-run execs the program: the child's pid is the node's.
        let mut fiu = Command::new("fiu-run");
        fiu.arg("-x")
            .arg("-f")
            .arg(self.fiu_ctrl_prefix())
            .arg(bin());
        self.spawn_node(i, fiu);
    }

    /// Run a libfiu control command (`enable name=posix/io/sync/fsync`) in node `i`,
    /// which must have been started by [`Cluster::start_node_under_fiu`].
    pub fn fiu_enable(&self, i: usize, command: &str) {
        let out = Command::new("fiu-ctrl")
            .arg("-f")
            .arg(self.fiu_ctrl_prefix())
            .arg("-c")
            .arg(command)
            .arg(self.pid(i).to_string())
            .output()
            .expect("running fiu-ctrl");
        assert!(
            out.status.success(),
            "fiu-ctrl -c {command:?} on {} failed: {}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Wait (bounded) for node `i` to exit by itself; its status, or `None` if it still
    /// runs after `timeout`. A node that exited counts as stopped afterwards.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            let child = self.children[i].as_mut()?;
            if let Ok(Some(st)) = child.try_wait() {
                self.children[i] = None;
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Status of `GET /health` on node `i`, `None` if it does not answer at all.
    pub fn health_status(&self, i: usize) -> Option<u16> {
        let url = format!("{}/health", self.nodes[i].api);
        self.agent
            .get(&url)
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Whether node `i` has `ref` live on `hash` in its own ref records.
    pub fn has_live_ref(&self, i: usize, hash: &str, r: &str) -> bool {
        let info = self.get_json(i, &format!("/v1/blocks/{hash}/info"));
        info["local"]["refs"].as_array().is_some_and(|refs| {
            refs.iter()
                .any(|x| x["ref"].as_str() == Some(r) && x["state"].as_str() == Some("live"))
        })
    }
}
