//! Repairs asked after a read: each holder that lacked the block is asked once per hash
//! per interval, however many GETs miss it.

use super::*;

#[actix_rt::test]
async fn holders_are_asked_to_resync_once_per_hash_however_many_reads_miss_it() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let missing = block("nobody has it").hash();
    let other = block("another miss").hash();
    // 50 GETs of a hash nobody holds (a 404 asked again and again), then one of another.
    for _ in 0..50 {
        r.resync
            .send(RepairAfterRead {
                hash: missing,
                nodes: vec![r.b, r.c],
            })
            .await
            .unwrap();
    }
    r.resync
        .send(RepairAfterRead {
            hash: other,
            nodes: vec![r.b],
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = r.peers.send(ResyncAsks).await.unwrap();
    assert_eq!(counts.get(&r.b), Some(&2), "b: once per hash: {counts:?}");
    assert_eq!(counts.get(&r.c), Some(&1), "c: once: {counts:?}");
}

#[actix_rt::test]
async fn a_holder_found_lacking_later_is_asked_even_if_another_was_just_asked() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), Duration::ZERO);
    let missing = block("lacking on b, then on c").hash();
    for nodes in [vec![r.b], vec![r.c], vec![r.b, r.c]] {
        r.resync
            .send(RepairAfterRead {
                hash: missing,
                nodes,
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = r.peers.send(ResyncAsks).await.unwrap();
    assert_eq!(counts.get(&r.b), Some(&1), "b: once: {counts:?}");
    assert_eq!(counts.get(&r.c), Some(&1), "c: asked too: {counts:?}");
}
