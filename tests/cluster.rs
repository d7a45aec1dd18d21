//! Multi-process scenarios of a 3-node cluster with replication factor 3:
//! real `blocknode` processes talking QUIC with mutual TLS, driven through the HTTP API
//! and the CLI as a user would.

mod common;

use std::time::Duration;

use common::{files_with_suffix, random_bytes, set_keys, wait_for, Cluster};

/// Short timeouts so failure paths finish well inside the test bounds.
fn fast(config: &str) -> String {
    set_keys(
        config,
        &[
            ("block_rw_timeout", "\"5s\""),
            ("need_block_timeout", "\"2s\""),
            ("resync_backoff_base", "\"1s\""),
        ],
    )
}

#[test]
fn put_through_one_node_reads_identical_through_every_other() {
    let c = Cluster::start(3, 3, "10m", fast);
    let mut blocks = vec![
        random_bytes(300_000),
        b"hello blocknode".to_vec(),
        Vec::new(),
    ];
    blocks.push("compressible text ".repeat(20_000).into_bytes());
    for data in &blocks {
        let hash = c.put(0, data, Some("t1"));
        for i in 1..3 {
            let r = c.get(i, &hash);
            assert_eq!(r.status, 200, "GET through {} failed", c.nodes[i].name);
            assert!(
                r.body == *data,
                "bytes read through {} differ from those written",
                c.nodes[i].name
            );
        }
        // The PUT answers at the write quorum (2 of 3); the third copy lands just after.
        for i in 0..3 {
            wait_for(
                &format!("{} to store a copy (RF3)", c.nodes[i].name),
                Duration::from_secs(10),
                || c.has_block(i, &hash).then_some(()),
            );
        }
    }
    // The CLI sees the same block.
    let (ok, out, err) = c.cli(1, &["block", "info", &blake_hex(&blocks[1])]);
    assert!(ok, "blocknode block info failed: {err}");
    assert!(
        out.contains(&c.nodes[0].id[..8]),
        "block info should list holders: {out}"
    );
}

fn blake_hex(data: &[u8]) -> String {
    blocknode_actors::blake2sum(data).to_hex()
}

#[test]
fn with_one_node_stopped_puts_and_gets_still_succeed() {
    let mut c = Cluster::start(3, 3, "10m", fast);
    c.wait_peers_up(0);
    c.stop(2);
    let data = random_bytes(100_000);
    let hash = c.put(0, &data, Some("r"));
    let r = c.get(1, &hash);
    assert_eq!(r.status, 200, "GET with one node down");
    assert!(r.body == data, "bytes differ with one node down");
    assert!(
        c.has_block(0, &hash) && c.has_block(1, &hash),
        "the two live nodes hold the block"
    );
}

#[test]
fn wiped_node_gets_every_block_back_after_repair() {
    let mut c = Cluster::start(3, 3, "10m", fast);
    let hashes: Vec<String> = (0..20)
        .map(|i| c.put(0, &random_bytes(20_000 + i), Some(&format!("ref{i}"))))
        .collect();
    c.stop(1);
    std::fs::remove_dir_all(&c.nodes[1].data_dir).expect("wiping node 1's data dir");
    // A new, empty disk: the operator declares it (else the node refuses an unmarked dir).
    std::fs::create_dir_all(&c.nodes[1].data_dir).expect("a new data dir");
    std::fs::write(c.nodes[1].data_dir.join("blocknode-new-dir"), b"").expect("declaring it new");
    c.start_node(1);
    c.wait_ready(1);
    c.wait_peers_up(1);
    let r = c.request(1, "POST", "/v1/repair", None);
    assert!(
        r.status == 202 || r.status == 200,
        "POST /v1/repair: {}",
        String::from_utf8_lossy(&r.body)
    );
    wait_for(
        "node 1 to hold every block again after repair",
        Duration::from_secs(40),
        || hashes.iter().all(|h| c.has_block(1, h)).then_some(()),
    );
}

