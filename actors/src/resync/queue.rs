//! The persisted resync queue and errors table, as plain methods over fjall keyspaces
//! (the encodings are in `keys.rs`). Owned by the resync actor, which calls these on its
//! own thread: each is a point lookup, a short scan or a small buffered write (no fsync;
//! the actor syncs the journal periodically off its thread).
//!
//! Invariants kept here: at most one *waiting* entry per hash (the index says which);
//! an entry a worker has taken stays in the queue until [`Queue::finish`], so a crash
//! re-runs it; the in-memory counters match the keyspaces.

use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use super::decision::backoff;
use super::keys::{self, ErrorEntry};
use super::ResyncError;
use crate::hash::Hash;

/// Name of the queue keyspace.
pub const QUEUE_KEYSPACE: &str = "resync_queue";
/// Name of the queue's per-hash index keyspace.
pub const INDEX_KEYSPACE: &str = "resync_queue_index";
/// Name of the errors keyspace.
pub const ERRORS_KEYSPACE: &str = "resync_errors";

/// One queue entry: look at `hash` at `due` (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub due: u64,
    pub hash: Hash,
}

/// What [`Queue::schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// A new entry.
    Added,
    /// The hash's waiting entry moved earlier.
    MovedEarlier,
    /// The hash was already waiting, due no later: nothing changed.
    AlreadyQueued,
}

/// The queue, its index and the errors table.
pub struct Queue {
    db: Database,
    queue: Keyspace,
    index: Keyspace,
    errors: Keyspace,
    /// Entries in `resync_queue` (fjall's `approximate_len` counts tombstones).
    len: u64,
    /// Entries in `resync_errors`.
    error_count: u64,
}

impl Queue {
    /// Open (or create) the keyspaces and count their entries (one scan at start).
    pub fn open(db: &Database) -> Result<Self, ResyncError> {
        let queue = db.keyspace(QUEUE_KEYSPACE, KeyspaceCreateOptions::default)?;
        let index = db.keyspace(INDEX_KEYSPACE, KeyspaceCreateOptions::default)?;
        let errors = db.keyspace(ERRORS_KEYSPACE, KeyspaceCreateOptions::default)?;
        let len = queue.iter().count() as u64;
        let error_count = errors.iter().count() as u64;
        Ok(Queue {
            db: db.clone(),
            queue,
            index,
            errors,
            len,
            error_count,
        })
    }

    /// Entries in the queue, waiting or being processed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Entries in the errors table.
    pub fn error_count(&self) -> u64 {
        self.error_count
    }

    /// The waiting entry of `hash`, if any (an index entry whose queue entry is gone
    /// counts as none, so a damaged index cannot hide a hash forever).
    fn waiting(&self, hash: &Hash) -> Result<Option<u64>, ResyncError> {
        let Some(v) = self.index.get(hash.as_bytes())? else {
            return Ok(None);
        };
        let Some(due) = keys::parse_u64(&v) else {
            return Ok(None);
        };
        if self.queue.contains_key(keys::queue_key(due, hash))? {
            Ok(Some(due))
        } else {
            Ok(None)
        }
    }

    /// Whether `hash` has a waiting entry (a schedule that is not lost).
    pub fn is_waiting(&self, hash: &Hash) -> Result<bool, ResyncError> {
        Ok(self.waiting(hash)?.is_some())
    }

    /// Look at `hash` at `due`: a new entry, or the waiting one moved earlier, or
    /// nothing when it already waits for an earlier time.
    pub fn schedule(&mut self, hash: Hash, due: u64) -> Result<Scheduled, ResyncError> {
        let old = self.waiting(&hash)?;
        if old.is_some_and(|d| d <= due) {
            return Ok(Scheduled::AlreadyQueued);
        }
        let new_key = keys::queue_key(due, &hash);
        // The same key may still be in the queue, taken by a worker in this same ms:
        // it then becomes the waiting entry again (see `finish`).
        let key_present = self.queue.contains_key(&new_key)?;
        let mut b = self.db.batch();
        if let Some(d) = old {
            b.remove(&self.queue, keys::queue_key(d, &hash));
        }
        b.insert(&self.queue, new_key, []);
        b.insert(&self.index, hash.as_bytes().to_vec(), due.to_be_bytes());
        b.commit()?;
        // One entry removed (the old waiting one), one added unless it was there.
        if old.is_some() {
            self.len = self.len.saturating_sub(1);
        }
        if !key_present {
            self.len += 1;
        }
        Ok(if old.is_some() {
            Scheduled::MovedEarlier
        } else {
            Scheduled::Added
        })
    }

