//! ResyncActor: the persisted resync queue, its errors, repair and scrub.
//!
//! State owned (fjall keyspaces of the node's metadata database, see [`keys`] below):
//! the queue of blocks to look at, the errors table with its backoff, the settings
//! (workers, tranquility, scrub tranquility) and the scrub's position and counters;
//! in memory, the busy set (blocks being resynced now) and the repair progress.
//!
//! Messages: [`Schedule`], [`RcChanged`] (from the refcount actor), [`RetryNow`],
//! [`SetWorkers`], [`SetTranquility`], [`SetScrubTranquility`], [`StartRepair`],
//! [`ScrubCommand`], [`GetResyncStatus`], [`ListResyncErrors`], [`GetBlockError`].
//! It talks to the storage and refcount actors and, through a `Recipient<Call>`, to the
//! peers (a test double stands in for them in tests).
//!
//! Resyncing a block is the seed's `resync_block` ([`decision::decide`]): a block that is
//! referenced but missing is fetched from the other nodes that should hold it; a block
//! whose grace period is over is first offered to the other holders that still need it,
//! then deleted here if it is still deletable. Workers take due items from the queue,
//! never two for the same block (busy set), and sleep `tranquility × time taken` after
//! each. An item leaves the queue only once processed, so a crash loses nothing.

pub mod decision;
mod keys;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use serde::Serialize;

use crate::frame::BlockRpc;
use crate::hash::{Hash, NodeId};
use crate::peer::{Call, Priority, RpcError};
use crate::placement::Placement;
use crate::rc::now_msec;
use crate::refcount::{ClearIfDeletable, GetRc, ListRcHashes, RcChanged, RebuildRc, RefcountActor};
use crate::storage::{
    BlockExists, DeleteBlock, ListBlocks, ReadBlock, StorageActor, StorageError, WriteBlock,
};
use decision::{backoff, decide, Decision};
use keys::ErrorEntry;

/// Most resync workers (each runs one block at a time).
pub const MAX_WORKERS: usize = 8;
/// Extra wait after a grace period before resync looks at a dropped block, as the seed:
/// lets the last ref's `Deletable` deadline pass on every holder.
pub const AFTER_GC_DELAY: Duration = Duration::from_secs(10);
/// Hashes listed per page by repair and scrub (bounds their memory).
const PAGE: usize = 256;

/// Settings of a [`ResyncActor`].
#[derive(Debug, Clone)]
pub struct ResyncConfig {
    /// This node.
    pub self_id: NodeId,
    /// Timeout of a block read/write to a peer; a new ref is looked at after twice this
    /// (to let the writer deliver the block first).
    pub block_timeout: Duration,
    /// Timeout of a `NeedBlockQuery`.
    pub need_block_timeout: Duration,
    /// The refcount grace period (a dropped block is looked at after it + 10 s).
    pub gc_delay: Duration,
    /// First retry delay after an error (then doubling, capped at 64×). Default 60 s.
    pub backoff_base: Duration,
    /// Automatic scrub interval (randomised ±5 days when at least 10 days). Default 30 days.
    pub scrub_interval: Duration,
    /// Extra wait after `gc_delay` before a dropped block is looked at ([`AFTER_GC_DELAY`]).
    pub after_gc_delay: Duration,
}

impl ResyncConfig {
    /// Defaults for `self_id`: timeouts 30 s / 5 s, gc_delay 10 min, backoff 60 s,
    /// scrub every 30 days.
    pub fn new(self_id: NodeId) -> Self {
        ResyncConfig {
            self_id,
            block_timeout: Duration::from_secs(30),
            need_block_timeout: Duration::from_secs(5),
            gc_delay: Duration::from_secs(600),
            backoff_base: Duration::from_secs(60),
            scrub_interval: Duration::from_secs(30 * 86400),
            after_gc_delay: AFTER_GC_DELAY,
        }
    }
}

/// Errors of the resync actor.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("metadata store error: {0}")]
    Store(String),
    #[error("resync workers must be between 1 and {MAX_WORKERS}, got {0}")]
    BadWorkers(usize),
    #[error("a repair is already running")]
    RepairRunning,
    #[error("scrub cannot {action} while it is {state}")]
    ScrubState {
        action: &'static str,
        state: &'static str,
    },
}

impl From<fjall::Error> for ResyncError {
    fn from(e: fjall::Error) -> Self {
        ResyncError::Store(e.to_string())
    }
}

