//! RefcountActor: owns the `refs` and `rc` keyspaces of the metadata store.
//!
//! State owned: the named references of every block (`refs`), their live count in the
//! seed's [`RcEntry`] format (`rc`), and the replies waiting for the journal sync.
//! Messages: [`AddRef`], [`DropRef`], [`GetRc`], [`ListRefs`], [`ClearIfDeletable`],
//! [`RebuildRc`], [`ListRcHashes`]. It tells one [`Recipient`] (the resync actor) about
//! every count that moves between zero and non-zero ([`RcChanged`]).
//!
//! Durability by group commit: a mutation is applied to fjall at once (an in-memory
//! memtable insert plus a buffered journal append: microseconds), and its reply waits for
//! the next journal fsync. One fsync runs at a time, on the blocking pool; every mutation
//! applied before it started is answered when it ends, so a burst of N refs costs one
//! or two fsyncs instead of N.
//!
//! Key/value encodings:
//! - `refs`: key = 32-byte hash ++ ref id bytes (so one block's refs are one prefix, and a
//!   partition's refs one range); value = 1 byte, [`REF_LIVE`] or [`REF_DROPPED`]. A
//!   dropped ref stays as a tombstone: dropped wins when replicas merge, and a dropped id
//!   cannot be added again.
//! - `rc`: key = 32-byte hash; value = [`RcEntry`] bytes (see `rc.rs`). Always equal to
//!   the number of live refs, written in the same atomic batch as the ref that changed
//!   it, so [`RebuildRc`] can recompute it from `refs` at any time.

use std::time::Duration;

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

use crate::hash::{Hash, HASH_LEN};
use crate::rc::{now_msec, RcEntry, RcParseError};
use crate::ref_id::RefId;

/// Value byte of a live ref.
pub const REF_LIVE: u8 = 1;
/// Value byte of a dropped ref (tombstone).
pub const REF_DROPPED: u8 = 0;

/// How replies wait for the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Group commit: one fsync answers every mutation applied before it (default).
    Batched,
    /// One fsync per mutation (for comparison in benchmarks).
    PerOp,
}

/// Settings of a [`RefcountActor`].
#[derive(Debug, Clone)]
pub struct RefcountConfig {
    /// Grace period between the last ref dropped and the block becoming deletable.
    /// Default 10 minutes, as the seed: it lets a concurrent or retried AddRef win.
    pub gc_delay: Duration,
    /// How replies wait for the journal.
    pub sync: SyncMode,
}

impl Default for RefcountConfig {
    fn default() -> Self {
        RefcountConfig {
            gc_delay: Duration::from_secs(600),
            sync: SyncMode::Batched,
        }
    }
}

/// Errors of the refcount actor.
#[derive(Debug, thiserror::Error)]
pub enum RefcountError {
    #[error("rc entry of block {hash} is corrupt: {source}")]
    CorruptEntry {
        hash: Hash,
        #[source]
        source: RcParseError,
    },
    #[error(
        "ref {ref_id} of block {hash} was dropped and cannot be added again; use a new ref id"
    )]
    RefDropped { hash: Hash, ref_id: RefId },
    #[error("metadata store error: {0}")]
    Store(String),
}

impl From<fjall::Error> for RefcountError {
    fn from(e: fjall::Error) -> Self {
        RefcountError::Store(e.to_string())
    }
}

/// State of one named reference. Dropped wins over live when replicas merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefState {
    Live,
    Dropped,
}

/// Result of a ref mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefUpdate {
    /// Whether anything changed (false for a repeated add/drop).
    pub changed: bool,
    /// The block's rc entry after the change.
    pub rc: RcEntry,
}

/// Add the named reference (idempotent). Replies once the change is in the journal.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct AddRef {
    pub hash: Hash,
    pub ref_id: RefId,
}

/// Drop the named reference (idempotent; an unknown ref is recorded as dropped).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RefUpdate, RefcountError>")]
pub struct DropRef {
    pub hash: Hash,
    pub ref_id: RefId,
}

/// Read a block's rc entry.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RcEntry, RefcountError>")]
pub struct GetRc {
    pub hash: Hash,
}

/// List a block's refs with their state.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<(RefId, RefState)>, RefcountError>")]
pub struct ListRefs {
    pub hash: Hash,
}

/// Turn a passed `Deletable` entry into `Absent`; replies whether it did.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, RefcountError>")]
pub struct ClearIfDeletable {
    pub hash: Hash,
}

/// What [`RebuildRc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// rc entries examined.
    pub entries: u64,
    /// rc entries rewritten because they were wrong or corrupt.
    pub fixed: u64,
}

