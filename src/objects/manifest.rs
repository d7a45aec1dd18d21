//! The manifest of an object: which chunks, in which order, make its bytes. Pure
//! functions over plain data (encode, decode, the streaming tree builder, offset lookup);
//! no I/O.
//!
//! # Byte format (version 1)
//!
//! A manifest node is an ordinary block whose bytes are the 4-byte magic `BNOM`
//! followed by one MessagePack array (rmp-serde's compact form, fields by position):
//!
//! ```text
//! [ version: u8 = 1,
//!   chunker: [ algorithm: str = "fastcdc-2020", min: u32, avg: u32, max: u32 ],
//!   size:    u64,            -- bytes of the object under this node
//!   depth:   u8,             -- 0: the entries are chunks; d > 0: manifest nodes of depth d - 1
//!   entries: [ [ hash: bin 32, length: u64 ], ... ] ]
//! ```
//!
//! An entry's length is the chunk's length (depth 0) or the bytes under that child node
//! (depth > 0); `size` is their sum, checked on decode. A node holds at most
//! [`FANOUT`] entries: an object of more chunks becomes a tree, built bottom-up as the
//! chunks arrive ([`TreeBuilder`]), so the root of an object of `n` chunks has depth
//! `ceil(log_FANOUT(n)) - 1`. The root node's hash is the object's id: the same bytes cut
//! with the same chunker parameters always give the same id. The chunker's parameters
//! are recorded in every node so that reading never depends on the cluster's settings.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use blocknode_actors::hash::blake2sum;
use blocknode_actors::Hash;

/// First bytes of every manifest node: tells a manifest from any other block.
pub const MAGIC: &[u8; 4] = b"BNOM";

/// The format version this code writes and reads.
pub const VERSION: u8 = 1;

/// The chunker's name as recorded in a manifest.
pub const ALGORITHM: &str = "fastcdc-2020";

/// Most entries in one manifest node. 16,384 entries of at most 44 encoded bytes each
/// make a node of at most ~704 KiB, below any `max_block_size` the config accepts, so a
/// node always fits a block; one node covers 16 GiB at the default average chunk of
/// 1 MiB, a depth-1 tree 256 TiB. A constant (not derived from `max_block_size`) so that
/// an object's id does not depend on a cluster's settings.
pub const FANOUT: usize = 16_384;

/// Bounded size of a node's header (magic, version, chunker, size, depth, array
/// headers) plus the per-entry bound times [`FANOUT`]: an encoded node never exceeds it.
pub const MAX_NODE_BYTES: usize = 256 + FANOUT * ENTRY_MAX_BYTES;

// A node always fits a block of 1 MiB.
const _: () = assert!(MAX_NODE_BYTES < 1 << 20);

/// Encoded size bound of one entry: array header 1, bin header 2 + 32, u64 up to 9.
const ENTRY_MAX_BYTES: usize = 44;

/// FastCDC's size bounds, recorded in each manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter (but the last), bytes.
    pub min: u32,
    /// The average chunk length aimed at, bytes.
    pub avg: u32,
    /// No chunk is longer, bytes.
    pub max: u32,
}

impl ChunkerParams {
    /// min 256 KiB, average 1 MiB, max 4 MiB: chunks large enough that per-block costs
    /// (a file, an rc entry, a round trip per holder) stay small beside the bytes, small
    /// enough that an edit re-stores about a MiB, and at most a quarter of the default
    /// `max_block_size`.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 256 << 10,
        avg: 1 << 20,
        max: 4 << 20,
    };

    /// Whether fastcdc's v2020 chunker accepts these bounds (its asserts, checked here
    /// so that a manifest read from the network can never reach them).
    pub fn is_valid(&self) -> bool {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

/// One entry of a node: a chunk (depth 0) or a child node, and the bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub hash: Hash,
    pub len: u64,
}

/// One decoded manifest node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub chunker: ChunkerParams,
    /// Bytes under this node (the sum of its entries' lengths).
    pub size: u64,
    /// 0: the entries are chunks; `d`: they are nodes of depth `d - 1`.
    pub depth: u8,
    pub entries: Vec<Entry>,
}

/// Why bytes are not a manifest node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not an object manifest (the block does not start with the manifest magic)")]
    NotAManifest,
    #[error("manifest format version {0} is not known to this node (it reads version {VERSION})")]
    UnknownVersion(u8),
    #[error("manifest is malformed: {0}")]
    Malformed(String),
}

/// The wire form of a node (fields by position, see the module's format).
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u8,
    chunker: (String, u32, u32, u32),
    size: u64,
    depth: u8,
    entries: Vec<Entry>,
}

impl Node {
    /// The node's bytes: magic, then the MessagePack array.
    pub fn encode(&self) -> Bytes {
        let wire = Wire {
            version: VERSION,
            chunker: (
                ALGORITHM.to_string(),
                self.chunker.min,
                self.chunker.avg,
                self.chunker.max,
            ),
            size: self.size,
            depth: self.depth,
            entries: self.entries.clone(),
        };
        let mut out = MAGIC.to_vec();
        // unwrap: a struct of integers, a string and byte arrays always serialises.
        rmp_serde::encode::write(&mut out, &wire).expect("a manifest node serialises");
        Bytes::from(out)
    }