/// Why a block was scheduled (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ScheduleReason {
    /// Its rc went from 0 to 1.
    NewRef,
    /// Its rc dropped to 0.
    Dropped,
    /// A read found it missing or rotten.
    ReadFailed,
    /// A `PutBlock` arrived for a block with no refs here.
    OrphanPut,
    /// Repair.
    Repair,
    /// Scrub found it rotten.
    Scrub,
    /// An operator asked.
    Manual,
    /// A previous attempt failed.
    Retry,
}

/// Look at `hash` after `delay`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Schedule {
    pub hash: Hash,
    pub delay: Duration,
    pub reason: ScheduleReason,
}

/// Retry one errored block now, or every errored block (`hash: None`); replies how many.
#[derive(Message, Debug, Clone)]
#[rtype(result = "usize")]
pub struct RetryNow {
    pub hash: Option<Hash>,
}

/// Set the number of resync workers (1..=8); persisted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct SetWorkers(pub usize);

/// Set the resync tranquility; persisted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct SetTranquility(pub u32);

/// Set the scrub tranquility; persisted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct SetScrubTranquility(pub u32);

/// Queue every hash with an rc entry and every block on disk; optionally rebuild `rc`
/// from `refs` first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct StartRepair {
    pub rebuild_rc: bool,
}

/// Scrub control.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "Result<(), ResyncError>")]
pub enum ScrubCommand {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// Ask for the [`ResyncStatus`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "ResyncStatus")]
pub struct GetResyncStatus;

/// List the errors table.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Vec<ResyncErrorInfo>")]
pub struct ListResyncErrors;

/// The last resync error of one block, if any.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Option<String>")]
pub struct GetBlockError {
    pub hash: Hash,
}

/// One entry of the errors table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResyncErrorInfo {
    pub hash: String,
    pub count: u64,
    /// ms since the epoch.
    pub last_try: u64,
    /// ms since the epoch.
    pub next_try: u64,
    pub error: String,
}

/// Scrub state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrubState {
    Idle,
    Running,
    Paused,
}

impl ScrubState {
    fn name(self) -> &'static str {
        match self {
            ScrubState::Idle => "idle",
            ScrubState::Running => "running",
            ScrubState::Paused => "paused",
        }
    }
}

/// Scrub status.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubStatus {
    pub state: ScrubState,
    pub tranquility: u32,
    /// Blocks checked in the current (or last) pass.
    pub checked: u64,
    /// Last hash checked in the current pass.
    pub position: Option<String>,
    /// Corrupted blocks found, all time.
    pub corruptions: u64,
    /// When the next automatic scrub starts (ms since the epoch).
    pub next_run: u64,
}

/// Repair progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairStatus {
    pub running: bool,
    /// `rebuild_rc`, `rc`, `blocks` or `done`.
    pub phase: String,
    /// Items queued by the current (or last) repair.
    pub queued: u64,
    /// Resyncs finished since the repair started.
    pub done: u64,
}

/// Everything the API and metrics show of resync.
#[derive(Debug, Clone, Serialize)]
pub struct ResyncStatus {
    pub queue_length: u64,
    pub errors: u64,
    pub busy: u64,
    pub workers: usize,
    pub tranquility: u32,
    pub ops_ok: u64,
    pub ops_error: u64,
    pub scrub: ScrubStatus,
    pub repair: RepairStatus,
}

/// What the workers need to resync a block: cheap to clone into a `'static` future.
#[derive(Clone)]
struct Deps {
    self_id: NodeId,
    storage: Addr<StorageActor>,
    refcount: Addr<RefcountActor>,
    peers: Recipient<Call>,
    placement: Arc<dyn Placement>,
    block_timeout: Duration,
    need_block_timeout: Duration,
}

/// Result of one resync.
enum Outcome {
    Done,
    /// Look again at this time (ms): grace period still running.
    Later(u64),
}

/// The actor.
pub struct ResyncActor {
    config: ResyncConfig,
    db: Database,
    queue: Keyspace,
    errors: Keyspace,
    settings: Keyspace,
    deps: Deps,
    workers: usize,
    tranquility: u32,
    scrub_tranquility: u32,
    active: usize,
    /// Items in `resync_queue` (counted at start, then kept; `approximate_len` counts
    /// deleted keys until compaction).
    queued: u64,
    busy: HashSet<Hash>,
    wake: Option<SpawnHandle>,
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
}

