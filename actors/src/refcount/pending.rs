//! Writes the actor has applied but whose journal sync has not finished yet.
//!
//! The actor answers reads from "pending, newest first, then fjall", so a write is visible
//! at once while its reply waits for durability. Pending writes are grouped into
//! generations; each generation becomes one atomic fjall batch and one journal sync
//! (group commit). Only the front generation is ever being persisted, and a generation
//! takes at most `max_ops` operations, so one sync never covers an unbounded batch.
//!
//! Why not commit to fjall on arrival and only sync later: fjall holds its journal writer
//! lock for the whole fsync, so a commit from the actor's thread would block it behind
//! every sync. Here fjall is written only by the persist task, off the actor's thread.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::record::RefRec;
use super::RcChanged;
use crate::hash::{Hash, HASH_LEN};
use crate::rc::RcEntry;
use crate::store_failure::CommitFailure;

/// What the waiters of a generation learn: `Err` says why the batch is not durable.
pub type Durable = Result<(), PersistError>;

/// Why a generation's batch did not become durable (shared by all its waiters).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    /// fjall refused the commit or the journal sync (it is poisoned from then on).
    #[error(transparent)]
    Commit(Arc<fjall::Error>),
    /// The blocking task that committed the batch panicked or was cancelled.
    #[error("persist task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

impl From<CommitFailure> for PersistError {
    fn from(f: CommitFailure) -> Self {
        match f {
            CommitFailure::Store(e) => PersistError::Commit(e),
            CommitFailure::Task(e) => PersistError::Task(e),
        }
    }
}

/// One group of writes, committed and synced together.
#[derive(Default)]
pub struct Generation {
    /// `refs` key → new state (the last write of a key wins within the batch); `None`
    /// removes the key (a partition this node no longer holds, see `ForgetPartition`).
    pub refs: BTreeMap<Vec<u8>, Option<RefRec>>,
    /// hash → new rc entry; `Absent` removes the key.
    pub rc: BTreeMap<Hash, RcEntry>,
    /// hash → GC fence set at this time (ms), or `None` to lift it (see `keys.rs`).
    pub fences: BTreeMap<Hash, Option<u64>>,
    /// Operations staged here (the unit of `max_ops`).
    pub ops: usize,
    /// Replies waiting for this generation to be durable.
    pub waiters: Vec<oneshot::Sender<Durable>>,
    /// Zero/non-zero transitions to announce once durable.
    pub changes: Vec<RcChanged>,
}

/// The writes of one generation, copied out for the persist task.
pub struct Batch {
    pub refs: Vec<(Vec<u8>, Option<RefRec>)>,
    pub rc: Vec<(Hash, RcEntry)>,
    pub fences: Vec<(Hash, Option<u64>)>,
}

/// All generations not yet durable, oldest first.
pub struct Pending {
    gens: VecDeque<Generation>,
    /// Whether the front generation is being persisted right now.
    in_flight: bool,
    max_ops: usize,
}

impl Pending {
    /// Empty; generations take at most `max_ops` operations (at least 1).
    pub fn new(max_ops: usize) -> Self {
        Pending {
            gens: VecDeque::new(),
            in_flight: false,
            max_ops: max_ops.max(1),
        }
    }

    /// The pending state of a `refs` key, if one is pending (`Some(None)`: removed).
    pub fn ref_state(&self, key: &[u8]) -> Option<Option<RefRec>> {
        self.gens
            .iter()
            .rev()
            .find_map(|g| g.refs.get(key).copied())
    }

    /// The pending rc entry of a hash, if one is pending.
    pub fn rc(&self, hash: &Hash) -> Option<RcEntry> {
        self.gens.iter().rev().find_map(|g| g.rc.get(hash).copied())
    }

    /// The pending fence write of a hash, if one is pending (`Some(None)`: lifted).
    pub fn fence(&self, hash: &Hash) -> Option<Option<u64>> {
        self.gens
            .iter()
            .rev()
            .find_map(|g| g.fences.get(hash).copied())
    }