#[test]
fn flipped_byte_is_quarantined_and_the_block_fetched_again() {
    let c = Cluster::start(3, 3, "10m", fast);
    let data = random_bytes(50_000);
    let hash = c.put(0, &data, Some("keep"));
    let file = c
        .block_files(0, &hash)
        .pop()
        .expect("node 0 stores the block");
    let mut bytes = std::fs::read(&file).expect("reading the block file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).expect("flipping a byte");
    let r = c.get(0, &hash);
    assert_eq!(r.status, 200, "GET of a block rotten on one holder");
    assert!(
        r.body == data,
        "GET must return the right bytes, not the rotten copy"
    );
    let quarantined = files_with_suffix(&c.nodes[0].data_dir, ".corrupted");
    assert_eq!(
        quarantined.len(),
        1,
        "the rotten copy should be kept as .corrupted"
    );
    wait_for(
        "node 0 to fetch a good copy again",
        Duration::from_secs(30),
        || {
            let f = c.block_files(0, &hash).pop()?;
            (std::fs::read(f).ok()? == data).then_some(())
        },
    );
}

#[test]
fn dropped_blocks_are_collected_everywhere_and_referenced_ones_stay() {
    let c = Cluster::start(3, 3, "1s", fast);
    let a = random_bytes(10_000);
    let b = random_bytes(10_000);
    let ha = c.put(0, &a, Some("r1"));
    let hb = c.put(0, &b, Some("r1"));
    let r = c.request(1, "PUT", &format!("/v1/blocks/{hb}/refs/r2"), None);
    assert_eq!(r.status, 204, "adding a second ref");
    for h in [&ha, &hb] {
        let r = c.request(2, "DELETE", &format!("/v1/blocks/{h}/refs/r1"), None);
        assert_eq!(r.status, 204, "dropping ref r1");
    }
    // Dropped again: still 204 (idempotent); a dropped id can be added again (and
    // dropped again, so that A is collected below).
    let r = c.request(2, "DELETE", &format!("/v1/blocks/{ha}/refs/r1"), None);
    assert_eq!(r.status, 204, "dropping a ref twice is idempotent");
    let r = c.request(0, "PUT", &format!("/v1/blocks/{ha}/refs/r1"), None);
    assert_eq!(r.status, 204, "re-adding a dropped ref id");
    let r = c.request(1, "DELETE", &format!("/v1/blocks/{ha}/refs/r1"), None);
    assert_eq!(r.status, 204, "dropping the re-added ref");
    // rc→0 schedules the resync after gc_delay + 10 s.
    wait_for(
        "block A to be deleted from every node",
        Duration::from_secs(45),
        || (0..3).all(|i| !c.has_block(i, &ha)).then_some(()),
    );
    for i in 0..3 {
        assert!(
            c.has_block(i, &hb),
            "block B still has ref r2 and must stay on {}",
            c.nodes[i].name
        );
    }
    assert_eq!(c.get(1, &ha).status, 404, "a collected block reads as 404");
}

#[test]
fn a_node_with_a_certificate_from_another_ca_cannot_join_or_call() {
    let c = Cluster::start(3, 3, "10m", fast);
    let hash = c.put(0, &random_bytes(5000), Some("r"));
    // An intruder: its own CA, a config that lists the real members plus itself.
    let evil = c.dir.path().join("evil");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ca = evil.join("ca");
    run(&["cert", "ca", "--out", ca.to_str().unwrap()]);
    let evil_id = run(&[
        "cert",
        "node",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "evil",
        "--out",
        evil.join("certs").to_str().unwrap(),
    ]);
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, quic) = (
        free(),
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    );
    let base = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let members = &base[base.find("[[members]]").unwrap()..];
    let cfg = format!(
        "data_dir = \"{d}/data\"\nmetadata_dir = \"{d}/meta\"\nreplication_factor = 3\n\
         quic_listen = \"127.0.0.1:{quic}\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
         ca_cert = \"{d}/certs/ca.crt\"\nnode_cert = \"{d}/certs/node.crt\"\nnode_key = \"{d}/certs/node.key\"\n\
         admin_token_file = \"{d}/admin.token\"\nblock_rw_timeout = \"3s\"\nneed_block_timeout = \"2s\"\n{members}\n\
         [[members]]\nid = \"{evil_id}\"\naddr = \"127.0.0.1:{quic}\"\nzone = \"z9\"\n",
        d = evil.display()
    );
    std::fs::write(evil.join("config.toml"), cfg).unwrap();
    let log = std::fs::File::create(evil.join("node.log")).unwrap();
    let mut child = std::process::Command::new(common::bin())
        .args([
            "run",
            "--config",
            evil.join("config.toml").to_str().unwrap(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let api = format!("http://127.0.0.1:{http}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    wait_for("the intruder's API", Duration::from_secs(20), || {
        agent.get(&format!("{api}/health")).call().ok().map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(3));
    let token = std::fs::read_to_string(evil.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let auth = format!("Bearer {token}");
    // It sees every real node down.
    let st: serde_json::Value = serde_json::from_slice(
        &agent
            .get(&format!("{api}/v1/status"))
            .header("Authorization", &auth)
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap(),
    )
    .unwrap();
    for p in st["peers"].as_array().unwrap() {
        if p["id"].as_str() != Some(evil_id.as_str()) {
            assert_eq!(
                p["up"].as_bool(),
                Some(false),
                "the intruder must not connect to {p}"
            );
        }
    }
    // It cannot read the cluster's blocks, nor write through it. It could not ask the
    // holders, so it says "unavailable", not "not found".
    let r = agent
        .get(&format!("{api}/v1/blocks/{hash}"))
        .header("Authorization", &auth)
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        503,
        "the intruder must not fetch a cluster block"
    );
    let r = agent
        .put(&format!("{api}/v1/blocks?unreferenced=true"))
        .header("Authorization", &auth)
        .send(&b"intrusion"[..])
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        503,
        "a write through the intruder cannot reach quorum"
    );
    // The real nodes never list it as a peer, nor stored anything from it.
    for i in 0..3 {
        let s = c.get_json(i, "/v1/status");
        assert!(
            s["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["id"].as_str() != Some(evil_id.as_str())),
            "{} lists the intruder as a peer",
            c.nodes[i].name
        );
        assert!(!c.has_block(i, &blocknode_actors::blake2sum(b"intrusion").to_hex()));
    }
    drop(guard);
}
