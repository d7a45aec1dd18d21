//! TokenActor tests, through its messages only: one node alone, and two or three nodes
//! whose actors reach each other through a test double of the peer actor that answers
//! `MergeTokens` and `TokenDigestQuery` the way the node's replica side does.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use actix::prelude::*;
use fjall::Database;

use super::*;
use crate::hash::NodeId;
use crate::peer::RpcError;

fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

fn name(s: &str) -> TokenName {
    s.parse().expect("valid token name")
}

/// The peers as every token actor sees them: routes a call to the addressed node's
/// actor, unless that node is marked down.
#[derive(Default)]
struct Mesh {
    nodes: HashMap<NodeId, Addr<TokenActor>>,
    down: HashSet<NodeId>,
}

impl Actor for Mesh {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Join {
    id: NodeId,
    addr: Addr<TokenActor>,
}

impl Handler<Join> for Mesh {
    type Result = ();
    fn handle(&mut self, m: Join, _ctx: &mut Context<Self>) {
        self.nodes.insert(m.id, m.addr);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct SetDown {
    id: NodeId,
    down: bool,
}

impl Handler<SetDown> for Mesh {
    type Result = ();
    fn handle(&mut self, m: SetDown, _ctx: &mut Context<Self>) {
        if m.down {
            self.down.insert(m.id);
        } else {
            self.down.remove(&m.id);
        }
    }
}

impl Handler<Call> for Mesh {
    type Result = ResponseFuture<Result<BlockRpc, RpcError>>;
    fn handle(&mut self, c: Call, _ctx: &mut Context<Self>) -> Self::Result {
        let target = c.node;
        let addr = match self.nodes.get(&target) {
            Some(a) if !self.down.contains(&target) => a.clone(),
            _ => {
                return Box::pin(async move {
                    Err(RpcError::Unreachable {
                        node: target,
                        reason: "down in this test".into(),
                    })
                })
            }
        };
        Box::pin(async move {
            let gone = |e: MailboxError| RpcError::Unreachable {
                node: target,
                reason: e.to_string(),
            };
            match c.rpc {
                BlockRpc::MergeTokens(records) => match addr.send(MergeTokens { records }).await {
                    Ok(Ok(_)) => Ok(BlockRpc::Ok),
                    Ok(Err(e)) => Err(RpcError::Protocol {
                        node: target,
                        reason: e.to_string(),
                    }),
                    Err(e) => Err(gone(e)),
                },
                BlockRpc::TokenDigestQuery(digest) => addr
                    .send(TokensIfDiffer { digest })
                    .await
                    .map(BlockRpc::TokenRecords)
                    .map_err(gone),
                other => Err(RpcError::Protocol {
                    node: target,
                    reason: format!("unexpected {}", other.kind()),
                }),
            }
        })
    }
}

/// A test config: pulls only when asked (`SyncTokensNow`), never on a timer.
fn config(me: u8, members: u8) -> TokenConfig {
    TokenConfig {
        peers: (1..=members).filter(|i| *i != me).map(node).collect(),
        sync_interval: Duration::from_secs(3600),
        first_sync_after: Duration::from_secs(3600),
        call_timeout: Duration::from_secs(2),
    }
}

fn open(dir: &Path) -> Database {
    Database::builder(dir)
        .open()
        .expect("open the metadata store")
}

/// `n` token actors, each with its own store, joined through one mesh.
async fn cluster(n: u8, dirs: &[tempfile::TempDir]) -> (Addr<Mesh>, Vec<Addr<TokenActor>>) {
    let mesh = Mesh::default().start();
    let mut actors = Vec::new();
    for i in 1..=n {
        let a = TokenActor::new(
            open(dirs[(i - 1) as usize].path()),
            config(i, n),
            Some(mesh.clone().recipient()),
        )
        .expect("token actor starts")
        .start();
        mesh.send(Join {
            id: node(i),
            addr: a.clone(),
        })
        .await
        .expect("mesh alive");
        actors.push(a);
    }
    (mesh, actors)
}

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect()
}

async fn create(a: &Addr<TokenActor>, n: &str, scope: Scope) -> CreatedToken {
    a.send(CreateToken {
        name: name(n),
        scope,
    })
    .await
    .expect("token actor alive")
    .unwrap_or_else(|e| panic!("creating token {n} failed: {e}"))
}

async fn auth(a: &Addr<TokenActor>, secret: &str) -> Option<TokenGrant> {
    a.send(Authenticate {
        secret: secret.to_string(),
    })
    .await
    .expect("token actor alive")
}

#[actix_rt::test]
async fn a_created_token_authenticates_with_its_scope_and_is_listed() {
    let d = dirs(1);
    let (_mesh, a) = cluster(1, &d).await;
    let t = create(&a[0], "backup", Scope::Read).await;
    assert_eq!(t.secret.len(), 64, "a secret is 256 bits in hex");
    assert_eq!(
        auth(&a[0], &t.secret).await,
        Some(TokenGrant {
            name: name("backup"),
            scope: Scope::Read
        })
    );
    assert_eq!(auth(&a[0], "not-the-secret").await, None);
    assert_eq!(auth(&a[0], "").await, None);
    let list = a[0].send(ListTokens).await.expect("alive");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, name("backup"));
    assert_eq!(list[0].scope, Scope::Read);
    assert!(list[0].created_ms > 0);
    assert_eq!(
        t.push,
        PushReport {
            peers: 0,
            confirmed: 0
        }
    );
}

#[actix_rt::test]
async fn a_live_name_cannot_be_taken_twice_and_unknown_names_cannot_be_revoked() {
    let d = dirs(1);
    let (_mesh, a) = cluster(1, &d).await;
    create(&a[0], "ci", Scope::Write).await;
    let again = a[0]
        .send(CreateToken {
            name: name("ci"),
            scope: Scope::Admin,
        })
        .await
        .expect("alive");
    assert!(
        matches!(again, Err(TokenError::Exists { .. })),
        "second create of a live name: {again:?}"
    );
    let r = a[0]
        .send(RevokeToken { name: name("nope") })
        .await
        .expect("alive");
    assert!(matches!(r, Err(TokenError::NotFound { .. })), "{r:?}");
}

#[actix_rt::test]
async fn a_revoked_token_is_refused_at_once_and_its_name_can_be_reused() {
    let d = dirs(1);
    let (_mesh, a) = cluster(1, &d).await;
    let old = create(&a[0], "job", Scope::Write).await;
    a[0].send(RevokeToken { name: name("job") })
        .await
        .expect("alive")
        .expect("revoke succeeds");
    assert_eq!(
        auth(&a[0], &old.secret).await,
        None,
        "revoked token accepted"
    );
    assert!(a[0].send(ListTokens).await.expect("alive").is_empty());
    // Revoking again is not an error.
    a[0].send(RevokeToken { name: name("job") })
        .await
        .expect("alive")
        .expect("second revoke succeeds");
    let new = create(&a[0], "job", Scope::Read).await;
    assert_eq!(auth(&a[0], &old.secret).await, None);
    assert_eq!(
        auth(&a[0], &new.secret).await.map(|g| g.scope),
        Some(Scope::Read)
    );
}

#[test]
fn tokens_survive_a_restart_and_no_secret_is_stored_in_clear() {
    let d = dirs(1);
    let (kept, revoked) = System::new().block_on(async {
        let (_mesh, a) = cluster(1, &d).await;
        let kept = create(&a[0], "kept", Scope::Admin).await;
        let revoked = create(&a[0], "gone", Scope::Read).await;
        a[0].send(RevokeToken { name: name("gone") })
            .await
            .expect("alive")
            .expect("revoke succeeds");
        (kept.secret, revoked.secret)
    });
    for entry in walk(d[0].path()) {
        let bytes = std::fs::read(&entry).expect("read a store file");
        for secret in [&kept, &revoked] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a token secret in clear",
                entry.display()
            );
        }
    }
    System::new().block_on(async {
        let (_mesh, a) = cluster(1, &d).await;
        assert_eq!(
            auth(&a[0], &kept).await.map(|g| g.scope),
            Some(Scope::Admin),
            "a token did not survive the restart"
        );
        assert_eq!(auth(&a[0], &revoked).await, None, "a revocation was lost");
    });
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read a store dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "the store wrote no files");
    out
}

