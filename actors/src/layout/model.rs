//! The versioned cluster layout as plain data: [`Layout`] (version, members, replication,
//! partition count, the partition table and, while a transition runs, the table before
//! it), [`LayoutChange`] (what an operator stages), [`LayoutStamp`] (what nodes announce
//! in `Hello`/`Ping`) and [`MoveSummary`] (what a change would move). Pure functions, no
//! actor, no I/O: the [`super::LayoutActor`] moves these between the store, the peers
//! and its subscribers.
//!
//! The digest covers what every node must agree on to place blocks the same way
//! (version, replication, partition count, members, table) and not the previous table: a
//! node drops that when the transition ends, which does not change where blocks go next.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::hash::{blake2sum, Hash, NodeId};
use crate::placement::{assign, partitions_for, AssignError, Assignment, NodeSpec};

/// Largest partition count a layout may have (the first 16 bits of a hash).
pub const MAX_PARTITIONS: usize = 1 << 16;

/// One member of a layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutMember {
    /// The node id: the BLAKE2 hash of its certificate's public key.
    pub id: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its failure domain.
    pub zone: String,
    /// Its weight in placement (any unit shared by all members); at least 1.
    pub capacity: u64,
}

/// What a node announces of its layout: two nodes with the same stamp place blocks alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutStamp {
    pub version: u64,
    pub digest: Hash,
}

/// A versioned layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Starts at 1 (the configured `[[members]]`); each applied change adds one.
    pub version: u64,
    pub replication: usize,
    /// A power of two between 1 and [`MAX_PARTITIONS`]; the partition of a hash is its
    /// first `log2(partitions)` bits.
    pub partitions: usize,
    /// Sorted by id, ids distinct.
    pub members: Vec<LayoutMember>,
    /// `table[p]`: partition `p`'s holders in preference order.
    pub table: Vec<Vec<NodeId>>,
    /// The table of the oldest layout whose hand-over is not finished (same partition
    /// count as `table`); `None` when no transition runs.
    pub previous: Option<Vec<Vec<NodeId>>>,
    /// Members of the older layouts that are no longer members but may still hold
    /// partitions of `previous` (they hand them over before they leave); empty when no
    /// transition runs.
    pub retiring: Vec<LayoutMember>,
}

/// A staged change, applied in the order staged (a later change of the same node wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LayoutChange {
    /// Add a node or change its address, zone or capacity.
    Assign {
        id: NodeId,
        addr: SocketAddr,
        zone: String,
        capacity: u64,
    },
    /// Take a node out of the layout (its partitions go to the others).
    Remove { id: NodeId },
}

impl LayoutChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            LayoutChange::Assign { id, .. } | LayoutChange::Remove { id } => *id,
        }
    }
}

/// Why a layout is refused or cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutInvalid {
    #[error("partition count {0} is not a power of two between 1 and {MAX_PARTITIONS}")]
    Partitions(usize),
    #[error("the table has {got} partitions, the layout says {want}")]
    TableLength { want: usize, got: usize },
    #[error("partition {partition} has {got} holders, replication is {want}")]
    Holders {
        partition: usize,
        want: usize,
        got: usize,
    },
    #[error("partition {partition} names {node}, which is not a member")]
    UnknownHolder { partition: usize, node: NodeId },
    #[error("partition {partition} names {node} twice")]
    RepeatedHolder { partition: usize, node: NodeId },
    #[error("member {0} appears twice or members are not sorted")]
    Members(NodeId),
    #[error("member {0} has capacity 0")]
    ZeroCapacity(NodeId),
    #[error("the previous table has {got} partitions, the layout has {want}")]
    PreviousLength { want: usize, got: usize },
    #[error(transparent)]
    Assign(#[from] AssignError),
}

/// What switching from one table to another moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveSummary {
    /// Partitions whose holder set changes.
    pub partitions_changed: usize,
    /// Replicas that land on a node that did not hold them.
    pub replicas_moved: usize,
    /// Every replica of the new table.
    pub replicas_total: usize,
    /// Per node (old and new members): replicas held before and after.
    pub nodes: Vec<NodeMoves>,
}

/// One node's share of a [`MoveSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMoves {
    pub id: NodeId,
    pub before: usize,
    pub after: usize,
}

/// The partition of `hash` among `partitions` (a power of two): its first bits.
pub fn partition_bits(hash: &[u8; 32], partitions: usize) -> usize {
    let bits = partitions.max(1).trailing_zeros();
    if bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]);
    (top >> (32 - bits)) as usize
}

