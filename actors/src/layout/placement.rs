//! [`LayoutPlacement`]: the [`Placement`] answer of one [`Layout`], handed to every actor
//! that asks where blocks go, and replaced (never mutated) when the layout switches.

use super::model::Layout;
use crate::hash::{Hash, NodeId};
use crate::placement::{partition_of, Placement};

/// The partition table of a layout, with the previous one while a transition runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutPlacement {
    version: u64,
    partitions: usize,
    table: Vec<Vec<NodeId>>,
    previous: Option<Vec<Vec<NodeId>>>,
}

impl LayoutPlacement {
    /// The placement of `layout`.
    pub fn new(layout: &Layout) -> Self {
        LayoutPlacement {
            version: layout.version,
            partitions: layout.partitions,
            table: layout.table.clone(),
            previous: layout.previous.clone().filter(|p| *p != layout.table),
        }
    }

    /// The layout version it was made from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The previous holders of partition `p` (empty outside a transition).
    pub fn previous_of(&self, p: usize) -> &[NodeId] {
        self.previous
            .as_ref()
            .and_then(|t| t.get(p))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Partitions whose holders change in the running transition.
    pub fn moving_partitions(&self) -> Vec<usize> {
        (0..self.table.len())
            .filter(|&p| {
                let prev = self.previous_of(p);
                !prev.is_empty() && prev.iter().any(|n| !self.table[p].contains(n))
            })
            .collect()
    }
}

impl Placement for LayoutPlacement {
    fn partition_nodes(&self, partition: usize) -> Vec<NodeId> {
        self.table.get(partition).cloned().unwrap_or_default()
    }

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn previous_nodes(&self, hash: &Hash) -> Vec<NodeId> {
        self.previous_of(partition_of(hash, self.partitions))
            .to_vec()
    }
}
