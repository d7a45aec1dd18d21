//! The refs that protect an object's blocks, the walk over its manifest tree, and which
//! blocks the cluster lacks.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use blocknode_actors::frame::{BlockInfo, BlockRpc};
use blocknode_actors::peer::{Call, Priority};
use blocknode_actors::{Hash, Placement, RefId};

use super::download::read_node;
use super::manifest::{ChunkerParams, Node};
use super::{object_ref_name, ObjectError};
use crate::coordinator::Coordinator;

/// Ref changes and presence queries in flight at once for one request: enough to hide
/// the round trips, few enough not to crowd the peer actor's mailbox.
const SMALL_CALLS_IN_FLIGHT: usize = 32;

/// Every block of the object under `root` (chunks and manifest nodes, each once), the
/// root itself not included, in tree order; and the number of chunks (with repeats).
pub(super) async fn object_blocks(
    svc: &Coordinator,
    id: Hash,
    root: &Node,
) -> Result<(Vec<Hash>, u64), ObjectError> {
    blocks_under(|h| read_node(svc, h), id, root).await
}

/// [`object_blocks`] with the nodes read by `fetch`.
async fn blocks_under<F, Fut>(
    fetch: F,
    id: Hash,
    root: &Node,
) -> Result<(Vec<Hash>, u64), ObjectError>
where
    F: Fn(Hash) -> Fut,
    Fut: std::future::Future<Output = Result<Node, ObjectError>>,
{
    let mut seen = HashSet::new();
    // Chunks under each inner node already walked: a node listed again (a crafted
    // manifest may list one child thousands of times at every level) is not entered
    // again, so the walk reads each node once.
    let mut counted: HashMap<Hash, u64> = HashMap::new();
    let mut out = Vec::new();
    // Depth first, one node in memory per level: the node, its hash, the next entry,
    // the chunks found under it so far.
    let mut stack: Vec<(Node, Hash, usize, u64)> = vec![(root.clone(), id, 0, 0)];
    while let Some(top) = stack.last_mut() {
        let Some(e) = top.0.entries.get(top.2).copied() else {
            let (hash, n) = (top.1, top.3);
            stack.pop();
            match stack.last_mut() {
                Some(parent) => {
                    parent.3 = parent.3.saturating_add(n);
                    counted.insert(hash, n);
                }
                None => return Ok((out, n)),
            }
            continue;
        };
        top.2 += 1;
        let depth = top.0.depth;
        if seen.insert(e.hash) {
            out.push(e.hash);
        }
        if depth == 0 {
            top.3 = top.3.saturating_add(1);
            continue;
        }
        if let Some(n) = counted.get(&e.hash) {
            top.3 = top.3.saturating_add(*n);
            continue;
        }
        let child = fetch(e.hash).await.map_err(|e| match e {
            ObjectError::NotFound(_) => ObjectError::NotFound(id),
            other => other,
        })?;
        if child.size != e.len || child.depth + 1 != depth {
            return Err(ObjectError::WrongLength {
                id,
                hash: e.hash,
                got: child.size,
                want: e.len,
            });
        }
        stack.push((child, e.hash, 0, 0));
    }
    Ok((out, 0))
}

/// Add or drop `name` on each of `blocks`, [`SMALL_CALLS_IN_FLIGHT`] at a time; the
/// first failure is returned once the calls already started have ended.
pub(super) async fn set_refs(
    svc: &Coordinator,
    blocks: &[Hash],
    name: &RefId,
    live: bool,
) -> Result<(), ObjectError> {
    let set = |hash: Hash| async move {
        svc.set_ref(hash, name.clone(), live)
            .await
            .map_err(ObjectError::from)
    };
    set_each(&set, blocks).await
}

