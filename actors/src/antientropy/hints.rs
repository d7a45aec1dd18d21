//! Hinted handoff: the `hints` keyspace's on-disk form ([`Hint`], pure encoding) and the
//! replay of one hash's hints to the node that missed them (`replay_group`).
//!
//! key = target node (32 bytes) | block hash (32) | kind (1) | ref id bytes (refs only);
//! value = the ref's incarnation (u64 big-endian; empty for a block, and in hints
//! written before incarnations existed: 0). One key per (node, operation): a repeated
//! failure of the same write is one hint (keeping the highest incarnation), and every
//! replay is idempotent (refs merge, a drop names the incarnation it drops so a late
//! one never kills a newer add, a resync request is a question). Within one node and one hash, refs (kinds 1, 2) sort before the block
//! (kind 3), so the replay gives a node its ref first and then asks it to fetch the block,
//! which it does at once because the block is now needed there.

use std::time::Duration;

use actix::prelude::*;

use crate::budget::Pool;
use crate::frame::{BlockRpc, ErrorCode};
use crate::hash::{Hash, NodeId, HASH_LEN};
use crate::peer::{Call, Priority, RpcError};
use crate::ref_id::RefId;
use crate::storage::{read_charged, ReadBlock, StorageError};

use super::AntiEntropyActor;
use crate::peer::CallsFailed;

/// The operation a hint replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    AddRef {
        hash: Hash,
        ref_id: RefId,
        incarnation: u64,
    },
    DropRef {
        hash: Hash,
        ref_id: RefId,
        incarnation: u64,
    },
    /// The node missed a `PutBlock`: ask it to resync the block (it fetches it from the
    /// other holders if it is referenced there).
    Block { hash: Hash },
}

const ADD: u8 = 1;
const DROP: u8 = 2;
const BLOCK: u8 = 3;

impl Hint {
    /// The hints for a write that failed (none for a request hints do not cover). A
    /// missed `PutBlockRef` is two: its ref, then its block (replayed in that order).
    pub fn for_rpc(rpc: &BlockRpc) -> Vec<Hint> {
        match rpc {
            BlockRpc::AddRef {
                hash,
                ref_id,
                incarnation,
            } => vec![Hint::AddRef {
                hash: *hash,
                ref_id: ref_id.clone(),
                incarnation: *incarnation,
            }],
            BlockRpc::DropRef {
                hash,
                ref_id,
                incarnation,
            } => vec![Hint::DropRef {
                hash: *hash,
                ref_id: ref_id.clone(),
                incarnation: *incarnation,
            }],
            BlockRpc::PutBlock { hash, .. } => Hint::for_put(*hash, None),
            BlockRpc::PutBlockRef {
                hash,
                ref_id,
                incarnation,
                ..
            } => Hint::for_put(*hash, Some((ref_id, *incarnation))),
            BlockRpc::PutVerified {
                block,
                ref_id,
                incarnation,
            } => Hint::for_put(block.hash(), ref_id.as_ref().map(|r| (r, *incarnation))),
            _ => Vec::new(),
        }
    }

    /// A missed block write: its ref first, if it carried one, then the block.
    fn for_put(hash: Hash, ref_id: Option<(&RefId, u64)>) -> Vec<Hint> {
        let mut hints: Vec<Hint> = ref_id
            .map(|(r, incarnation)| Hint::AddRef {
                hash,
                ref_id: r.clone(),
                incarnation,
            })
            .into_iter()
            .collect();
        hints.push(Hint::Block { hash });
        hints
    }

    /// The block it is about.
    pub fn hash(&self) -> Hash {
        match self {
            Hint::AddRef { hash, .. } | Hint::DropRef { hash, .. } | Hint::Block { hash } => *hash,
        }
    }

    /// The request that replays it.
    pub fn rpc(&self) -> BlockRpc {
        match self {
            Hint::AddRef {
                hash,
                ref_id,
                incarnation,
            } => BlockRpc::AddRef {
                hash: *hash,
                ref_id: ref_id.clone(),
                incarnation: *incarnation,
            },
            Hint::DropRef {
                hash,
                ref_id,
                incarnation,
            } => BlockRpc::DropRef {
                hash: *hash,
                ref_id: ref_id.clone(),
                incarnation: *incarnation,
            },
            Hint::Block { hash } => BlockRpc::ScheduleResync(*hash),
        }
    }

