//! RefcountActor: owns the `refs` and `rc` keyspaces of the metadata store.
//!
//! State: the two fjall keyspaces (in a `Database` the node opens and shares with the
//! resync actor, which owns other keyspaces), plus the writes applied but not yet synced
//! (`pending.rs`); every read sees the stored keys overlaid with those pending writes
//! (`overlay.rs`). Only this actor reads or writes `refs` and `rc`; the encoding is in
//! `keys.rs`. Messages: [`AddRef`], [`AddStoredRef`], [`DropRef`] (idempotent; replied
//! once durable),
//! [`GetRc`], [`ListRefs`], [`ClearIfDeletable`], [`RebuildRc`], [`ListRcHashes`], and the
//! GC fence: [`FenceForDelete`], [`EndGcFence`] (the `gc_fence` keyspace, also owned here;
//! `fence.rs`), and [`BeginRefAdd`]/[`EndRefAdd`] (bare ref adds under way, which a fence
//! waits for: `crate::present_ref`).
//! It talks to one optional `Recipient<RcChanged>` (the resync actor), told when a block's
//! count moves between zero and non-zero, after the change is durable; a change that met
//! a fence (a GC delete of the block under way) says so, and resync fetches at once.
//!
//! Durability with group commit: a mutation is applied to the pending state at once (so
//! later messages see it) and its reply waits. One blocking task at a time commits the
//! oldest pending generation as one atomic batch and syncs the journal; when it ends,
//! every reply of that generation is sent and the next generation (everything that
//! arrived meanwhile) starts. Many concurrent writers thus share one fsync.
//! [`SyncMode::PerOp`] gives every mutation its own sync, for comparison.

use std::collections::BTreeMap;
use std::ops::Bound;

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use crate::hash::Hash;
use crate::rc::{now_msec, RcEntry, RcParseError};
use crate::ref_id::RefId;
use crate::store_failure::{StoreFailed, StoreFailureReporter};

mod config;
mod expire;
mod fence;
mod keys;
mod messages;
mod overlay;
mod pages;
mod pending;
mod purge;
mod rebuild;
mod record;
mod status;
mod sync;

pub use config::{RefcountConfig, SyncMode, DEFAULT_TOMBSTONE_RETENTION};
pub use messages::{
    AddRef, AddStoredRef, BeginRefAdd, ClearIfDeletable, CountRefAdds, DropRef, EndGcFence,
    EndRefAdd, FenceForDelete, GetRc, ListRcHashes, ListRefs, PurgeTombstones, RcChanged,
    RebuildRc, RefState, RefUpdate, RefcountError,
};
pub use pages::{ListRefsPage, RefsPage};
pub use record::RefRec;
pub use status::RebuildReport;
pub use sync::{DigestPrefix, ForgetPartition, ForgetReport, MergeRefs, RecordsUnder};
#[cfg(test)]
mod incarnation_tests;
#[cfg(test)]
mod tests;

use keys::{decode_rec, encode_fence, encode_rec, ref_key, split_ref_key};
use overlay::{overlay, Merged};
use pending::{Batch, Durable, Pending, PersistError};
use record::merge_into;

/// Name of the keyspace holding every ref record (see `keys.rs`).
pub const REFS_KEYSPACE: &str = "refs";
/// Name of the keyspace holding every block's rc entry (see `keys.rs`).
pub const RC_KEYSPACE: &str = "rc";
/// Name of the keyspace holding the GC fences (see `keys.rs`).
pub const FENCE_KEYSPACE: &str = "gc_fence";

/// The actor. Its reads (small fjall lookups) run on the thread it is started on; its
/// journal commits run as blocking tasks.
pub struct RefcountActor {
    config: RefcountConfig,
    db: Database,
    refs: Keyspace,
    rc: Keyspace,
    /// `gc_fence` (see `keys.rs`).
    fences: Keyspace,
    /// Bare ref adds under way per hash ([`BeginRefAdd`]): a GC fence waits for none.
    adds_under_way: std::collections::HashMap<Hash, u32>,
    on_change: Option<Recipient<RcChanged>>,
    pending: Pending,
    /// Where a failed journal commit (the store is dead) is reported, once.
    store_failure: StoreFailureReporter,
    /// An expiry pass over the upload refs is running (`expire.rs`).
    expiring: bool,
    /// Where the next tombstone purge step starts (`purge.rs`); `None`: at the beginning.
    purge_cursor: Option<Vec<u8>>,
}

