//! The bytes of an object, or of one range of it, as an ordered stream: the manifest
//! tree is walked lazily (one node per level in memory), and a reader task reads the
//! chunks in order, one at a time, up to [`READ_AHEAD`] ahead of the one being sent,
//! through the coordinator's read path (this node first, then the holders hedged), each
//! verified against its hash there and checked against the length its manifest gives
//! here.
//!
//! Memory: the read path charges each chunk to the client RAM budget, and may wait for
//! it. The reader reads one chunk at a time and in order, so what a download holds
//! while it waits is only chunks before the one it waits for, which the response drains
//! whatever the budget does: no download waits for memory it keeps from itself or from
//! another one waiting the same way (reading several at once could: the first in order
//! waiting while the finished ones behind it hold the pool and cannot be sent). A chunk that cannot be read ends the stream with an error,
//! logged with its hash: the HTTP layer then aborts the response, so a client sees a
//! short body, never wrong bytes.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use blocknode_actors::Hash;

use super::manifest::Node;
use super::ObjectError;
use crate::coordinator::{Coordinator, CoordinatorError};

/// Chunks read ahead of the one being sent (one being read, the others read and
/// waiting): at the default average of 1 MiB, 4 MiB per download (charged to the client
/// RAM budget by the read path), so reading overlaps writing to the client.
pub const READ_AHEAD: usize = 4;

/// Largest piece handed to actix-web at a time (see `http/blocks.rs`: its write
/// buffer stays small and reused).
const BODY_PIECE: usize = 32 << 10;

/// Largest manifest node decoded on the HTTP worker itself.
const DECODE_INLINE_MAX: usize = 64 << 10;

/// An object's bytes as the HTTP layer sends them.
pub type ObjectBody = Pin<Box<dyn Stream<Item = Result<Bytes, ObjectError>>>>;