    /// Read a node back, checking everything a reader relies on: magic, version,
    /// chunker, the depth's range, the fanout and that `size` is its entries' sum.
    pub fn decode(bytes: &[u8]) -> Result<Node, ManifestError> {
        // Bounded before anything is decoded: a block may be far larger than a node.
        if bytes.len() > MAX_NODE_BYTES {
            return Err(ManifestError::Malformed(format!(
                "{} bytes, more than a node's {MAX_NODE_BYTES}",
                bytes.len()
            )));
        }
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(ManifestError::NotAManifest)?;
        // The version is the array's first element: read it alone first so that a
        // later version's different fields are reported as such.
        let version = match body {
            [0x90..=0x9f, v, ..] | [0xdc, _, _, v, ..] => *v,
            _ => return Err(ManifestError::Malformed("not a MessagePack array".into())),
        };
        if version != VERSION {
            return Err(ManifestError::UnknownVersion(version));
        }
        let wire: Wire =
            rmp_serde::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let (algorithm, min, avg, max) = wire.chunker;
        if algorithm != ALGORITHM {
            return Err(ManifestError::Malformed(format!(
                "unknown chunker {algorithm}"
            )));
        }
        let chunker = ChunkerParams { min, avg, max };
        if !chunker.is_valid() {
            return Err(ManifestError::Malformed(format!(
                "chunker bounds min {min}, avg {avg}, max {max} are out of range"
            )));
        }
        if wire.entries.len() > FANOUT {
            return Err(ManifestError::Malformed(format!(
                "{} entries in one node (at most {FANOUT})",
                wire.entries.len()
            )));
        }
        if wire.depth > 7 {
            return Err(ManifestError::Malformed(format!(
                "depth {} (at most 7)",
                wire.depth
            )));
        }
        let sum = wire
            .entries
            .iter()
            .try_fold(0u64, |acc, e| acc.checked_add(e.len));
        if sum != Some(wire.size) {
            return Err(ManifestError::Malformed(format!(
                "size {} is not the sum of its entries",
                wire.size
            )));
        }
        // An empty entry adds no bytes but costs a step (a crafted node could list one
        // empty child thousands of times at every level).
        if wire.entries.iter().any(|e| e.len == 0) {
            return Err(ManifestError::Malformed("an entry of 0 bytes".into()));
        }
        if wire.depth == 0 && wire.entries.iter().any(|e| e.len > u64::from(max)) {
            return Err(ManifestError::Malformed(
                "a chunk longer than the chunker's max".into(),
            ));
        }
        Ok(Node {
            chunker,
            size: wire.size,
            depth: wire.depth,
            entries: wire.entries,
        })
    }

    /// The entry holding byte `offset` of this node and the offset at which that entry
    /// starts; `None` when `offset` is past the end. Empty entries are skipped (none
    /// are written, but a reader does not rely on it).
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        let mut start = 0u64;
        for (i, e) in self.entries.iter().enumerate() {
            if offset < start + e.len {
                return Some((i, start));
            }
            start += e.len;
        }
        None
    }
}

/// A node sealed by the [`TreeBuilder`]: its hash and bytes, to be stored as a block.
#[derive(Debug, Clone)]
pub struct SealedNode {
    pub hash: Hash,
    pub bytes: Bytes,
}

/// Builds an object's manifest tree as its chunks arrive, in order, holding at most
/// [`FANOUT`] entries per level: a full level is sealed into a node (handed out to be
/// stored) and becomes one entry of the level above.
#[derive(Debug)]
pub struct TreeBuilder {
    chunker: ChunkerParams,
    fanout: usize,
    levels: Vec<Vec<Entry>>,
}

impl TreeBuilder {
    /// A builder with the real [`FANOUT`].
    pub fn new(chunker: ChunkerParams) -> TreeBuilder {
        TreeBuilder::with_fanout(chunker, FANOUT)
    }

    /// A builder with another fanout (tests build trees from a few chunks).
    pub fn with_fanout(chunker: ChunkerParams, fanout: usize) -> TreeBuilder {
        TreeBuilder {
            chunker,
            fanout: fanout.clamp(2, FANOUT),
            levels: vec![Vec::new()],
        }
    }

    /// Add the next chunk; returns the nodes this sealed (possibly none).
    pub fn push(&mut self, chunk: Entry) -> Vec<SealedNode> {
        let mut sealed = Vec::new();
        self.push_at(0, chunk, &mut sealed);
        sealed
    }

    fn push_at(&mut self, depth: usize, entry: Entry, sealed: &mut Vec<SealedNode>) {
        if self.levels.len() <= depth {
            self.levels.push(Vec::new());
        }
        self.levels[depth].push(entry);
        if self.levels[depth].len() == self.fanout {
            let up = self.seal(depth, sealed);
            self.push_at(depth + 1, up, sealed);
        }
    }

    /// Seal level `depth` into a node; returns its entry for the level above.
    fn seal(&mut self, depth: usize, sealed: &mut Vec<SealedNode>) -> Entry {
        let entries = std::mem::take(&mut self.levels[depth]);
        let node = Node {
            chunker: self.chunker,
            size: entries.iter().map(|e| e.len).sum(),
            depth: depth as u8,
            entries,
        };
        let bytes = node.encode();
        let hash = blake2sum(&bytes);
        sealed.push(SealedNode {
            hash,
            bytes: bytes.clone(),
        });
        Entry {
            hash,
            len: node.size,
        }
    }

    /// Seal what is left, bottom-up; returns the root's hash (the object's id) and the
    /// nodes sealed now (the root among them, unless it was sealed by a [`Self::push`]:
    /// a full tree whose top level holds a single node).
    pub fn finish(mut self) -> (Hash, Vec<SealedNode>) {
        let mut sealed = Vec::new();
        let mut depth = 0;
        loop {
            let top = depth + 1 == self.levels.len();
            if top {
                if depth > 0 && self.levels[depth].len() == 1 {
                    return (self.levels[depth][0].hash, sealed);
                }
                let root = self.seal(depth, &mut sealed);
                return (root.hash, sealed);
            }
            if !self.levels[depth].is_empty() {
                let up = self.seal(depth, &mut sealed);
                self.levels[depth + 1].push(up);
            }
            depth += 1;
        }
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