impl RefcountActor {
    /// Open (or create) the `refs` and `rc` keyspaces in `db`. `on_change` is told about
    /// zero/non-zero transitions of a block's count.
    pub fn new(
        db: fjall::Database,
        config: RefcountConfig,
        on_change: Option<Recipient<RcChanged>>,
    ) -> Result<Self, RefcountError> {
        let refs = db
            .keyspace(REFS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(store_err)?;
        let rc = db
            .keyspace(RC_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(store_err)?;
        let fences = db
            .keyspace(FENCE_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(store_err)?;
        let max_ops = match config.sync {
            SyncMode::Batched => config.max_batch_ops,
            SyncMode::PerOp => 1,
        };
        Ok(RefcountActor {
            config,
            db,
            refs,
            rc,
            fences,
            adds_under_way: std::collections::HashMap::new(),
            on_change,
            pending: Pending::new(max_ops),
            store_failure: StoreFailureReporter::new("refcount"),
            expiring: false,
            purge_cursor: None,
        })
    }

    /// Report a failed journal commit (fjall is poisoned from then on) to `to`.
    pub fn with_store_failed(mut self, to: Recipient<StoreFailed>) -> Self {
        self.store_failure.set_recipient(to);
        self
    }

    /// A ref's current record: pending write, else stored record, else `None`.
    fn ref_state(&self, key: &[u8]) -> Result<Option<RefRec>, RefcountError> {
        if let Some(s) = self.pending.ref_state(key) {
            return Ok(s);
        }
        let v = self.refs.get(key).map_err(store_err)?;
        Ok(v.map(|v| decode_rec(key, &v)))
    }

    /// A block's current rc entry, or the parse error of its stored bytes.
    fn current_rc(&self, hash: &Hash) -> Result<Result<RcEntry, RcParseError>, RefcountError> {
        if let Some(e) = self.pending.rc(hash) {
            return Ok(Ok(e));
        }
        let v = self.rc.get(hash.as_bytes()).map_err(store_err)?;
        Ok(RcEntry::parse_opt(v.as_deref()))
    }

    /// A block's current rc entry; corrupt stored bytes are [`RefcountError::CorruptEntry`].
    fn rc_entry(&self, hash: &Hash) -> Result<RcEntry, RefcountError> {
        self.current_rc(hash)?
            .map_err(|source| RefcountError::CorruptEntry {
                hash: *hash,
                source,
            })
    }

    /// All ref records of a block (raw keys), stored ones overlaid with pending writes.
    fn refs_of(&self, hash: &Hash) -> Result<BTreeMap<Vec<u8>, RefRec>, RefcountError> {
        let stored = self.refs.prefix(hash.as_bytes()).map(|g| g.into_inner());
        let mut out = BTreeMap::new();
        for m in overlay(stored, self.pending.refs_of(hash).into_iter()) {
            let (k, s) = match m.map_err(store_err)? {
                Merged::Stored(k, v) => (k.to_vec(), decode_rec(&k, &v)),
                Merged::Pending(k, s) => (k, s),
            };
            out.insert(k, s);
        }
        Ok(out)
    }

    /// A block's rc entry, recounted from its refs when the stored bytes are corrupt.
    /// The flag says whether it was recounted (and so must be rewritten).
    fn rc_or_recount(&self, hash: &Hash) -> Result<(RcEntry, bool), RefcountError> {
        match self.current_rc(hash)? {
            Ok(e) => Ok((e, false)),
            Err(err) => {
                let live = self.refs_of(hash)?.values().filter(|s| s.is_live()).count() as u64;
                warn!(hash = %hash.short(), %err, live, "corrupt rc entry; recounted from refs");
                let e = if live > 0 {
                    RcEntry::Present { count: live }
                } else {
                    RcEntry::Absent
                };
                Ok((e, true))
            }
        }
    }

    /// Merge `incoming` (an `AddRef`'s live record, a `DropRef`'s tombstone, or a
    /// replica's record) into the ref's record, by the rule of `record.rs`. An add that
    /// leaves the name dropped (a tombstone of its incarnation or a higher one is here)
    /// is [`RefcountError::RefDropped`]; a drop of an incarnation older than the live
    /// one changes nothing.
    fn set_ref(
        &mut self,
        hash: Hash,
        ref_id: RefId,
        incoming: RefRec,
    ) -> Result<RefUpdate, RefcountError> {
        self.set_ref_announcing(hash, ref_id, incoming, true)
    }

    /// [`Self::set_ref`]; with `announce_new` false (only for a live record), the move
    /// from zero is not announced unless it met a GC fence (`AddStoredRef`: the block is stored here, so
    /// resync has nothing to fetch, unless a GC delete under way may remove it).
    fn set_ref_announcing(
        &mut self,
        hash: Hash,
        ref_id: RefId,
        incoming: RefRec,
        announce_new: bool,
    ) -> Result<RefUpdate, RefcountError> {
        let key = ref_key(&hash, &ref_id);
        let old = self.ref_state(&key)?;
        let new = merge_into(old, incoming);
        if incoming.is_live() && !new.is_live() {
            return Err(RefcountError::RefDropped {
                hash,
                ref_id,
                incarnation: new.incarnation,
            });
        }
        let changed = old != Some(new);
        let was_live = old.is_some_and(|o| o.is_live());
        let delta: i8 = match (was_live, new.is_live()) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        let (old_rc, recounted) = self.rc_or_recount(&hash)?;
        let count = match delta {
            1 => old_rc.count().saturating_add(1),
            -1 => old_rc.count().saturating_sub(1),
            _ => old_rc.count(),
        };
        let new_rc = old_rc.with_count(count, now_msec(), self.config.gc_delay);
        let write_rc = recounted || new_rc != old_rc;
        // Only a move between zero and non-zero is announced (and reads the fence).
        let change = ((old_rc.count() == 0) != (new_rc.count() == 0))
            .then(|| self.rc_changed(hash, old_rc, new_rc))
            .filter(|c| announce_new || c.fenced);
        if changed || write_rc {
            let g = self.pending.open_generation();
            if changed {
                g.refs.insert(key, Some(new));
            }
            if write_rc {
                g.rc.insert(hash, new_rc);
            }
            g.changes.extend(change);
        }
        debug!(hash = %hash.short(), %ref_id, record = ?new, changed, rc = ?new_rc, "ref updated");
        Ok(RefUpdate {
            changed,
            rc: new_rc,
        })
    }

    /// Start persisting the oldest pending generation unless a persist is running.
    fn start_persist(&mut self, ctx: &mut Context<Self>) {
        let Some(batch) = self.pending.take_next_batch() else {
            return;
        };
        let db = self.db.clone();
        let refs = self.refs.clone();
        let rc = self.rc.clone();
        let fences = self.fences.clone();
        let task =
            tokio::task::spawn_blocking(move || write_batch(&db, &refs, &rc, &fences, batch));
        ctx.spawn(task.into_actor(self).map(|res, act, ctx| {
            let res = act
                .store_failure
                .commit_result("committing a ref batch", res)
                .map_err(PersistError::from);
            act.persist_done(res, ctx);
        }));
    }

    /// The running persist ended: answer its waiters, announce its changes, start the next.
    fn persist_done(&mut self, res: Durable, ctx: &mut Context<Self>) {
        if let Some(g) = self.pending.finish() {
            match &res {
                Ok(()) => {
                    if let Some(r) = &self.on_change {
                        for c in g.changes {
                            r.do_send(c);
                        }
                    }
                }
                // fjall poisons the database after a failed journal write or sync, so
                // later writes fail too; the first failure went to the node (it exits),
                // so a dead store is not logged once per batch.
                Err(e) if self.store_failure.failed() => {
                    debug!(error = %e, ops = g.ops, "refcount batch not persisted")
                }
                Err(e) => error!(error = %e, ops = g.ops, "refcount batch not persisted"),
            }
            for w in g.waiters {
                let _ = w.send(res.clone());
            }
        }
        self.start_persist(ctx);
    }

    /// A future resolving once everything pending now is durable, then to `res`.
    fn reply_when_durable<T: Send + 'static>(
        &mut self,
        res: Result<T, RefcountError>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<T, RefcountError>> {
        let durable = self.pending.wait_durable();
        self.start_persist(ctx);
        Box::pin(async move {
            wait_durable(durable).await?;
            res
        })
    }

    /// Up to `limit` hashes with an rc entry after `after`: stored keys merged with
    /// pending writes (a pending `Absent` hides a stored key).
    fn list_rc_hashes(
        &self,
        after: Option<Hash>,
        limit: usize,
    ) -> Result<Vec<Hash>, RefcountError> {
        let lower = match after {
            Some(h) => Bound::Excluded(h),
            None => Bound::Unbounded,
        };
        let pending = self.pending.all_rc();
        // A pending `Absent` removes the entry.
        let pending = pending
            .range((lower, Bound::Unbounded))
            .map(|(h, e)| (h, (*e != RcEntry::Absent).then_some(())));
        let stored = match after {
            Some(h) => self
                .rc
                .range::<&[u8], _>((Bound::Excluded(&h.as_bytes()[..]), Bound::Unbounded)),
            None => self.rc.iter(),
        };
        let stored = keyed_by_hash(stored.map(|g| g.key().map(|k| (k, ()))));
        overlay(stored, pending)
            .take(limit)
            .map(|m| match m.map_err(store_err)? {
                Merged::Stored(h, ()) => Ok(h),
                Merged::Pending(h, ()) => Ok(*h),
            })
            .collect()
    }

    /// Stage the fixes found by a rebuild scan; returns the report.
    fn apply_rebuild(&mut self, entries: Vec<rebuild::ScanEntry>) -> RebuildReport {
        let now = now_msec();
        let mut report = RebuildReport::default();
        for e in entries {
            report.entries += 1;
            let want = rebuild::desired_entry(&e.stored, e.live, now, self.config.gc_delay);
            if e.stored.as_ref().ok() == Some(&want) {
                continue;
            }
            report.fixed += 1;
            let old = e.stored.clone().unwrap_or(RcEntry::Absent);
            warn!(hash = %e.hash.short(), stored = ?e.stored, live = e.live, fixed = ?want, "rc entry rebuilt");
            let change = self.rc_changed(e.hash, old, want);
            let g = self.pending.open_generation();
            g.rc.insert(e.hash, want);
            if (old.count() == 0) != (want.count() == 0) {
                g.changes.push(change);
            }
        }
        report
    }
}

/// Commit one generation atomically and sync the journal (runs on a blocking thread).
fn write_batch(
    db: &Database,
    refs: &Keyspace,
    rc: &Keyspace,
    fences: &Keyspace,
    batch: Batch,
) -> Result<(), fjall::Error> {
    let mut b = db.batch().durability(Some(PersistMode::SyncAll));
    for (k, s) in batch.refs {
        match s {
            Some(s) => b.insert(refs, k, encode_rec(&s).to_vec()),
            None => b.remove(refs, k),
        }
    }
    for (h, e) in batch.rc {
        match e.serialize() {
            Some(v) => b.insert(rc, h.as_bytes().to_vec(), v),
            None => b.remove(rc, h.as_bytes().to_vec()),
        }
    }
    for (h, f) in batch.fences {
        match f {
            Some(at) => b.insert(fences, h.as_bytes().to_vec(), encode_fence(at).to_vec()),
            None => b.remove(fences, h.as_bytes().to_vec()),
        }
    }
    b.commit()
}

/// Wait for a durability notice (none needed when nothing was pending).
async fn wait_durable(rx: Option<oneshot::Receiver<Durable>>) -> Result<(), RefcountError> {
    match rx {
        None => Ok(()),
        Some(rx) => match rx.await {
            Ok(r) => r.map_err(RefcountError::NotPersisted),
            Err(_) => Err(RefcountError::Stopped {
                during: "before the write was persisted",
            }),
        },
    }
}

fn store_err(e: fjall::Error) -> RefcountError {
    RefcountError::Store(e)
}

/// Stored `rc` pairs keyed by their hash. A key that is not a hash cannot name a block:
/// it is logged and skipped, never an error (invariant 5).
fn keyed_by_hash<V>(
    items: impl Iterator<Item = fjall::Result<(fjall::Slice, V)>>,
) -> impl Iterator<Item = fjall::Result<(Hash, V)>> {
    items.filter_map(|item| match item {
        Err(e) => Some(Err(e)),
        Ok((k, v)) => match Hash::from_slice(&k) {
            Some(h) => Some(Ok((h, v))),
            None => {
                warn!(key = %hex::encode(&k), "rc key is not a hash; skipped");
                None
            }
        },
    })
}

impl Actor for RefcountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Group commit needs many mutations queued while a sync runs; the default
        // mailbox of 16 would throttle senders to 16 per sync.
        ctx.set_mailbox_capacity(self.config.max_batch_ops.max(16));
        match self.lift_stale_fences() {
            Ok(()) => self.start_persist(ctx),
            Err(e) => error!(error = %e, "cannot read the GC fences left by a previous run"),
        }
        self.schedule_expiry(ctx);
        self.schedule_purge(ctx);
    }
}

impl Handler<AddRef> for RefcountActor {
    type Result = ResponseFuture<Result<RefUpdate, RefcountError>>;
    fn handle(&mut self, m: AddRef, ctx: &mut Context<Self>) -> Self::Result {
        let res = self.set_ref(m.hash, m.ref_id, RefRec::live(m.incarnation));
        self.reply_when_durable(res, ctx)
    }
}

impl Handler<AddStoredRef> for RefcountActor {
    type Result = ResponseFuture<Result<RefUpdate, RefcountError>>;
    fn handle(&mut self, m: AddStoredRef, ctx: &mut Context<Self>) -> Self::Result {
        let res = self.set_ref_announcing(m.hash, m.ref_id, RefRec::live(m.incarnation), false);
        self.reply_when_durable(res, ctx)
    }
}

impl Handler<DropRef> for RefcountActor {
    type Result = ResponseFuture<Result<RefUpdate, RefcountError>>;
    fn handle(&mut self, m: DropRef, ctx: &mut Context<Self>) -> Self::Result {
        let res = self.set_ref(m.hash, m.ref_id, RefRec::dropped(m.incarnation, now_msec()));
        self.reply_when_durable(res, ctx)
    }
}

impl Handler<GetRc> for RefcountActor {
    type Result = Result<RcEntry, RefcountError>;
    fn handle(&mut self, m: GetRc, _ctx: &mut Context<Self>) -> Self::Result {
        self.rc_entry(&m.hash)
    }
}

impl Handler<ListRefs> for RefcountActor {
    type Result = Result<Vec<(RefId, RefState)>, RefcountError>;
    fn handle(&mut self, m: ListRefs, _ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        for (k, s) in self.refs_of(&m.hash)? {
            match split_ref_key(&k) {
                Some((_, ref_id)) => out.push((ref_id, s.state)),
                None => warn!(key = %hex::encode(&k), "malformed refs key; skipped"),
            }
        }
        Ok(out)
    }
}

impl Handler<ClearIfDeletable> for RefcountActor {
    type Result = ResponseFuture<Result<bool, RefcountError>>;
    fn handle(&mut self, m: ClearIfDeletable, ctx: &mut Context<Self>) -> Self::Result {
        let res = match self.current_rc(&m.hash) {
            Err(e) => Err(e),
            Ok(Err(source)) => Err(RefcountError::CorruptEntry {
                hash: m.hash,
                source,
            }),
            Ok(Ok(RcEntry::Deletable { at_time })) if at_time <= now_msec() => {
                self.pending
                    .open_generation()
                    .rc
                    .insert(m.hash, RcEntry::Absent);
                Ok(true)
            }
            Ok(Ok(_)) => Ok(false),
        };
        self.reply_when_durable(res, ctx)
    }
}

impl Handler<RebuildRc> for RefcountActor {
    type Result = ResponseFuture<Result<RebuildReport, RefcountError>>;
    fn handle(&mut self, _m: RebuildRc, ctx: &mut Context<Self>) -> Self::Result {
        // The scan runs off the actor's thread, but under `ctx.wait`: no other message
        // is handled until its fixes are staged, so none can slip between the snapshot
        // of pending writes taken here and those fixes.
        let refs = self.refs.clone();
        let rc = self.rc.clone();
        let pending_refs = self.pending.all_refs();
        let pending_rc = self.pending.all_rc();
        let task = tokio::task::spawn_blocking(move || {
            rebuild::scan(&refs, &rc, &pending_refs, &pending_rc)
        });
        let (tx, rx) = oneshot::channel();
        ctx.wait(task.into_actor(self).map(move |res, act, ctx| {
            let out = match res {
                Ok(Ok(entries)) => {
                    let report = act.apply_rebuild(entries);
                    let durable = act.pending.wait_durable();
                    act.start_persist(ctx);
                    Ok((report, durable))
                }
                Ok(Err(e)) => Err(store_err(e)),
                Err(join) => Err(RefcountError::RebuildTask(join)),
            };
            let _ = tx.send(out);
        }));
        Box::pin(async move {
            let (report, durable) = rx.await.map_err(|_| RefcountError::Stopped {
                during: "during the rebuild",
            })??;
            wait_durable(durable).await?;
            Ok(report)
        })
    }
}

impl Handler<ListRcHashes> for RefcountActor {
    type Result = Result<Vec<Hash>, RefcountError>;
    fn handle(&mut self, m: ListRcHashes, _ctx: &mut Context<Self>) -> Self::Result {
        self.list_rc_hashes(m.after, m.limit)
    }
}
