//! AntiEntropyActor: brings the ref records of every partition's holders back into
//! agreement, replays hinted writes, and hands partitions over when the layout changes.
//!
//! State (all its own): the `hints` keyspace of the metadata store, each partition's sync
//! state, what it last saw of each peer (up/down), the placement and layout agreement
//! last given by the layout actor, and counters. Messages: [`CallsFailed`] (from the
//! peer actor: writes that missed a holder become hints), [`SyncNow`],
//! [`GetAntiEntropyStatus`], and `LayoutChanged` (from the layout actor, `layout.rs`).
//! It talks to the refcount actor (digests, records, merges, forgetting), to the peers
//! through a `Recipient<Call>` and a `Recipient<GetPeerStatus>`, and to resync
//! (`Schedule`).
//!
//! - **Anti-entropy**: a round visits the 256 first-byte ranges of the `refs` keyspace
//!   one after another (each range's holders are those of the layout partitions it
//!   covers, `Placement::byte_range_nodes`), at background
//!   priority, sleeping `tranquility × time taken` after each. For a partition this node
//!   holds, it reconciles with every other holder (`reconcile.rs`: digests, then only the
//!   differing records, both ways). Rounds start every `interval` (±10 % jitter); the
//!   partitions shared with a peer are also synced as soon as that peer is seen coming up.
//! - **Hinted handoff**: a write that reached its quorum but not every holder leaves one
//!   persisted hint per missed holder (`hints.rs`, which also replays them). When that holder is seen up, its
//!   hints are replayed and removed once answered: up to `hints::HINT_PARALLEL` hashes at
//!   once, each hash's refs first and then its block, which is pushed from this node's
//!   copy when there is one (background priority).
//! - **Membership change**: a partition this node no longer holds (after a member list
//!   change) but still has records of is reconciled with each of its new holders; once
//!   every new holder's digest equals ours, the records are forgotten here
//!   (`ForgetPartition`), which makes the blocks' counts fall to zero, so resync offloads
//!   each block to the holders that need it before deleting it, as for GC. Nothing is
//!   forgotten while a peer announces another layout than ours; the layout actor, which
//!   computes that agreement once for the node, tells resync the same and it deletes
//!   nothing meanwhile. A layout switch starts a round at once, so hand-over does not
//!   wait for the next interval.

mod config;
pub mod hints;
mod layout;
mod messages;
mod overflow;
pub mod reconcile;
mod status;

pub use config::{
    AntiEntropyConfig, AntiEntropyLinks, DEFAULT_ANTI_ENTROPY_INTERVAL, FIRST_ROUND_AFTER,
};
pub use messages::{GetAntiEntropyStatus, SyncNow};
use overflow::PendingPartitions;
pub use overflow::{DEFAULT_MAX_HINTS_PER_MEMBER, OVERFLOW_KEYSPACE};
/// The old name of [`reconcile`], kept so existing paths keep working.
pub use reconcile as narrow;
pub use status::{AntiEntropyStatus, PartitionState};

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::hash::NodeId;
use crate::peer::GetPeerStatus;
use crate::rc::now_msec;
use crate::refcount::{DigestPrefix, ForgetPartition};
use crate::store_failure::{is_fatal_write_error, StoreFailed, StoreFailureReporter};
use hints::Hint;
use reconcile::{sync_range, SyncDeps, SyncError, SyncStats};

/// Name of the keyspace holding the hints.
pub const HINTS_KEYSPACE: &str = "hints";
/// Records forgotten per `ForgetPartition` message.
const FORGET_STEP: usize = 4096;

/// One partition's result, reported by the sync task.
#[derive(Message)]
#[rtype(result = "()")]
struct PartitionDone {
    partition: u8,
    state: PartitionState,
    stats: SyncStats,
    took: Duration,
}

