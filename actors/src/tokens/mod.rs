//! TokenActor: owns the `tokens` keyspace of the metadata store, the scoped API tokens.
//!
//! State: every token record (live or revoked, see [`record`]) in a map loaded at start,
//! and the same records in fjall (key = the token's name in UTF-8, value = the record in
//! MessagePack map form; only `blake2sum` of the secret, never the secret). Messages:
//! [`CreateToken`], [`RevokeToken`], [`ListTokens`] and [`Authenticate`] from the HTTP
//! API; [`MergeTokens`] and [`TokensIfDiffer`] from the node's replica side, for peers;
//! [`SyncTokensNow`]; `LayoutChanged` from the layout actor (`layout.rs`: the peers follow
//! the layout's members). It talks to the peer actor (`Recipient<Call>`) to push every create
//! and revoke to every other member at once (`MergeTokens` frames), and, every
//! `sync_interval`, pulls from each peer the records that differ (`TokenDigestQuery`
//! answered with `TokenRecords`, in name ranges and pages that fit a frame whatever the
//! table's size: `sync.rs`), so a node that was down during a revoke refuses the token
//! within one interval of coming back. Tombstones older than `tombstone_retention` (the
//! node's `max_offline`) are purged at each round.
//!
//! A change is applied to the map at once (a revoked token is refused by the next
//! request) and answered once durable. Writes go to fjall in order, one blocking task at a
//! time, each taking everything queued meanwhile as one synced batch.

use std::collections::BTreeMap;

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use futures::future::join_all;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::frame::BlockRpc;

use crate::peer::{Call, Priority};
use crate::rc::now_msec;
use crate::store_failure::{StoreFailed, StoreFailureReporter};

mod config;
mod layout;
mod messages;
mod offline;
mod pull;
pub mod record;
mod sync;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod tests;

pub use config::{TokenConfig, DEFAULT_MAX_OFFLINE};
pub use layout::token_peers;
pub use messages::{
    Authenticate, CreateToken, CreatedToken, ListTokens, MergeTokens, PushReport, RevokeToken,
    SyncTokensNow, TokenError, TokenGrant, TokenInfo, TokensIfDiffer, WriteFailed,
};
pub use record::{Scope, TokenName, TokenRecord};
pub use sync::{TokenSyncPage, TokenSyncQuery, RECORDS_PER_PAGE};

use record::{decode_record, encode_record, hash_secret, hashes_equal, merge, table_digest};

/// Name of the keyspace holding every token record.
pub const TOKENS_KEYSPACE: &str = "tokens";

/// One queued write: encoded records (`None`: remove a purged tombstone), and who waits
/// for them to be durable.
struct QueuedWrite {
    records: Vec<(TokenName, Option<Vec<u8>>)>,
    done: oneshot::Sender<Result<(), WriteFailed>>,
}

/// The actor; see the module documentation.
pub struct TokenActor {
    config: TokenConfig,
    db: Database,
    keyspace: Keyspace,
    table: BTreeMap<TokenName, TokenRecord>,
    peers: Option<Recipient<Call>>,
    queued: Vec<QueuedWrite>,
    writing: bool,
    store_failure: StoreFailureReporter,
    /// When this node last pulled from a peer to the end (ms since the epoch), as kept
    /// in the `token_sync` keyspace; `None`: never (a new node). See `offline.rs`.
    last_sync_ms: Option<u64>,
    /// `token_sync`.
    sync_state: Keyspace,
}

impl TokenActor {
    /// Open (or create) the `tokens` keyspace in `db` and load every record. A record
    /// that does not decode is logged and skipped (a peer's copy replaces it at the next
    /// pull, since the digests then differ). `peers` carries pushes and pulls; without it
    /// (tests of one node) tokens stay local.
    pub fn new(
        db: Database,
        config: TokenConfig,
        peers: Option<Recipient<Call>>,
    ) -> Result<Self, TokenError> {
        let keyspace = db.keyspace(TOKENS_KEYSPACE, KeyspaceCreateOptions::default)?;
        let mut table = BTreeMap::new();
        for kv in keyspace.iter() {
            let (k, v) = kv.into_inner()?;
            match decode_record(&v) {
                Ok(r) if r.name.as_str().as_bytes() == &*k => {
                    table.insert(r.name.clone(), r);
                }
                Ok(r) => warn!(key = %String::from_utf8_lossy(&k), name = %r.name,
                    "token record stored under another name; skipped"),
                Err(e) => warn!(key = %String::from_utf8_lossy(&k), error = %e,
                    "token record does not decode; skipped until a peer's copy replaces it"),
            }
        }
        let sync_state = db.keyspace(offline::SYNC_KEYSPACE, KeyspaceCreateOptions::default)?;
        let last_sync_ms = offline::load_last_sync(&sync_state)?;
        Ok(TokenActor {
            config,
            db,
            keyspace,
            table,
            peers,
            queued: Vec::new(),
            writing: false,
            store_failure: StoreFailureReporter::new("tokens"),
            last_sync_ms,
            sync_state,
        })
    }