/// Read and decode manifest node `hash`.
pub async fn read_node(svc: &Coordinator, hash: Hash) -> Result<Node, ObjectError> {
    let bytes = svc.get_block(hash).await.map_err(|e| match e {
        CoordinatorError::NotFound(h) => ObjectError::NotFound(h),
        other => ObjectError::Coordinator(other),
    })?;
    let decode = move |bytes: &[u8]| {
        Node::decode(bytes).map_err(|source| ObjectError::NotAnObject { id: hash, source })
    };
    // A small node (every node of an object below ~1 GiB) decodes in microseconds on
    // the worker; a larger one (up to ~704 KiB: size checked before decoding) on a
    // blocking thread.
    if bytes.len() <= DECODE_INLINE_MAX {
        return decode(&bytes);
    }
    actix_rt::task::spawn_blocking(move || decode(&bytes))
        .await
        .map_err(|e| ObjectError::Task(format!("decoding a manifest node: {e}")))?
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

/// The lazy walk over the leaves that hold bytes `first..end`; `fetch` reads a
/// manifest node (the cluster's read path; a map in tests).
struct Walk<F> {
    fetch: F,
    id: Hash,
    stack: Vec<Frame>,
    first: u64,
    end: u64,
}

impl<F, Fut> Walk<F>
where
    F: Fn(Hash) -> Fut,
    Fut: std::future::Future<Output = Result<Node, ObjectError>>,
{
    fn new(fetch: F, id: Hash, root: Node, first: u64, end: u64) -> Walk<F> {
        let (next, start) = root
            .locate(first)
            .unwrap_or((root.entries.len(), root.size));
        Walk {
            fetch,
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
            let child = match (self.fetch)(e.hash).await {
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
    let reader = svc.clone();
    let fetch = move |h: Hash| {
        let svc = reader.clone();
        async move { read_node(&svc, h).await }
    };
    let walk = Walk::new(fetch, id, root, first, end);
    let leaves = futures::stream::unfold(Some(walk), |walk| async move {
        let mut walk = walk?;
        match walk.next_leaf().await {
            None => None,
            Some(Err(e)) => Some((Err(e), None)),
            Some(Ok(leaf)) => Some((Ok(leaf), Some(walk))),
        }
    });
    // The reader: sequential, bounded by the channel; it stops when the response is
    // dropped (the channel closes) or at the first error.
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, ObjectError>>(READ_AHEAD - 1);
    actix_rt::spawn(async move {
        let mut tx = tx;
        let mut leaves = std::pin::pin!(leaves);
        let wait = svc.cfg.block_rw_timeout * 2;
        while let Some(leaf) = leaves.next().await {
            let read = async {
                let leaf = leaf?;
                let r = tokio::time::timeout(wait, read_leaf(svc.clone(), id, leaf, first, end));
                let r = match r.await {
                    Ok(r) => r,
                    Err(_) => Err(ObjectError::Busy {
                        wanted: leaf.len,
                        secs: wait.as_secs(),
                    }),
                };
                r.inspect_err(|e| {
                    tracing::error!(object = %id.short(), chunk = %leaf.hash.short(), "object read aborted: {e}");
                })
            };
            let item = read.await;
            let failed = item.is_err();
            if futures::SinkExt::send(&mut tx, item).await.is_err() || failed {
                return;
            }
        }
    });
    let chunks = rx;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use blocknode_actors::hash::blake2sum;

    use super::super::manifest::{ChunkerParams, Entry, TreeBuilder};
    use super::*;

    /// A tree of `lens.len()` chunks with fanout 3 (depth up to 3 for 40 chunks); the
    /// root and every node by hash.
    fn tree(lens: &[u64]) -> (Hash, HashMap<Hash, Node>) {
        let mut b = TreeBuilder::with_fanout(ChunkerParams::DEFAULT, 3);
        let mut store = HashMap::new();
        let mut keep = |sealed: Vec<super::super::manifest::SealedNode>| {
            for s in sealed {
                store.insert(s.hash, Node::decode(&s.bytes).expect("decodes"));
            }
        };
        for (i, len) in lens.iter().enumerate() {
            keep(b.push(Entry {
                hash: blake2sum(&(i as u64).to_le_bytes()),
                len: *len,
            }));
        }
        let (root, sealed) = b.finish();
        keep(sealed);
        (root, store)
    }

    fn leaves(store: &HashMap<Hash, Node>, root: Hash, first: u64, end: u64) -> Vec<(Hash, u64)> {
        let fetch = |h: Hash| {
            futures::future::ready(store.get(&h).cloned().ok_or(ObjectError::NotFound(h)))
        };
        let mut walk = Walk::new(fetch, root, store[&root].clone(), first, end);
        let mut out = Vec::new();
        futures::executor::block_on(async {
            while let Some(l) = walk.next_leaf().await {
                let l = l.expect("every node is in the store");
                out.push((l.hash, l.start));
            }
        });
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// The walk yields exactly the chunks that overlap `first..end`, in order, each
        /// with its offset, whatever the tree's depth.
        #[test]
        fn the_walk_yields_the_chunks_of_a_range_in_order(
            lens in proptest::collection::vec(1u64..50, 0..40),
            a in 0u64..2100,
            b in 0u64..2100,
        ) {
            let (root, store) = tree(&lens);
            let total: u64 = lens.iter().sum();
            let (first, end) = (a.min(b), a.max(b).min(total));
            let mut want = Vec::new();
            let mut at = 0;
            for (i, len) in lens.iter().enumerate() {
                if at < end && at + len > first {
                    want.push((blake2sum(&(i as u64).to_le_bytes()), at));
                }
                at += len;
            }
            proptest::prop_assert_eq!(leaves(&store, root, first, end), want);
        }
    }

    #[test]
    fn a_missing_inner_node_is_an_error_not_a_short_list() {
        let lens = vec![10; 20];
        let (root, mut store) = tree(&lens);
        let inner = store[&root].entries[1].hash;
        store.remove(&inner);
        let fetch = |h: Hash| {
            futures::future::ready(store.get(&h).cloned().ok_or(ObjectError::NotFound(h)))
        };
        let mut walk = Walk::new(fetch, root, store[&root].clone(), 0, 200);
        let got = futures::executor::block_on(async {
            let mut n = 0;
            while let Some(l) = walk.next_leaf().await {
                match l {
                    Ok(_) => n += 1,
                    Err(e) => return Err((n, e)),
                }
            }
            Ok(n)
        });
        assert!(
            matches!(got, Err((_, ObjectError::NotFound(h))) if h == inner),
            "{got:?}"
        );
    }
}
