//! Real faults for the multi-process tests, each undone by a guard's `Drop`: a SIGSTOPped
//! process (SIGCONT), iptables rules dropping a node's QUIC port on loopback (rules
//! deleted), a small tmpfs mounted as a data dir (unmounted). Tools that need root or a
//! binary say so: [`skip_unless`] prints "skipped: …" and the test returns.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Cluster;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether `tool` can be run (found on PATH or in the sbin directories).
pub fn have_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `Some(reason)` when the fault cannot be injected here; the caller prints and returns.
pub fn skip_unless(root: bool, tools: &[&str]) -> Option<String> {
    if root && !is_root() {
        return Some("not root".into());
    }
    tools
        .iter()
        .find(|t| !have_tool(t))
        .map(|t| format!("{t} not available"))
}

/// The QUIC port of node `i`, from its config file.
pub fn quic_port(c: &Cluster, i: usize) -> u16 {
    let text = std::fs::read_to_string(&c.nodes[i].config).expect("reading a node config");
    text.lines()
        .find(|l| l.trim_start().starts_with("quic_listen"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no quic_listen port in {}", c.nodes[i].config.display()))
}

/// A process stopped with SIGSTOP; continued (SIGCONT) when dropped, so a failing test
/// never leaves a frozen node behind.
pub struct Stopped {
    pid: u32,
    continued: bool,
}

impl Stopped {
    pub fn new(pid: u32) -> Stopped {
        signal("-STOP", pid);
        Stopped {
            pid,
            continued: false,
        }
    }

    /// SIGCONT now.
    pub fn resume(&mut self) {
        if !self.continued {
            signal("-CONT", self.pid);
            self.continued = true;
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume();
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}

/// iptables rules dropping every UDP packet to or from `port` on loopback (the node's
/// QUIC traffic, both ways); deleted when dropped.
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    pub fn udp_port(port: u16) -> Partition {
        let p = port.to_string();
        let rules: Vec<Vec<String>> = ["--dport", "--sport"]
            .iter()
            .map(|dir| {
                ["INPUT", "-i", "lo", "-p", "udp", dir, &p, "-j", "DROP"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .collect();
        let mut part = Partition { rules: Vec::new() };
        for r in rules {
            let ok = Command::new("iptables")
                .arg("-I")
                .args(&r)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "iptables -I {} failed", r.join(" "));
            part.rules.push(r);
        }
        part
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(r).status();
        }
    }
}

/// A tmpfs of `size` (e.g. "48m") mounted on `dir` (created); unmounted when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("creating the tmpfs mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "mount -t tmpfs on {} failed", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the node may still hold files open when the guard drops before it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The `q`-quantile of `v` (sorted in place).
pub fn quantile(v: &mut [std::time::Duration], q: f64) -> std::time::Duration {
    v.sort_unstable();
    if v.is_empty() {
        return std::time::Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}