impl ResyncActor {
    /// Open the keyspaces and restore the persisted settings and scrub state.
    pub fn new(
        db: Database,
        config: ResyncConfig,
        storage: Addr<StorageActor>,
        refcount: Addr<RefcountActor>,
        peers: Recipient<Call>,
        placement: Arc<dyn Placement>,
    ) -> Result<Self, ResyncError> {
        let queue = db.keyspace("resync_queue", KeyspaceCreateOptions::default)?;
        let errors = db.keyspace("resync_errors", KeyspaceCreateOptions::default)?;
        let settings = db.keyspace("resync_settings", KeyspaceCreateOptions::default)?;
        let get = |k: &str| -> Result<Option<u64>, ResyncError> {
            Ok(settings.get(k)?.and_then(|v| keys::parse_u64(&v)))
        };
        let workers = get(keys::WORKERS)?.map_or(1, |w| (w as usize).clamp(1, MAX_WORKERS));
        let tranquility = get(keys::TRANQUILITY)?.map_or(2, |t| t as u32);
        let scrub_tranquility = get(keys::SCRUB_TRANQUILITY)?.map_or(4, |t| t as u32);
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
                let t = next_scrub_time(config.scrub_interval);
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
        };
        let queued = queue.iter().count() as u64;
        Ok(ResyncActor {
            config,
            queued,
            db,
            queue,
            errors,
            settings,
            deps,
            workers,
            tranquility,
            scrub_tranquility,
            active: 0,
            busy: HashSet::new(),
            wake: None,
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
        })
    }

    fn put_setting(&self, key: &str, v: u64) {
        if let Err(e) = self.settings.insert(key, v.to_be_bytes()) {
            tracing::error!("cannot persist resync setting {key}: {e}");
        }
    }

    fn enqueue(&mut self, hash: Hash, due_ms: u64) {
        let key = keys::queue_key(due_ms, &hash);
        if matches!(self.queue.contains_key(&key), Ok(true)) {
            return;
        }
        match self.queue.insert(key, []) {
            Ok(()) => self.queued += 1,
            Err(e) => tracing::error!(hash = %hash.short(), "cannot queue block for resync: {e}"),
        }
    }

    /// Start workers on due items while there are free workers; else sleep until the
    /// earliest due item (a new schedule wakes us earlier).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.wake.take() {
            ctx.cancel_future(h);
        }
        let now = now_msec();
        let mut next_due: Option<u64> = None;
        let mut starts = Vec::new();
        if self.active < self.workers {
            for kv in self.queue.iter() {
                let Ok(key) = kv.key() else { break };
                let Some((due, hash)) = keys::parse_queue_key(&key) else {
                    tracing::warn!(
                        "removing an invalid resync queue key of {} bytes",
                        key.len()
                    );
                    if self.queue.remove(key.to_vec()).is_ok() {
                        self.queued = self.queued.saturating_sub(1);
                    }
                    continue;
                };
                if due > now {
                    next_due = Some(due);
                    break;
                }
                if self.busy.contains(&hash) || starts.iter().any(|(_, h)| *h == hash) {
                    continue;
                }
                starts.push((key.to_vec(), hash));
                if self.active + starts.len() >= self.workers {
                    break;
                }
            }
        }
        for (key, hash) in starts {
            self.start_worker(key, hash, ctx);
        }
        if self.active < self.workers {
            if let Some(due) = next_due {
                let wait = Duration::from_millis(due.saturating_sub(now_msec()).max(1));
                self.wake = Some(ctx.run_later(wait, |act, ctx| {
                    act.wake = None;
                    act.pump(ctx)
                }));
            }
        }
    }

    fn start_worker(&mut self, key: Vec<u8>, hash: Hash, ctx: &mut Context<Self>) {
        self.active += 1;
        self.busy.insert(hash);
        let deps = self.deps.clone();
        let start = Instant::now();
        ctx.spawn(
            resync_block(deps, hash)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let took = start.elapsed();
                    if act.queue.remove(key).is_ok() {
                        act.queued = act.queued.saturating_sub(1);
                    }
                    act.busy.remove(&hash);
                    match res {
                        Ok(Outcome::Done) => {
                            act.ops_ok += 1;
                            let _ = act.errors.remove(hash.as_bytes().to_vec());
                        }
                        Ok(Outcome::Later(at)) => {
                            act.ops_ok += 1;
                            act.enqueue(
                                hash,
                                at.saturating_add(act.config.after_gc_delay.as_millis() as u64),
                            );
                        }
                        Err(e) => {
                            act.ops_error += 1;
                            act.record_error(hash, e);
                        }
                    }
                    if act.repair.running || act.repair.phase == "done" {
                        act.repair.done += 1;
                    }
                    let pause = took.saturating_mul(act.tranquility);
                    if pause.is_zero() {
                        act.active -= 1;
                        act.pump(ctx);
                    } else {
                        ctx.run_later(pause, |act, ctx| {
                            act.active -= 1;
                            act.pump(ctx);
                        });
                    }
                }),
        );
    }

    fn record_error(&mut self, hash: Hash, error: String) {
        let now = now_msec();
        let prev = self
            .errors
            .get(hash.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| ErrorEntry::parse(&v));
        let count = prev.map_or(0, |p| p.count) + 1;
        let next_try = now + backoff(self.config.backoff_base, count).as_millis() as u64;
        tracing::warn!(hash = %hash.short(), count, "resync failed, retrying in {:?}: {error}", Duration::from_millis(next_try - now));
        let entry = ErrorEntry {
            count,
            last_try: now,
            next_try,
            message: error,
        };
        if let Err(e) = self.errors.insert(hash.as_bytes().to_vec(), entry.encode()) {
            tracing::error!("cannot record resync error: {e}");
        }
        self.enqueue(hash, next_try);
    }

    fn error_entries(&self) -> Vec<(Hash, ErrorEntry)> {
        self.errors
            .iter()
            .filter_map(|kv| kv.into_inner().ok())
            .filter_map(|(k, v)| Some((Hash::from_slice(&k)?, ErrorEntry::parse(&v)?)))
            .collect()
    }

    fn status(&self) -> ResyncStatus {
        ResyncStatus {
            queue_length: self.queued,
            errors: self.errors.iter().count() as u64,
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

    fn set_scrub_state(&mut self, s: ScrubState) {
        self.scrub_state = s;
        self.put_setting(
            keys::SCRUB_STATE,
            match s {
                ScrubState::Idle => 0,
                ScrubState::Running => 1,
                ScrubState::Paused => 2,
            },
        );
    }

    /// Check the next block of the scrub walk, then schedule the next step after
    /// `scrub_tranquility × time taken`.
    fn scrub_step(&mut self, ctx: &mut Context<Self>) {
        if self.scrub_state != ScrubState::Running || self.scrub_stepping {
            return;
        }
        self.scrub_stepping = true;
        let storage = self.deps.storage.clone();
        if self.scrub_page.is_empty() {
            let after = self.scrub_position;
            ctx.spawn(
                async move { storage.send(ListBlocks { after, limit: PAGE }).await }
                    .into_actor(self)
                    .map(|res, act, ctx| {
                        act.scrub_stepping = false;
                        match res {
                            Ok(Ok(page)) if page.is_empty() => act.finish_scrub(),
                            Ok(Ok(mut page)) => {
                                page.reverse();
                                act.scrub_page = page;
                                act.scrub_step(ctx);
                            }
                            other => {
                                tracing::warn!(
                                    "scrub cannot list blocks ({other:?}); retrying in 10 s"
                                );
                                ctx.run_later(Duration::from_secs(10), |act, ctx| {
                                    act.scrub_step(ctx)
                                });
                            }
                        }
                    }),
            );
            return;
        }
        let Some(hash) = self.scrub_page.pop() else {
            self.scrub_stepping = false;
            return;
        };
        let start = Instant::now();
        ctx.spawn(
            async move { storage.send(ReadBlock { hash }).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.scrub_stepping = false;
                    match res {
                        Ok(Err(StorageError::Corrupted { .. })) => {
                            act.scrub_corruptions += 1;
                            act.put_setting(keys::SCRUB_CORRUPTIONS, act.scrub_corruptions);
                            tracing::warn!(hash = %hash.short(), "scrub found a rotten block; quarantined, resyncing it");
                            act.enqueue(hash, now_msec());
                            act.pump(ctx);
                        }
                        Ok(Err(e)) => tracing::warn!(hash = %hash.short(), "scrub could not read block: {e}"),
                        _ => {}
                    }
                    act.scrub_checked += 1;
                    act.scrub_position = Some(hash);
                    let _ = act.settings.insert(keys::SCRUB_POSITION, hash.as_bytes().to_vec());
                    act.put_setting(keys::SCRUB_CHECKED, act.scrub_checked);
                    let pause = start.elapsed().saturating_mul(act.scrub_tranquility);
                    ctx.run_later(pause, |act, ctx| act.scrub_step(ctx));
                }),
        );
    }

    fn finish_scrub(&mut self) {
        tracing::info!(
            checked = self.scrub_checked,
            corruptions = self.scrub_corruptions,
            "scrub finished"
        );
        self.set_scrub_state(ScrubState::Idle);
        self.scrub_position = None;
        let _ = self.settings.remove(keys::SCRUB_POSITION);
        self.scrub_next_run = next_scrub_time(self.config.scrub_interval);
        self.put_setting(keys::SCRUB_NEXT_RUN, self.scrub_next_run);
    }

    fn start_scrub(&mut self, ctx: &mut Context<Self>) {
        tracing::info!("scrub started");
        self.scrub_position = None;
        self.scrub_page.clear();
        self.scrub_checked = 0;
        let _ = self.settings.remove(keys::SCRUB_POSITION);
        self.put_setting(keys::SCRUB_CHECKED, 0);
        self.set_scrub_state(ScrubState::Running);
        self.scrub_step(ctx);
    }
}

