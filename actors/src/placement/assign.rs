//! Balanced, minimal-movement assignment of partitions to nodes: the algorithm a
//! versioned cluster layout uses to compute its partition table from the previous one.
//!
//! Rendezvous hashing (which placed blocks before layouts) moves little but balances poorly: with
//! 256 partitions the fullest of 50 equal nodes holds about twice the mean, and a cluster
//! is full when its fullest node is. This computes the table instead:
//!
//! 1. **Quotas.** Every node gets a number of partition replicas proportional to its
//!    capacity (largest remainder), by water-filling under two caps: a zone holds at most
//!    `m = ceil(rf / zones)` replicas of one partition (one per zone while zones allow),
//!    and a node at most one. Loads then equal quotas exactly, so the fullest node is
//!    within one replica of its capacity share ([`partitions_for`] picks a partition count
//!    that makes one replica a small share).
//! 2. **Keep.** Start from the previous table; drop replicas on nodes that left, and
//!    replicas that break the zone rule.
//! 3. **Shed.** A node above its quota gives up partitions until it is at it.
//! 4. **Fill.** Every partition short of `rf` replicas takes one from a node below its
//!    quota that it may hold (not already there, zone not full); when no such node fits,
//!    an augmenting chain moves an eligible replica over from another partition, which
//!    then takes the node below quota (breadth-first, bounded depth).
//!
//! Only shed replicas and chain steps move, so adding a node moves about its quota,
//! `1/(N+1)` of the replicas for equal nodes, which is the least any balanced method can.
//! Pure and deterministic: the same inputs give the same table on every node.

// Nodes and partitions are indices into several parallel arrays (quota, load, zone,
// table): index loops say that more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use std::collections::{HashMap, VecDeque};

use crate::hash::NodeId;

/// A member as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: NodeId,
    pub zone: String,
    /// Weight of the node's share (bytes, or any unit shared by all members); > 0.
    pub capacity: u64,
}

/// A partition table: `table[p]` holds partition `p`'s nodes in preference order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub replication: usize,
    pub table: Vec<Vec<NodeId>>,
}

/// Why no table could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error("no node has a capacity above zero")]
    NoCapacity,
    #[error(
        "replication factor {rf} needs at least {rf} nodes with capacity, the layout has {nodes}"
    )]
    TooFewNodes { rf: usize, nodes: usize },
    #[error("the partition count must be at least 1")]
    NoPartitions,
    #[error("no assignment fits the zone rule: partition {partition} could not get {rf} replicas")]
    Infeasible { partition: usize, rf: usize },
}

/// Partitions a layout of `nodes` nodes with replication `rf` should have: a power of two,
/// at least 256, with at least 20 replicas per node on average, so that one replica more
/// or less is at most 5 % of a node's share.
pub fn partitions_for(nodes: usize, rf: usize) -> usize {
    let want = (nodes * 20).div_ceil(rf.max(1)).max(256);
    want.next_power_of_two()
}

impl Assignment {
    /// Partitions of the table.
    pub fn partitions(&self) -> usize {
        self.table.len()
    }

    /// Replicas each node holds.
    pub fn load(&self) -> HashMap<NodeId, usize> {
        let mut m = HashMap::new();
        for nodes in &self.table {
            for n in nodes {
                *m.entry(*n).or_insert(0) += 1;
            }
        }
        m
    }

    /// Replicas of `self` not in `previous` (what a switch from `previous` moves).
    pub fn moved_from(&self, previous: &Assignment) -> usize {
        self.table
            .iter()
            .enumerate()
            .map(|(p, nodes)| {
                let old = previous.table.get(p).map(Vec::as_slice).unwrap_or(&[]);
                nodes.iter().filter(|n| !old.contains(n)).count()
            })
            .sum()
    }
}

/// Split `total` over `weights` proportionally, each share at most its cap (water-filling:
/// what a capped share cannot take goes to the others, in proportion).
fn water_fill(total: f64, weights: &[f64], caps: &[f64]) -> Vec<f64> {
    let mut share = vec![0.0; weights.len()];
    let mut open: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
    let mut left = total;
    while !open.is_empty() && left > 1e-9 {
        let w: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut capped = Vec::new();
        for &i in &open {
            if share[i] + left * weights[i] / w >= caps[i] - 1e-9 {
                capped.push(i);
            }
        }
        if capped.is_empty() {
            for &i in &open {
                share[i] += left * weights[i] / w;
            }
            break;
        }
        for &i in &capped {
            left -= caps[i] - share[i];
            share[i] = caps[i];
        }
        open.retain(|i| !capped.contains(i));
    }
    share
}