    /// Report a failed journal commit (fjall is poisoned from then on) to `to`.
    pub fn with_store_failed(mut self, to: Recipient<StoreFailed>) -> Self {
        self.store_failure.set_recipient(to);
        self
    }

    /// Revocations before this (ms since the epoch) are past `tombstone_retention`.
    fn purge_horizon(&self) -> u64 {
        now_msec().saturating_sub(self.config.tombstone_retention.as_millis() as u64)
    }

    /// Remove the tombstones past the retention from the map and the store. Every node
    /// purges a record at the same instant (its revocation time is in the record), so a
    /// purged tombstone is not pulled back, and [`Self::merge_in`] ignores one that is.
    fn purge_tombstones(&mut self, ctx: &mut Context<Self>) {
        let horizon = self.purge_horizon();
        let old: Vec<TokenName> = self
            .table
            .values()
            .filter(|r| r.revoked_ms.is_some_and(|t| t < horizon))
            .map(|r| r.name.clone())
            .collect();
        if old.is_empty() {
            return;
        }
        info!(
            tombstones = old.len(),
            "purging revoked token records past the retention"
        );
        for n in &old {
            self.table.remove(n);
        }
        let (done, _rx) = oneshot::channel();
        self.queued.push(QueuedWrite {
            records: old.into_iter().map(|n| (n, None)).collect(),
            done,
        });
        self.start_write(ctx);
    }

    /// Merge `incoming` into the map; returns the records that changed (to persist).
    fn merge_in(&mut self, incoming: Vec<TokenRecord>) -> Vec<TokenRecord> {
        let horizon = self.purge_horizon();
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        for r in incoming {
            if self.refuses_unseen(&r, horizon) {
                refused.push(r.name);
                continue;
            }
            // A tombstone past the retention that is not here any more was purged here
            // (or is about to be, by the peer that still sent it).
            if r.revoked_ms.is_some_and(|t| t < horizon) && !self.table.contains_key(&r.name) {
                continue;
            }
            let winner = match self.table.get(&r.name) {
                Some(old) => {
                    let w = merge(old.clone(), r);
                    if &w == old {
                        continue;
                    }
                    w
                }
                None => r,
            };
            if winner.is_revoked() {
                info!(token = %winner.name, "token revoked (from a peer)");
            }
            self.table.insert(winner.name.clone(), winner.clone());
            changed.push(winner);
        }
        offline::log_refused(&refused);
        changed
    }

    /// Queue `records` for a durable write; the receiver is told when it is done.
    fn persist(
        &mut self,
        records: &[TokenRecord],
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<Result<(), WriteFailed>>, TokenError> {
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            let v = encode_record(r).map_err(|source| TokenError::Encode {
                name: r.name.clone(),
                source,
            })?;
            encoded.push((r.name.clone(), Some(v)));
        }
        let (done, rx) = oneshot::channel();
        self.queued.push(QueuedWrite {
            records: encoded,
            done,
        });
        self.start_write(ctx);
        Ok(rx)
    }