/// `table` with every partition split into `factor` consecutive ones holding the same
/// nodes (a hash's partition under `partitions × factor` is its old one × `factor` plus
/// its next bits), so a larger partition count moves nothing by itself.
fn expand(table: &[Vec<NodeId>], factor: usize) -> Vec<Vec<NodeId>> {
    table
        .iter()
        .flat_map(|row| std::iter::repeat_n(row.clone(), factor))
        .collect()
}

impl Layout {
    /// Version 1 from a member list (the configured `[[members]]`).
    pub fn initial(
        members: Vec<LayoutMember>,
        replication: usize,
    ) -> Result<Layout, LayoutInvalid> {
        let members = sorted_members(members)?;
        let partitions = partitions_for(members.len(), replication);
        let table = compute_table(None, &members, replication, partitions)?;
        Ok(Layout {
            version: 1,
            replication,
            partitions,
            members,
            table,
            previous: None,
            retiring: Vec::new(),
        })
    }

    /// Version 0: no members, nothing placed (a node that joins and waits for a layout
    /// naming it).
    pub fn empty() -> Layout {
        Layout {
            version: 0,
            replication: 0,
            partitions: crate::placement::PARTITIONS,
            members: Vec::new(),
            table: vec![Vec::new(); crate::placement::PARTITIONS],
            previous: None,
            retiring: Vec::new(),
        }
    }

    /// Whether `id` is a member or a retiring member (one that still hands over).
    pub fn names(&self, id: &NodeId) -> bool {
        self.member(id).is_some() || self.retiring.iter().any(|m| m.id == *id)
    }

    /// Every node this one should keep connections with: members and retiring members.
    pub fn reachable(&self) -> impl Iterator<Item = &LayoutMember> {
        self.members.iter().chain(self.retiring.iter())
    }

    /// This layout with the transition over: no previous table, no retiring members.
    pub fn settled(&self) -> Layout {
        Layout {
            previous: None,
            retiring: Vec::new(),
            ..self.clone()
        }
    }

    /// The stamp nodes announce.
    pub fn stamp(&self) -> LayoutStamp {
        LayoutStamp {
            version: self.version,
            digest: self.digest(),
        }
    }