    /// Up to `n` entries due by `now`, in due order, skipping hashes `skip` says are
    /// busy; and the due time of the first entry not yet due. Invalid keys are removed.
    pub fn due(
        &mut self,
        now: u64,
        n: usize,
        skip: impl Fn(&Hash) -> bool,
    ) -> (Vec<Item>, Option<u64>) {
        let mut items: Vec<Item> = Vec::new();
        let mut bad = Vec::new();
        let mut next = None;
        if n > 0 {
            for kv in self.queue.iter() {
                let Ok(key) = kv.key() else { break };
                let Some((due, hash)) = keys::parse_queue_key(&key) else {
                    bad.push(key.to_vec());
                    continue;
                };
                if due > now {
                    next = Some(due);
                    break;
                }
                if skip(&hash) || items.iter().any(|i| i.hash == hash) {
                    continue;
                }
                items.push(Item { due, hash });
                if items.len() >= n {
                    break;
                }
            }
        } else {
            // No free worker: only the earliest due time matters (to sleep until it).
            next = self
                .queue
                .first_key_value()
                .and_then(|kv| kv.key().ok())
                .and_then(|k| keys::parse_queue_key(&k))
                .map(|(due, _)| due);
        }
        for key in bad {
            tracing::warn!(
                "removing an invalid resync queue key of {} bytes",
                key.len()
            );
            if self.queue.remove(key).is_ok() {
                self.len = self.len.saturating_sub(1);
            }
        }
        (items, next)
    }

    /// A worker takes `item`: it leaves the index (a new schedule of the hash makes a new
    /// waiting entry, run after this one) but stays in the queue until [`Queue::finish`].
    pub fn take(&mut self, item: Item) -> Result<(), ResyncError> {
        if self.waiting(&item.hash)? == Some(item.due) {
            self.index.remove(item.hash.as_bytes().to_vec())?;
        }
        Ok(())
    }

    /// `item` was processed: remove it, unless the hash was scheduled again for exactly
    /// the same ms meanwhile (then the entry is that new waiting one).
    pub fn finish(&mut self, item: Item) -> Result<(), ResyncError> {
        if self.waiting(&item.hash)? == Some(item.due) {
            return Ok(());
        }
        self.queue.remove(keys::queue_key(item.due, &item.hash))?;
        self.len = self.len.saturating_sub(1);
        Ok(())
    }

    /// The error entry of `hash`, if any.
    pub fn error(&self, hash: &Hash) -> Option<ErrorEntry> {
        self.errors
            .get(hash.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| ErrorEntry::parse(&v))
    }

    /// One more failure of `hash` at `now`: count + 1, next try after the backoff for
    /// that count (see [`backoff`]). Returns the new entry; the caller queues the retry.
    pub fn record_error(
        &mut self,
        hash: Hash,
        message: String,
        base: Duration,
        now: u64,
    ) -> Result<ErrorEntry, ResyncError> {
        let prev = self.error(&hash);
        let count = prev.as_ref().map_or(0, |p| p.count) + 1;
        let entry = ErrorEntry {
            count,
            last_try: now,
            next_try: now.saturating_add(backoff(base, count).as_millis() as u64),
            message,
        };
        self.errors
            .insert(hash.as_bytes().to_vec(), entry.encode())?;
        if prev.is_none() {
            self.error_count += 1;
        }
        Ok(entry)
    }

    /// `hash` was resynced: forget its errors.
    pub fn clear_error(&mut self, hash: &Hash) -> Result<(), ResyncError> {
        if self.errors.contains_key(hash.as_bytes())? {
            self.errors.remove(hash.as_bytes().to_vec())?;
            self.error_count = self.error_count.saturating_sub(1);
        }
        Ok(())
    }

    /// Set the next try of an errored `hash` to `now` (for `RetryNow`); false if it has
    /// no error entry.
    pub fn retry_error_now(&mut self, hash: &Hash, now: u64) -> Result<bool, ResyncError> {
        let Some(mut e) = self.error(hash) else {
            return Ok(false);
        };
        e.next_try = now;
        self.errors.insert(hash.as_bytes().to_vec(), e.encode())?;
        Ok(true)
    }

    /// Up to `limit` error entries after `after` in hash order (unreadable ones are
    /// skipped), and whether more follow.
    pub fn error_page(&self, after: Option<Hash>, limit: usize) -> (Vec<(Hash, ErrorEntry)>, bool) {
        use std::ops::Bound;
        let lower = after.map(|h| h.as_bytes().to_vec());
        let range = match &lower {
            Some(k) => self
                .errors
                .range::<&[u8], _>((Bound::Excluded(k.as_slice()), Bound::Unbounded)),
            None => self.errors.iter(),
        };
        let mut out: Vec<(Hash, ErrorEntry)> = range
            .filter_map(|kv| kv.into_inner().ok())
            .filter_map(|(k, v)| Some((Hash::from_slice(&k)?, ErrorEntry::parse(&v)?)))
            .take(limit.saturating_add(1))
            .collect();
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }

