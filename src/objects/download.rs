//! The bytes of an object, or of one range of it, as an ordered stream: the manifest
//! tree is walked lazily (one node per level in memory), and [`READ_AHEAD`] chunks are
//! read at once through the coordinator's read path (this node first, then the holders
//! hedged), each verified against its hash there and checked against the length its
//! manifest gives here. A chunk that cannot be read ends the stream with an error,
//! logged with its hash: the HTTP layer then aborts the response, so a client sees a
//! short body, never wrong bytes.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use blocknode_actors::Hash;

use super::manifest::Node;
use super::ObjectError;
use crate::coordinator::{Coordinator, CoordinatorError};

/// Chunks read at once ahead of the one being sent: at the default average of 1 MiB,
/// 4 MiB in flight per download (charged to the client RAM budget by the read path),
/// enough to keep a holder busy while the previous chunk is written to the client.
pub const READ_AHEAD: usize = 4;

/// Largest piece handed to actix-web at a time (see `http/blocks.rs`: its write
/// buffer stays small and reused).
const BODY_PIECE: usize = 32 << 10;

/// An object's bytes as the HTTP layer sends them.
pub type ObjectBody = Pin<Box<dyn Stream<Item = Result<Bytes, ObjectError>>>>;

/// Read and decode manifest node `hash`.
pub async fn read_node(svc: &Coordinator, hash: Hash) -> Result<Node, ObjectError> {
    let bytes = svc.get_block(hash).await.map_err(|e| match e {
        CoordinatorError::NotFound(h) => ObjectError::NotFound(h),
        other => ObjectError::Coordinator(other),
    })?;
    // A manifest node is at most ~704 KiB: decoding it on the worker is cheap.
    Node::decode(&bytes).map_err(|source| ObjectError::NotAnObject { id: hash, source })
}

/// One chunk to send: its hash, length, and where it starts in the object.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    hash: Hash,
    len: u64,
    start: u64,
}

/// One level of the walk: a node, the next entry to look at and where it starts.
struct Frame {
    node: Node,
    next: usize,
    start: u64,
}

/// The lazy walk over the leaves that hold bytes `first..end`.
struct Walk {
    svc: Coordinator,
    id: Hash,
    stack: Vec<Frame>,
    first: u64,
    end: u64,
}

impl Walk {
    fn new(svc: Coordinator, id: Hash, root: Node, first: u64, end: u64) -> Walk {
        let (next, start) = root
            .locate(first)
            .unwrap_or((root.entries.len(), root.size));
        Walk {
            svc,
            id,
            stack: vec![Frame {
                node: root,
                next,
                start,
            }],
            first,
            end,
        }
    }

    async fn next_leaf(&mut self) -> Option<Result<Leaf, ObjectError>> {
        loop {
            let top = self.stack.last_mut()?;
            let Some(e) = top.node.entries.get(top.next).copied() else {
                self.stack.pop();
                continue;
            };
            let start = top.start;
            top.next += 1;
            top.start += e.len;
            if start >= self.end {
                self.stack.clear();
                return None;
            }
            let depth = top.node.depth;
            if depth == 0 {
                return Some(Ok(Leaf {
                    hash: e.hash,
                    len: e.len,
                    start,
                }));
            }
            let child = match read_node(&self.svc, e.hash).await {
                Ok(c) => c,
                Err(err) => return Some(Err(err)),
            };
            if child.size != e.len || child.depth + 1 != depth {
                return Some(Err(ObjectError::WrongLength {
                    id: self.id,
                    hash: e.hash,
                    got: child.size,
                    want: e.len,
                }));
            }
            // Enter the child at the entry holding `first` when it lies inside it.
            let (next, at) = if self.first > start {
                child
                    .locate(self.first - start)
                    .unwrap_or((child.entries.len(), child.size))
            } else {
                (0, 0)
            };
            self.stack.push(Frame {
                node: child,
                next,
                start: start + at,
            });
        }
    }
}

/// Read one leaf and cut the part of it inside `first..end`.
async fn read_leaf(
    svc: Coordinator,
    id: Hash,
    leaf: Leaf,
    first: u64,
    end: u64,
) -> Result<Bytes, ObjectError> {
    let bytes = svc.get_block(leaf.hash).await?;
    if bytes.len() as u64 != leaf.len {
        return Err(ObjectError::WrongLength {
            id,
            hash: leaf.hash,
            got: bytes.len() as u64,
            want: leaf.len,
        });
    }
    let from = first.saturating_sub(leaf.start) as usize;
    let to = (end.min(leaf.start + leaf.len) - leaf.start) as usize;
    Ok(bytes.slice(from..to))
}

/// The bytes `first..end` of object `id` (whose root node is `root`), in order, in
/// pieces of at most 32 KiB; [`READ_AHEAD`] chunks are read at once. The first error
/// ends the stream, logged with the chunk's hash.
pub fn object_stream(svc: Coordinator, id: Hash, root: Node, first: u64, end: u64) -> ObjectBody {
    let end = end.min(root.size);
    let walk = Walk::new(svc.clone(), id, root, first, end);
    let leaves = futures::stream::unfold(Some(walk), |walk| async move {
        let mut walk = walk?;
        match walk.next_leaf().await {
            None => None,
            Some(Err(e)) => Some((Err(e), None)),
            Some(Ok(leaf)) => Some((Ok(leaf), Some(walk))),
        }
    });
    let chunks = leaves
        .map(move |leaf| {
            let svc = svc.clone();
            async move {
                let leaf = leaf?;
                read_leaf(svc, id, leaf, first, end).await.inspect_err(|e| {
                    tracing::error!(object = %id.short(), chunk = %leaf.hash.short(), "object read aborted: {e}");
                })
            }
        })
        .buffered(READ_AHEAD);
    // The first error ends the stream: nothing after a missing chunk is sent.
    let until_error = chunks.scan(false, |failed, item| {
        let out = if *failed {
            None
        } else {
            *failed = item.is_err();
            Some(item)
        };
        futures::future::ready(out)
    });
    Box::pin(until_error.flat_map(|item| {
        let pieces: Vec<Result<Bytes, ObjectError>> = match item {
            Ok(mut b) => {
                let mut v = Vec::with_capacity(b.len().div_ceil(BODY_PIECE));
                while !b.is_empty() {
                    v.push(Ok(b.split_to(b.len().min(BODY_PIECE))));
                }
                v
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces)
    }))
}