/// The actor.
pub struct AntiEntropyActor {
    config: AntiEntropyConfig,
    db: Database,
    hints: Keyspace,
    links: AntiEntropyLinks,
    partitions: Vec<PartitionState>,
    /// Partitions to visit, in order; a round queues all, a comeback those shared.
    queue: BTreeSet<u8>,
    /// Whether a partition is being synced (one at a time).
    busy: bool,
    round: Option<RoundState>,
    last_full_sync: Option<u64>,
    rounds_completed: u64,
    totals: SyncStats,
    peers_up: HashMap<NodeId, bool>,
    /// Peers announcing another layout (from the layout actor).
    layout_differs: Vec<NodeId>,
    layout_agreed: Option<bool>,
    /// The layout version of the placement in use (`None`: the one given at start).
    layout_version: Option<u64>,
    /// A layout transition runs: rounds follow each other (see `layout.rs`).
    layout_in_transition: bool,
    hint_counts: HashMap<NodeId, u64>,
    /// `hints_overflow`: members marked for a full sync (see `overflow.rs`).
    overflow: Keyspace,
    /// The marked members, with the partitions still to sync (`None`: not started yet).
    full_sync: HashMap<NodeId, Option<PendingPartitions>>,
    /// Orders (re-)marks of partitions and starts of partition syncs (see `overflow.rs`).
    full_sync_seq: u64,
    /// `full_sync_seq` when the partition sync under way started.
    sync_started_seq: u64,
    hints_replayed: u64,
    replaying: HashSet<NodeId>,
    /// Where a dead metadata store is reported, once.
    store_failure: StoreFailureReporter,
}

struct RoundState {
    errors: usize,
}

impl AntiEntropyActor {
    /// Open the `hints` keyspace in `db` (counting the hints left from a previous run).
    pub fn new(
        db: Database,
        config: AntiEntropyConfig,
        links: AntiEntropyLinks,
    ) -> Result<Self, fjall::Error> {
        let hints = db.keyspace(HINTS_KEYSPACE, KeyspaceCreateOptions::default)?;
        let overflow = db.keyspace(OVERFLOW_KEYSPACE, KeyspaceCreateOptions::default)?;
        let mut full_sync = HashMap::new();
        for item in overflow.iter() {
            let k = item.key()?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                full_sync.insert(NodeId(id), None);
            }
        }
        let mut hint_counts: HashMap<NodeId, u64> = HashMap::new();
        for item in hints.iter() {
            let (k, v) = item.into_inner()?;
            if let Some((node, _)) = Hint::parse(&k, &v) {
                *hint_counts.entry(node).or_default() += 1;
            }
        }
        Ok(AntiEntropyActor {
            config,
            db,
            hints,
            links,
            partitions: vec![PartitionState::Unknown; 256],
            queue: BTreeSet::new(),
            busy: false,
            round: None,
            last_full_sync: None,
            rounds_completed: 0,
            totals: SyncStats::default(),
            peers_up: HashMap::new(),
            layout_differs: Vec::new(),
            layout_agreed: None,
            layout_version: None,
            layout_in_transition: false,
            hint_counts,
            overflow,
            full_sync,
            full_sync_seq: 0,
            sync_started_seq: 0,
            hints_replayed: 0,
            replaying: HashSet::new(),
            store_failure: StoreFailureReporter::new("anti-entropy"),
        })
    }

    /// Report a dead metadata store (the node exits) instead of logging each failure.
    pub fn with_store_failed(mut self, to: Recipient<StoreFailed>) -> Self {
        self.store_failure.set_recipient(to);
        self
    }

    /// A hints write failed: a dead store is reported once, anything else logged.
    fn hints_write_failed(&mut self, during: &'static str, e: fjall::Error) {
        if is_fatal_write_error(&e) {
            self.store_failure.report(during, e);
        } else {
            tracing::error!("{during}: {e}");
        }
    }

    fn holders(&self, partition: u8) -> Vec<NodeId> {
        self.links.placement.byte_range_nodes(partition)
    }

    fn jittered_interval(&self) -> Duration {
        let f = 0.9 + rand::random::<f64>() * 0.2;
        self.config.interval.mul_f64(f)
    }

    fn start_round(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.round.is_some() {
            return false;
        }
        tracing::debug!("anti-entropy round starts");
        self.round = Some(RoundState { errors: 0 });
        self.queue.extend(0..=255u8);
        self.pump(ctx);
        true
    }

    fn schedule_next_round(&mut self, ctx: &mut Context<Self>, after: Duration) {
        ctx.run_later(after, |act, ctx| {
            act.start_round(ctx);
            let next = act.jittered_interval();
            act.schedule_next_round(ctx, next);
        });
    }

    /// Start syncing the next queued partition unless one is running.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some(p) = self.queue.pop_first() else {
            if let Some(round) = self.round.take() {
                self.rounds_completed += 1;
                if round.errors == 0 {
                    self.last_full_sync = Some(now_msec());
                }
                tracing::info!(errors = round.errors, "anti-entropy round done");
                if self.layout_in_transition {
                    // Writes still reach the old holders during a transition: hand over
                    // what arrived since, without waiting for the next interval.
                    ctx.run_later(layout::TRANSITION_ROUND_PAUSE, |act, ctx| {
                        act.start_round(ctx);
                    });
                }
            }
            return;
        };
        self.busy = true;
        self.sync_started_seq = self.next_full_sync_seq();
        let holders = self.holders(p);
        let me = self.config.self_id;
        let held = holders.contains(&me);
        let may_forget = self.layout_agreed.unwrap_or(true) && self.layout_differs.is_empty();
        self.partitions[p as usize] = PartitionState::Syncing;
        let deps = SyncDeps {
            refcount: self.links.refcount.clone(),
            peers: self.links.peers.clone(),
            schedule: self.links.schedule.clone(),
            timeout: self.config.rpc_timeout,
        };
        let addr = ctx.address();
        let others: Vec<NodeId> = holders.into_iter().filter(|n| *n != me).collect();
        actix_rt::spawn(async move {
            let start = Instant::now();
            let (state, stats) = sync_partition(&deps, p, held, &others, may_forget).await;
            addr.do_send(PartitionDone {
                partition: p,
                state,
                stats,
                took: start.elapsed(),
            });
        });
    }

    fn poll_peers(&mut self, ctx: &mut Context<Self>) {
        let status = self.links.peer_status.send(GetPeerStatus);
        ctx.spawn(status.into_actor(self).map(|res, act, ctx| {
            let Ok(peers) = res else { return };
            let mut members = HashSet::new();
            for p in peers {
                members.insert(p.id);
                let was_up = act.peers_up.insert(p.id, p.up).unwrap_or(false);
                if p.up && !was_up {
                    tracing::info!(peer = %p.id.short(), "peer up: replaying hints, syncing shared partitions");
                    act.replay(p.id, ctx);
                    if act.full_sync.contains_key(&p.id) {
                        act.start_full_sync(p.id, ctx);
                    }
                    let me = act.config.self_id;
                    let enabled = !act.config.interval.is_zero();
                    for part in (0..=255u8).filter(|_| enabled) {
                        let h = act.holders(part);
                        let ours = h.contains(&me)
                            || act.partitions[part as usize] != PartitionState::NotHeld;
                        if h.contains(&p.id) && ours {
                            act.queue.insert(part);
                        }
                    }
                    act.pump(ctx);
                } else if p.up && act.hint_counts.get(&p.id).copied().unwrap_or(0) > 0 {
                    act.replay(p.id, ctx);
                }
            }
            // Hints for nodes that are no longer members: anti-entropy covers them.
            let stale: Vec<NodeId> = act
                .hint_counts
                .keys()
                .filter(|n| !members.contains(n))
                .copied()
                .collect();
            for n in stale {
                act.drop_hints_of(n);
            }
        }));
    }
}