    /// Its key in the `hints` keyspace.
    pub fn key(&self, node: &NodeId) -> Vec<u8> {
        let (hash, kind, ref_id) = match self {
            Hint::AddRef { hash, ref_id, .. } => (hash, ADD, Some(ref_id)),
            Hint::DropRef { hash, ref_id, .. } => (hash, DROP, Some(ref_id)),
            Hint::Block { hash } => (hash, BLOCK, None),
        };
        let mut k = Vec::with_capacity(2 * HASH_LEN + 1 + ref_id.map_or(0, |r| r.as_bytes().len()));
        k.extend_from_slice(&node.0);
        k.extend_from_slice(hash.as_bytes());
        k.push(kind);
        if let Some(r) = ref_id {
            k.extend_from_slice(r.as_bytes());
        }
        k
    }

    /// Its value in the `hints` keyspace: the ref's incarnation.
    pub fn value(&self) -> Vec<u8> {
        match self {
            Hint::AddRef { incarnation, .. } | Hint::DropRef { incarnation, .. } => {
                incarnation.to_be_bytes().to_vec()
            }
            Hint::Block { .. } => Vec::new(),
        }
    }

    /// The incarnation a stored hint value holds (empty or malformed: 0).
    fn incarnation_of(value: &[u8]) -> u64 {
        value.try_into().map(u64::from_be_bytes).unwrap_or(0)
    }

    /// Decode a key and its value; `None` if the key is malformed (such a key is skipped
    /// and removed).
    pub fn parse(key: &[u8], value: &[u8]) -> Option<(NodeId, Hint)> {
        let incarnation = Self::incarnation_of(value);
        if key.len() < 2 * HASH_LEN + 1 {
            return None;
        }
        let node = NodeId(key[..HASH_LEN].try_into().ok()?);
        let hash = Hash::from_slice(&key[HASH_LEN..2 * HASH_LEN])?;
        let rest = &key[2 * HASH_LEN + 1..];
        let hint = match key[2 * HASH_LEN] {
            ADD => Hint::AddRef {
                hash,
                ref_id: RefId::from_bytes(rest).ok()?,
                incarnation,
            },
            DROP => Hint::DropRef {
                hash,
                ref_id: RefId::from_bytes(rest).ok()?,
                incarnation,
            },
            BLOCK if rest.is_empty() => Hint::Block { hash },
            _ => return None,
        };
        Some((node, hint))
    }
}

/// The outcome of replaying one hash's hints.
pub(super) struct GroupReplay {
    pub(super) replayed: u64,
    pub(super) removed: Vec<Vec<u8>>,
    pub(super) stopped: bool,
}

/// The (node, hash) part of a hint key, which groups one hash's hints.
pub(super) fn hint_hash_prefix(key: &[u8]) -> &[u8] {
    &key[..key.len().min(2 * crate::hash::HASH_LEN)]
}

