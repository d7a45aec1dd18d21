//! ResyncActor: the persisted resync queue, its errors, repair and scrub.
//!
//! State owned: four keyspaces of the node's metadata database (encodings in `keys.rs`):
//! `resync_queue` (blocks to look at, in due order) with its per-hash index
//! `resync_queue_index` (one waiting entry per hash), `resync_errors` (the errors table
//! and its backoff) and `resync_settings` (workers, tranquility, scrub tranquility, the
//! scrub's state, position and counters); in memory, the busy set (blocks being
//! resynced now) and the repair progress.
//!
//! Messages: [`Schedule`], [`RcChanged`] (from the refcount actor), [`RetryNow`],
//! [`SetWorkers`], [`SetTranquility`], [`SetScrubTranquility`], [`SetClientLoad`], [`StartRepair`],
//! [`ScrubCommand`], [`GetResyncStatus`], [`ListResyncErrors`], [`GetBlockError`].
//! It talks to the storage and refcount actors and, through a `Recipient<Call>`, to the
//! peers (a test double stands in for them in tests).
//!
//! Files: `decision.rs` (the pure decision and backoff), `keys.rs` (encodings),
//! `queue.rs` (queue and errors over fjall), `work.rs` (resyncing one block),
//! `offload.rs` (the GC steps behind the fence of `gc.rs`), `sweep.rs` (re-deriving
//! lost schedules from rc and the block files after a start), `pages.rs` (the errors
//! table a page at a time, repairs after a read at most once per hash and minute),
//! `repair.rs`, `scrub.rs`,
//! `workers.rs` (the worker loop: pumping due items, rests, the disk-space probe);
//! `config.rs`, `messages.rs` and `status.rs` hold the settings, messages and status types;
//! this file holds the actor's state and its handlers.
//!
//! Resyncing a block is Garage's `resync_block` ([`decision::decide`]): a block that is
//! referenced but missing is fetched from the other nodes that should hold it; a block
//! whose grace period is over is first offered to the other holders that still need it,
//! then deleted here if it is still deletable. Workers take due items from the queue,
//! never two for the same block (busy set), and sleep `tranquility × time taken` after
//! each. Nothing polls: workers sleep until the earliest due time, and a schedule or a
//! freed worker wakes them. An item leaves the queue only once processed, so a stop or
//! a crash loses nothing (an in-flight resync is simply run again: it is idempotent,
//! and the storage actor's writes are atomic).
//!
//! Catching up: while the node tells us there is no client load ([`SetClientLoad`]),
//! workers run at [`MAX_WORKERS`] with no tranquility pause ([`decision::pace`]). A block
//! that failed because this node's disk is full does not wait out the exponential
//! backoff: every [`SPACE_PROBE_INTERVAL`] one such block is retried, and as soon as one
//! succeeds (space was freed, by GC or an operator) all of them are retried at once.
mod config;
pub mod decision;
mod deps;
mod fetch_now;
mod keys;
mod layout;
mod messages;
mod offload;
#[cfg(test)]
mod offload_tests;
mod pages;
#[cfg(test)]
mod present_ref_tests;
mod queue;
mod repair;
mod scrub;
mod status;
mod sweep;
mod work;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::hash::Hash;
use crate::peer::Call;
use crate::placement::Placement;
use crate::rc::now_msec;
use crate::refcount::{RcChanged, RefcountActor};
use crate::storage::StorageActor;
use crate::store_failure::{is_fatal_write_error, StoreFailed, StoreFailureReporter};
pub use config::{
    ResyncConfig, ScheduleReason, AFTER_GC_DELAY, DEFAULT_RESYNC_BACKOFF, DEFAULT_SCRUB_INTERVAL,
    DEFAULT_SCRUB_TRANQUILITY, DEFAULT_TRANQUILITY, MAX_TRANQUILITY, MAX_WORKERS,
    SPACE_PROBE_INTERVAL,
};
use deps::Deps;
pub use deps::ResyncBlockError;
pub use messages::{
    check_tranquility, check_workers, FetchNow, GetBlockError, GetResyncStatus, ListResyncErrors,
    ResyncError, RetryNow, Schedule, ScrubCommand, SetClientLoad, SetLayoutAgreement,
    SetScrubTranquility, SetTranquility, SetWorkers, StartRepair,
};
pub use pages::{
    ListResyncErrorsPage, RepairAfterRead, ResyncErrorPage, READ_REPAIR_INTERVAL, READ_REPAIR_TABLE,
};
use queue::Queue;
pub use status::{RepairStatus, ResyncErrorInfo, ResyncStatus, ScrubState, ScrubStatus};
use workers::Rest;

