//! The cap on hints per member: past it, a member is marked for a full sync (status says
//! so), no more hints pile up, and once it is up the full sync carries what the dropped
//! hints would have (even with rounds off), then the mark goes.

use super::*;

#[actix_rt::test]
async fn past_the_hint_cap_a_member_gets_a_full_sync_instead() {
    let d = tempfile::tempdir().unwrap();
    let r = rig(d.path(), vec![node(1), node(2)], false, |c| {
        c.interval = Duration::ZERO;
        c.max_hints_per_member = 3;
    });
    let n = 8u32;
    for i in 0..n {
        let (hash, ref_id) = (hash_n(i), rid(format!("ref-{i}")));
        // Written here; B (down) misses it.
        r.a.send(AddRef {
            hash,
            ref_id: ref_id.clone(),
            incarnation: 0,
        })
        .await
        .unwrap()
        .unwrap();
        r.ae.do_send(CallsFailed {
            rpc: BlockRpc::AddRef {
                hash,
                ref_id,
                incarnation: 0,
            },
            failed: vec![(
                node(2),
                RpcError::Unreachable {
                    node: node(2),
                    reason: "down".into(),
                },
            )],
        });
    }
    let st = r.ae.send(GetAntiEntropyStatus).await.unwrap();
    assert_eq!(st.hints_pending, 3, "hints stop at the cap");
    assert_eq!(
        st.full_sync_needed,
        vec![node(2).to_hex()],
        "status names the member marked for a full sync"
    );
    set_peer_up(&r, LAYOUT).await;
    wait_for("B to get every ref, hinted or not", 10, || async {
        let mut all = true;
        for i in 0..n {
            let rc = r.b.send(GetRc { hash: hash_n(i) }).await.unwrap().unwrap();
            all &= rc.count() == 1;
        }
        all
    })
    .await;
    wait_for("the mark to be cleared", 10, || async {
        r.ae.send(GetAntiEntropyStatus)
            .await
            .unwrap()
            .full_sync_needed
            .is_empty()
    })
    .await;
}
