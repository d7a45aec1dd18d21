//! The token catch-up at scale, through the frame codec's limits: hundreds of tokens,
//! a revoke missed by a node that was down, and tombstones purged after the retention.

use std::time::Duration;

use actix::prelude::*;

use super::tests::{
    auth, cluster, config, create, dirs, everything, name, start_on, Mesh, SetDown,
};
use super::*;

/// Answer `n` more digest queries, then fail every later one (`None`: answer all).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FailQueriesAfter(pub(super) Option<usize>);

impl Handler<FailQueriesAfter> for Mesh {
    type Result = ();
    fn handle(&mut self, m: FailQueriesAfter, _ctx: &mut Context<Self>) {
        self.queries_left = m.0;
    }
}

impl Mesh {
    /// The failure of `c` if it is a digest query past those still to be answered.
    pub(super) fn failed_query(&mut self, c: &Call) -> Option<crate::peer::RpcError> {
        if !matches!(c.rpc, BlockRpc::TokenDigestQuery(_)) {
            return None;
        }
        let left = self.queries_left.as_mut()?;
        if *left == 0 {
            return Some(crate::peer::RpcError::Protocol {
                node: c.node,
                reason: "query failed in this test".into(),
            });
        }
        *left -= 1;
        None
    }
}

/// More tokens than one frame header could carry (about 500 did).
const TOKENS: usize = 600;

#[actix_rt::test]
async fn a_node_down_during_a_revoke_among_600_tokens_refuses_it_after_its_next_pull() {
    let d = dirs(2);
    let (mesh, a) = cluster(2, &d).await;
    let down = |down| SetDown {
        id: crate::hash::NodeId([2; 32]),
        down,
    };
    // Node 2 misses everything: it must catch up on 600 records by its pull alone.
    mesh.send(down(true)).await.expect("mesh alive");
    let mut secrets = Vec::new();
    for chunk in (0..TOKENS).collect::<Vec<_>>().chunks(50) {
        let made = futures::future::join_all(chunk.iter().map(|i| {
            let first = a[0].clone();
            async move { create(&first, &format!("token-{i:04}"), Scope::Read).await }
        }))
        .await;
        secrets.extend(made.into_iter().map(|t| t.secret));
    }
    a[0].send(RevokeToken {
        name: name("token-0300"),
    })
    .await
    .expect("alive")
    .expect("revoke succeeds");
    mesh.send(down(false)).await.expect("mesh alive");
    assert_eq!(
        a[1].send(SyncTokensNow).await.expect("alive"),
        1,
        "the pull from node 1 must succeed (frames that fit)"
    );
    assert_eq!(
        auth(&a[1], &secrets[300]).await,
        None,
        "the node that was down accepts the revoked token"
    );
    assert!(auth(&a[1], &secrets[299]).await.is_some());
    assert!(auth(&a[1], &secrets[TOKENS - 1]).await.is_some());
    // Both tables agree now: the next pull changes nothing.
    let all = a[1].send(everything()).await.expect("alive");
    assert_eq!(all.records.len(), super::sync::RECORDS_PER_PAGE);
    assert!(all.next.is_some(), "600 records come in pages");
    assert_eq!(a[0].send(SyncTokensNow).await.expect("alive"), 1);
}

