//! Counting the stored blocks in the background while writes go on: the pure state
//! machine that keeps the counts exact.
//!
//! At start the storage actor does not walk the tree before it answers (a million block
//! files took minutes); it walks it afterwards, one top-level directory (`<data_dir>/xx`,
//! hashes whose first byte is `xx`) at a time, while reads, writes and deletes run.
//! Every operation reports its change to the counts (a [`super::disk::StatsDelta`]);
//! whether that change is already in what the walk saw depends on when it happened:
//!
//! - directory not reached yet (`Pending`): the walk will see the operation's result, so
//!   its change is not applied;
//! - directory being read (`Scanning`): unknown; the hash is *touched*;
//! - directory read (`Reconciling`): for every touched hash, and every hash with an
//!   operation still queued or running when the listing came back, the listing's view is
//!   thrown away and a *probe* is queued on that hash's lane; the probe counts what is on
//!   disk once the operations before it are done. Changes of those operations are not
//!   applied (the probe sees them), changes after the probe are. Other hashes' changes
//!   are applied (they started after the listing);
//! - `Done`: every change is applied.
//!
//! The lanes of the storage actor run one operation per hash at a time, in order, and a
//! change is handed to [`Census::on_change`] on the actor's thread before the next
//! operation of that hash starts, which is what makes the probe's view exact.

use std::collections::HashSet;

use crate::hash::Hash;

/// Where the count of one top-level directory stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dir {
    Pending,
    Scanning { touched: HashSet<Hash> },
    Reconciling { awaiting: HashSet<Hash> },
    Done,
}

/// The counts being established: see the module documentation.
#[derive(Debug, Clone)]
pub(super) struct Census {
    dirs: Vec<Dir>,
    next: usize,
    done: usize,
}

/// What one block contributes to the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub blocks: u64,
    pub bytes: u64,
}

/// What to do once a directory's listing came back; `T` is what the listing says of
/// one block (its bytes on each data dir, for the actor).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Listed<T> {
    /// The listing's entries to add to the counts now.
    pub add: Vec<T>,
    /// Hashes whose listing was not trusted: queue a probe on each one's lane.
    pub probe: Vec<Hash>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            add: Vec::new(),
            probe: Vec::new(),
        }
    }
}

impl Census {
    /// A census that has every directory still to count.
    pub fn start() -> Census {
        Census {
            dirs: vec![Dir::Pending; 256],
            next: 0,
            done: 0,
        }
    }

    /// Whether every directory is counted (the counts are exact).
    pub fn complete(&self) -> bool {
        self.done == self.dirs.len()
    }

    /// Directories counted so far (0..=256).
    #[cfg(test)]
    pub fn dirs_done(&self) -> usize {
        self.done
    }

    /// The next directory to list, now marked as being read; `None` once all were.
    pub fn begin_next(&mut self) -> Option<u8> {
        let d = self.next;
        if d >= self.dirs.len() {
            return None;
        }
        self.next += 1;
        self.dirs[d] = Dir::Scanning {
            touched: HashSet::new(),
        };
        Some(d as u8)
    }

    /// An operation on `hash` ended and changed the counts: whether to apply its change.
    pub fn on_change(&mut self, hash: &Hash) -> bool {
        match &mut self.dirs[hash.0[0] as usize] {
            Dir::Pending => false,
            Dir::Scanning { touched } => {
                touched.insert(*hash);
                false
            }
            Dir::Reconciling { awaiting } => !awaiting.contains(hash),
            Dir::Done => true,
        }
    }