/// Sync one partition: reconcile with each other holder; for a partition not held here
/// that still has records, reconcile with every holder and then forget it.
async fn sync_partition(
    deps: &SyncDeps,
    p: u8,
    held: bool,
    others: &[NodeId],
    may_forget: bool,
) -> (PartitionState, SyncStats) {
    let mut stats = SyncStats::default();
    let fail = |e: String| PartitionState::Error {
        at: now_msec(),
        error: e,
    };
    if !held {
        let local = match deps
            .refcount
            .send(DigestPrefix {
                prefix: vec![p],
                known: None,
            })
            .await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return (fail(e.to_string()), stats),
            Err(_) => return (fail("refcount actor gone".into()), stats),
        };
        if local.count == 0 {
            return (PartitionState::NotHeld, stats);
        }
        if !may_forget {
            return (PartitionState::WaitingForLayout, stats);
        }
    }
    let mut errors = Vec::new();
    for node in others {
        match sync_range(deps, *node, vec![p]).await {
            Ok(s) => stats.add(&s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        let text: Vec<String> = errors.iter().map(|e: &SyncError| e.to_string()).collect();
        return (fail(text.join("; ")), stats);
    }
    if held {
        return (PartitionState::InSync { at: now_msec() }, stats);
    }
    // Every new holder has all we had (sync succeeded both ways): forget it here.
    loop {
        match deps
            .refcount
            .send(ForgetPartition {
                partition: p,
                limit: FORGET_STEP,
            })
            .await
        {
            Ok(Ok(r)) if r.more => continue,
            Ok(Ok(_)) => return (PartitionState::NotHeld, stats),
            Ok(Err(e)) => return (fail(e.to_string()), stats),
            Err(_) => return (fail("refcount actor gone".into()), stats),
        }
    }
}

impl Actor for AntiEntropyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.peer_poll, |act, ctx| act.poll_peers(ctx));
        if self.config.interval.is_zero() {
            tracing::warn!("anti-entropy is off (anti_entropy_interval = 0)");
        } else {
            let first = self.config.first_round_after;
            self.schedule_next_round(ctx, first);
        }
    }
}