/// Hashes listed per page by repair and scrub (bounds their memory).
const PAGE: usize = 256;
/// How often queue and error changes are synced to the journal when something changed
/// (the refcount actor's syncs cover them too; this bounds the loss when nothing else
/// writes). A lost change is safe: a lost fetch schedule is re-derived by the start-up sweep
/// (`sweep.rs`) or a repair, a lost removal
/// only re-runs an idempotent resync.
const PERSIST_INTERVAL: Duration = Duration::from_secs(5);

/// The actor. It runs on the thread it is started on (the node starts it beside the
/// others); its fjall calls are small and never fsync, but a write can wait for the
/// journal lock while another actor of the same database syncs.
pub struct ResyncActor {
    config: ResyncConfig,
    db: Database,
    /// `resync_queue`, `resync_queue_index` and `resync_errors`.
    queue: Queue,
    /// `resync_settings` (see `keys.rs`).
    settings: Keyspace,
    deps: Deps,
    workers: usize,
    tranquility: u32,
    scrub_tranquility: u32,
    /// Worker slots in use (a worker keeps its slot during its tranquility pause).
    active: usize,
    /// Blocks being resynced now: never two workers on one block.
    busy: HashSet<Hash>,
    /// The timer that wakes the workers at the earliest due time.
    wake: Option<SpawnHandle>,
    /// Workers resting after a block (`tranquility × time taken`), by rest id: a new
    /// tranquility shortens or ends their rest at once.
    resting: HashMap<u64, Rest>,
    next_rest: u64,
    /// The scrub's rest between two blocks, if it rests now.
    scrub_rest: Option<Rest>,
    /// Something was written since the last journal sync.
    dirty: bool,
    /// Where a dead metadata store is reported, once; once it is, workers stop.
    store_failure: StoreFailureReporter,
    ops_ok: u64,
    ops_error: u64,
    repair: RepairStatus,
    scrub_state: ScrubState,
    scrub_position: Option<Hash>,
    scrub_checked: u64,
    scrub_corruptions: u64,
    scrub_next_run: u64,
    scrub_page: Vec<Hash>,
    scrub_stepping: bool,
    /// No client load right now (see [`SetClientLoad`]): pace up.
    client_idle: bool,
    /// Blocks whose last attempt failed because this node's disk is full.
    space_waiters: BTreeSet<Hash>,
    /// The waiter retried as the current space probe, if one runs.
    space_probe: Option<Hash>,
    /// The timer of the next space probe.
    space_timer: Option<SpawnHandle>,
    /// Hashes whose holders were asked to resync after a read missed them, recently.
    read_repairs: pages::RecentRepairs,
    /// Fetches under way for [`FetchNow`], by hash, with the replies waiting for them
    /// (`fetch_now.rs`): one fetch per hash at a time.
    fetching: HashMap<Hash, Vec<fetch_now::FetchWaiter>>,
}

