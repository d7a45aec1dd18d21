//! TokenActor tests, through its messages only: one node alone, and two or three nodes
//! whose actors reach each other through a test double of the peer actor that answers
//! `MergeTokens` and `TokenDigestQuery` the way the node's replica side does. Requests
//! and replies go through the frame codec with the default limits, so a frame too large
//! for a real peer fails here too.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use fjall::Database;

use super::*;
use crate::hash::NodeId;
use crate::layout::{Layout, LayoutChanged, LayoutMember, LayoutPlacement};
use crate::peer::RpcError;

/// `rpc` as a peer would decode it from the wire (header limit included).
fn through_codec(node: NodeId, rpc: &BlockRpc) -> Result<BlockRpc, RpcError> {
    let bad = |e: crate::frame::FrameError| RpcError::Protocol {
        node,
        reason: e.to_string(),
    };
    let frame = crate::frame::encode(rpc).map_err(bad)?;
    crate::frame::decode(&frame.head, &crate::frame::FrameLimits::default()).map_err(bad)
}

/// A pull of everything (no digests: the asker has nothing).
pub(super) fn everything() -> TokensIfDiffer {
    TokensIfDiffer {
        query: TokenSyncQuery {
            table_digest: Vec::new(),
            after: None,
            until: None,
            digests: Vec::new(),
        },
    }
}

pub(super) fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

pub(super) fn name(s: &str) -> TokenName {
    s.parse().expect("valid token name")
}

/// The peers as every token actor sees them: routes a call to the addressed node's
/// actor, unless that node is marked down.
#[derive(Default)]
pub(super) struct Mesh {
    nodes: HashMap<NodeId, Addr<TokenActor>>,
    down: HashSet<NodeId>,
    /// Digest queries still answered before every later one fails (`None`: all;
    /// `sync_tests.rs`).
    pub(super) queries_left: Option<usize>,
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
pub(super) struct SetDown {
    pub(super) id: NodeId,
    pub(super) down: bool,
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
        if let Some(e) = self.failed_query(&c) {
            return Box::pin(async move { Err(e) });
        }
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
            let rpc = through_codec(target, &c.rpc)?;
            let reply = match rpc {
                BlockRpc::MergeTokens(records) => match addr.send(MergeTokens { records }).await {
                    Ok(Ok(_)) => Ok(BlockRpc::Ok),
                    Ok(Err(e)) => Err(RpcError::Protocol {
                        node: target,
                        reason: e.to_string(),
                    }),
                    Err(e) => Err(gone(e)),
                },
                BlockRpc::TokenDigestQuery(query) => addr
                    .send(TokensIfDiffer { query })
                    .await
                    .map(BlockRpc::TokenRecords)
                    .map_err(gone),
                other => Err(RpcError::Protocol {
                    node: target,
                    reason: format!("unexpected {}", other.kind()),
                }),
            }?;
            through_codec(target, &reply)
        })
    }
}

/// A test config: pulls only when asked (`SyncTokensNow`), never on a timer.
pub(super) fn config(me: u8, members: u8) -> TokenConfig {
    TokenConfig {
        node: node(me),
        peers: (1..=members).filter(|i| *i != me).map(node).collect(),
        sync_interval: Duration::from_secs(3600),
        first_sync_after: Duration::from_secs(3600),
        call_timeout: Duration::from_secs(2),
        tombstone_retention: DEFAULT_MAX_OFFLINE,
    }
}

pub(super) fn open(dir: &Path) -> Database {
    Database::builder(dir)
        .open()
        .expect("open the metadata store")
}

/// Start token actor `i` with `config` and its store in `dir`, and add it to `mesh`.
pub(super) async fn start_on(
    mesh: &Addr<Mesh>,
    i: u8,
    config: TokenConfig,
    dir: &Path,
) -> Addr<TokenActor> {
    let a = TokenActor::new(open(dir), config, Some(mesh.clone().recipient()))
        .expect("token actor starts")
        .start();
    mesh.send(Join {
        id: node(i),
        addr: a.clone(),
    })
    .await
    .expect("mesh alive");
    a
}

/// `n` token actors, each with its own store, joined through one mesh.
pub(super) async fn cluster(
    n: u8,
    dirs: &[tempfile::TempDir],
) -> (Addr<Mesh>, Vec<Addr<TokenActor>>) {
    let mesh = Mesh::default().start();
    let mut actors = Vec::new();
    for i in 1..=n {
        actors.push(start_on(&mesh, i, config(i, n), dirs[(i - 1) as usize].path()).await);
    }
    (mesh, actors)
}

pub(super) fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect()
}

pub(super) async fn create(a: &Addr<TokenActor>, n: &str, scope: Scope) -> CreatedToken {
    a.send(CreateToken {
        name: name(n),
        scope,
    })
    .await
    .expect("token actor alive")
    .unwrap_or_else(|e| panic!("creating token {n} failed: {e}"))
}

pub(super) async fn auth(a: &Addr<TokenActor>, secret: &str) -> Option<TokenGrant> {
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
    // An asker with nothing gets every record.
    let page = a[0].send(everything()).await.expect("alive");
    assert_eq!(page.records.len(), 1, "an empty asker gets every record");
}