impl Handler<PartitionDone> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, m: PartitionDone, ctx: &mut Context<Self>) {
        self.busy = false;
        self.totals.add(&m.stats);
        if m.stats.records_in + m.stats.records_out > 0 {
            tracing::info!(
                partition = m.partition,
                records_in = m.stats.records_in,
                records_out = m.stats.records_out,
                bytes = m.stats.bytes_sent + m.stats.bytes_received,
                "anti-entropy repaired differences"
            );
        }
        if let PartitionState::Error { error, .. } = &m.state {
            tracing::debug!(partition = m.partition, "anti-entropy: {error}");
            if let Some(r) = &mut self.round {
                r.errors += 1;
            }
        }
        if matches!(m.state, PartitionState::InSync { .. }) {
            self.full_sync_progress(m.partition, self.sync_started_seq);
        }
        self.partitions[m.partition as usize] = m.state;
        let pause = m.took.saturating_mul(self.config.tranquility);
        if pause.is_zero() {
            self.pump(ctx);
        } else {
            self.busy = true;
            ctx.run_later(pause, |act, ctx| {
                act.busy = false;
                act.pump(ctx);
            });
        }
    }
}

impl Handler<SyncNow> for AntiEntropyActor {
    type Result = bool;

    fn handle(&mut self, _m: SyncNow, ctx: &mut Context<Self>) -> bool {
        self.start_round(ctx)
    }
}

impl Handler<GetAntiEntropyStatus> for AntiEntropyActor {
    type Result = MessageResult<GetAntiEntropyStatus>;

    fn handle(&mut self, _m: GetAntiEntropyStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let count =
            |f: &dyn Fn(&PartitionState) -> bool| self.partitions.iter().filter(|s| f(s)).count();
        let errors = self
            .partitions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                PartitionState::Error { error, .. } => Some((i as u8, error.clone())),
                _ => None,
            })
            .take(8)
            .collect();
        MessageResult(AntiEntropyStatus {
            interval_secs: self.config.interval.as_secs(),
            hinted_handoff: self.config.hinted_handoff,
            partitions_in_sync: count(&|s| matches!(s, PartitionState::InSync { .. })),
            partitions_syncing: count(&|s| matches!(s, PartitionState::Syncing)),
            partitions_error: count(&|s| matches!(s, PartitionState::Error { .. })),
            partitions_not_held: count(&|s| matches!(s, PartitionState::NotHeld)),
            partitions_waiting_for_layout: count(&|s| {
                matches!(s, PartitionState::WaitingForLayout)
            }),
            partitions_unknown: count(&|s| matches!(s, PartitionState::Unknown)),
            partitions_queued: self.queue.len(),
            last_full_sync: self.last_full_sync,
            round_running: self.round.is_some(),
            rounds_completed: self.rounds_completed,
            bytes_sent: self.totals.bytes_sent,
            bytes_received: self.totals.bytes_received,
            records_sent: self.totals.records_out,
            records_received: self.totals.records_in,
            hints_pending: self.hint_counts.values().sum(),
            hints_replayed: self.hints_replayed,
            full_sync_needed: self.full_sync.keys().map(|n| n.to_hex()).collect(),
            layout_agreed: self.layout_agreed.unwrap_or(true),
            layout_differs: self.layout_differs.iter().map(|n| n.to_hex()).collect(),
            errors,
        })
    }
}