impl ResyncActor {
    /// Open the keyspaces and restore the persisted queue, settings and scrub state.
    /// Workers start when the actor starts.
    pub fn new(
        db: Database,
        config: ResyncConfig,
        storage: Addr<StorageActor>,
        refcount: Addr<RefcountActor>,
        peers: Recipient<Call>,
        placement: Arc<dyn Placement>,
    ) -> Result<Self, ResyncError> {
        let queue = Queue::open(&db)?;
        let settings = db.keyspace("resync_settings", KeyspaceCreateOptions::default)?;
        let get = |k: &str| -> Result<Option<u64>, ResyncError> {
            Ok(settings.get(k)?.and_then(|v| keys::parse_u64(&v)))
        };
        let workers = get(keys::WORKERS)?.map_or(1, |w| (w as usize).clamp(1, MAX_WORKERS));
        // Values stored before the range check existed are clamped, never wrapped.
        let clamp = |t: u64| t.min(MAX_TRANQUILITY as u64) as u32;
        let tranquility = get(keys::TRANQUILITY)?.map_or(DEFAULT_TRANQUILITY, clamp);
        let scrub_tranquility =
            get(keys::SCRUB_TRANQUILITY)?.map_or(DEFAULT_SCRUB_TRANQUILITY, clamp);
        let scrub_state = match get(keys::SCRUB_STATE)? {
            Some(1) => ScrubState::Running,
            Some(2) => ScrubState::Paused,
            _ => ScrubState::Idle,
        };
        let scrub_position = settings
            .get(keys::SCRUB_POSITION)?
            .and_then(|v| Hash::from_slice(&v));
        let scrub_checked = get(keys::SCRUB_CHECKED)?.unwrap_or(0);
        let scrub_corruptions = get(keys::SCRUB_CORRUPTIONS)?.unwrap_or(0);
        let scrub_next_run = match get(keys::SCRUB_NEXT_RUN)? {
            Some(t) => t,
            None => {
                let t = scrub::next_scrub_time(config.scrub_interval);
                settings.insert(keys::SCRUB_NEXT_RUN, t.to_be_bytes())?;
                t
            }
        };
        let deps = Deps {
            self_id: config.self_id,
            storage,
            refcount,
            peers,
            placement,
            block_timeout: config.block_timeout,
            need_block_timeout: config.need_block_timeout,
            may_delete: true,
            gc_delay: config.gc_delay,
            pause: None,
            budget: None,
        };
        Ok(ResyncActor {
            config,
            db,
            queue,
            settings,
            deps,
            workers,
            tranquility,
            scrub_tranquility,
            active: 0,
            busy: HashSet::new(),
            wake: None,
            resting: HashMap::new(),
            next_rest: 0,
            scrub_rest: None,
            dirty: false,
            store_failure: StoreFailureReporter::new("resync"),
            ops_ok: 0,
            ops_error: 0,
            repair: RepairStatus::default(),
            scrub_state,
            scrub_position,
            scrub_checked,
            scrub_corruptions,
            scrub_next_run,
            scrub_page: Vec::new(),
            scrub_stepping: false,
            client_idle: false,
            space_waiters: BTreeSet::new(),
            space_probe: None,
            space_timer: None,
            read_repairs: pages::RecentRepairs::default(),
            fetching: HashMap::new(),
        })
    }

    /// Report a dead metadata store (the node exits) instead of failing forever.
    /// Charge the blocks read here to be sent to peers (GC offload) to `pool` before
    /// they are read.
    pub fn with_read_budget(mut self, pool: crate::budget::Pool) -> Self {
        self.deps.budget = Some(pool);
        self
    }

    pub fn with_store_failed(mut self, to: Recipient<StoreFailed>) -> Self {
        self.store_failure.set_recipient(to);
        self
    }

    /// A metadata write failed `during` something: a dead store is reported once and
    /// stops the workers (see [`Self::pump`]); anything else is logged.
    fn store_write_failed(&mut self, during: &'static str, hash: Option<Hash>, e: ResyncError) {
        match e {
            ResyncError::Store(cause) if is_fatal_write_error(&cause) => {
                self.store_failure.report(during, cause)
            }
            other => match hash {
                Some(h) => tracing::error!(hash = %h.short(), "{during}: {other}"),
                None => tracing::error!("{during}: {other}"),
            },
        }
    }

