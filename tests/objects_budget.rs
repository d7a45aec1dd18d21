//! Object uploads inside the client RAM budget: a node whose pool holds exactly one
//! window still stores a small object, and many parallel uploads on the default budget
//! all end, none waiting for memory another one holds while it waits too.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::objects::{fast, pseudo_random};
use common::{set_keys, Cluster};

/// A body sent in two halves with a pause between them: every upload of a batch holds
/// its window before any of them reaches its first chunk.
struct TwoHalves {
    data: Vec<u8>,
    at: usize,
    pause: Duration,
}

impl std::io::Read for TwoHalves {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let half = self.data.len().div_ceil(2);
        if self.at == half {
            std::thread::sleep(self.pause);
        }
        let end = if self.at < half { half } else { self.data.len() };
        let n = buf.len().min(end - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `n` object PUTs of `len` bytes (each distinct) through node 0 at once, each body
/// pausing for 2 s halfway; the statuses, or a failure after `limit`.
fn parallel_puts(c: &Cluster, n: usize, len: usize, limit: Duration) -> Vec<u16> {
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let url = format!("{}/v1/objects?ref=par-{i}", c.nodes[0].api);
        let auth = format!("Bearer {}", c.nodes[0].token);
        let tx = tx.clone();
        let data = pseudo_random(len, i as u64 + 1);
        // Detached: a PUT that hangs must not hang the test (the cluster is killed on
        // drop, which ends it).
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into();
            let status = agent
                .put(&url)
                .header("Authorization", &auth)
                .send(ureq::SendBody::from_owned_reader(TwoHalves {
                    data,
                    at: 0,
                    pause: Duration::from_secs(2),
                }))
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            let _ = tx.send(status);
        });
    }
    drop(tx);
    let started = Instant::now();
    let mut statuses = Vec::new();
    while statuses.len() < n {
        let left = limit.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(s) => statuses.push(s),
            Err(_) => panic!(
                "{} of {n} object PUTs still running after {limit:?}",
                n - statuses.len()
            ),
        }
    }
    statuses
}

/// The client pool is the whole of one window (max_block_size 4 MiB, budget 8 MiB): the
/// first chunk is paid out of the window instead of waiting for a pool the window fills.
#[test]
fn a_one_byte_object_is_stored_when_the_pool_holds_just_one_window() {
    let c = Cluster::start(1, 1, "10m", |cfg| {
        set_keys(
            &fast(cfg),
            &[
                ("max_block_size", "\"4MiB\""),
                ("block_ram_buffer_max", "\"8MiB\""),
            ],
        )
    });
    let statuses = parallel_puts(&c, 1, 1, Duration::from_secs(20));
    assert_eq!(statuses, vec![201]);
}

/// 24 uploads at once on the default budget: their windows alone exceed the client pool,
/// and every one is stored within 30 s.
#[test]
fn parallel_small_object_puts_all_end_on_the_default_budget() {
    let c = Cluster::start(1, 1, "10m", fast);
    let statuses = parallel_puts(&c, 24, 10 << 10, Duration::from_secs(30));
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
}
