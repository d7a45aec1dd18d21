//! LayoutActor: owns the versioned cluster layout.
//!
//! State it owns: the layout in force ([`Layout`]: version, members with address, zone
//! and capacity, replication, partition count, the partition table and, while a
//! transition runs, the table before it), the staged changes (kept apart until applied),
//! the `layout` keyspace they are persisted in (`store.rs`), what each peer last
//! announced of its layout, and the subscribers.
//!
//! Messages: [`GetLayout`], [`StageChange`], [`ApplyLayout`] (refused unless the version
//! is current + 1), [`RevertLayout`], [`OfferLayout`] (a layout a peer handed over:
//! verified before it is taken), [`PeerLayoutSeen`] (a peer's stamp from `Hello`/`Ping`;
//! a newer one is fetched from that peer with `LayoutQuery`), [`SubscribeLayout`],
//! [`EndTransition`].
//!
//! It talks to the peers (`Recipient<Call>`, for `LayoutQuery`) and to its subscribers
//! (`Recipient<LayoutChanged>`: the peer actor follows the member list, resync and
//! anti-entropy the placement and the agreement). It is the one place where agreement is
//! computed: every peer of the layout announcing the same stamp as this node.
//!
//! Every change is written and synced (`store.rs`) before the actor switches or answers;
//! while a write runs the mailbox waits (`ctx.wait`), so changes apply one at a time.

mod handover;
mod messages;
mod model;
mod placement;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use fjall::{Database, Keyspace};
use tokio::sync::{oneshot, watch};

pub use handover::{handover_left, HandoverLeft, TransitionStatus, HANDOVER_POLL};
pub use messages::{
    Applied, ApplyLayout, BadOffer, EndTransition, GetLayout, LayoutChanged, LayoutError,
    LayoutView, OfferLayout, PeerLayoutSeen, RevertLayout, StageChange, SubscribeLayout,
};
pub use model::{
    partition_bits, Layout, LayoutChange, LayoutInvalid, LayoutMember, LayoutStamp, MoveSummary,
    NodeMoves, MAX_PARTITIONS,
};
pub use placement::LayoutPlacement;
pub use store::{decode_layout, encode_layout, LAYOUT_KEYSPACE, MAX_LAYOUT_BYTES};

use crate::frame::BlockRpc;
use crate::hash::NodeId;
use crate::peer::{Call, Priority};

/// Settings of a [`LayoutActor`].
#[derive(Debug, Clone)]
pub struct LayoutConfig {
    pub self_id: NodeId,
    /// The configured layout (`[[members]]`, version 1); `None` for a node that joins
    /// and waits for a layout naming it.
    pub initial: Option<Layout>,
    /// Timeout of one `LayoutQuery` to a peer. Default 10 s.
    pub fetch_timeout: Duration,
}

