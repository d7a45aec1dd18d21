//! Placement: which nodes should hold a block.
//!
//! A block's partition is the first `log2(partitions)` bits of its hash, the partition
//! count being a setting of the layout ([`partition_of`]; [`PARTITIONS`] = 256, the first
//! byte, for placements without a layout). [`Placement`] is the question every actor
//! asks ("which nodes hold this partition / this hash"); the layout's table answers it
//! (`crate::layout`, from the balanced assignment of `assign.rs`), and
//! [`FixedPlacement`] with one fixed list (tests, a single node).

mod assign;

pub use assign::{assign, partitions_for, AssignError, Assignment, NodeSpec};

use crate::hash::{Hash, NodeId};

/// Number of partitions of a placement without a layout (the hash's first byte).
pub const PARTITIONS: usize = 256;

/// The partition of a hash among `partitions` (a power of two): its first bits.
pub fn partition_of(hash: &Hash, partitions: usize) -> usize {
    crate::layout::partition_bits(&hash.0, partitions)
}

/// The partitions that share the first byte `byte` (anti-entropy and ref hand-over work
/// on first-byte ranges of the `refs` keyspace): one partition when there are at most
/// 256, else `partitions / 256` consecutive ones.
pub fn partitions_of_byte(byte: u8, partitions: usize) -> std::ops::Range<usize> {
    let partitions = partitions.max(1);
    if partitions <= 256 {
        let p = (byte as usize * partitions) / 256;
        p..p + 1
    } else {
        let f = partitions / 256;
        byte as usize * f..(byte as usize + 1) * f
    }
}

/// Answers which nodes should store a block. Every node computes the same answer from the
/// same member list.
pub trait Placement: Send + Sync + 'static {
    /// The nodes that should hold partition `partition`, in order of preference (this
    /// node may be one).
    fn partition_nodes(&self, partition: usize) -> Vec<NodeId>;

    /// How many partitions the placement has (a power of two).
    fn partitions(&self) -> usize {
        PARTITIONS
    }

    /// The nodes that should hold `hash`: those of its partition.
    fn write_nodes(&self, hash: &Hash) -> Vec<NodeId> {
        self.partition_nodes(partition_of(hash, self.partitions()))
    }

    /// While a layout transition runs, the nodes that held `hash` in the layout before
    /// (reads fall back to them, writes need a quorum there too); empty otherwise.
    fn previous_nodes(&self, _hash: &Hash) -> Vec<NodeId> {
        Vec::new()
    }

    /// The nodes holding any partition of the hashes whose first byte is `byte`, in
    /// preference order (the holders of a first-byte range of ref records).
    fn byte_range_nodes(&self, byte: u8) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for p in partitions_of_byte(byte, self.partitions()) {
            for n in self.partition_nodes(p) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}

/// A placement that puts every block on the same fixed list of nodes (tests, single node).
#[derive(Debug, Clone)]
pub struct FixedPlacement(pub Vec<NodeId>);

impl Placement for FixedPlacement {
    fn partition_nodes(&self, _partition: usize) -> Vec<NodeId> {
        self.0.clone()
    }
}