/// Next automatic scrub: now + interval, randomised by ±5 days when the interval is at
/// least 10 days, so a cluster started at once does not scrub everywhere at once.
fn next_scrub_time(interval: Duration) -> u64 {
    let jitter_span = 5 * 86400 * 1000u64;
    let base = now_msec() + interval.as_millis() as u64;
    if interval >= Duration::from_secs(10 * 86400) {
        base - jitter_span + rand::random::<u64>() % (2 * jitter_span)
    } else {
        base
    }
}

/// The seed's `resync_block`.
async fn resync_block(d: Deps, hash: Hash) -> Result<Outcome, String> {
    let exists = d
        .storage
        .send(BlockExists { hash })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let rc = d
        .refcount
        .send(GetRc { hash })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let others: Vec<NodeId> = d
        .placement
        .write_nodes(&hash)
        .into_iter()
        .filter(|n| *n != d.self_id)
        .collect();
    match decide(exists, rc, now_msec()) {
        Decision::Nothing => Ok(Outcome::Done),
        Decision::WaitUntil(at) => Ok(Outcome::Later(at)),
        Decision::Fetch => {
            let mut tried = Vec::new();
            for node in &others {
                let r = d
                    .peers
                    .send(Call {
                        node: *node,
                        rpc: BlockRpc::GetBlock(hash),
                        timeout: d.block_timeout,
                        priority: Priority::Background,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                match r {
                    Ok(BlockRpc::PutBlock { hash: h, data }) if h == hash => {
                        match d
                            .storage
                            .send(WriteBlock::new(hash, data))
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            Ok(_) => {
                                tracing::info!(hash = %hash.short(), peer = %node.short(), "fetched missing block");
                                return Ok(Outcome::Done);
                            }
                            Err(StorageError::CorruptData { .. }) => {
                                tried.push(format!("{}: sent corrupt data", node.short()))
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(other) => tried.push(format!("{}: answered {}", node.short(), other.kind())),
                    Err(e) => tried.push(short_err(node, &e)),
                }
            }
            Err(format!(
                "block is referenced here but no other holder could provide it ({})",
                if tried.is_empty() {
                    "no other holder".to_string()
                } else {
                    tried.join("; ")
                }
            ))
        }
        Decision::Offload => {
            let queries = others.iter().map(|node| {
                d.peers.send(Call {
                    node: *node,
                    rpc: BlockRpc::NeedBlockQuery(hash),
                    timeout: d.need_block_timeout,
                    priority: Priority::Background,
                })
            });
            let answers = futures::future::join_all(queries).await;
            let mut need = Vec::new();
            for (node, a) in others.iter().zip(answers) {
                match a.map_err(|e| e.to_string())? {
                    Ok(BlockRpc::NeedBlockReply(true)) => need.push(*node),
                    Ok(BlockRpc::NeedBlockReply(false)) => {}
                    Ok(other) => {
                        return Err(format!(
                            "{} answered {} to NeedBlockQuery",
                            node.short(),
                            other.kind()
                        ))
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot ask {} whether it needs the block: {e}",
                            node.short()
                        ))
                    }
                }
            }
            if !need.is_empty() {
                let data = d
                    .storage
                    .send(ReadBlock { hash })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                for node in &need {
                    let r = d
                        .peers
                        .send(Call {
                            node: *node,
                            rpc: BlockRpc::PutBlock {
                                hash,
                                data: data.clone(),
                            },
                            timeout: d.block_timeout,
                            priority: Priority::Background,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Err(e) = r {
                        return Err(format!("offload to {} failed: {e}", node.short()));
                    }
                }
                tracing::info!(hash = %hash.short(), nodes = need.len(), "offloaded block to the holders that need it");
            }
            // Only if it is still deletable: a ref may have come back meanwhile.
            let rc = d
                .refcount
                .send(GetRc { hash })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if rc.is_deletable(now_msec()) {
                d.storage
                    .send(DeleteBlock { hash })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                d.refcount
                    .send(ClearIfDeletable { hash })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::debug!(hash = %hash.short(), "deleted unneeded block");
            }
            Ok(Outcome::Done)
        }
    }
}

fn short_err(node: &NodeId, e: &RpcError) -> String {
    format!("{}: {e}", node.short())
}

impl Actor for ResyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.pump(ctx);
        if self.scrub_state == ScrubState::Running {
            tracing::info!(position = ?self.scrub_position, "resuming scrub");
            self.scrub_step(ctx);
        }
        // Automatic scrub, and a periodic journal sync of queue changes (the refcount
        // actor's syncs cover them too; this bounds the loss when nothing else writes).
        ctx.run_interval(Duration::from_secs(60), |act, ctx| {
            if act.scrub_state == ScrubState::Idle && now_msec() >= act.scrub_next_run {
                act.start_scrub(ctx);
            }
        });
        ctx.run_interval(Duration::from_secs(5), |act, _ctx| {
            let db = act.db.clone();
            actix_rt::task::spawn_blocking(move || db.persist(fjall::PersistMode::SyncAll));
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

impl Handler<RcChanged> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: RcChanged, ctx: &mut Context<Self>) {
        let (delay, reason) = if msg.new.count() > 0 {
            (self.config.block_timeout * 2, ScheduleReason::NewRef)
        } else {
            (
                self.config.gc_delay + self.config.after_gc_delay,
                ScheduleReason::Dropped,
            )
        };
        self.handle(
            Schedule {
                hash: msg.hash,
                delay,
                reason,
            },
            ctx,
        );
    }
}

impl Handler<RetryNow> for ResyncActor {
    type Result = usize;

    fn handle(&mut self, msg: RetryNow, ctx: &mut Context<Self>) -> usize {
        let now = now_msec();
        let hashes: Vec<Hash> = match msg.hash {
            Some(h) => vec![h],
            None => self.error_entries().into_iter().map(|(h, _)| h).collect(),
        };
        for h in &hashes {
            if let Ok(Some(v)) = self.errors.get(h.as_bytes()) {
                if let Some(mut e) = ErrorEntry::parse(&v) {
                    e.next_try = now;
                    let _ = self.errors.insert(h.as_bytes().to_vec(), e.encode());
                }
            }
            self.enqueue(*h, now);
        }
        self.pump(ctx);
        hashes.len()
    }
}

impl Handler<SetWorkers> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: SetWorkers, ctx: &mut Context<Self>) -> Self::Result {
        if !(1..=MAX_WORKERS).contains(&msg.0) {
            return Err(ResyncError::BadWorkers(msg.0));
        }
        self.workers = msg.0;
        self.put_setting(keys::WORKERS, msg.0 as u64);
        self.pump(ctx);
        Ok(())
    }
}

impl Handler<SetTranquility> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: SetTranquility, _ctx: &mut Context<Self>) -> Self::Result {
        self.tranquility = msg.0;
        self.put_setting(keys::TRANQUILITY, msg.0 as u64);
        Ok(())
    }
}