impl LayoutConfig {
    /// Defaults for `self_id` with `initial`.
    pub fn new(self_id: NodeId, initial: Option<Layout>) -> Self {
        LayoutConfig {
            self_id,
            initial,
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// The actor. Build it with [`LayoutActor::new`], give it the peers with
/// [`LayoutActor::with_peers`], then start it.
pub struct LayoutActor {
    config: LayoutConfig,
    db: Database,
    ks: Keyspace,
    current: Arc<Layout>,
    placement: Arc<LayoutPlacement>,
    staged: Vec<LayoutChange>,
    subscribers: Vec<Recipient<LayoutChanged>>,
    watch: watch::Sender<LayoutChanged>,
    peers: Option<Recipient<Call>>,
    /// What each peer last announced.
    seen: HashMap<NodeId, LayoutStamp>,
    /// The version being fetched, if any (one fetch at a time).
    fetching: Option<u64>,
    agreed: bool,
    /// A handover poll is in flight.
    polling: bool,
    /// The last poll's view of the running transition.
    transition: Option<TransitionStatus>,
    first_poll: Option<handover::FirstPoll>,
}

impl LayoutActor {
    /// Open the `layout` keyspace of `db`. The stored layout wins over the configured one
    /// once a change was applied (version above 1); at version 1 the configured
    /// `[[members]]` win, so editing them and restarting keeps working before the first
    /// `layout apply`.
    pub fn new(db: Database, config: LayoutConfig) -> Result<Self, LayoutError> {
        let ks = store::open(&db)?;
        let stored = match store::load(&ks) {
            Ok(s) => s,
            Err(e @ LayoutError::Corrupt { .. }) => {
                // A corrupt record is not fatal: the configured layout (or a peer's newer
                // one, fetched at the first ping) takes its place.
                tracing::error!(error = %e, "ignoring the stored layout");
                store::Stored {
                    current: None,
                    staged: Vec::new(),
                }
            }
            Err(e) => return Err(e),
        };
        let current = match (stored.current, config.initial.clone()) {
            (Some(s), Some(init)) if s.version <= 1 => {
                if s != init {
                    tracing::info!("configured member list changed; it is layout version 1");
                }
                init
            }
            (Some(s), _) => s,
            (None, Some(init)) => init,
            (None, None) => Layout::empty(),
        };
        current.validate()?;
        let placement = Arc::new(LayoutPlacement::new(&current));
        let current = Arc::new(current);
        let (watch, _) = watch::channel(LayoutChanged {
            layout: current.clone(),
            placement: placement.clone(),
            agreed: true,
            disagreeing: Vec::new(),
        });
        Ok(LayoutActor {
            config,
            db,
            ks,
            current,
            placement,
            staged: stored.staged,
            subscribers: Vec::new(),
            watch,
            peers: None,
            seen: HashMap::new(),
            fetching: None,
            agreed: true,
            polling: false,
            transition: None,
            first_poll: None,
        })
    }

    /// Where `LayoutQuery` calls go.
    pub fn with_peers(mut self, peers: Recipient<Call>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// The layout in force now (before start: what it starts with).
    pub fn current(&self) -> Arc<Layout> {
        self.current.clone()
    }

    /// A receiver that always holds the latest [`LayoutChanged`] (for code that is not
    /// an actor, such as the HTTP handlers, which read it on every request).
    pub fn watch(&self) -> watch::Receiver<LayoutChanged> {
        self.watch.subscribe()
    }

    fn changed(&self) -> LayoutChanged {
        LayoutChanged {
            layout: self.current.clone(),
            placement: self.placement.clone(),
            agreed: self.agreed,
            disagreeing: self.disagreeing().into_iter().map(|(id, _)| id).collect(),
        }
    }

    fn notify(&self) {
        let msg = self.changed();
        for s in &self.subscribers {
            s.do_send(msg.clone());
        }
        self.watch.send_replace(msg);
    }

    /// Peers whose announced stamp differs from ours (only peers of the layout count).
    fn disagreeing(&self) -> Vec<(NodeId, LayoutStamp)> {
        let ours = self.current.stamp();
        let mut out: Vec<(NodeId, LayoutStamp)> = self
            .seen
            .iter()
            .filter(|(id, s)| **s != ours && self.current.names(id))
            .map(|(id, s)| (*id, *s))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Recompute agreement; true if it changed.
    fn update_agreement(&mut self) -> bool {
        let differs = self.disagreeing();
        let agreed = differs.is_empty();
        if agreed == self.agreed {
            return false;
        }
        if agreed {
            tracing::info!(
                version = self.current.version,
                "every peer has this node's layout"
            );
        } else {
            tracing::warn!(version = self.current.version,
                peers = ?differs.iter().map(|(n, s)| format!("{}@v{}", n.short(), s.version)).collect::<Vec<_>>(),
                "layouts differ: no data is dropped until they agree");
        }
        self.agreed = agreed;
        true
    }

    fn view(&self) -> LayoutView {
        let preview = if self.staged.is_empty() {
            None
        } else {
            self.current.with_changes(&self.staged).ok().map(|next| {
                let moves = self.current.moves_to(&next);
                (next, moves)
            })
        };
        LayoutView {
            current: self.current.clone(),
            staged: self.staged.clone(),
            preview,
            disagreeing: self.disagreeing(),
            transition: self
                .transition
                .clone()
                .filter(|t| t.version == self.current.version && self.current.in_transition()),
        }
    }

    /// Persist `current` and `staged`, holding the mailbox until the write is done, then
    /// run `then` on the actor. The reply comes from `then`.
    fn persist_then<R, F>(
        &mut self,
        ctx: &mut Context<Self>,
        current: Layout,
        staged: Vec<LayoutChange>,
        then: F,
    ) -> ResponseFuture<Result<R, LayoutError>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Self, Layout, Vec<LayoutChange>) -> Result<R, LayoutError> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (db, ks) = (self.db.clone(), self.ks.clone());
        let write = async move {
            let res = actix_rt::task::spawn_blocking(move || {
                let r = store::save(&db, &ks, &current, &staged);
                (r, current, staged)
            })
            .await;
            res.map_err(|_| LayoutError::Stopped)
        };
        ctx.wait(write.into_actor(self).map(move |res, act, _ctx| {
            let out = match res {
                Ok((Ok(()), current, staged)) => then(act, current, staged),
                Ok((Err(e), _, _)) => Err(e),
                Err(e) => Err(e),
            };
            let _ = tx.send(out);
        }));
        Box::pin(async move { rx.await.unwrap_or(Err(LayoutError::Stopped)) })
    }

    /// Make `layout` the one in force (already persisted) and tell everyone.
    fn switch(&mut self, layout: Layout, staged: Vec<LayoutChange>) {
        let from = self.current.version;
        self.staged = staged;
        self.placement = Arc::new(LayoutPlacement::new(&layout));
        self.current = Arc::new(layout);
        let current = self.current.clone();
        self.seen.retain(|id, _| current.names(id));
        self.update_agreement();
        tracing::info!(
            from,
            to = self.current.version,
            members = self.current.members.len(),
            transition = self.current.in_transition(),
            named = self.current.names(&self.config.self_id),
            "layout switched"
        );
        self.notify();
    }

    /// Fetch `stamp`'s layout from `peer` and offer it to ourselves.
    fn fetch(&mut self, peer: NodeId, stamp: LayoutStamp, ctx: &mut Context<Self>) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        if self.fetching.is_some() {
            return;
        }
        self.fetching = Some(stamp.version);
        tracing::info!(peer = %peer.short(), version = stamp.version, "fetching a newer layout");
        let timeout = self.config.fetch_timeout;
        let addr = ctx.address();
        actix_rt::spawn(async move {
            let reply = peers
                .send(Call {
                    node: peer,
                    rpc: BlockRpc::LayoutQuery,
                    timeout,
                    priority: Priority::Background,
                })
                .await;
            let outcome = match reply {
                Ok(Ok(BlockRpc::LayoutReply { data })) => match decode_layout(&data) {
                    Ok(layout) => addr
                        .send(OfferLayout {
                            from: peer,
                            announced: stamp,
                            layout,
                        })
                        .await
                        .map_err(|_| LayoutError::Stopped)
                        .and_then(|r| r.map(|_| ())),
                    Err(e) => Err(e),
                },
                Ok(Ok(other)) => Err(BadOffer::UnexpectedReply(other.kind()).into()),
                Ok(Err(e)) => Err(BadOffer::Rpc(e).into()),
                Err(_) => Err(LayoutError::Stopped),
            };
            if let Err(e) = outcome {
                tracing::warn!(peer = %peer.short(), version = stamp.version, error = %e, "layout fetch failed");
            }
            addr.do_send(FetchDone);
        });
    }

    /// Check an offer against the rules (see [`OfferLayout`]).
    fn check_offer(&self, m: &OfferLayout) -> Result<(), LayoutError> {
        let me = self.config.self_id;
        let trusted = if self.current.names(&me) {
            self.current.names(&m.from)
        } else {
            // A joining node has no member list of its own yet: the sender must be a
            // member of the layout it hands over (its certificate chains to the cluster
            // CA, checked by TLS).
            m.layout.names(&m.from)
        };
        if !trusted {
            return Err(LayoutError::UntrustedSender { from: m.from });
        }
        if m.layout.version <= self.current.version {
            return Err(LayoutError::NotNewer {
                from: m.from,
                offered: m.layout.version,
                current: self.current.version,
            });
        }
        m.layout.validate()?;
        let got = m.layout.stamp();
        if got != m.announced {
            return Err(LayoutError::DigestMismatch {
                from: m.from,
                want: m.announced.digest,
                got: got.digest,
            });
        }
        Ok(())
    }
}

impl Actor for LayoutActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HANDOVER_POLL, |act, ctx| act.poll_handover(ctx));
        tracing::info!(
            version = self.current.version,
            members = self.current.members.len(),
            partitions = self.current.partitions,
            staged = self.staged.len(),
            "layout loaded"
        );
    }
}

