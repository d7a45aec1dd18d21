//! Placement: which nodes should hold a block.
//!
//! A block's partition is its hash's first byte ([`PARTITIONS`] = 256). [`Placement`] is
//! the question every actor asks ("which nodes hold this partition / this hash");
//! [`ClusterPlacement`] answers it for a member list by weighted rendezvous hashing
//! (`rendezvous.rs`), and [`FixedPlacement`] answers it with one fixed list (tests, a
//! single node).

mod assign;
mod rendezvous;

pub use assign::{assign, partitions_for, AssignError, Assignment, NodeSpec};

pub use rendezvous::{ClusterPlacement, PlacementNode};

use crate::hash::{Hash, NodeId};

/// Number of partitions (the hash's first byte).
pub const PARTITIONS: usize = 256;

/// The partition of a hash.
pub fn partition_of(hash: &Hash) -> usize {
    hash.0[0] as usize
}

/// Answers which nodes should store a block. Every node computes the same answer from the
/// same member list.
pub trait Placement: Send + Sync + 'static {
    /// The nodes that should hold partition `partition`, in order of preference (this
    /// node may be one).
    fn partition_nodes(&self, partition: usize) -> Vec<NodeId>;

    /// The nodes that should hold `hash`: those of its partition.
    fn write_nodes(&self, hash: &Hash) -> Vec<NodeId> {
        self.partition_nodes(partition_of(hash))
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
