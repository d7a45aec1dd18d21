//! Objects and garbage collection on a 3-node cluster with replication factor 3: objects
//! sharing chunks when one is dropped, an upload cut off mid-body, and objects dropped
//! while the same chunks are uploaded again.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::objects::{chunks_of, fast, live_refs, pseudo_random, put_object};
use common::raw_http::RawConn;
use common::{wait_for, Cluster};

#[test]
fn dropping_one_of_two_objects_that_share_chunks_collects_only_its_own() {
    let c = Cluster::start(3, 3, "1s", fast);
    let shared = pseudo_random(6 << 20, 2);
    let a: Vec<u8> = [shared.clone(), pseudo_random(3 << 20, 3)].concat();
    let b: Vec<u8> = [shared, pseudo_random(3 << 20, 4)].concat();
    let ca: HashSet<String> = chunks_of(&a, true).into_iter().map(|c| c.0).collect();
    let cb: HashSet<String> = chunks_of(&b, true).into_iter().map(|c| c.0).collect();
    let own_a: Vec<&String> = ca.difference(&cb).collect();
    assert!(!own_a.is_empty() && ca.intersection(&cb).count() > 0);

    let ida = put_object(&c, 0, &a, "a")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let idb = put_object(&c, 1, &b, "b")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Every block carries its object's ref, and no upload ref is left live.
    for h in ca.iter().chain([&ida]) {
        let refs = live_refs(&c, 0, h);
        assert!(refs.contains(&format!("@obj:{ida}:a")), "{h}: {refs:?}");
        assert!(
            !refs.iter().any(|r| r.starts_with("@upload:")),
            "{h}: {refs:?}"
        );
    }
    let r = c.request(2, "DELETE", &format!("/v1/objects/{ida}/refs/a"), None);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));

    // rc → 0 schedules the delete after gc_delay + 10 s.
    wait_for(
        "A's own chunks and manifest to be collected everywhere",
        Duration::from_secs(60),
        || {
            own_a
                .iter()
                .map(|h| h.as_str())
                .chain([ida.as_str()])
                .all(|h| (0..3).all(|i| !c.has_block(i, h)))
                .then_some(())
        },
    );
    for h in &cb {
        for i in 0..3 {
            assert!(c.has_block(i, h), "B's chunk {h} must stay on node {i}");
        }
    }
    let got = c.request(2, "GET", &format!("/v1/objects/{idb}"), None);
    assert_eq!(got.status, 200);
    assert!(got.body == b, "B reads back whole");
    assert_eq!(
        c.request(0, "GET", &format!("/v1/objects/{ida}"), None)
            .status,
        404
    );
}

#[test]
fn a_body_cut_off_mid_upload_leaves_no_ref_and_its_chunks_are_collected() {
    let c = Cluster::start(3, 3, "1s", fast);
    let data = pseudo_random(12 << 20, 5);
    // The chunks the node can cut from the first 12 MiB without the end of the body.
    let cut = chunks_of(&data, false);
    assert!(cut.len() >= 3, "{} chunks cut", cut.len());
    let mut conn = RawConn::connect(&c.nodes[0].api, &c.nodes[0].token);
    let declared = (32u64 << 20).to_string();
    conn.send(
        "PUT",
        "/v1/objects?ref=cut",
        &[("Content-Length", &declared)],
        &data,
    )
    .expect("sending the first part of the body");
    wait_for(
        "the first chunk to be stored before the cut",
        Duration::from_secs(20),
        || (0..3).any(|i| c.has_block(i, &cut[0].0)).then_some(()),
    );
    drop(conn);
    // No live ref on any chunk once the upload noticed the cut.
    wait_for(
        "the cut upload's refs to be dropped",
        Duration::from_secs(20),
        || {
            cut.iter()
                .all(|(h, _, _)| (0..3).all(|i| live_refs(&c, i, h).is_empty()))
                .then_some(())
        },
    );
    wait_for(
        "the cut upload's chunks to be collected everywhere",
        Duration::from_secs(60),
        || {
            cut.iter()
                .all(|(h, _, _)| (0..3).all(|i| !c.has_block(i, h)))
                .then_some(())
        },
    );
    assert!(
        c.log(0).contains("cut off") || c.log(0).contains("upload"),
        "the node logs nothing about the cut"
    );
}

/// The seam between an upload's "the holders have this chunk" and its bare ref: objects
/// A are dropped, then the same bytes are uploaded as B at random moments around the
/// time GC collects A's blocks (gc_delay + 10 s after the drop), many at once. A chunk
/// reported stored but unreferenced must go up with its bytes (whose write stops a
/// delete decided before it), never as a bare ref that GC's delete can overtake: every
/// B reads back whole, and its blocks stay. The nodes pause up to 1.5 s between a
/// chunk's presence check and its bare ref (`BLOCKNODE_TEST_DEDUP_PAUSE_MS`), so that a
/// bare ref taken on the strength of an unreferenced copy has a wide window in which
/// GC's delete could overtake it.
#[test]
fn dropping_objects_while_the_same_chunks_are_uploaded_again_never_loses_the_new_ones() {
    const N: usize = 120;
    // Inherited by the nodes this test starts (the hook only widens a seam: other
    // tests of this file starting nodes meanwhile only run slower).
    std::env::set_var("BLOCKNODE_TEST_DEDUP_PAUSE_MS", "1500");
    let c = Cluster::start(3, 3, "1s", fast);
    let objs: Vec<Vec<u8>> = (0..N)
        .map(|i| pseudo_random(64 << 10, 1000 + i as u64))
        .collect();
    let ids: Vec<String> = objs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            put_object(&c, i % 3, d, "a")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let r = c.request(i % 3, "DELETE", &format!("/v1/objects/{id}/refs/a"), None);
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    }
    let dropped = Instant::now();
    let apis: Vec<(String, String)> = c
        .nodes
        .iter()
        .map(|n| (n.api.clone(), n.token.clone()))
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (objs, ids, apis) = (&objs, &ids, &apis);
            s.spawn(move || {
                for i in (t..N).step_by(4) {
                    let at = Duration::from_millis(rand::random_range(9_000..14_000));
                    if let Some(wait) = at.checked_sub(dropped.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let (api, token) = &apis[i % 3];
                    let mut res = ureq::put(&format!("{api}/v1/objects?ref=b"))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send(&objs[i][..])
                        .unwrap_or_else(|e| panic!("object {i}: PUT failed: {e}"));
                    let v: serde_json::Value = serde_json::from_slice(
                        &res.body_mut().read_to_vec().expect("the PUT answer"),
                    )
                    .expect("JSON");
                    assert_eq!(v["id"].as_str(), Some(&*ids[i]), "object {i}");
                }
            });
        }
    });
    // Past every GC decision about A's blocks, and time for resync to settle.
    while dropped.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, id) in ids.iter().enumerate() {
        let got = c.request((i + 1) % 3, "GET", &format!("/v1/objects/{id}"), None);
        assert_eq!(
            got.status, 200,
            "object {i} ({id}) lost after the interleaving"
        );
        assert!(got.body == objs[i], "object {i} reads back different bytes");
    }
    let chunk = |i: usize| chunks_of(&objs[i], true)[0].0.clone();
    wait_for(
        "every B block on every holder",
        Duration::from_secs(30),
        || {
            (0..N)
                .all(|i| (0..3).all(|n| c.has_block(n, &ids[i]) && c.has_block(n, &chunk(i))))
                .then_some(())
        },
    );
}
