//! Crash safety, a full disk and a bounded memory footprint (issue #8), with real
//! processes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{files_with_suffix, random_bytes, wait_for, Cluster};

fn set(config: &str, extra: &str) -> String {
    // Top-level keys go before the first [[members]] table.
    match config.find("[[members]]") {
        Some(i) => format!("{}{extra}\n{}", &config[..i], &config[i..]),
        None => format!("{config}\n{extra}\n"),
    }
}

#[test]
fn killed_mid_load_twenty_times_every_acknowledged_put_survives() {
    let mut c = Cluster::start(1, 1, "10m", |s| set(s, "compression_level = \"none\""));
    // (hash, bytes) of every put the node acknowledged with 201.
    type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    for round in 0..20 {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let (api, token) = (c.nodes[0].api.clone(), c.nodes[0].token.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .into();
                    while !stop.load(Ordering::Relaxed) {
                        let data = random_bytes(1 << 20);
                        let r = agent
                            .put(&format!("{api}/v1/blocks?unreferenced=true"))
                            .header("Authorization", format!("Bearer {token}"))
                            .send(&data[..]);
                        // Only a 201 is an acknowledgement; anything else may be lost.
                        if let Ok(mut r) = r {
                            if r.status().as_u16() == 201 {
                                let v: serde_json::Value = serde_json::from_slice(
                                    &r.body_mut().read_to_vec().unwrap_or_default(),
                                )
                                .unwrap_or_default();
                                if let Some(h) = v["hash"].as_str() {
                                    acked.lock().unwrap().push((h.to_string(), data));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 61 * (round % 7)));
        c.kill(0);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        c.start_node(0);
        c.wait_ready(0);
        assert!(
            start.elapsed() < Duration::from_secs(50),
            "kill loop too slow (round {round})"
        );
    }
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() >= 20,
        "the load should have acknowledged puts: {}",
        acked.len()
    );
    for (h, data) in acked.iter() {
        let r = c.get(0, h);
        assert_eq!(r.status, 200, "acknowledged block {h} lost after kill -9");
        assert!(
            r.body == *data,
            "acknowledged block {h} reads back different bytes"
        );
    }
    let dir = &c.nodes[0].data_dir;
    assert!(
        files_with_suffix(dir, "")
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp.")),
        "temp files left after restart"
    );
    // Every stored file verifies (plain blocks: the name is the hash of the content).
    for f in files_with_suffix(dir, "") {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.len() == 64 {
            let b = std::fs::read(&f).unwrap();
            assert_eq!(
                blocknode_actors::blake2sum(&b).to_hex(),
                name,
                "file {} fails verification",
                f.display()
            );
        }
    }
    let st = c.get_json(0, "/v1/status");
    assert!(
        st["resync"]["queue_length"].as_u64().is_some(),
        "metadata store reopened: {st}"
    );
}

#[test]
fn a_full_data_dir_refuses_puts_with_507_and_recovers_when_space_is_freed() {
    let c = Cluster::start(1, 1, "1s", |s| {
        set(
            s,
            "compression_level = \"none\"\ndata_dir_capacity = \"100KiB\"",
        )
    });
    let mut stored = Vec::new();
    let full = loop {
        let data = random_bytes(30_000);
        let r = c.request(0, "PUT", "/v1/blocks?ref=r", Some(&data));
        if r.status == 201 {
            stored.push((r.json()["hash"].as_str().unwrap().to_string(), data));
            assert!(stored.len() < 10, "capacity never reached");
            continue;
        }
        break r;
    };
    assert_eq!(
        full.status,
        507,
        "disk full: {}",
        String::from_utf8_lossy(&full.body)
    );
    assert_eq!(full.json()["code"], "disk_full");
    assert!(
        full.json()["error"].as_str().unwrap().contains("disk full"),
        "{}",
        full.json()
    );
    assert!(
        files_with_suffix(&c.nodes[0].data_dir, "")
            .iter()
            .all(|p| !p.to_string_lossy().contains(".tmp.")),
        "no partial file"
    );
    for (h, data) in &stored {
        assert!(
            c.get(0, h).body == *data,
            "reads keep working when the disk is full"
        );
    }
    // Free space: drop the refs; after gc_delay (+10 s) the blocks are collected.
    for (h, _) in &stored {
        assert_eq!(
            c.request(0, "DELETE", &format!("/v1/blocks/{h}/refs/r"), None)
                .status,
            204
        );
    }
    wait_for("space to be freed by GC", Duration::from_secs(40), || {
        (c.request(
            0,
            "PUT",
            "/v1/blocks?unreferenced=true",
            Some(&random_bytes(30_000)),
        )
        .status
            == 201)
            .then_some(())
    });
}

#[test]
fn sixty_four_concurrent_16mib_puts_stay_within_the_ram_budget() {
    let c = Cluster::start(1, 1, "10m", |s| {
        set(
            s,
            "data_fsync = false\ncompression_level = \"none\"\nblock_ram_buffer_max = \"64MiB\"",
        )
    });
    let pid = c.pid(0);
    let bufs: Vec<Arc<Vec<u8>>> = (0..8).map(|_| Arc::new(random_bytes(16 << 20))).collect();
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let data = bufs[i % 8].clone();
            let (api, token) = (c.nodes[0].api.clone(), c.nodes[0].token.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(55)))
                    .build()
                    .into();
                agent
                    .put(&format!("{api}/v1/blocks?unreferenced=true"))
                    .header("Authorization", format!("Bearer {token}"))
                    .send(&data[..])
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 201),
        "every put should succeed, waiting its turn: {statuses:?}"
    );
    let peak = common::load::peak_rss(pid);
    let limit = (64 << 20) + (64 << 20);
    eprintln!("peak RSS {} MiB with a 64 MiB budget", peak >> 20);
    assert!(
        peak > 0 && peak < limit,
        "peak RSS {} MiB over budget + 64 MiB",
        peak >> 20
    );
}