/// A fetch ended (whatever its outcome): another may start.
#[derive(Message)]
#[rtype(result = "()")]
struct FetchDone;

impl Handler<FetchDone> for LayoutActor {
    type Result = ();

    fn handle(&mut self, _m: FetchDone, ctx: &mut Context<Self>) {
        self.fetching = None;
        // A peer may have announced a still newer version meanwhile.
        let newest = self
            .seen
            .iter()
            .filter(|(_, s)| s.version > self.current.version)
            .max_by_key(|(_, s)| s.version)
            .map(|(id, s)| (*id, *s));
        if let Some((peer, stamp)) = newest {
            self.fetch(peer, stamp, ctx);
        }
    }
}

impl Handler<GetLayout> for LayoutActor {
    type Result = MessageResult<GetLayout>;

    fn handle(&mut self, _m: GetLayout, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.view())
    }
}

impl Handler<StageChange> for LayoutActor {
    type Result = ResponseFuture<Result<LayoutView, LayoutError>>;

    fn handle(&mut self, m: StageChange, ctx: &mut Context<Self>) -> Self::Result {
        if let LayoutChange::Remove { id } = &m.change {
            let staged_assign = self
                .staged
                .iter()
                .any(|c| matches!(c, LayoutChange::Assign { id: a, .. } if a == id));
            if self.current.member(id).is_none() && !staged_assign {
                return Box::pin(futures::future::ready(Err(LayoutError::NotAMember(*id))));
            }
        }
        let mut staged = self.staged.clone();
        staged.push(m.change);
        if let Err(e) = self.current.with_changes(&staged) {
            return Box::pin(futures::future::ready(Err(e.into())));
        }
        let current = (*self.current).clone();
        self.persist_then(ctx, current, staged, |act, _current, staged| {
            act.staged = staged;
            Ok(act.view())
        })
    }
}