/// Recompute every rc entry from the `refs` keyspace.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<RebuildReport, RefcountError>")]
pub struct RebuildRc;

/// Up to `limit` hashes having an rc entry, strictly after `after`, ascending.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Hash>, RefcountError>")]
pub struct ListRcHashes {
    pub after: Option<Hash>,
    pub limit: usize,
}

/// Sent to the change recipient when a block's count moves between zero and non-zero.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct RcChanged {
    pub hash: Hash,
    pub old: RcEntry,
    pub new: RcEntry,
}

type Reply<T> = oneshot::Sender<Result<T, RefcountError>>;

/// A reply held back until the journal sync that covers its change.
enum Waiter {
    Update(Reply<RefUpdate>, RefUpdate),
    Flag(Reply<bool>, bool),
}

impl Waiter {
    fn finish(self, err: Option<&str>) {
        match (self, err) {
            (Waiter::Update(tx, v), None) => {
                let _ = tx.send(Ok(v));
            }
            (Waiter::Flag(tx, v), None) => {
                let _ = tx.send(Ok(v));
            }
            (Waiter::Update(tx, _), Some(e)) => {
                let _ = tx.send(Err(RefcountError::Store(e.to_string())));
            }
            (Waiter::Flag(tx, _), Some(e)) => {
                let _ = tx.send(Err(RefcountError::Store(e.to_string())));
            }
        }
    }
}

/// The actor.
pub struct RefcountActor {
    config: RefcountConfig,
    db: Database,
    refs: Keyspace,
    rc: Keyspace,
    on_change: Option<Recipient<RcChanged>>,
    /// Replies whose changes are applied but not yet synced.
    waiting: Vec<Waiter>,
    /// A journal sync is running on the blocking pool.
    syncing: bool,
}

impl RefcountActor {
    /// Open the `refs` and `rc` keyspaces in `db`.
    pub fn new(
        db: Database,
        config: RefcountConfig,
        on_change: Option<Recipient<RcChanged>>,
    ) -> Result<Self, RefcountError> {
        let refs = db.keyspace("refs", KeyspaceCreateOptions::default)?;
        let rc = db.keyspace("rc", KeyspaceCreateOptions::default)?;
        Ok(RefcountActor {
            config,
            db,
            refs,
            rc,
            on_change,
            waiting: Vec::new(),
            syncing: false,
        })
    }

    fn ref_key(hash: &Hash, ref_id: &RefId) -> Vec<u8> {
        let mut k = Vec::with_capacity(HASH_LEN + ref_id.as_bytes().len());
        k.extend_from_slice(hash.as_bytes());
        k.extend_from_slice(ref_id.as_bytes());
        k
    }

    fn ref_state(&self, hash: &Hash, ref_id: &RefId) -> Result<Option<RefState>, RefcountError> {
        Ok(self
            .refs
            .get(Self::ref_key(hash, ref_id))?
            .map(|v| match v.first() {
                Some(&REF_LIVE) => RefState::Live,
                // Anything but "live" counts as dropped: dropped wins.
                _ => RefState::Dropped,
            }))
    }