/// Call `set` on each of `blocks`, [`SMALL_CALLS_IN_FLIGHT`] at a time; the first
/// failure once every call has ended.
async fn set_each<F, Fut>(set: &F, blocks: &[Hash]) -> Result<(), ObjectError>
where
    F: Fn(Hash) -> Fut,
    Fut: std::future::Future<Output = Result<(), ObjectError>>,
{
    let results: Vec<Result<(), ObjectError>> = futures::stream::iter(blocks.iter().copied())
        .map(set)
        .buffer_unordered(SMALL_CALLS_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Give object `id` the ref `user`: the ref `@obj:<id>:<user>` on every chunk and inner
/// manifest node, then on the root. Idempotent. On failure nothing is undone: the ref
/// may have been live before this call (a retried add, a re-upload), and dropping it
/// would break an object already acknowledged. The root last keeps a partial add safe:
/// refs left on blocks under a root without it are a leak until the ref is dropped
/// (`drop_object_ref` drops them all), never a loss.
pub async fn add_object_ref(svc: &Coordinator, id: Hash, user: &RefId) -> Result<(), ObjectError> {
    let name = object_ref_name(&id, user)?;
    let root = read_node(svc, id).await?;
    let (blocks, _) = object_blocks(svc, id, &root).await?;
    let set = |hash: Hash, live: bool| {
        let name = name.clone();
        async move {
            svc.set_ref(hash, name, live)
                .await
                .map_err(ObjectError::from)
        }
    };
    add_root_last(&set, &blocks, id).await.inspect_err(|e| {
        tracing::warn!(object = %id.short(), "adding ref {user} failed; the refs already added stay (a retry completes them): {e}");
    })
}

/// `set(hash, true)` (add) on every block under the root, then on the root; nothing
/// undone on failure (`set` is never called with `false`, a drop).
async fn add_root_last<F, Fut>(set: &F, blocks: &[Hash], root: Hash) -> Result<(), ObjectError>
where
    F: Fn(Hash, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), ObjectError>>,
{
    let add = |hash: Hash| set(hash, true);
    set_each(&add, blocks).await?;
    set_each(&add, &[root]).await
}

/// Drop object `id`'s ref `user`: first on the root (the object no longer has it), then
/// on every other block. Idempotent while the manifest can still be read.
pub async fn drop_object_ref(svc: &Coordinator, id: Hash, user: &RefId) -> Result<(), ObjectError> {
    let name = object_ref_name(&id, user)?;
    let root = read_node(svc, id).await?;
    set_refs(svc, &[id], &name, false).await?;
    let (blocks, _) = object_blocks(svc, id, &root).await?;
    set_refs(svc, &blocks, &name, false).await
}

/// What `hash`'s holders report (`BlockInfoQuery`): how many store a copy, how many of
/// those also count a live ref to it, and how many holders there are. A holder that
/// cannot be asked counts as lacking it.
pub(super) async fn holder_counts(svc: &Coordinator, hash: Hash) -> HolderCounts {
    let nodes = svc.placement().write_nodes(&hash);
    let calls = nodes.iter().map(|node| {
        svc.peers.send(Call {
            node: *node,
            rpc: BlockRpc::BlockInfoQuery(hash),
            timeout: svc.cfg.small_rpc_timeout,
            priority: Priority::Client,
        })
    });
    let mut counts = HolderCounts {
        holders: nodes.len(),
        ..HolderCounts::default()
    };
    for r in futures::future::join_all(calls).await {
        if let Ok(Ok(BlockRpc::BlockInfoReply(BlockInfo {
            present: true,
            rc,
            deletable,
            ..
        }))) = r
        {
            counts.present += 1;
            if rc > 0 && !deletable {
                counts.referenced += 1;
            }
        }
    }
    counts
}

/// What the holders of one block report.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HolderCounts {
    pub holders: usize,
    /// Holders storing a copy.
    pub present: usize,
    /// Holders storing a copy and counting a live ref to it.
    pub referenced: usize,
}

impl HolderCounts {
    fn quorum(&self, svc: &Coordinator) -> usize {
        svc.cfg.write_quorum.min(self.holders).max(1)
    }

    /// Stored and referenced on a write quorum: none of those copies can be deleted
    /// within `gc_delay` of the report (a drop starts a grace of `gc_delay`; GC may
    /// decide only after it, and its fence refuses once a ref came back), so a bare ref
    /// acknowledged within that time keeps the block.
    pub fn protected_on_write_quorum(&self, svc: &Coordinator) -> bool {
        self.referenced >= self.quorum(svc)
    }
}

/// The hashes of `hashes` that are not stored and referenced on a write quorum of their
/// holders (in the order given, each once). A block stored but referenced nowhere counts
/// as missing: GC may be deleting it, so only its bytes are a safe way to keep it.
pub async fn missing_blocks(svc: &Coordinator, hashes: &[Hash]) -> Vec<Hash> {
    let mut seen = HashSet::new();
    let unique: Vec<Hash> = hashes.iter().copied().filter(|h| seen.insert(*h)).collect();
    let present: Vec<bool> = futures::stream::iter(unique.iter().copied())
        .map(|h| async move { holder_counts(svc, h).await.protected_on_write_quorum(svc) })
        .buffered(SMALL_CALLS_IN_FLIGHT)
        .collect()
        .await;
    unique
        .into_iter()
        .zip(present)
        .filter(|(_, p)| !p)
        .map(|(h, _)| h)
        .collect()
}

/// What `GET /v1/objects/{id}/info` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ObjectInfo {
    /// The object's id (its root manifest's hash).
    pub id: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its chunks, repeats counted.
    pub chunks: u64,
    /// Distinct blocks under the root (chunks and inner manifest nodes).
    pub blocks: u64,
    /// Depth of the manifest tree (0: the root lists the chunks).
    pub depth: u8,
    /// The chunker's bounds, bytes: `[min, avg, max]`.
    pub chunker: [u32; 3],
    /// Blocks (the root included) stored on every holder.
    pub fully_replicated: u64,
    /// Blocks stored on some holders but not all (resync will complete them).
    pub under_replicated: u64,
    /// Blocks no holder reported (unreadable now).
    pub missing: u64,
}