    /// Start one blocking write of everything queued, unless one is running (it starts
    /// the next when it ends, so writes reach fjall in the order they were made).
    fn start_write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.queued.is_empty() {
            return;
        }
        self.writing = true;
        let writes = std::mem::take(&mut self.queued);
        let db = self.db.clone();
        let ks = self.keyspace.clone();
        let records: Vec<(TokenName, Option<Vec<u8>>)> =
            writes.iter().flat_map(|w| w.records.clone()).collect();
        let task = tokio::task::spawn_blocking(move || {
            let mut b = db.batch().durability(Some(PersistMode::SyncAll));
            for (name, v) in records {
                let key = name.as_str().as_bytes().to_vec();
                match v {
                    Some(v) => b.insert(&ks, key, v),
                    None => b.remove(&ks, key),
                }
            }
            b.commit()
        });
        ctx.spawn(task.into_actor(self).map(move |res, act, ctx| {
            let res = act
                .store_failure
                .commit_result("committing token records", res)
                .map_err(WriteFailed::from);
            for w in writes {
                let _ = w.done.send(res.clone());
            }
            act.writing = false;
            act.start_write(ctx);
        }));
    }

    /// One call per peer (in `config.peers` order), none without a peer actor.
    fn call_each_peer(
        &self,
        priority: Priority,
        rpc: impl Fn() -> BlockRpc,
    ) -> Vec<actix::dev::RecipientRequest<Call>> {
        match &self.peers {
            Some(peers) => self
                .config
                .peers
                .iter()
                .map(|node| {
                    peers.send(Call {
                        node: *node,
                        rpc: rpc(),
                        timeout: self.config.call_timeout,
                        priority,
                    })
                })
                .collect(),
            None => Vec::new(),
        }
    }

    /// Push `records` to every peer; the report says how many confirmed.
    fn push(&self, records: Vec<TokenRecord>) -> impl std::future::Future<Output = PushReport> {
        let calls =
            self.call_each_peer(Priority::Client, || BlockRpc::MergeTokens(records.clone()));
        let nodes = self.config.peers.clone();
        async move {
            let peers = calls.len();
            let mut confirmed = 0;
            for (node, r) in nodes.iter().zip(join_all(calls).await) {
                match r {
                    Ok(Ok(_)) => confirmed += 1,
                    Ok(Err(e)) => warn!(peer = %node.short(), error = %e,
                        "token change not pushed; the peer gets it at its next pull"),
                    Err(e) => warn!(error = %e, "peer actor unavailable for a token push"),
                }
            }
            PushReport { peers, confirmed }
        }
    }

    /// Apply a local change, then answer once it is durable and pushed.
    fn commit_and_push(
        &mut self,
        record: TokenRecord,
        ctx: &mut Context<Self>,
    ) -> Result<impl std::future::Future<Output = Result<PushReport, TokenError>>, TokenError> {
        let name = record.name.clone();
        self.table.insert(name.clone(), record.clone());
        let durable = self.persist(std::slice::from_ref(&record), ctx)?;
        let push = self.push(vec![record]);
        Ok(async move {
            wait_durable(&name, durable).await?;
            Ok(push.await)
        })
    }

    /// Every record, in name order.
    fn digest(&self) -> Vec<u8> {
        table_digest(self.table.values())
    }
}

/// Wait for a queued write's notice.
async fn wait_durable(
    name: &TokenName,
    rx: oneshot::Receiver<Result<(), WriteFailed>>,
) -> Result<(), TokenError> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(TokenError::NotPersisted {
            name: name.clone(),
            source,
        }),
        Err(_) => Err(TokenError::NotPersisted {
            name: name.clone(),
            source: WriteFailed::Stopped,
        }),
    }
}

impl Actor for TokenActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The timers run even with no peer yet: the layout may bring members later (a
        // pull with no peer costs nothing).
        if self.peers.is_some() {
            // The first pull comes soon after start: a node that was down during a
            // revoke must refuse the token as early as possible once it is back.
            ctx.run_later(self.config.first_sync_after, |_, ctx| {
                ctx.notify(SyncTokensNow);
            });
            ctx.run_interval(self.config.sync_interval, |_, ctx| {
                ctx.notify(SyncTokensNow);
            });
        }
    }
}