impl Handler<SetScrubTranquility> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: SetScrubTranquility, _ctx: &mut Context<Self>) -> Self::Result {
        self.scrub_tranquility = msg.0;
        self.put_setting(keys::SCRUB_TRANQUILITY, msg.0 as u64);
        Ok(())
    }
}

/// Queue a page of hashes found by repair.
#[derive(Message)]
#[rtype(result = "()")]
struct EnqueueRepair(Vec<Hash>);

impl Handler<EnqueueRepair> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: EnqueueRepair, ctx: &mut Context<Self>) {
        let now = now_msec();
        self.repair.queued += msg.0.len() as u64;
        for h in msg.0 {
            self.enqueue(h, now);
        }
        self.pump(ctx);
    }
}

/// Repair moved to another phase.
#[derive(Message)]
#[rtype(result = "()")]
struct RepairPhase(&'static str);

impl Handler<RepairPhase> for ResyncActor {
    type Result = ();

    fn handle(&mut self, msg: RepairPhase, _ctx: &mut Context<Self>) {
        self.repair.phase = msg.0.to_string();
        if msg.0 == "done" {
            self.repair.running = false;
            tracing::info!(queued = self.repair.queued, "repair: every hash queued");
        }
    }
}

impl Handler<StartRepair> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: StartRepair, ctx: &mut Context<Self>) -> Self::Result {
        if self.repair.running {
            return Err(ResyncError::RepairRunning);
        }
        tracing::info!(rebuild_rc = msg.rebuild_rc, "repair started");
        self.repair = RepairStatus {
            running: true,
            phase: "starting".into(),
            queued: 0,
            done: 0,
        };
        let me = ctx.address();
        let storage = self.deps.storage.clone();
        let refcount = self.deps.refcount.clone();
        actix_rt::spawn(async move {
            if msg.rebuild_rc {
                me.do_send(RepairPhase("rebuild_rc"));
                match refcount.send(RebuildRc).await {
                    Ok(Ok(r)) => {
                        tracing::info!(entries = r.entries, fixed = r.fixed, "repair: rc rebuilt")
                    }
                    other => tracing::warn!("repair: rc rebuild failed: {other:?}"),
                }
            }
            me.do_send(RepairPhase("rc"));
            let mut after = None;
            loop {
                match refcount.send(ListRcHashes { after, limit: PAGE }).await {
                    Ok(Ok(page)) if !page.is_empty() => {
                        after = page.last().copied();
                        let _ = me.send(EnqueueRepair(page)).await;
                    }
                    Ok(Ok(_)) => break,
                    other => {
                        tracing::warn!("repair: listing rc entries failed: {other:?}");
                        break;
                    }
                }
            }
            me.do_send(RepairPhase("blocks"));
            let mut after = None;
            loop {
                match storage.send(ListBlocks { after, limit: PAGE }).await {
                    Ok(Ok(page)) if !page.is_empty() => {
                        after = page.last().copied();
                        let _ = me.send(EnqueueRepair(page)).await;
                    }
                    Ok(Ok(_)) => break,
                    other => {
                        tracing::warn!("repair: listing blocks failed: {other:?}");
                        break;
                    }
                }
            }
            me.do_send(RepairPhase("done"));
        });
        Ok(())
    }
}