#[actix_rt::test]
async fn merging_an_older_live_record_never_revives_a_revoked_token() {
    let d = dirs(1);
    let (_mesh, a) = cluster(1, &d).await;
    let t = create(&a[0], "old", Scope::Read).await;
    let stale = a[0].send(everything()).await.expect("alive").records;
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

fn member(i: u8) -> LayoutMember {
    LayoutMember {
        id: node(i),
        addr: format!("127.0.0.1:{}", 4000 + u16::from(i))
            .parse()
            .expect("test address"),
        zone: "z".into(),
        capacity: 1,
    }
}

/// What the layout actor sends when nodes `ids` are the members.
fn layout_of(ids: &[u8]) -> LayoutChanged {
    let layout =
        Layout::initial(ids.iter().map(|i| member(*i)).collect(), 1).expect("a valid layout");
    LayoutChanged {
        placement: Arc::new(LayoutPlacement::new(&layout)),
        layout: Arc::new(layout),
        agreed: true,
        disagreeing: Vec::new(),
    }
}

/// Start token actor `i` with no peers (a node that joins with no layout yet) and add it
/// to the mesh.
async fn join_late(mesh: &Addr<Mesh>, i: u8, dir: &Path) -> Addr<TokenActor> {
    start_on(mesh, i, config(i, 0), dir).await
}

/// Poll `check` every 20 ms for at most 5 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out after 5 s waiting for {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn token_peers_are_the_reachable_members_but_this_node() {
    let mut l = layout_of(&[1, 2, 3]).layout.as_ref().clone();
    assert_eq!(token_peers(&l, &node(2)), vec![node(1), node(3)]);
    // A retiring member still serves until it is stopped: it must see revokes too.
    l.retiring = vec![member(4), member(1)];
    assert_eq!(token_peers(&l, &node(2)), vec![node(1), node(3), node(4)]);
    assert_eq!(
        token_peers(&Layout::empty(), &node(2)),
        Vec::<NodeId>::new()
    );
}

#[actix_rt::test]
async fn a_node_named_by_a_new_layout_gets_every_record_pushed_by_a_member() {
    let d = dirs(3);
    let (mesh, a) = cluster(2, &d[..2]).await;
    let live = create(&a[0], "backup", Scope::Read).await;
    let gone = create(&a[0], "old", Scope::Admin).await;
    a[0].send(RevokeToken { name: name("old") })
        .await
        .expect("alive")
        .expect("revoke succeeds");
    // Node 3 joins with no layout: it pulls from nobody, so only a push can reach it.
    let c = join_late(&mesh, 3, d[2].path()).await;
    assert_eq!(c.send(SyncTokensNow).await.expect("alive"), 0);
    assert!(
        auth(&c, &live.secret).await.is_none(),
        "the new node knows the token before any layout names it (the test would prove nothing)"
    );
    a[0].send(layout_of(&[1, 2, 3])).await.expect("alive");
    eventually(
        "node 3 to accept the live token pushed after the layout change",
        || async { auth(&c, &live.secret).await.map(|g| g.scope) == Some(Scope::Read) },
    )
    .await;
    assert_eq!(
        auth(&c, &gone.secret).await,
        None,
        "node 3 accepts a token revoked before it joined"
    );
    // From now on node 1 pushes every change to node 3 before answering.
    let next = create(&a[0], "ingest", Scope::Write).await;
    assert_eq!(
        next.push,
        PushReport {
            peers: 2,
            confirmed: 2
        }
    );
    assert_eq!(
        auth(&c, &next.secret).await.map(|g| g.scope),
        Some(Scope::Write)
    );
}

#[actix_rt::test]
async fn a_joined_node_pulls_from_the_members_its_first_layout_names() {
    let d = dirs(3);
    let (mesh, a) = cluster(2, &d[..2]).await;
    let t = create(&a[1], "backup", Scope::Write).await;
    let c = join_late(&mesh, 3, d[2].path()).await;
    // Only node 3 hears of the layout; the members do not push to it.
    c.send(layout_of(&[1, 2, 3])).await.expect("alive");
    eventually(
        "node 3 to pull the token once its layout names the members",
        || async { auth(&c, &t.secret).await.is_some() },
    )
    .await;
    assert_eq!(c.send(SyncTokensNow).await.expect("alive"), 2);
}

#[actix_rt::test]
async fn a_node_removed_from_the_layout_is_no_longer_pushed_to() {
    let d = dirs(3);
    let (_mesh, a) = cluster(3, &d).await;
    a[0].send(layout_of(&[1, 2])).await.expect("alive");
    let t = create(&a[0], "backup", Scope::Read).await;
    assert_eq!(
        t.push,
        PushReport {
            peers: 1,
            confirmed: 1
        }
    );
    assert!(
        auth(&a[1], &t.secret).await.is_some(),
        "node 2 lacks the token"
    );
    assert!(
        auth(&a[2], &t.secret).await.is_none(),
        "node 3 got the token although the layout no longer names it"
    );
}