    /// Every error entry (unreadable ones are skipped).
    pub fn error_entries(&self) -> Vec<(Hash, ErrorEntry)> {
        self.errors
            .iter()
            .filter_map(|kv| kv.into_inner().ok())
            .filter_map(|(k, v)| Some((Hash::from_slice(&k)?, ErrorEntry::parse(&v)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::blake2sum;

    fn open() -> (tempfile::TempDir, Queue) {
        let d = tempfile::tempdir().unwrap();
        let db = Database::builder(d.path()).open().unwrap();
        let q = Queue::open(&db).unwrap();
        (d, q)
    }

    #[test]
    fn a_hash_waits_once_and_an_earlier_schedule_moves_it() {
        let (_d, mut q) = open();
        let h = blake2sum(b"a");
        assert_eq!(q.schedule(h, 100).unwrap(), Scheduled::Added);
        assert_eq!(q.schedule(h, 200).unwrap(), Scheduled::AlreadyQueued);
        assert_eq!(q.schedule(h, 100).unwrap(), Scheduled::AlreadyQueued);
        assert_eq!(q.schedule(h, 50).unwrap(), Scheduled::MovedEarlier);
        assert_eq!(q.len(), 1, "one waiting entry per hash");
        let (items, next) = q.due(60, 8, |_| false);
        assert_eq!(items, vec![Item { due: 50, hash: h }]);
        assert_eq!(next, None);
        let (items, next) = q.due(49, 8, |_| false);
        assert!(items.is_empty());
        assert_eq!(next, Some(50), "sleep until the moved entry");
    }

    #[test]
    fn a_taken_hash_can_be_queued_again_and_survives_its_finish() {
        let (_d, mut q) = open();
        let h = blake2sum(b"a");
        q.schedule(h, 10).unwrap();
        let it = Item { due: 10, hash: h };
        q.take(it).unwrap();
        // Scheduled again while being processed, later and then in the same ms.
        assert_eq!(q.schedule(h, 20).unwrap(), Scheduled::Added);
        assert_eq!(q.len(), 2);
        let (items, _) = q.due(100, 8, |x| *x == h);
        assert!(items.is_empty(), "a busy hash is skipped");
        q.finish(it).unwrap();
        assert_eq!(q.len(), 1);
        let (items, _) = q.due(100, 8, |_| false);
        assert_eq!(items, vec![Item { due: 20, hash: h }]);

        let it = items[0];
        q.take(it).unwrap();
        assert_eq!(q.schedule(h, 20).unwrap(), Scheduled::Added);
        q.finish(it).unwrap();
        assert_eq!(
            q.due(100, 8, |_| false).0,
            vec![it],
            "a schedule in the very ms of the taken entry must not be lost"
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn an_item_taken_when_the_node_stopped_is_run_again_after_restart() {
        let d = tempfile::tempdir().unwrap();
        let db = Database::builder(d.path()).open().unwrap();
        let mut q = Queue::open(&db).unwrap();
        let h = blake2sum(b"in flight");
        q.schedule(h, 10).unwrap();
        q.take(Item { due: 10, hash: h }).unwrap();
        drop(q);
        let mut q = Queue::open(&db).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q.due(100, 8, |_| false).0, vec![Item { due: 10, hash: h }]);
        // And a new schedule of it adds at most one more entry.
        q.schedule(h, 20).unwrap();
        q.schedule(h, 30).unwrap();
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn errors_count_back_off_and_clear() {
        let (_d, mut q) = open();
        let h = blake2sum(b"e");
        let base = Duration::from_millis(50);
        let e1 = q.record_error(h, "x".into(), base, 1000).unwrap();
        assert_eq!((e1.count, e1.next_try), (1, 1050));
        let e2 = q.record_error(h, "y".into(), base, 2000).unwrap();
        assert_eq!((e2.count, e2.next_try, e2.message.as_str()), (2, 2100, "y"));
        assert_eq!(q.error_count(), 1);
        assert!(q.retry_error_now(&h, 3000).unwrap());
        assert_eq!(q.error(&h).unwrap().next_try, 3000);
        q.clear_error(&h).unwrap();
        assert_eq!(q.error_count(), 0);
        assert!(q.error_entries().is_empty());
    }

    #[test]
    fn counters_are_restored_on_open() {
        let d = tempfile::tempdir().unwrap();
        let db = Database::builder(d.path()).open().unwrap();
        let mut q = Queue::open(&db).unwrap();
        for i in 0..5u8 {
            q.schedule(blake2sum(&[i]), i as u64).unwrap();
        }
        q.record_error(blake2sum(b"e"), "x".into(), Duration::from_secs(1), 0)
            .unwrap();
        let q2 = Queue::open(&db).unwrap();
        assert_eq!((q2.len(), q2.error_count()), (5, 1));
    }
}