    /// The listing of directory `dir` came back with `found` (each block once, with what
    /// it counts for); `busy` are the hashes with operations queued or running now
    /// (whatever their directory: others are ignored).
    pub fn listed<T>(
        &mut self,
        dir: u8,
        found: Vec<(Hash, T)>,
        busy: impl IntoIterator<Item = Hash>,
    ) -> Listed<T> {
        let d = dir as usize;
        let Dir::Scanning { touched } = std::mem::replace(&mut self.dirs[d], Dir::Done) else {
            // Not being read (a listing that came back twice): count nothing twice.
            return Listed::default();
        };
        let mut out = Listed::default();
        // An operation still running may have changed the disk before the listing read
        // it, or not: its hash's listing cannot be trusted either way.
        let mut awaiting = touched;
        awaiting.extend(busy.into_iter().filter(|h| h.0[0] == dir));
        for (hash, t) in found {
            if hash.0[0] == dir && !awaiting.contains(&hash) {
                out.add.push(t);
            }
        }
        out.probe = awaiting.iter().copied().collect();
        out.probe.sort_unstable();
        if awaiting.is_empty() {
            self.done += 1;
        } else {
            self.dirs[d] = Dir::Reconciling { awaiting };
        }
        out
    }

    /// The probe of `hash` ended: whether its tally is to be added (false for a probe
    /// that is no longer awaited).
    pub fn probed(&mut self, hash: &Hash) -> bool {
        let d = hash.0[0] as usize;
        let Dir::Reconciling { awaiting } = &mut self.dirs[d] else {
            return false;
        };
        if !awaiting.remove(hash) {
            return false;
        }
        if awaiting.is_empty() {
            self.dirs[d] = Dir::Done;
            self.done += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    fn h(dir: u8, n: u8) -> Hash {
        let mut b = [0u8; 32];
        b[0] = dir;
        b[1] = n;
        Hash(b)
    }

    #[test]
    fn untouched_directories_are_counted_from_their_listing() {
        let mut c = Census::start();
        assert_eq!(c.begin_next(), Some(0));
        let l = c.listed(0, vec![(h(0, 1), 10), (h(0, 2), 5)], [h(1, 1)]);
        assert_eq!(l.add, vec![10, 5]);
        assert!(l.probe.is_empty());
        assert_eq!(c.dirs_done(), 1);
        assert!(c.on_change(&h(0, 3)), "a counted directory takes changes");
        assert!(!c.on_change(&h(9, 3)), "a directory not read yet does not");
    }

    #[test]
    fn a_change_while_listing_is_probed_and_changes_before_the_probe_are_not_applied() {
        let mut c = Census::start();
        for _ in 0..256 {
            c.begin_next();
        }
        assert!(!c.on_change(&h(4, 1)));
        let l = c.listed(4, vec![(h(4, 1), 10), (h(4, 2), 7)], []);
        assert_eq!(l.add, vec![7]);
        assert_eq!(l.probe, vec![h(4, 1)]);
        assert!(!c.on_change(&h(4, 1)), "an op queued before the probe");
        assert!(c.on_change(&h(4, 2)), "an untouched hash");
        assert!(c.probed(&h(4, 1)));
        assert!(c.on_change(&h(4, 1)), "after its probe");
        assert!(!c.probed(&h(4, 1)), "a probe counts once");
    }

    /// A model of the storage actor: lanes of operations on a few hashes, a walk that
    /// lists each directory at some moment, and operations ending at random points
    /// before, during and after the walk. The census's counts must equal what is on disk.
    #[derive(Debug, Clone)]
    enum Step {
        /// Start an operation on hash `k` that makes it present with `bytes`, or absent.
        Op { k: u8, present: Option<u8> },
        /// The next operation of hash `k`'s lane changes the disk (its result is not
        /// back on the actor's thread yet) ...
        Land { k: u8 },
        /// ... and ends: its change reaches the actor (landing first if it had not).
        End { k: u8 },
        /// The walk lists the next directory (reads the disk now) ...
        ListStart,
        /// ... and its listing reaches the actor.
        ListEnd,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..12, proptest::option::of(1u8..50))
                .prop_map(|(k, present)| Step::Op { k, present }),
            (0u8..12).prop_map(|k| Step::Land { k }),
            (0u8..12).prop_map(|k| Step::End { k }),
            Just(Step::ListStart),
            Just(Step::ListEnd),
        ]
    }

