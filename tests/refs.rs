//! Refs that mean what they say, with real processes: a ref to a block GC has collected
//! everywhere is refused (404 `block_missing`) instead of acknowledged for nothing, and a
//! block cannot be stored without a ref by accident (no ref, a typo in the query).

mod common;

use std::time::Duration;

use common::{random_bytes, set_keys, wait_for, Cluster};

#[test]
fn a_ref_to_a_block_collected_everywhere_is_refused_and_a_put_needs_a_ref() {
    let c = Cluster::start(3, 3, "2s", |s| {
        set_keys(s, &[("compression_level", "\"none\"")])
    });
    for i in 0..3 {
        c.wait_peers_up(i);
    }

    // A PUT says what keeps the block: a ref, or the explicit wish for none.
    let data = random_bytes(4096);
    let r = c.request(0, "PUT", "/v1/blocks", Some(&data));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "ref_required");
    let r = c.request(0, "PUT", "/v1/blocks?reff=a", Some(&data));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("reff"),
        "the unknown parameter is named: {msg}"
    );
    let (ok, _, err) = c.cli(0, &["put", "/dev/null"]);
    assert!(!ok, "the CLI's put needs --ref or --unreferenced");
    assert!(err.contains("--ref"), "{err}");

    // PUT with r1, drop r1, and wait until GC has deleted every copy.
    let hash = c.put(0, &data, Some("r1"));
    let r = c.request(0, "GET", &format!("/v1/blocks/{hash}?color=red"), None);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("color"),
        "the unknown parameter is named: {msg}"
    );
    for i in 0..3 {
        wait_for("the block on every holder", Duration::from_secs(10), || {
            c.has_block(i, &hash).then_some(())
        });
    }
    let r = c.request(1, "DELETE", &format!("/v1/blocks/{hash}/refs/r1"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    wait_for("GC to delete every copy", Duration::from_secs(60), || {
        (0..3).all(|i| !c.has_block(i, &hash)).then_some(())
    });

    // A new bare ref is refused: nothing would keep a block that is gone.
    for via in 0..3 {
        let r = c.request(via, "PUT", &format!("/v1/blocks/{hash}/refs/r2"), None);
        assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["code"], "block_missing");
    }
    for i in 0..3 {
        let rc = c.get_json(i, &format!("/v1/blocks/{hash}/info"))["local"]["rc"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(rc, 0, "node {i} counted a refused ref");
    }

    // What the client does then: PUT the block again with the ref.
    let again = c.put(2, &data, Some("r2"));
    assert_eq!(again, hash);
    let r = c.get(0, &hash);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    // A bare ref to a stored block is fine.
    let r = c.request(0, "PUT", &format!("/v1/blocks/{hash}/refs/r3"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

/// Every node's view of a block: (holders present, holders' rc, this node's refs).
fn views(c: &Cluster, hash: &str) -> Vec<(Vec<bool>, Vec<u64>, serde_json::Value)> {
    (0..3)
        .map(|i| {
            let v = c.get_json(i, &format!("/v1/blocks/{hash}/info"));
            let holders = v["holders"].as_array().cloned().unwrap_or_default();
            (
                holders.iter().map(|h| h["present"] == true).collect(),
                holders
                    .iter()
                    .map(|h| h["rc"].as_u64().unwrap_or(0))
                    .collect(),
                v["local"]["refs"].clone(),
            )
        })
        .collect()
}

/// Wait until every node holds the block with `r` live and rc 1 everywhere.
fn wait_live_everywhere(c: &Cluster, hash: &str, what: &str) {
    let want = serde_json::json!([{ "ref": "r", "state": "live" }]);
    wait_for(what, Duration::from_secs(30), || {
        let v = views(c, hash);
        v.iter()
            .all(|(present, rc, refs)| {
                present.len() == 3
                    && present.iter().all(|p| *p)
                    && rc.iter().all(|n| *n == 1)
                    && *refs == want
            })
            .then_some(())
    });
}

#[test]
fn a_dropped_ref_name_is_added_again_to_the_same_and_another_block_and_stays() {
    let mut c = Cluster::start(3, 3, "2s", |s| {
        set_keys(s, &[("compression_level", "\"none\"")])
    });
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    let a = random_bytes(4096);
    let b = random_bytes(4096);
    let ha = c.put(0, &a, Some("r"));
    let r = c.request(1, "DELETE", &format!("/v1/blocks/{ha}/refs/r"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    // The same name again, on the same block (a bare ref, through another node) and on
    // another block (with its bytes).
    let r = c.request(2, "PUT", &format!("/v1/blocks/{ha}/refs/r"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let hb = c.put(1, &b, Some("r"));
    wait_live_everywhere(&c, &ha, "block A with r live on every node");
    wait_live_everywhere(&c, &hb, "block B with r live on every node");

    // Past GC's window for the dropped incarnation (gc_delay 2 s, then the resync's
    // wait), both stay.
    std::thread::sleep(Duration::from_secs(16));
    for (h, data) in [(&ha, &a), (&hb, &b)] {
        for i in 0..3 {
            assert!(c.has_block(i, h), "node {i} lost block {h} to GC");
            let r = c.get(i, h);
            assert_eq!(r.status, 200);
            assert_eq!(&r.body, data);
        }
    }
    wait_live_everywhere(&c, &ha, "block A still live after GC's window");
    wait_live_everywhere(&c, &hb, "block B still live after GC's window");

    // A restart of every node changes nothing: the records are durable, and
    // anti-entropy after the restart agrees on them.
    for i in 0..3 {
        c.restart(i);
    }
    for i in 0..3 {
        c.wait_peers_up(i);
    }
    wait_live_everywhere(&c, &ha, "block A live on every node after the restarts");
    wait_live_everywhere(&c, &hb, "block B live on every node after the restarts");
    std::thread::sleep(Duration::from_secs(4));
    for h in [&ha, &hb] {
        for i in 0..3 {
            assert!(
                c.has_block(i, h),
                "node {i} lost block {h} after the restart"
            );
        }
    }
    // And the name can be dropped again: the newest incarnation goes.
    let r = c.request(0, "DELETE", &format!("/v1/blocks/{ha}/refs/r"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    wait_for(
        "A's r dropped on every node",
        Duration::from_secs(30),
        || {
            views(&c, &ha)
                .iter()
                .all(|(_, rc, refs)| rc.iter().all(|n| *n == 0) && refs[0]["state"] == "dropped")
                .then_some(())
        },
    );
}
