//! Which data directory a block belongs in: the pure placement function of the storage
//! actor when a node has several disks, and the settings and states of one directory.
//!
//! Placement is weighted rendezvous hashing: every directory that may take new blocks
//! gets a score from the block's hash, the directory's key (its path as configured) and
//! its capacity; the block belongs in the highest score. Each directory wins a share of
//! the blocks equal to its share of the capacity, and a change of one directory's
//! capacity (or adding or removing one) moves only blocks into or out of that directory,
//! never between two others: a block's scores on the other directories do not change.
//! The key is the path, not the position in the list, so reordering `data_dirs` moves
//! nothing.
//!
//! No file is touched here: the actor gives the function what it knows (which
//! directories are writable, which have room) and gets an order back.

use std::path::PathBuf;

use crate::hash::{blake2sum, Hash};

/// One configured data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    /// Root of this directory's block tree: `<path>/<hh>/<hh>/<64-hex>[.zst]`.
    pub path: PathBuf,
    /// Most bytes of block files this directory may hold; also its placement weight.
    /// `None` (only for a lone `data_dir` without a quota): no quota, weight 1.
    pub capacity: Option<u64>,
    /// Takes no new blocks; the blocks on it are moved to the other directories.
    pub read_only: bool,
}

/// Where a data directory stands, as `/v1/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// Serving reads and taking new blocks.
    Ok,
    /// Configured read-only and holding no block any more.
    ReadOnly,
    /// Configured read-only, its blocks still being moved away.
    Draining,
    /// I/O errors or its directory gone: not used until the node restarts.
    Failed,
}

impl DiskState {
    /// The name used in status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DiskState::Ok => "ok",
            DiskState::ReadOnly => "read_only",
            DiskState::Draining => "draining",
            DiskState::Failed => "failed",
        }
    }
}

/// What placement knows of one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedDir {
    /// Stable identity of the directory in the hash (its configured path).
    pub key: String,
    /// Placement weight (its capacity in bytes; at least 1).
    pub weight: u64,
    /// May take new blocks (configured writable and not failed).
    pub writable: bool,
}

impl PlacedDir {
    /// The placement view of a configured directory.
    pub fn of(dir: &DataDir, failed: bool) -> PlacedDir {
        PlacedDir {
            key: dir.path.to_string_lossy().into_owned(),
            weight: dir.capacity.unwrap_or(1).max(1),
            writable: !dir.read_only && !failed,
        }
    }
}