#[actix_rt::test]
async fn tombstones_past_the_retention_are_purged_and_not_pulled_back() {
    let d = dirs(2);
    let mesh = Mesh::default().start();
    let mut a = Vec::new();
    for i in 1..=2u8 {
        let c = TokenConfig {
            tombstone_retention: Duration::from_millis(200),
            ..config(i, 2)
        };
        a.push(start_on(&mesh, i, c, d[(i - 1) as usize].path()).await);
    }
    let t = create(&a[0], "gone", Scope::Write).await;
    create(&a[0], "kept", Scope::Read).await;
    a[0].send(RevokeToken { name: name("gone") })
        .await
        .expect("alive")
        .expect("revoke succeeds");
    assert_eq!(
        a[0].send(everything()).await.expect("alive").records.len(),
        2
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Node 2 still has the tombstone until its own round; node 1 purges at its round
    // and does not take the tombstone back from node 2.
    assert_eq!(a[0].send(SyncTokensNow).await.expect("alive"), 1);
    let left = a[0].send(everything()).await.expect("alive").records;
    assert_eq!(left.len(), 1, "the tombstone is purged: {left:?}");
    assert_eq!(left[0].name, name("kept"));
    assert_eq!(auth(&a[0], &t.secret).await, None);
    assert_eq!(a[1].send(SyncTokensNow).await.expect("alive"), 1);
    assert_eq!(
        a[1].send(everything()).await.expect("alive").records.len(),
        1
    );
}

#[actix_rt::test]
async fn a_pull_failing_on_its_second_page_keeps_the_revoke_of_its_first() {
    let d = dirs(2);
    let (mesh, a) = cluster(2, &d).await;
    let down = |down| SetDown {
        id: crate::hash::NodeId([2; 32]),
        down,
    };
    // Both nodes know token-0000; then node 2 misses more than a page of creates and
    // the revoke of token-0000 (first in name order: in the first page).
    let t = create(&a[0], "token-0000", Scope::Read).await;
    assert!(auth(&a[1], &t.secret).await.is_some());
    mesh.send(down(true)).await.expect("mesh alive");
    for chunk in (1..300).collect::<Vec<_>>().chunks(50) {
        futures::future::join_all(chunk.iter().map(|i| {
            let first = a[0].clone();
            async move { create(&first, &format!("token-{i:04}"), Scope::Read).await }
        }))
        .await;
    }
    a[0].send(RevokeToken {
        name: name("token-0000"),
    })
    .await
    .expect("alive")
    .expect("revoke succeeds");
    mesh.send(down(false)).await.expect("mesh alive");
    mesh.send(FailQueriesAfter(Some(1)))
        .await
        .expect("mesh alive");
    assert_eq!(
        a[1].send(SyncTokensNow).await.expect("alive"),
        0,
        "the pull fails on its second page"
    );
    assert_eq!(
        auth(&a[1], &t.secret).await,
        None,
        "the revoke in the first page is kept"
    );
    mesh.send(FailQueriesAfter(None)).await.expect("mesh alive");
    assert_eq!(a[1].send(SyncTokensNow).await.expect("alive"), 1);
}

#[actix_rt::test]
async fn a_node_offline_longer_than_the_retention_does_not_bring_a_revoked_token_back() {
    let d = dirs(3);
    let mesh = Mesh::default().start();
    let mut a = Vec::new();
    for i in 1..=3u8 {
        let c = TokenConfig {
            tombstone_retention: Duration::from_millis(300),
            ..config(i, 3)
        };
        a.push(start_on(&mesh, i, c, d[(i - 1) as usize].path()).await);
    }
    let t = create(&a[0], "t", Scope::Write).await;
    for n in &a {
        assert_eq!(n.send(SyncTokensNow).await.expect("alive"), 2);
        assert!(auth(n, &t.secret).await.is_some());
    }
    // Node 3 misses the revoke and the purge.
    let down = |down| SetDown {
        id: crate::hash::NodeId([3; 32]),
        down,
    };
    mesh.send(down(true)).await.expect("mesh alive");
    a[0].send(RevokeToken { name: name("t") })
        .await
        .expect("alive")
        .expect("revoke succeeds");
    // A token node 3 misses too, older than the retention when it is back.
    let u = create(&a[0], "u", Scope::Read).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for n in &a[..2] {
        assert_eq!(n.send(SyncTokensNow).await.expect("alive"), 1);
    }
    let left = a[0].send(everything()).await.expect("alive").records;
    assert_eq!(left.len(), 1, "t's tombstone is purged: {left:?}");
    // Node 3 reconnects: the others refuse its live record, it drops it.
    mesh.send(down(false)).await.expect("mesh alive");
    for n in &a {
        assert_eq!(n.send(SyncTokensNow).await.expect("alive"), 2);
    }
    for (i, n) in a.iter().enumerate() {
        assert_eq!(auth(n, &t.secret).await, None, "node {} accepts t", i + 1);
    }
    assert!(auth(&a[2], &u.secret).await.is_some(), "node 3 took u");
    // And it stays so at the next rounds.
    for n in &a {
        assert_eq!(n.send(SyncTokensNow).await.expect("alive"), 2);
    }
    for (i, n) in a.iter().enumerate() {
        assert_eq!(auth(n, &t.secret).await, None, "node {} accepts t", i + 1);
    }
}