/// Whole numbers summing to `total` close to `shares` (largest remainder), each at most its
/// cap; ties go to the lower index (deterministic).
fn integerize(shares: &[f64], caps: &[usize], total: usize) -> Vec<usize> {
    let mut out: Vec<usize> = shares
        .iter()
        .zip(caps)
        .map(|(s, c)| (s.floor() as usize).min(*c))
        .collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (shares[a] - shares[a].floor(), shares[b] - shares[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut missing = total.saturating_sub(out.iter().sum());
    while missing > 0 {
        let before = missing;
        for &i in &order {
            if missing > 0 && out[i] < caps[i] {
                out[i] += 1;
                missing -= 1;
            }
        }
        if before == missing {
            break;
        }
    }
    out
}

/// A stable pseudo-random rank of node `n` for partition `p`, to spread choices (a
/// cheap mix of the partition and the id's first bytes: ids are already hashes, and this
/// runs for every candidate of every partition).
fn rank(p: usize, n: &NodeId) -> u64 {
    let id = u64::from_be_bytes([
        n.0[0], n.0[1], n.0[2], n.0[3], n.0[4], n.0[5], n.0[6], n.0[7],
    ]);
    let mut x = id ^ (p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// The working state: tables of node indices, loads, quotas and zone counts.
struct Work<'a> {
    nodes: &'a [NodeSpec],
    zone_of: Vec<usize>,
    per_zone_max: usize,
    rf: usize,
    quota: Vec<usize>,
    load: Vec<usize>,
    table: Vec<Vec<usize>>,
    /// Nodes below their quota (the only ones a fill may pick).
    below: Vec<usize>,
}

impl Work<'_> {
    fn zone_count(&self, p: usize, z: usize) -> usize {
        self.table[p]
            .iter()
            .filter(|&&n| self.zone_of[n] == z)
            .count()
    }

    /// May partition `p` take node `n` (not there yet, its zone not full)?
    fn eligible(&self, p: usize, n: usize) -> bool {
        !self.table[p].contains(&n) && self.zone_count(p, self.zone_of[n]) < self.per_zone_max
    }

    /// The node below quota that `p` may take, with the largest deficit (spread by rank).
    fn best_deficit_node(&self, p: usize) -> Option<usize> {
        self.below
            .iter()
            .copied()
            .filter(|&n| self.load[n] < self.quota[n] && self.eligible(p, n))
            .max_by_key(|&n| (self.quota[n] - self.load[n], rank(p, &self.nodes[n].id)))
    }

    /// The partitions `n` holds, the ones it ranks lowest in first (shed first).
    fn held_by_rank(&self, n: usize) -> Vec<usize> {
        let mut held: Vec<usize> = (0..self.table.len())
            .filter(|&p| self.table[p].contains(&n))
            .collect();
        held.sort_by_key(|&p| rank(p, &self.nodes[n].id));
        held
    }

    /// Count one more replica on `n`; it leaves the candidates once at its quota.
    fn add_load(&mut self, n: usize) {
        self.load[n] += 1;
        if self.load[n] >= self.quota[n] {
            self.below.retain(|&x| x != n);
        }
    }

    /// Give `p` one more replica; false if no chain of up to `depth` moves finds one.
    fn fill_one(&mut self, p: usize, depth: usize) -> bool {
        if let Some(n) = self.best_deficit_node(p) {
            self.table[p].push(n);
            self.add_load(n);
            return true;
        }
        // Breadth-first over partitions: from `p`, a node `v` eligible for `p` that sits
        // in partition `q` may move to `p`; then `q` lacks a replica, and so on, until a
        // partition is reached that a node below quota fits.
        let parts = self.table.len();
        let mut came_from: HashMap<usize, (usize, usize)> = HashMap::new(); // q -> (prev, v)
        let mut queue = VecDeque::from([(p, 0usize)]);
        let mut seen = vec![false; parts];
        seen[p] = true;
        while let Some((cur, d)) = queue.pop_front() {
            if d >= depth {
                continue;
            }
            // Candidate nodes for `cur`: every node eligible for it.
            for v in 0..self.nodes.len() {
                if !self.eligible(cur, v) {
                    continue;
                }
                for q in 0..parts {
                    if seen[q] || !self.table[q].contains(&v) {
                        continue;
                    }
                    seen[q] = true;
                    came_from.insert(q, (cur, v));
                    // Would `q`, with `v` gone, take a node below quota?
                    let vi = self.table[q].iter().position(|&x| x == v);
                    let Some(vi) = vi else { continue };
                    self.table[q].remove(vi);
                    let found = self.best_deficit_node(q);
                    self.table[q].insert(vi, v);
                    if let Some(n) = found {
                        self.apply_chain(q, n, &came_from);
                        return true;
                    }
                    queue.push_back((q, d + 1));
                }
            }
        }
        false
    }

    /// Apply a chain found by [`Work::fill_one`]: `end` takes node `n` (below quota),
    /// and each step's node moves from its partition to the one before it.
    fn apply_chain(&mut self, end: usize, n: usize, came_from: &HashMap<usize, (usize, usize)>) {
        let mut q = end;
        let mut incoming = n;
        self.add_load(n);
        while let Some(&(prev, v)) = came_from.get(&q) {
            // In `q`, `v` is replaced by `incoming`, and `v` goes to `prev`.
            if let Some(i) = self.table[q].iter().position(|&x| x == v) {
                self.table[q][i] = incoming;
            }
            incoming = v;
            q = prev;
        }
        self.table[q].push(incoming);
    }
}

/// Compute a table of `partitions` partitions with `rf` replicas each over `nodes`,
/// moving as little as possible from `previous` (which may have another partition count:
/// then nothing is kept).
pub fn assign(
    previous: Option<&Assignment>,
    nodes: &[NodeSpec],
    rf: usize,
    partitions: usize,
) -> Result<Assignment, AssignError> {
    if partitions == 0 {
        return Err(AssignError::NoPartitions);
    }
    let mut nodes: Vec<NodeSpec> = nodes.iter().filter(|n| n.capacity > 0).cloned().collect();
    if nodes.is_empty() {
        return Err(AssignError::NoCapacity);
    }
    nodes.sort_by_key(|n| n.id);
    nodes.dedup_by_key(|n| n.id);
    if nodes.len() < rf {
        return Err(AssignError::TooFewNodes {
            rf,
            nodes: nodes.len(),
        });
    }
    let mut zones: Vec<String> = nodes.iter().map(|n| n.zone.clone()).collect();
    zones.sort();
    zones.dedup();
    let zone_of: Vec<usize> = nodes
        .iter()
        .map(|n| zones.binary_search(&n.zone).unwrap_or(0))
        .collect();
    let per_zone_max = rf.div_ceil(zones.len());
    let total = partitions * rf;

    // 1. Quotas: zones first (each capped by the zone rule and its node count), then
    // nodes within each zone (each capped at one replica per partition).
    let zone_weight: Vec<f64> = (0..zones.len())
        .map(|z| {
            (0..nodes.len())
                .filter(|&n| zone_of[n] == z)
                .map(|n| nodes[n].capacity as f64)
                .sum()
        })
        .collect();
    let zone_cap: Vec<usize> = (0..zones.len())
        .map(|z| {
            let members = zone_of.iter().filter(|&&x| x == z).count();
            partitions * per_zone_max.min(members)
        })
        .collect();
    let zone_caps_f: Vec<f64> = zone_cap.iter().map(|&c| c as f64).collect();
    let zone_quota = integerize(
        &water_fill(total as f64, &zone_weight, &zone_caps_f),
        &zone_cap,
        total,
    );
    let mut quota = vec![0usize; nodes.len()];
    for z in 0..zones.len() {
        let members: Vec<usize> = (0..nodes.len()).filter(|&n| zone_of[n] == z).collect();
        let w: Vec<f64> = members.iter().map(|&n| nodes[n].capacity as f64).collect();
        let caps = vec![partitions as f64; members.len()];
        let shares = water_fill(zone_quota[z] as f64, &w, &caps);
        let q = integerize(&shares, &vec![partitions; members.len()], zone_quota[z]);
        for (i, &n) in members.iter().enumerate() {
            quota[n] = q[i];
        }
    }

    // 2. Keep what the previous table had on nodes that are still here, within the rules.
    let index: HashMap<NodeId, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut w = Work {
        nodes: &nodes,
        zone_of,
        per_zone_max,
        rf,
        quota,
        load: vec![0; nodes.len()],
        table: vec![Vec::new(); partitions],
        below: Vec::new(),
    };
    if let Some(prev) = previous.filter(|p| p.partitions() == partitions) {
        for (p, old) in prev.table.iter().enumerate() {
            for id in old {
                if let Some(&n) = index.get(id) {
                    if w.table[p].len() < w.rf && w.eligible(p, n) {
                        w.table[p].push(n);
                        w.load[n] += 1;
                    }
                }
            }
        }
    }

    w.below = (0..nodes.len())
        .filter(|&n| w.load[n] < w.quota[n])
        .collect();

    // 3. Shed: a node above quota hands a partition straight to a node below quota that
    // may hold it (one move, no chain later), as long as there is one; what is left over
    // it gives up, the partitions it ranks lowest in first.
    for n in 0..nodes.len() {
        if w.load[n] <= w.quota[n] {
            continue;
        }
        for p in w.held_by_rank(n) {
            if w.load[n] <= w.quota[n] {
                break;
            }
            let Some(i) = w.table[p].iter().position(|&x| x == n) else {
                continue;
            };
            w.table[p].remove(i);
            match w.best_deficit_node(p) {
                Some(d) => {
                    w.table[p].insert(i, d);
                    w.add_load(d);
                    w.load[n] -= 1;
                }
                None => w.table[p].insert(i, n),
            }
        }
    }
    for n in 0..nodes.len() {
        if w.load[n] <= w.quota[n] {
            continue;
        }
        let excess = w.load[n] - w.quota[n];
        for p in w.held_by_rank(n).into_iter().take(excess) {
            w.table[p].retain(|&x| x != n);
        }
        w.load[n] = w.quota[n];
    }

    // 4. Fill every partition up to rf.
    for p in 0..partitions {
        while w.table[p].len() < rf {
            if !w.fill_one(p, 4) {
                return Err(AssignError::Infeasible { partition: p, rf });
            }
        }
    }
    Ok(Assignment {
        replication: rf,
        table: w
            .table
            .iter()
            .map(|ns| ns.iter().map(|&n| nodes[n].id).collect())
            .collect(),
    })
}

#[cfg(test)]
#[path = "assign_tests.rs"]
mod tests;