/// The rendezvous score of `hash` on a directory: `weight / -ln(u)` with `u` in (0, 1]
/// drawn from BLAKE2 of the hash and the key. The largest score wins, and a directory
/// wins with probability `weight / Σ weights` (the exponential-race argument).
pub fn score(hash: &Hash, key: &str, weight: u64) -> f64 {
    let digest = blake2sum(&[&hash.as_bytes()[..], key.as_bytes()].concat());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_bytes()[..8]);
    // 53 bits give a uniform double in (0, 1]; never 0, so ln is finite.
    let u = ((u64::from_be_bytes(b) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let ln = -u.ln();
    if ln <= 0.0 {
        return f64::INFINITY;
    }
    weight as f64 / ln
}

/// The writable directories (their indexes in `dirs`) in the block's order of
/// preference, best first.
pub fn rank(hash: &Hash, dirs: &[PlacedDir]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = dirs
        .iter()
        .enumerate()
        .filter(|(_, d)| d.writable)
        .map(|(i, d)| (score(hash, &d.key, d.weight), i))
        .collect();
    // Ties (never seen with 53-bit draws) fall to the lower index, so the order is total.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The directory a block belongs in: the first of [`rank`] that `has_room`; `None` when
/// no writable directory has room.
pub fn target(hash: &Hash, dirs: &[PlacedDir], has_room: impl Fn(usize) -> bool) -> Option<usize> {
    rank(hash, dirs).into_iter().find(|&i| has_room(i))
}

/// Where to look for a block: the writable directories in preference order, then the
/// others that are not failed (read-only ones being drained), in index order. `usable`
/// says which directories may be read at all (not failed).
pub fn read_order(hash: &Hash, dirs: &[PlacedDir], usable: &[bool]) -> Vec<usize> {
    let mut order = rank(hash, dirs);
    order.extend((0..dirs.len()).filter(|i| usable.get(*i) == Some(&true) && !dirs[*i].writable));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::blake2sum;

    fn dir(key: &str, weight: u64) -> PlacedDir {
        PlacedDir {
            key: key.to_string(),
            weight,
            writable: true,
        }
    }

    fn hashes(n: u32) -> Vec<Hash> {
        (0..n).map(|i| blake2sum(&i.to_be_bytes())).collect()
    }

    fn first(h: &Hash, dirs: &[PlacedDir]) -> Option<usize> {
        target(h, dirs, |_| true)
    }

    #[test]
    fn three_thousand_blocks_follow_the_capacity_shares_within_a_few_percent() {
        let dirs = [
            dir("/d/a", 1 << 40),
            dir("/d/b", 2 << 40),
            dir("/d/c", 3 << 40),
        ];
        let mut counts = [0u32; 3];
        for h in hashes(3000) {
            counts[first(&h, &dirs).expect("a writable dir")] += 1;
        }
        for (i, want) in [500.0, 1000.0, 1500.0].into_iter().enumerate() {
            let got = counts[i] as f64;
            assert!(
                (got - want).abs() / 3000.0 < 0.03,
                "dir {i} got {got} of 3000 blocks, expected about {want} (counts {counts:?})"
            );
        }
    }

    #[test]
    fn a_capacity_change_moves_only_blocks_into_the_grown_dir() {
        let before = [dir("/d/a", 100), dir("/d/b", 100), dir("/d/c", 100)];
        let mut after = before.clone();
        after[2].weight = 200;
        let (mut moved, mut total) = (0, 0);
        for h in hashes(3000) {
            let (x, y) = (first(&h, &before), first(&h, &after));
            if x != y {
                assert_eq!(
                    y,
                    Some(2),
                    "block {h} moved from {x:?} to {y:?}, not into the grown dir"
                );
                moved += 1;
            }
            total += 1;
        }
        // From a third to a half of the capacity: about a sixth of the blocks move.
        let share = moved as f64 / total as f64;
        assert!(
            (share - 1.0 / 6.0).abs() < 0.03,
            "{moved} of {total} blocks moved, expected about a sixth"
        );
    }

    #[test]
    fn adding_a_dir_moves_blocks_only_into_it_and_reordering_moves_nothing() {
        let before = [dir("/d/a", 10), dir("/d/b", 10)];
        let after = [dir("/d/b", 10), dir("/d/new", 10), dir("/d/a", 10)];
        let key = |dirs: &[PlacedDir], i: Option<usize>| i.map(|i| dirs[i].key.clone());
        for h in hashes(2000) {
            let x = key(&before, first(&h, &before));
            let y = key(&after, first(&h, &after));
            assert!(
                x == y || y.as_deref() == Some("/d/new"),
                "block {h}: {x:?} -> {y:?}"
            );
        }
    }

    #[test]
    fn read_only_and_failed_dirs_take_no_new_blocks_but_read_only_ones_are_read() {
        let mut dirs = [dir("/d/a", 10), dir("/d/b", 10), dir("/d/c", 10)];
        dirs[1].writable = false; // read-only
        dirs[2].writable = false; // failed
        let usable = [true, true, false];
        for h in hashes(200) {
            assert_eq!(first(&h, &dirs), Some(0));
            assert_eq!(read_order(&h, &dirs, &usable), vec![0, 1]);
        }
    }

    #[test]
    fn a_full_dir_sends_its_blocks_to_the_next_in_rank() {
        let dirs = [dir("/d/a", 10), dir("/d/b", 10)];
        for h in hashes(200) {
            let r = rank(&h, &dirs);
            assert_eq!(target(&h, &dirs, |i| i != r[0]), Some(r[1]));
            assert_eq!(target(&h, &dirs, |_| false), None);
        }
    }

    #[test]
    fn scores_are_deterministic_and_grow_with_the_weight() {
        let h = blake2sum(b"block");
        assert_eq!(score(&h, "/d/a", 5), score(&h, "/d/a", 5));
        assert!(score(&h, "/d/a", 10) > score(&h, "/d/a", 5));
        assert_ne!(score(&h, "/d/a", 5), score(&h, "/d/b", 5));
    }
}