impl Handler<RevertLayout> for LayoutActor {
    type Result = ResponseFuture<Result<usize, LayoutError>>;

    fn handle(&mut self, _m: RevertLayout, ctx: &mut Context<Self>) -> Self::Result {
        let dropped = self.staged.len();
        let current = (*self.current).clone();
        self.persist_then(ctx, current, Vec::new(), move |act, _current, staged| {
            act.staged = staged;
            Ok(dropped)
        })
    }
}

impl Handler<ApplyLayout> for LayoutActor {
    type Result = ResponseFuture<Result<Applied, LayoutError>>;

    fn handle(&mut self, m: ApplyLayout, ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| Box::pin(futures::future::ready(r)) as Self::Result;
        if self.staged.is_empty() {
            return ready(Err(LayoutError::NothingStaged));
        }
        let expected = self.current.version + 1;
        if m.version != expected {
            return ready(Err(LayoutError::WrongVersion {
                expected,
                got: m.version,
            }));
        }
        let next = match self.current.with_changes(&self.staged) {
            Ok(n) => n,
            Err(e) => return ready(Err(e.into())),
        };
        let moves = self.current.moves_to(&next);
        self.persist_then(ctx, next, Vec::new(), move |act, next, staged| {
            let version = next.version;
            act.switch(next, staged);
            Ok(Applied { version, moves })
        })
    }
}

impl Handler<OfferLayout> for LayoutActor {
    type Result = ResponseFuture<Result<bool, LayoutError>>;

    fn handle(&mut self, m: OfferLayout, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_offer(&m) {
            return Box::pin(futures::future::ready(Err(e)));
        }
        // Staged changes stay staged: they are changes, applied on top of whatever is
        // current when `apply` runs.
        let staged = self.staged.clone();
        self.persist_then(ctx, m.layout, staged, |act, layout, staged| {
            act.switch(layout, staged);
            Ok(true)
        })
    }
}

impl Handler<PeerLayoutSeen> for LayoutActor {
    type Result = ();

    fn handle(&mut self, m: PeerLayoutSeen, ctx: &mut Context<Self>) {
        let before = self.seen.insert(m.peer, m.stamp);
        if before == Some(m.stamp) {
            return;
        }
        if m.stamp.version > self.current.version {
            self.fetch(m.peer, m.stamp, ctx);
        }
        if self.update_agreement() {
            self.notify();
        }
    }
}

impl Handler<SubscribeLayout> for LayoutActor {
    type Result = ();

    fn handle(&mut self, m: SubscribeLayout, _ctx: &mut Context<Self>) {
        m.to.do_send(self.changed());
        self.subscribers.push(m.to);
    }
}

impl Handler<EndTransition> for LayoutActor {
    type Result = ResponseFuture<Result<(), LayoutError>>;

    fn handle(&mut self, m: EndTransition, ctx: &mut Context<Self>) -> Self::Result {
        if m.version != self.current.version {
            return Box::pin(futures::future::ready(Err(LayoutError::NotCurrent {
                current: self.current.version,
                got: m.version,
            })));
        }
        if self.current.previous.is_none() && self.current.retiring.is_empty() {
            return Box::pin(futures::future::ready(Ok(())));
        }
        let settled = self.current.settled();
        let staged = self.staged.clone();
        self.persist_then(ctx, settled, staged, |act, layout, staged| {
            tracing::info!(version = layout.version, "layout transition over");
            act.switch(layout, staged);
            Ok(())
        })
    }
}