    /// Count the live refs of `hash` by scanning its prefix in `refs`.
    fn count_live(&self, hash: &Hash) -> Result<u64, RefcountError> {
        let mut n = 0;
        for kv in self.refs.prefix(hash.as_bytes()) {
            let (_, v) = kv.into_inner()?;
            if v.first() == Some(&REF_LIVE) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn read_rc(&self, hash: &Hash) -> Result<RcEntry, RefcountError> {
        let v = self.rc.get(hash.as_bytes())?;
        RcEntry::parse_opt(v.as_deref()).map_err(|source| RefcountError::CorruptEntry {
            hash: *hash,
            source,
        })
    }

    /// The current entry, repairing a corrupt one from `refs` (logged, never a panic).
    fn read_rc_repairing(&self, hash: &Hash) -> Result<RcEntry, RefcountError> {
        match self.read_rc(hash) {
            Err(RefcountError::CorruptEntry { source, .. }) => {
                let count = self.count_live(hash)?;
                tracing::warn!(hash = %hash.short(), "{source}; recounted {count} live refs from the refs keyspace");
                // Treat as freshly present (or a fresh grace period if nothing is live).
                Ok(RcEntry::Present { count: 1 }.with_count(
                    count,
                    now_msec(),
                    self.config.gc_delay,
                ))
            }
            other => other,
        }
    }

    /// Apply a ref change: write the ref record and the new rc in one atomic batch.
    fn apply(
        &mut self,
        hash: Hash,
        ref_id: &RefId,
        live: bool,
    ) -> Result<RefUpdate, RefcountError> {
        let state = self.ref_state(&hash, ref_id)?;
        let old = self.read_rc_repairing(&hash)?;
        let (changed, count) = match (live, state) {
            (true, Some(RefState::Dropped)) => {
                return Err(RefcountError::RefDropped {
                    hash,
                    ref_id: ref_id.clone(),
                })
            }
            (true, Some(RefState::Live)) | (false, Some(RefState::Dropped)) => (false, old.count()),
            (true, None) => (true, old.count() + 1),
            (false, Some(RefState::Live)) => (true, old.count().saturating_sub(1)),
            // Dropping an unknown ref records the tombstone; the count does not move.
            (false, None) => (true, old.count()),
        };
        let new = old.with_count(count, now_msec(), self.config.gc_delay);
        let stored_ok = self.read_rc(&hash).is_ok();
        if changed || !stored_ok {
            let mut batch = self.db.batch();
            if changed {
                let v = if live { REF_LIVE } else { REF_DROPPED };
                batch.insert(&self.refs, Self::ref_key(&hash, ref_id), [v]);
            }
            match new.serialize() {
                Some(b) => batch.insert(&self.rc, hash.as_bytes().to_vec(), b),
                None => batch.remove(&self.rc, hash.as_bytes().to_vec()),
            }
            batch.commit()?;
        }
        if (old.count() == 0) != (new.count() == 0) {
            if let Some(r) = &self.on_change {
                r.do_send(RcChanged { hash, old, new });
            }
        }
        Ok(RefUpdate { changed, rc: new })
    }

    /// Queue a reply behind the next journal sync, starting one if none runs.
    fn wait_for_sync(&mut self, w: Waiter, ctx: &mut Context<Self>) {
        self.waiting.push(w);
        self.start_sync(ctx);
    }

    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.waiting.is_empty() {
            return;
        }
        self.syncing = true;
        let take = match self.config.sync {
            SyncMode::Batched => self.waiting.len(),
            SyncMode::PerOp => 1,
        };
        let batch: Vec<Waiter> = self.waiting.drain(..take).collect();
        let db = self.db.clone();
        let fut = async move {
            tokio::task::spawn_blocking(move || db.persist(PersistMode::SyncAll))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let err = res.err();
            if let Some(e) = &err {
                tracing::error!("metadata journal sync failed: {e}");
            }
            for w in batch {
                w.finish(err.as_deref());
            }
            act.syncing = false;
            act.start_sync(ctx);
        }));
    }

    fn reply_after_sync<T: Send + 'static>(
        rx: oneshot::Receiver<Result<T, RefcountError>>,
    ) -> ResponseFuture<Result<T, RefcountError>> {
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(RefcountError::Store("refcount actor stopped".into())))
        })
    }

    fn mutate(
        &mut self,
        hash: Hash,
        ref_id: RefId,
        live: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<RefUpdate, RefcountError>> {
        match self.apply(hash, &ref_id, live) {
            Ok(update) => {
                let (tx, rx) = oneshot::channel();
                self.wait_for_sync(Waiter::Update(tx, update), ctx);
                Self::reply_after_sync(rx)
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn rebuild(&mut self) -> Result<RebuildReport, RefcountError> {
        let now = now_msec();
        let mut report = RebuildReport::default();
        let mut batch = self.db.batch();
        // Every hash that has an rc entry or a ref record, in order.
        let mut hashes: Vec<Hash> = Vec::new();
        let mut last: Option<Hash> = None;
        for kv in self.refs.iter() {
            let k = kv.key()?;
            if let Some(h) = k.get(..HASH_LEN).and_then(Hash::from_slice) {
                if last != Some(h) {
                    hashes.push(h);
                    last = Some(h);
                }
            }
        }
        for kv in self.rc.iter() {
            let k = kv.key()?;
            if let Some(h) = Hash::from_slice(&k) {
                hashes.push(h);
            }
        }
        hashes.sort();
        hashes.dedup();
        for hash in hashes {
            report.entries += 1;
            let live = self.count_live(&hash)?;
            let stored = self.read_rc(&hash);
            let base = match &stored {
                Ok(e) => *e,
                Err(_) => RcEntry::Present { count: 1 },
            };
            let want = base.with_count(live, now, self.config.gc_delay);
            let want = if live == 0 && base == RcEntry::Absent {
                RcEntry::Absent
            } else {
                want
            };
            if stored.as_ref().ok() != Some(&want) {
                report.fixed += 1;
                tracing::warn!(hash = %hash.short(), ?stored, ?want, "rc entry rebuilt from refs");
                match want.serialize() {
                    Some(b) => batch.insert(&self.rc, hash.as_bytes().to_vec(), b),
                    None => batch.remove(&self.rc, hash.as_bytes().to_vec()),
                }
                if let (Some(r), Ok(old)) = (&self.on_change, &stored) {
                    if (old.count() == 0) != (want.count() == 0) {
                        r.do_send(RcChanged {
                            hash,
                            old: *old,
                            new: want,
                        });
                    }
                }
            }
        }
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(report)
    }
}

impl Actor for RefcountActor {
    type Context = Context<Self>;

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        // Replies still waiting get their answer from a last synchronous sync.
        if !self.waiting.is_empty() {
            let err = self
                .db
                .persist(PersistMode::SyncAll)
                .err()
                .map(|e| e.to_string());
            for w in self.waiting.drain(..) {
                w.finish(err.as_deref());
            }
        }
        Running::Stop
    }
}

impl Handler<AddRef> for RefcountActor {
    type Result = ResponseFuture<Result<RefUpdate, RefcountError>>;

    fn handle(&mut self, msg: AddRef, ctx: &mut Context<Self>) -> Self::Result {
        self.mutate(msg.hash, msg.ref_id, true, ctx)
    }
}

impl Handler<DropRef> for RefcountActor {
    type Result = ResponseFuture<Result<RefUpdate, RefcountError>>;

    fn handle(&mut self, msg: DropRef, ctx: &mut Context<Self>) -> Self::Result {
        self.mutate(msg.hash, msg.ref_id, false, ctx)
    }
}

impl Handler<GetRc> for RefcountActor {
    type Result = Result<RcEntry, RefcountError>;

    fn handle(&mut self, msg: GetRc, _ctx: &mut Context<Self>) -> Self::Result {
        let r = self.read_rc(&msg.hash);
        if let Err(e) = &r {
            tracing::warn!("{e}; run a repair with rebuild_rc to fix it");
        }
        r
    }
}

impl Handler<ListRefs> for RefcountActor {
    type Result = Result<Vec<(RefId, RefState)>, RefcountError>;

    fn handle(&mut self, msg: ListRefs, _ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        for kv in self.refs.prefix(msg.hash.as_bytes()) {
            let (k, v) = kv.into_inner()?;
            match RefId::from_bytes(&k[HASH_LEN..]) {
                Ok(r) => out.push((
                    r,
                    if v.first() == Some(&REF_LIVE) {
                        RefState::Live
                    } else {
                        RefState::Dropped
                    },
                )),
                Err(e) => {
                    tracing::warn!(hash = %msg.hash.short(), "skipping an invalid ref key: {e}")
                }
            }
        }
        Ok(out)
    }
}

impl Handler<ClearIfDeletable> for RefcountActor {
    type Result = ResponseFuture<Result<bool, RefcountError>>;

    fn handle(&mut self, msg: ClearIfDeletable, ctx: &mut Context<Self>) -> Self::Result {
        let res = self.read_rc(&msg.hash).and_then(|e| match e {
            RcEntry::Deletable { .. } if e.is_deletable(now_msec()) => {
                self.rc.remove(msg.hash.as_bytes().to_vec())?;
                Ok(true)
            }
            _ => Ok(false),
        });
        match res {
            Ok(flag) => {
                let (tx, rx) = oneshot::channel();
                self.wait_for_sync(Waiter::Flag(tx, flag), ctx);
                Self::reply_after_sync(rx)
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<RebuildRc> for RefcountActor {
    type Result = Result<RebuildReport, RefcountError>;

    /// Runs on the actor's thread so no mutation interleaves with the recount; it is an
    /// administrative operation (repair), rare and proportional to the metadata size.
    fn handle(&mut self, _msg: RebuildRc, _ctx: &mut Context<Self>) -> Self::Result {
        self.rebuild()
    }
}

impl Handler<ListRcHashes> for RefcountActor {
    type Result = Result<Vec<Hash>, RefcountError>;

    fn handle(&mut self, msg: ListRcHashes, _ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let iter = match msg.after {
            Some(a) => {
                let mut start = a.as_bytes().to_vec();
                start.push(0);
                self.rc.range(start..)
            }
            None => self.rc.iter(),
        };
        for kv in iter.take(msg.limit) {
            let k = kv.key()?;
            match Hash::from_slice(&k) {
                Some(h) => out.push(h),
                None => tracing::warn!("skipping an rc key of {} bytes", k.len()),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