/// Replay one hash's hints to `node` in key order (refs, then the block), stopping at
/// the first failure (the rest waits for the next replay).
pub(super) async fn replay_group(
    node: NodeId,
    keys: Vec<(Vec<u8>, Vec<u8>)>,
    peers: &Recipient<Call>,
    read_block: Option<&Recipient<ReadBlock>>,
    budget: Option<&Pool>,
    timeout: Duration,
) -> GroupReplay {
    let mut out = GroupReplay {
        replayed: 0,
        removed: Vec::new(),
        stopped: false,
    };
    // Refs whose block had not reached the node: tried again once its block hint (later
    // in key order) has been replayed.
    let mut deferred = Vec::new();
    for (key, value) in keys {
        let Some((_, hint)) = Hint::parse(&key, &value) else {
            out.removed.push(key);
            continue;
        };
        let rpc = match (&hint, read_block) {
            (Hint::Block { hash }, Some(read)) => {
                // Charged before it is read, held until the node has taken it.
                let data = match budget {
                    Some(pool) => read_charged(read, *hash, pool, false, timeout).await,
                    None => read
                        .send(ReadBlock::uncharged(*hash))
                        .await
                        .unwrap_or_else(|e| Err(StorageError::ActorGone(e))),
                };
                match data {
                    Ok(data) => BlockRpc::PutBlock { hash: *hash, data },
                    // Not (or no longer) stored here, or no memory for it now: the node
                    // fetches it from a holder.
                    Err(_) => hint.rpc(),
                }
            }
            _ => hint.rpc(),
        };
        let reply = peers
            .send(Call {
                node,
                rpc,
                timeout,
                priority: Priority::Background,
            })
            .await;
        match reply {
            Ok(Ok(_))
            | Ok(Err(RpcError::Remote {
                code: ErrorCode::RefDropped | ErrorCode::BadRequest | ErrorCode::CorruptData,
                ..
            })) => {
                out.replayed += 1;
                out.removed.push(key);
            }
            // The ref's block has not reached the node yet (its block hint comes
            // next): keep the ref's hint for the next replay and go on.
            Ok(Err(RpcError::Remote {
                code: ErrorCode::BlockMissing,
                ..
            })) => deferred.push((key, hint)),
            Ok(Err(e)) => {
                tracing::debug!(node = %node.short(), "hint replay stopped: {e}");
                out.stopped = true;
                break;
            }
            Err(_) => {
                out.stopped = true;
                break;
            }
        }
    }
    if out.stopped {
        return out;
    }
    // Tried again after the block's hint. Still missing there: the ref is dropped from
    // the hints (counted as done), not retried forever; the node gets the ref record
    // from anti-entropy's ref sync (which fetches the block), and the block's holders
    // keep the ref it was acknowledged on. Any other failure keeps it for the next replay.
    for (key, hint) in deferred {
        let call = Call {
            node,
            rpc: hint.rpc(),
            timeout,
            priority: Priority::Background,
        };
        match peers.send(call).await {
            Ok(Ok(_)) => {}
            Ok(Err(RpcError::Remote {
                code: ErrorCode::BlockMissing,
                ..
            })) => {
                tracing::info!(node = %node.short(), hash = %hint.hash().short(),
                    "hinted ref dropped: the node still lacks its block; anti-entropy carries the ref");
            }
            _ => continue,
        }
        out.replayed += 1;
        out.removed.push(key);
    }
    out
}

/// Hints replayed per read of the keyspace (bounds memory).
const HINT_PAGE: usize = 256;

/// Blocks (with their refs) replayed to one node at once. A returning node must get
/// what it missed about as fast as it was written; one at a time, a round
/// trip per hint capped replay far below the PUT rate. 8 × 1 MiB stays well inside
/// the receiver's RAM budget.
const HINT_PARALLEL: usize = 8;

// ---- the actor's side: storing failed writes as hints, replaying them, dropping them ----

/// One node's replay ended.
#[derive(Message)]
#[rtype(result = "()")]
struct ReplayDone {
    node: NodeId,
    replayed: u64,
    removed: Vec<Vec<u8>>,
    complete: bool,
}

impl AntiEntropyActor {
    pub(super) fn store_hint(&mut self, node: NodeId, hint: &Hint) {
        let key = hint.key(&node);
        let new = Hint::incarnation_of(&hint.value());
        let existed = match self.hints.get(&key) {
            // The same operation of this incarnation or a newer one is hinted already.
            Ok(Some(v)) if Hint::incarnation_of(&v) >= new => return,
            Ok(v) => v.is_some(),
            Err(e) => {
                tracing::error!("hints keyspace: {e}");
                return;
            }
        };
        match self.hints.insert(key, hint.value()) {
            Ok(()) if !existed => *self.hint_counts.entry(node).or_default() += 1,
            Ok(()) => {}
            Err(e) => self.hints_write_failed("storing a hint", e),
        }
    }