/// Size, chunks, tree shape and a holders summary of object `id` (one presence query
/// per block and holder).
pub async fn object_info(svc: &Coordinator, id: Hash) -> Result<ObjectInfo, ObjectError> {
    let root = read_node(svc, id).await?;
    let (mut blocks, chunks) = object_blocks(svc, id, &root).await?;
    blocks.push(id);
    let counts: Vec<(usize, usize)> = futures::stream::iter(blocks.iter().copied())
        .map(|h| async move {
            let c = holder_counts(svc, h).await;
            (c.present, c.holders)
        })
        .buffer_unordered(SMALL_CALLS_IN_FLIGHT)
        .collect()
        .await;
    let full = counts.iter().filter(|(p, n)| p == n).count() as u64;
    let missing = counts.iter().filter(|(p, _)| *p == 0).count() as u64;
    let ChunkerParams { min, avg, max } = root.chunker;
    Ok(ObjectInfo {
        id: id.to_hex(),
        size: root.size,
        chunks,
        blocks: blocks.len() as u64 - 1,
        depth: root.depth,
        chunker: [min, avg, max],
        fully_replicated: full,
        under_replicated: counts.len() as u64 - full - missing,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use blocknode_actors::hash::blake2sum;

    use super::super::manifest::{Entry, TreeBuilder};
    use super::*;

    /// Every chunk and inner node of a tree of depth 2 (fanout 3, chunks repeated) is
    /// found, each once: an object ref misses none of them.
    #[test]
    fn the_walk_finds_every_block_under_the_root_once() {
        let mut b = TreeBuilder::with_fanout(ChunkerParams::DEFAULT, 3);
        let mut store = HashMap::new();
        let mut want = HashSet::new();
        let mut keep = |sealed: Vec<super::super::manifest::SealedNode>| {
            for s in sealed {
                store.insert(s.hash, Node::decode(&s.bytes).expect("decodes"));
            }
        };
        for i in 0..25u64 {
            let hash = blake2sum(&(i % 7).to_le_bytes());
            want.insert(hash);
            keep(b.push(Entry {
                hash,
                len: 10 + i % 7,
            }));
        }
        let (root, sealed) = b.finish();
        keep(sealed);
        want.extend(store.keys().filter(|h| **h != root).copied());
        let fetch = |h: Hash| {
            futures::future::ready(store.get(&h).cloned().ok_or(ObjectError::NotFound(h)))
        };
        let (blocks, chunks) =
            futures::executor::block_on(blocks_under(fetch, root, &store[&root]))
                .expect("every node is there");
        assert_eq!(chunks, 25);
        assert_eq!(blocks.len(), want.len(), "each block once");
        assert_eq!(blocks.into_iter().collect::<HashSet<_>>(), want);
        assert!(store[&root].depth >= 2);
    }

    /// A DAG that lists one child 16,384 times at each of two levels: the walk reads
    /// each node once (not 16,384² times) and still counts every chunk.
    #[test]
    fn a_child_listed_again_is_not_walked_again() {
        let params = ChunkerParams::DEFAULT;
        let chunk = blake2sum(b"x");
        let fan = super::super::manifest::FANOUT;
        let n0 = Node {
            chunker: params,
            size: fan as u64,
            depth: 0,
            entries: vec![
                Entry {
                    hash: chunk,
                    len: 1
                };
                fan
            ],
        };
        let h0 = blake2sum(&n0.encode());
        let n1 = Node {
            chunker: params,
            size: (fan * fan) as u64,
            depth: 1,
            entries: vec![
                Entry {
                    hash: h0,
                    len: n0.size
                };
                fan
            ],
        };
        let h1 = blake2sum(&n1.encode());
        let root = Node {
            chunker: params,
            size: n1.size * fan as u64,
            depth: 2,
            entries: vec![
                Entry {
                    hash: h1,
                    len: n1.size
                };
                fan
            ],
        };
        let store: HashMap<Hash, Node> = [(h0, n0), (h1, n1)].into_iter().collect();
        let reads = std::cell::Cell::new(0u32);
        let fetch = |h: Hash| {
            reads.set(reads.get() + 1);
            assert!(reads.get() < 100, "the walk reads nodes again");
            futures::future::ready(store.get(&h).cloned().ok_or(ObjectError::NotFound(h)))
        };
        let id = blake2sum(&root.encode());
        let (blocks, chunks) =
            futures::executor::block_on(blocks_under(fetch, id, &root)).expect("walks");
        assert_eq!(reads.get(), 2);
        assert_eq!(blocks, vec![h1, h0, chunk]);
        assert_eq!(chunks, (fan as u64).pow(3));
    }

    /// A second add of a ref the object already has, failing on one block, leaves the
    /// ref on every block: it was live before and the object must still read back.
    #[test]
    fn a_failed_add_of_a_live_ref_drops_nothing() {
        let blocks: Vec<Hash> = (0..10u8).map(|i| blake2sum(&[i])).collect();
        let root = blake2sum(b"root");
        let refs = std::cell::RefCell::new(HashSet::new());
        let failing = blocks[6];
        // Adds fail on one block; a drop (an undo) would take the ref away.
        let set = |h: Hash, live: bool| {
            let out = if live && h == failing {
                Err(ObjectError::Task("injected: holder refused".into()))
            } else {
                if live {
                    refs.borrow_mut().insert(h);
                } else {
                    refs.borrow_mut().remove(&h);
                }
                Ok(())
            };
            futures::future::ready(out)
        };
        // The first add succeeded (the failing block had it then).
        refs.borrow_mut()
            .extend(blocks.iter().copied().chain([root]));
        let res = futures::executor::block_on(add_root_last(&set, &blocks, root));
        assert!(res.is_err());
        let left = refs.borrow();
        assert!(
            blocks.iter().chain([&root]).all(|h| left.contains(h)),
            "a ref live before the failed add was dropped"
        );
    }
}
