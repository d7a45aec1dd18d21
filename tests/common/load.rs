//! Load and process-state helpers for the memory tests: timed concurrent PUTs, peak RSS,
//! and a SIGSTOP that is always undone.

use std::process::Command;
use std::time::{Duration, Instant};

/// Read a process's peak resident set (VmHWM) in bytes; 0 if it cannot be read.
pub fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The outcome of one PUT: HTTP status (0 when the request itself failed) and how long
/// it took.
#[derive(Debug, Clone, Copy)]
pub struct TimedPut {
    pub status: u16,
    pub took: Duration,
}

/// PUT `data` to `api` with `token` from a fresh agent, bounded by `timeout`.
pub fn timed_put(api: &str, token: &str, data: &[u8], timeout: Duration) -> TimedPut {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let start = Instant::now();
    let status = agent
        .put(&format!("{api}/v1/blocks?unreferenced=true"))
        .header("Authorization", format!("Bearer {token}"))
        .send(data)
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    TimedPut {
        status,
        took: start.elapsed(),
    }
}

/// A process stopped with SIGSTOP, continued with SIGCONT when this is dropped (also
/// when the test panics), so the cluster's teardown can kill it.
pub struct Stopped {
    pid: u32,
}

impl Stopped {
    /// SIGSTOP `pid`.
    pub fn new(pid: u32) -> Stopped {
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not SIGSTOP process {pid}");
        Stopped { pid }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
    }
}
