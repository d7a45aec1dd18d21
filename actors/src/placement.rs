//! [`Placement`]: the actors' view of "which nodes should hold this hash".
//!
//! The rendezvous-hashing implementation lives in the node binary (`src/placement.rs`);
//! actors only need this question answered, and tests answer it with a fixed list.

use crate::hash::{Hash, NodeId};

/// Answers which nodes should store a block. Every node computes the same answer from the
/// same member list.
pub trait Placement: Send + Sync + 'static {
    /// The nodes that should hold `hash`, in order of preference (this node may be one).
    fn write_nodes(&self, hash: &Hash) -> Vec<NodeId>;
}

/// A placement that puts every block on the same fixed list of nodes (tests, single node).
#[derive(Debug, Clone)]
pub struct FixedPlacement(pub Vec<NodeId>);

impl Placement for FixedPlacement {
    fn write_nodes(&self, _hash: &Hash) -> Vec<NodeId> {
        self.0.clone()
    }
}