    /// Digest of what placement depends on (not the previous table).
    pub fn digest(&self) -> Hash {
        #[derive(Serialize)]
        struct Digested<'a> {
            version: u64,
            replication: usize,
            partitions: usize,
            members: &'a [LayoutMember],
            table: &'a [Vec<NodeId>],
        }
        let view = Digested {
            version: self.version,
            replication: self.replication,
            partitions: self.partitions,
            members: &self.members,
            table: &self.table,
        };
        // Serialising plain structs, vectors and strings cannot fail; an empty input
        // would still give a digest no real layout has.
        let bytes = rmp_serde::to_vec(&view).unwrap_or_default();
        blake2sum(&bytes)
    }

    /// The member with id `id`.
    pub fn member(&self, id: &NodeId) -> Option<&LayoutMember> {
        self.members.iter().find(|m| m.id == *id)
    }

    /// Whether a transition (old holders still handing over) runs.
    pub fn in_transition(&self) -> bool {
        self.previous.as_ref().is_some_and(|p| *p != self.table)
    }

    /// The layout `changes` lead to: version + 1, the table computed from this one
    /// (balanced, moving as little as possible), and this table kept as `previous` (or
    /// the older one, if a transition still runs).
    pub fn with_changes(&self, changes: &[LayoutChange]) -> Result<Layout, LayoutInvalid> {
        let mut by_id: BTreeMap<NodeId, LayoutMember> =
            self.members.iter().map(|m| (m.id, m.clone())).collect();
        for c in changes {
            match c {
                LayoutChange::Assign {
                    id,
                    addr,
                    zone,
                    capacity,
                } => {
                    by_id.insert(
                        *id,
                        LayoutMember {
                            id: *id,
                            addr: *addr,
                            zone: zone.clone(),
                            capacity: *capacity,
                        },
                    );
                }
                LayoutChange::Remove { id } => {
                    by_id.remove(id);
                }
            }
        }
        let members = sorted_members(by_id.into_values().collect())?;
        let mut retiring: Vec<LayoutMember> = self
            .reachable()
            .filter(|m| !members.iter().any(|n| n.id == m.id))
            .cloned()
            .collect();
        retiring.sort_by_key(|m| m.id);
        retiring.dedup_by_key(|m| m.id);
        // Partitions only grow: a power of two, split evenly, keeps every hash's holders.
        let partitions = partitions_for(members.len(), self.replication).max(self.partitions);
        let factor = partitions / self.partitions.max(1);
        let current = expand(&self.table, factor);
        let previous = match &self.previous {
            Some(p) => expand(p, factor),
            None => current.clone(),
        };
        let table = compute_table(Some(&current), &members, self.replication, partitions)?;
        Ok(Layout {
            version: self.version + 1,
            replication: self.replication,
            partitions,
            members,
            table,
            previous: Some(previous),
            retiring,
        })
    }

    /// Check the structure of a layout received from a peer or read from disk.
    pub fn validate(&self) -> Result<(), LayoutInvalid> {
        let p = self.partitions;
        if p == 0 || !p.is_power_of_two() || p > MAX_PARTITIONS {
            return Err(LayoutInvalid::Partitions(p));
        }
        for w in self.members.windows(2) {
            if w[0].id >= w[1].id {
                return Err(LayoutInvalid::Members(w[1].id));
            }
        }
        if let Some(m) = self.members.iter().find(|m| m.capacity == 0) {
            return Err(LayoutInvalid::ZeroCapacity(m.id));
        }
        if self.table.len() != p {
            return Err(LayoutInvalid::TableLength {
                want: p,
                got: self.table.len(),
            });
        }
        for (partition, row) in self.table.iter().enumerate() {
            if row.len() != self.replication {
                return Err(LayoutInvalid::Holders {
                    partition,
                    want: self.replication,
                    got: row.len(),
                });
            }
            for (i, n) in row.iter().enumerate() {
                if self.member(n).is_none() {
                    return Err(LayoutInvalid::UnknownHolder {
                        partition,
                        node: *n,
                    });
                }
                if row[..i].contains(n) {
                    return Err(LayoutInvalid::RepeatedHolder {
                        partition,
                        node: *n,
                    });
                }
            }
        }
        if let Some(prev) = &self.previous {
            if prev.len() != p {
                return Err(LayoutInvalid::PreviousLength {
                    want: p,
                    got: prev.len(),
                });
            }
        }
        Ok(())
    }

    /// What switching from `self`'s table to `next`'s moves.
    pub fn moves_to(&self, next: &Layout) -> MoveSummary {
        let factor = (next.partitions / self.partitions.max(1)).max(1);
        let old = expand(&self.table, factor);
        let mut before: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut after: BTreeMap<NodeId, usize> = BTreeMap::new();
        let (mut changed, mut moved) = (0, 0);
        for (p, row) in next.table.iter().enumerate() {
            let old_row = old.get(p).map(Vec::as_slice).unwrap_or(&[]);
            let new_here = row.iter().filter(|n| !old_row.contains(n)).count();
            moved += new_here;
            if new_here > 0 || old_row.len() != row.len() {
                changed += 1;
            }
            for n in row {
                *after.entry(*n).or_default() += 1;
            }
            for n in old_row {
                *before.entry(*n).or_default() += 1;
            }
        }
        let mut ids: Vec<NodeId> = before.keys().chain(after.keys()).copied().collect();
        ids.sort();
        ids.dedup();
        MoveSummary {
            partitions_changed: changed,
            replicas_moved: moved,
            replicas_total: next.partitions * next.replication,
            nodes: ids
                .into_iter()
                .map(|id| NodeMoves {
                    id,
                    before: before.get(&id).copied().unwrap_or(0),
                    after: after.get(&id).copied().unwrap_or(0),
                })
                .collect(),
        }
    }
}

fn sorted_members(mut members: Vec<LayoutMember>) -> Result<Vec<LayoutMember>, LayoutInvalid> {
    members.sort_by_key(|m| m.id);
    for w in members.windows(2) {
        if w[0].id == w[1].id {
            return Err(LayoutInvalid::Members(w[1].id));
        }
    }
    if let Some(m) = members.iter().find(|m| m.capacity == 0) {
        return Err(LayoutInvalid::ZeroCapacity(m.id));
    }
    Ok(members)
}

fn compute_table(
    previous: Option<&[Vec<NodeId>]>,
    members: &[LayoutMember],
    rf: usize,
    partitions: usize,
) -> Result<Vec<Vec<NodeId>>, LayoutInvalid> {
    let specs: Vec<NodeSpec> = members
        .iter()
        .map(|m| NodeSpec {
            id: m.id,
            zone: m.zone.clone(),
            capacity: m.capacity,
        })
        .collect();
    let prev = previous.map(|t| Assignment {
        replication: rf,
        table: t.to_vec(),
    });
    Ok(assign(prev.as_ref(), &specs, rf, partitions)?.table)
}