    fn put_setting(&mut self, key: &str, v: u64) {
        self.dirty = true;
        if let Err(e) = self.settings.insert(key, v.to_be_bytes()) {
            self.store_write_failed("persisting a resync setting", None, e.into());
        }
    }

    /// Queue `hash` at `due_ms` (one waiting entry per hash: see [`Queue::schedule`]).
    /// The caller then calls [`Self::pump`] so a sleeping worker wakes at once.
    fn enqueue(&mut self, hash: Hash, due_ms: u64) {
        self.dirty = true;
        if let Err(e) = self.queue.schedule(hash, due_ms) {
            self.store_write_failed("queueing a block for resync", Some(hash), e);
        }
    }

    /// Retry `hash` now instead of at its backoff time.
    fn retry_now(&mut self, hash: Hash, now: u64) {
        if let Err(e) = self.queue.retry_error_now(&hash, now) {
            tracing::error!(hash = %hash.short(), "cannot update resync error: {e}");
        }
        self.enqueue(hash, now);
    }

    fn record_error(&mut self, hash: Hash, error: String) {
        let now = now_msec();
        match self
            .queue
            .record_error(hash, error.clone(), self.config.backoff_base, now)
        {
            Ok(e) => {
                tracing::warn!(hash = %hash.short(), count = e.count, "resync failed, retrying in {:?}: {error}", Duration::from_millis(e.next_try - now));
                self.enqueue(hash, e.next_try);
            }
            Err(e) => {
                self.store_write_failed("recording a resync error", Some(hash), e);
                let base = self.config.backoff_base.as_millis() as u64;
                self.enqueue(hash, now.saturating_add(base));
            }
        }
    }

    fn status(&self) -> ResyncStatus {
        ResyncStatus {
            queue_length: self.queue.len(),
            errors: self.queue.error_count(),
            busy: self.busy.len() as u64,
            workers: self.workers,
            tranquility: self.tranquility,
            ops_ok: self.ops_ok,
            ops_error: self.ops_error,
            scrub: ScrubStatus {
                state: self.scrub_state,
                tranquility: self.scrub_tranquility,
                checked: self.scrub_checked,
                position: self.scrub_position.map(|h| h.to_hex()),
                corruptions: self.scrub_corruptions,
                next_run: self.scrub_next_run,
            },
            repair: self.repair.clone(),
        }
    }
}

impl Actor for ResyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
        self.schedule_sweeps(ctx);
        if self.scrub_state == ScrubState::Running {
            tracing::info!(position = ?self.scrub_position, "resuming scrub");
            self.scrub_step(ctx);
        }
        // Automatic scrub (checked each minute: its time is days away), and the
        // periodic journal sync of our changes.
        ctx.run_interval(Duration::from_secs(60), |act, ctx| {
            if act.scrub_state == ScrubState::Idle && now_msec() >= act.scrub_next_run {
                act.start_scrub(ctx);
            }
        });
        ctx.run_interval(PERSIST_INTERVAL, |act, ctx| {
            if act.store_failure.failed() || !std::mem::take(&mut act.dirty) {
                return;
            }
            let db = act.db.clone();
            let sync =
                actix_rt::task::spawn_blocking(move || db.persist(fjall::PersistMode::SyncAll));
            ctx.spawn(sync.into_actor(act).map(|res, act, _ctx| match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => act.store_write_failed(
                    "syncing the resync queue to the journal",
                    None,
                    e.into(),
                ),
                Err(join) => tracing::error!("resync journal sync task failed: {join}"),
            }));
        });
    }
}

impl Handler<Schedule> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: Schedule, ctx: &mut Context<Self>) {
        tracing::debug!(hash = %msg.hash.short(), reason = ?msg.reason, delay = ?msg.delay, "resync scheduled");
        self.enqueue(msg.hash, now_msec() + msg.delay.as_millis() as u64);
        self.pump(ctx);
    }
}