    /// Hash `k` lives in directory `k % 3`, so a few directories share the hashes.
    fn key(k: u8) -> Hash {
        h(k % 3, k)
    }

    /// One entry of a lane in the model: an operation, or the census's probe.
    #[derive(Debug, Clone, Copy)]
    enum Item {
        /// An operation; once landed, the disk's state before and after it.
        Op(Option<u8>, Option<(Option<u64>, Option<u64>)>),
        Probe,
    }

    /// The disk effect of the operation at the front of `k`'s lane, once.
    fn land(k: u8, lanes: &mut BTreeMap<u8, VecDeque<Item>>, disk: &mut BTreeMap<u8, u64>) {
        if let Some(Item::Op(op, landed @ None)) = lanes.get_mut(&k).and_then(|q| q.front_mut()) {
            let before = disk.get(&k).copied();
            match op {
                Some(b) => {
                    disk.insert(k, *b as u64);
                }
                None => {
                    disk.remove(&k);
                }
            }
            *landed = Some((before, disk.get(&k).copied()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn counts_are_exact_whatever_the_interleaving(
            initial in proptest::collection::btree_map(0u8..12, 1u64..50, 0..12),
            steps in proptest::collection::vec(step(), 0..80),
        ) {
            let mut disk: BTreeMap<u8, u64> = initial;
            let mut lanes: BTreeMap<u8, VecDeque<Item>> = BTreeMap::new();
            let mut census = Census::start();
            let mut counts = Tally::default();
            let mut listing: Option<(u8, Vec<(Hash, u64)>)> = None;
            // The given steps, then enough to end every lane, walk every directory and
            // end the probes that walk queued.
            let drain = || (0..12u8).flat_map(|k| vec![Step::End { k }; 100]);
            let walk = std::iter::repeat_n([Step::ListStart, Step::ListEnd], 257).flatten();
            let all: Vec<Step> = steps.into_iter().chain(drain()).chain(walk).chain(drain()).collect();
            for s in all {
                match s {
                    Step::Op { k, present } => lanes.entry(k).or_default().push_back(Item::Op(present, None)),
                    Step::Land { k } => land(k, &mut lanes, &mut disk),
                    Step::End { k } => {
                        land(k, &mut lanes, &mut disk);
                        let Some(item) = lanes.get_mut(&k).and_then(|q| q.pop_front()) else {
                            continue;
                        };
                        match item {
                            Item::Op(_, landed) => {
                                let (before, after) = landed.unwrap_or_default();
                                if before != after && census.on_change(&key(k)) {
                                    if let Some(b) = before { counts.blocks -= 1; counts.bytes -= b; }
                                    if let Some(b) = after { counts.blocks += 1; counts.bytes += b; }
                                }
                            }
                            Item::Probe => {
                                if census.probed(&key(k)) {
                                    if let Some(b) = disk.get(&k) {
                                        counts.blocks += 1;
                                        counts.bytes += *b;
                                    }
                                }
                            }
                        }
                    }
                    Step::ListStart if listing.is_none() => {
                        if let Some(d) = census.begin_next() {
                            let found = disk.iter().filter(|(k, _)| **k % 3 == d).map(|(k, b)| (key(*k), *b)).collect();
                            listing = Some((d, found));
                        }
                    }
                    Step::ListStart => {}
                    Step::ListEnd => {
                        if let Some((d, found)) = listing.take() {
                            let busy: Vec<Hash> = lanes.iter().filter(|(_, q)| !q.is_empty()).map(|(k, _)| key(*k)).collect();
                            let l = census.listed(d, found, busy);
                            counts.blocks += l.add.len() as u64;
                            counts.bytes += l.add.iter().sum::<u64>();
                            for p in l.probe {
                                lanes.entry(p.0[1]).or_default().push_back(Item::Probe);
                            }
                        }
                    }
                }
            }
            prop_assert!(census.complete(), "census not complete: {} dirs", census.dirs_done());
            let want = Tally { blocks: disk.len() as u64, bytes: disk.values().sum() };
            prop_assert_eq!(counts, want);
        }
    }
}
