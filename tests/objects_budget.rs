//! Objects inside the client RAM budget: a node whose pool holds exactly one window
//! still stores a small object, many parallel uploads on the default budget all end,
//! and so do many parallel downloads on the smallest pool: none waits for memory
//! another one holds while it waits too.

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
        let end = if self.at < half {
            half
        } else {
            self.data.len()
        };
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

/// A client pool of 4 MiB (the smallest: one largest block) and 8 downloads of a 16 MiB
/// object at once, 20 times: no download waits for memory that finished chunks queued
/// behind its own wait hold, so every round ends within 60 s (reading 4 chunks at once,
/// the first round already hung).
#[test]
fn parallel_object_gets_on_a_small_pool_all_end() {
    let c = Cluster::start(1, 1, "10m", |cfg| {
        set_keys(
            &fast(cfg),
            &[
                ("max_block_size", "\"4MiB\""),
                ("block_ram_buffer_max", "\"8MiB\""),
            ],
        )
    });
    let data = pseudo_random(16 << 20, 7);
    let put = c.request(0, "PUT", "/v1/objects?ref=big", Some(&data));
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let id = put.json()["id"].as_str().expect("an id").to_string();
    let want = blocknode_actors::hash::blake2sum(&data);
    const GETS: usize = 8;
    for round in 0..20 {
        let (tx, rx) = mpsc::channel();
        for _ in 0..GETS {
            let url = format!("{}/v1/objects/{id}", c.nodes[0].api);
            let auth = format!("Bearer {}", c.nodes[0].token);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .into();
                let got = agent
                    .get(&url)
                    .header("Authorization", &auth)
                    .call()
                    .ok()
                    .and_then(|mut r| {
                        r.body_mut()
                            .with_config()
                            .limit(128 << 20)
                            .read_to_vec()
                            .ok()
                    });
                let _ = tx.send(got.map(|b| blocknode_actors::hash::blake2sum(&b)));
            });
        }
        drop(tx);
        let started = Instant::now();
        for i in 0..GETS {
            let left = Duration::from_secs(60).saturating_sub(started.elapsed());
            let got = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("round {round}: {} GETs still running after 60 s", GETS - i)
            });
            assert_eq!(
                got,
                Some(want),
                "round {round}: a GET failed or read wrong bytes"
            );
        }
    }
}