    /// Pending refs of one block, merged (newer generations win).
    pub fn refs_of(&self, hash: &Hash) -> BTreeMap<Vec<u8>, Option<RefRec>> {
        let mut out = BTreeMap::new();
        for g in &self.gens {
            for (k, s) in g.refs.range(hash.as_bytes().to_vec()..) {
                if k.len() < HASH_LEN || k[..HASH_LEN] != hash.as_bytes()[..] {
                    break;
                }
                out.insert(k.clone(), *s);
            }
        }
        out
    }

    /// Every pending ref write, merged (newer generations win).
    pub fn all_refs(&self) -> BTreeMap<Vec<u8>, Option<RefRec>> {
        let mut out = BTreeMap::new();
        for g in &self.gens {
            out.extend(g.refs.iter().map(|(k, s)| (k.clone(), *s)));
        }
        out
    }

    /// Every pending rc write, merged (newer generations win).
    pub fn all_rc(&self) -> BTreeMap<Hash, RcEntry> {
        let mut out = BTreeMap::new();
        for g in &self.gens {
            out.extend(g.rc.iter().map(|(h, e)| (*h, *e)));
        }
        out
    }

    /// The generation a new operation goes to: the newest one if it is not being
    /// persisted and has room, else a new one. Counts the operation.
    pub fn open_generation(&mut self) -> &mut Generation {
        let back_is_open = match self.gens.back() {
            None => false,
            Some(g) => !(self.in_flight && self.gens.len() == 1) && g.ops < self.max_ops,
        };
        if !back_is_open {
            self.gens.push_back(Generation::default());
        }
        // unwrap: a generation was pushed just above if there was none.
        let g = self.gens.back_mut().unwrap();
        g.ops += 1;
        g
    }

    /// A receiver told when everything pending now is durable; `None` if nothing is.
    /// Generations are persisted in order, so waiting on the newest covers all.
    pub fn wait_durable(&mut self) -> Option<oneshot::Receiver<Durable>> {
        let g = self.gens.back_mut()?;
        let (tx, rx) = oneshot::channel();
        g.waiters.push(tx);
        Some(rx)
    }

    /// The front generation's writes, if it exists and no persist is running; marks
    /// it in flight.
    pub fn take_next_batch(&mut self) -> Option<Batch> {
        if self.in_flight {
            return None;
        }
        let g = self.gens.front()?;
        self.in_flight = true;
        Some(Batch {
            refs: g.refs.iter().map(|(k, s)| (k.clone(), *s)).collect(),
            rc: g.rc.iter().map(|(h, e)| (*h, *e)).collect(),
            fences: g.fences.iter().map(|(h, f)| (*h, *f)).collect(),
        })
    }

    /// The in-flight generation's persist ended: remove and return it.
    pub fn finish(&mut self) -> Option<Generation> {
        if !self.in_flight {
            return None;
        }
        self.in_flight = false;
        self.gens.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_generations_shadow_older_ones_and_in_flight_is_closed() {
        let mut p = Pending::new(2);
        let h = Hash([5; 32]);
        let mut key = h.as_bytes().to_vec();
        key.extend_from_slice(b"r1");
        p.open_generation()
            .refs
            .insert(key.clone(), Some(RefRec::live(0)));
        let batch = p
            .take_next_batch()
            .expect("front generation must be handed out");
        assert_eq!(batch.refs.len(), 1);
        assert!(
            p.take_next_batch().is_none(),
            "only one persist may run at a time"
        );
        // The front is in flight, so this goes to a new generation.
        p.open_generation()
            .refs
            .insert(key.clone(), Some(RefRec::dropped(0, 0)));
        assert_eq!(p.ref_state(&key), Some(Some(RefRec::dropped(0, 0))));
        assert_eq!(p.refs_of(&h).get(&key), Some(&Some(RefRec::dropped(0, 0))));
        assert!(p.finish().is_some());
        assert_eq!(p.ref_state(&key), Some(Some(RefRec::dropped(0, 0))));
        assert!(p.take_next_batch().is_some());
        assert!(p.finish().is_some());
        assert!(p.gens.is_empty() && p.ref_state(&key).is_none());
    }

    #[test]
    fn a_full_generation_starts_a_new_one() {
        let mut p = Pending::new(2);
        p.open_generation();
        p.open_generation();
        p.open_generation();
        assert_eq!(
            p.gens.len(),
            2,
            "the third op must not join a full generation"
        );
    }
}