#[actix_rt::test]
async fn creates_and_revokes_are_pushed_to_every_peer_before_the_answer() {
    let d = dirs(3);
    let (_mesh, a) = cluster(3, &d).await;
    let t = create(&a[0], "backup", Scope::Read).await;
    assert_eq!(
        t.push,
        PushReport {
            peers: 2,
            confirmed: 2
        }
    );
    for (i, peer) in a.iter().enumerate() {
        assert_eq!(
            auth(peer, &t.secret).await.map(|g| g.scope),
            Some(Scope::Read),
            "node {} does not know the new token",
            i + 1
        );
    }
    let push = a[1]
        .send(RevokeToken {
            name: name("backup"),
        })
        .await
        .expect("alive")
        .expect("revoke succeeds");
    assert_eq!(
        push,
        PushReport {
            peers: 2,
            confirmed: 2
        }
    );
    for (i, peer) in a.iter().enumerate() {
        assert_eq!(
            auth(peer, &t.secret).await,
            None,
            "node {} still accepts the revoked token",
            i + 1
        );
    }
}

#[actix_rt::test]
async fn a_node_down_during_a_revoke_refuses_the_token_after_its_next_pull() {
    let d = dirs(2);
    let (mesh, a) = cluster(2, &d).await;
    let t = create(&a[0], "backup", Scope::Write).await;
    mesh.send(SetDown {
        id: node(2),
        down: true,
    })
    .await
    .expect("mesh alive");
    let push = a[0]
        .send(RevokeToken {
            name: name("backup"),
        })
        .await
        .expect("alive")
        .expect("a revoke succeeds with a peer down");
    assert_eq!(
        push,
        PushReport {
            peers: 1,
            confirmed: 0
        }
    );
    assert!(
        auth(&a[1], &t.secret).await.is_some(),
        "the down node cannot have seen the revoke yet (the test would prove nothing)"
    );
    mesh.send(SetDown {
        id: node(2),
        down: false,
    })
    .await
    .expect("mesh alive");
    assert_eq!(a[1].send(SyncTokensNow).await.expect("alive"), 1);
    assert_eq!(
        auth(&a[1], &t.secret).await,
        None,
        "the node that was down still accepts the revoked token after a pull"
    );
    // Equal tables: the next pull carries no records.
    let digest_equal = a[0]
        .send(TokensIfDiffer {
            digest: record::table_digest(std::iter::empty()),
        })
        .await
        .expect("alive");
    assert_eq!(
        digest_equal.len(),
        1,
        "a differing digest gets every record"
    );
}

#[actix_rt::test]
async fn merging_an_older_live_record_never_revives_a_revoked_token() {
    let d = dirs(1);
    let (_mesh, a) = cluster(1, &d).await;
    let t = create(&a[0], "old", Scope::Read).await;
    let stale = a[0]
        .send(TokensIfDiffer { digest: Vec::new() })
        .await
        .expect("alive");
    a[0].send(RevokeToken { name: name("old") })
        .await
        .expect("alive")
        .expect("revoke succeeds");
    let changed = a[0]
        .send(MergeTokens { records: stale })
        .await
        .expect("alive")
        .expect("merge succeeds");
    assert_eq!(changed, 0, "the stale live record changed something");
    assert_eq!(auth(&a[0], &t.secret).await, None);
}