impl Handler<ScrubCommand> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: ScrubCommand, ctx: &mut Context<Self>) -> Self::Result {
        let state = self.scrub_state;
        let refuse = |action| {
            Err(ResyncError::ScrubState {
                action,
                state: state.name(),
            })
        };
        match (msg, state) {
            (ScrubCommand::Start, ScrubState::Running) => refuse("start"),
            (ScrubCommand::Start, _) => {
                self.start_scrub(ctx);
                Ok(())
            }
            (ScrubCommand::Pause, ScrubState::Running) => {
                tracing::info!("scrub paused");
                self.set_scrub_state(ScrubState::Paused);
                Ok(())
            }
            (ScrubCommand::Pause, _) => refuse("pause"),
            (ScrubCommand::Resume, ScrubState::Paused) => {
                tracing::info!("scrub resumed");
                self.set_scrub_state(ScrubState::Running);
                self.scrub_step(ctx);
                Ok(())
            }
            (ScrubCommand::Resume, _) => refuse("resume"),
            (ScrubCommand::Cancel, ScrubState::Idle) => refuse("cancel"),
            (ScrubCommand::Cancel, _) => {
                tracing::info!("scrub cancelled");
                self.set_scrub_state(ScrubState::Idle);
                self.scrub_position = None;
                self.scrub_page.clear();
                let _ = self.settings.remove(keys::SCRUB_POSITION);
                Ok(())
            }
        }
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
            self.error_entries()
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
        self.errors
            .get(msg.hash.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| ErrorEntry::parse(&v))
            .map(|e| e.message)
    }
}