impl Handler<SetLayoutAgreement> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: SetLayoutAgreement, _ctx: &mut Context<Self>) {
        if self.deps.may_delete != msg.agreed {
            tracing::info!(
                agreed = msg.agreed,
                "layout agreement changed; deletions {}",
                if msg.agreed { "allowed" } else { "put off" }
            );
        }
        self.deps.may_delete = msg.agreed;
    }
}

impl Handler<RcChanged> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: RcChanged, ctx: &mut Context<Self>) {
        // The refcount actor tells only of moves between zero and non-zero.
        let reason = if msg.new.count() > 0 {
            ScheduleReason::NewRef
        } else {
            ScheduleReason::Dropped
        };
        let mut schedule = Schedule::for_reason(msg.hash, reason, &self.config);
        // A ref that met a GC fence: the block may be gone in a moment, fetch it now.
        if msg.fenced {
            schedule.delay = Duration::ZERO;
        }
        self.handle(schedule, ctx);
    }
}

impl Handler<RetryNow> for ResyncActor {
    type Result = usize;

    fn handle(&mut self, msg: RetryNow, ctx: &mut Context<Self>) -> usize {
        let now = now_msec();
        let hashes: Vec<Hash> = match msg.hash {
            Some(h) => vec![h],
            None => self
                .queue
                .error_entries()
                .into_iter()
                .map(|(h, _)| h)
                .collect(),
        };
        for h in &hashes {
            // Moves the waiting retry (due at its backoff) to now.
            self.retry_now(*h, now);
        }
        self.pump(ctx);
        hashes.len()
    }
}

impl Handler<SetWorkers> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: SetWorkers, ctx: &mut Context<Self>) -> Self::Result {
        self.workers = check_workers(msg.workers as u64)?;
        self.put_setting(keys::WORKERS, msg.workers as u64);
        self.pump(ctx);
        Ok(())
    }
}

impl Handler<SetTranquility> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: SetTranquility, ctx: &mut Context<Self>) -> Self::Result {
        self.tranquility = check_tranquility("resync_tranquility", msg.tranquility as u64)?;
        self.put_setting(keys::TRANQUILITY, msg.tranquility as u64);
        // At once: a worker resting under the old value must not sleep it out.
        self.retime_rests(ctx);
        Ok(())
    }
}

impl Handler<SetClientLoad> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: SetClientLoad, ctx: &mut Context<Self>) {
        if self.client_idle != msg.idle {
            tracing::debug!(
                idle = msg.idle,
                "client load changed: resync pace {:?}",
                decision::pace(self.workers, self.tranquility, msg.idle, MAX_WORKERS)
            );
            self.client_idle = msg.idle;
            // The tranquility in effect changed: resting workers rest by the new one.
            self.retime_rests(ctx);
            self.pump(ctx);
        }
    }
}

impl Handler<SetScrubTranquility> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: SetScrubTranquility, ctx: &mut Context<Self>) -> Self::Result {
        self.scrub_tranquility = check_tranquility("scrub_tranquility", msg.tranquility as u64)?;
        self.put_setting(keys::SCRUB_TRANQUILITY, msg.tranquility as u64);
        self.retime_scrub_rest(ctx);
        Ok(())
    }
}

impl Handler<GetResyncStatus> for ResyncActor {
    type Result = MessageResult<GetResyncStatus>;

    fn handle(&mut self, _msg: GetResyncStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<ListResyncErrors> for ResyncActor {
    type Result = MessageResult<ListResyncErrors>;

    fn handle(&mut self, _msg: ListResyncErrors, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.queue
                .error_entries()
                .into_iter()
                .map(|(h, e)| ResyncErrorInfo {
                    hash: h.to_hex(),
                    count: e.count,
                    last_try: e.last_try,
                    next_try: e.next_try,
                    error: e.message,
                })
                .collect(),
        )
    }
}

impl Handler<GetBlockError> for ResyncActor {
    type Result = Option<String>;

    fn handle(&mut self, msg: GetBlockError, _ctx: &mut Context<Self>) -> Option<String> {
        self.queue.error(&msg.hash).map(|e| e.message)
    }
}