    /// Replay `node`'s hints in the background unless a replay runs already.
    pub(super) fn replay(&mut self, node: NodeId, ctx: &mut Context<Self>) {
        if self.hint_counts.get(&node).copied().unwrap_or(0) == 0 || !self.replaying.insert(node) {
            return;
        }
        let mut page = Vec::new();
        for item in self.hints.prefix(node.0).take(HINT_PAGE) {
            match item.into_inner() {
                Ok((k, v)) => page.push((k.to_vec(), v.to_vec())),
                Err(e) => {
                    tracing::error!("hints keyspace: {e}");
                    break;
                }
            }
        }
        let complete = page.len() < HINT_PAGE;
        let peers = self.links.peers.clone();
        let read_block = self.links.read_block.clone();
        let budget = self.links.read_budget.clone();
        let timeout = self.config.rpc_timeout;
        let addr = ctx.address();
        actix_rt::spawn(async move {
            use futures::stream::{self, StreamExt};
            // Keys sort by (node, hash, kind): one group per hash, refs before the block.
            let mut groups: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
            for (key, value) in page {
                let same = groups
                    .last()
                    .and_then(|g| g.first())
                    .is_some_and(|(k, _)| hint_hash_prefix(k) == hint_hash_prefix(&key));
                match groups.last_mut() {
                    Some(g) if same => g.push((key, value)),
                    _ => groups.push(vec![(key, value)]),
                }
            }
            let results: Vec<GroupReplay> = stream::iter(groups)
                .map(|g| {
                    replay_group(
                        node,
                        g,
                        &peers,
                        read_block.as_ref(),
                        budget.as_ref(),
                        timeout,
                    )
                })
                .buffer_unordered(HINT_PARALLEL)
                .collect()
                .await;
            let mut removed = Vec::new();
            let mut replayed = 0;
            let mut stopped = false;
            for r in results {
                replayed += r.replayed;
                removed.extend(r.removed);
                stopped |= r.stopped;
            }
            addr.do_send(ReplayDone {
                node,
                replayed,
                removed,
                complete: complete && !stopped,
            });
        });
    }

    pub(super) fn drop_hints_of(&mut self, node: NodeId) {
        let keys: Vec<Vec<u8>> = self
            .hints
            .prefix(node.0)
            .filter_map(|i| i.key().ok().map(|k| k.to_vec()))
            .collect();
        let mut b = self.db.batch();
        for k in &keys {
            b.remove(&self.hints, k.clone());
        }
        if let Err(e) = b.commit() {
            self.hints_write_failed("removing the hints of a former member", e);
            return;
        }
        tracing::info!(node = %node.short(), hints = keys.len(), "dropped the hints of a node that is no longer a member");
        self.hint_counts.remove(&node);
    }
}

impl Handler<ReplayDone> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, m: ReplayDone, ctx: &mut Context<Self>) {
        self.replaying.remove(&m.node);
        self.hints_replayed += m.replayed;
        let mut b = self.db.batch();
        for k in &m.removed {
            b.remove(&self.hints, k.clone());
        }
        let removed = match b.commit() {
            Ok(()) => {
                let c = self.hint_counts.entry(m.node).or_default();
                *c = c.saturating_sub(m.removed.len() as u64);
                if *c == 0 {
                    self.hint_counts.remove(&m.node);
                }
                true
            }
            Err(e) => {
                self.hints_write_failed("removing replayed hints", e);
                false
            }
        };
        if m.replayed > 0 {
            tracing::info!(node = %m.node.short(), replayed = m.replayed, "hints replayed");
        }
        // More pages: go on at once. A failure (also one to remove this page, which
        // would replay the same page again and again) waits for the next poll.
        if removed && !m.complete && !m.removed.is_empty() {
            self.replay(m.node, ctx);
        }
    }
}

impl Handler<CallsFailed> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, m: CallsFailed, ctx: &mut Context<Self>) {
        if !self.config.hinted_handoff {
            return;
        }
        let hints = Hint::for_rpc(&m.rpc);
        if hints.is_empty() {
            return;
        }
        for (node, err) in m.failed {
            // A refusal the node will repeat (the ref is dropped there, the data is bad,
            // a bare ref's block is not stored there: anti-entropy brings the ref with a
            // fetch of its block once a holder has both) is not a missed write.
            if let RpcError::Remote {
                code:
                    ErrorCode::RefDropped
                    | ErrorCode::BadRequest
                    | ErrorCode::CorruptData
                    | ErrorCode::BlockMissing,
                ..
            } = err
            {
                continue;
            }
            if node == self.config.self_id {
                continue;
            }
            if self.hint_refused(node, hints[0].hash(), ctx) {
                continue;
            }
            for hint in &hints {
                self.store_hint(node, hint);
            }
        }
    }
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