impl Handler<CreateToken> for TokenActor {
    type Result = ResponseFuture<Result<CreatedToken, TokenError>>;
    fn handle(&mut self, m: CreateToken, ctx: &mut Context<Self>) -> Self::Result {
        let generation = match self.table.get(&m.name) {
            Some(old) if !old.is_revoked() => {
                return Box::pin(async move { Err(TokenError::Exists { name: m.name }) })
            }
            Some(old) => old.generation + 1,
            None => 1,
        };
        let secret = record::new_secret();
        let record = TokenRecord {
            name: m.name,
            scope: m.scope,
            generation,
            created_ms: now_msec(),
            token_hash: hash_secret(&secret),
            revoked_ms: None,
        };
        info!(token = %record.name, scope = %record.scope, "token created");
        let info = TokenInfo::from(&record);
        match self.commit_and_push(record, ctx) {
            Ok(f) => Box::pin(async move {
                let push = f.await?;
                Ok(CreatedToken { secret, info, push })
            }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<RevokeToken> for TokenActor {
    type Result = ResponseFuture<Result<PushReport, TokenError>>;
    fn handle(&mut self, m: RevokeToken, ctx: &mut Context<Self>) -> Self::Result {
        let record = match self.table.get(&m.name) {
            None => return Box::pin(async move { Err(TokenError::NotFound { name: m.name }) }),
            // Already revoked: push the tombstone again (a peer may still lack it).
            Some(old) if old.is_revoked() => old.clone(),
            Some(old) => TokenRecord {
                revoked_ms: Some(now_msec()),
                ..old.clone()
            },
        };
        info!(token = %record.name, "token revoked");
        match self.commit_and_push(record, ctx) {
            Ok(f) => Box::pin(f),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<ListTokens> for TokenActor {
    type Result = MessageResult<ListTokens>;
    fn handle(&mut self, _m: ListTokens, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.table
                .values()
                .filter(|r| !r.is_revoked())
                .map(TokenInfo::from)
                .collect(),
        )
    }
}

impl Handler<Authenticate> for TokenActor {
    type Result = Option<TokenGrant>;
    fn handle(&mut self, m: Authenticate, _ctx: &mut Context<Self>) -> Self::Result {
        let presented = hash_secret(&m.secret);
        // Every live record is compared, with no early exit, so the time taken does not
        // depend on which (if any) matched.
        let mut grant = None;
        for r in self.table.values().filter(|r| !r.is_revoked()) {
            if hashes_equal(&r.token_hash, &presented) {
                grant = Some(TokenGrant {
                    name: r.name.clone(),
                    scope: r.scope,
                });
            }
        }
        grant
    }
}

impl Handler<MergeTokens> for TokenActor {
    type Result = ResponseFuture<Result<usize, TokenError>>;
    fn handle(&mut self, m: MergeTokens, ctx: &mut Context<Self>) -> Self::Result {
        let changed = self.merge_in(m.records);
        let n = changed.len();
        let Some(first) = changed.first().map(|r| r.name.clone()) else {
            return Box::pin(async { Ok(0) });
        };
        match self.persist(&changed, ctx) {
            Ok(rx) => Box::pin(async move {
                wait_durable(&first, rx).await?;
                Ok(n)
            }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<TokensIfDiffer> for TokenActor {
    type Result = MessageResult<TokensIfDiffer>;
    fn handle(&mut self, m: TokensIfDiffer, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(sync::answer(&self.table, &self.digest(), &m.query))
    }
}

impl Handler<SyncTokensNow> for TokenActor {
    type Result = ResponseActFuture<Self, usize>;
    fn handle(&mut self, _m: SyncTokensNow, ctx: &mut Context<Self>) -> Self::Result {
        self.purge_tombstones(ctx);
        let digests: Vec<(TokenName, Vec<u8>)> = self
            .table
            .values()
            .map(|r| (r.name.clone(), sync::record_digest(r)))
            .collect();
        let full = self.offline_too_long();
        let queries = if full {
            // Ask for every record: what no peer has is dropped here (`offline.rs`).
            sync::queries(Vec::new(), Vec::new())
        } else {
            sync::queries(digests, self.digest())
        };
        let me = ctx.address();
        let pulls: Vec<_> = match &self.peers {
            Some(peers) => self
                .config
                .peers
                .iter()
                .map(|node| {
                    pull::pull_from(
                        peers.clone(),
                        me.clone(),
                        *node,
                        self.config.call_timeout,
                        queries.clone(),
                        full,
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        Box::pin(
            join_all(pulls)
                .into_actor(self)
                .map(move |replies, act, ctx| {
                    // Each page was merged as it arrived. A peer that is down is asked again at
                    // the next round (`pull_from` logs anything else).
                    let mut answered = 0;
                    let mut changed = 0;
                    let mut peer_names = std::collections::HashSet::new();
                    for (n, names) in replies.into_iter().flatten() {
                        answered += 1;
                        changed += n;
                        peer_names.extend(names);
                    }
                    if answered > 0 {
                        if full {
                            act.drop_unknown_live(&peer_names, ctx);
                        }
                        act.synced_now();
                    }
                    if changed > 0 {
                        info!(records = changed, "token records caught up from peers");
                    }
                    answered
                }),
        )
    }
}
