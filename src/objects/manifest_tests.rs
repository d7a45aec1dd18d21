use std::collections::HashMap;

use super::*;

fn h(i: u64) -> Hash {
    blake2sum(&i.to_le_bytes())
}

fn node(entries: Vec<Entry>) -> Node {
    Node {
        chunker: ChunkerParams::DEFAULT,
        size: entries.iter().map(|e| e.len).sum(),
        depth: 0,
        entries,
    }
}

#[test]
fn a_node_round_trips_and_starts_with_the_magic() {
    let n = node(
        (0..100)
            .map(|i| Entry {
                hash: h(i),
                len: 1000 + i,
            })
            .collect(),
    );
    let bytes = n.encode();
    assert_eq!(&bytes[..4], MAGIC);
    assert_eq!(Node::decode(&bytes), Ok(n));
    let empty = node(Vec::new());
    assert_eq!(Node::decode(&empty.encode()), Ok(empty));
}

#[test]
fn a_full_node_fits_its_bound() {
    let n = node(
        (0..FANOUT as u64)
            .map(|i| Entry {
                hash: h(i),
                len: u64::from(u32::MAX),
            })
            .collect(),
    );
    let n = Node { depth: 1, ..n };
    let bytes = n.encode();
    assert!(bytes.len() <= MAX_NODE_BYTES, "{} bytes", bytes.len());
    const { assert!(MAX_NODE_BYTES < 1 << 20) };
    assert_eq!(Node::decode(&bytes).map(|d| d.entries.len()), Ok(FANOUT));
}

#[test]
fn bad_manifests_are_refused_with_a_reason() {
    assert_eq!(Node::decode(b"hello"), Err(ManifestError::NotAManifest));
    assert!(matches!(
        Node::decode(b"BNOM\x01"),
        Err(ManifestError::Malformed(_))
    ));
    let good = node(vec![Entry {
        hash: h(1),
        len: 10,
    }])
    .encode();
    let mut v2 = good.to_vec();
    v2[5] = 2; // the version, right after the magic and the array header
    assert_eq!(Node::decode(&v2), Err(ManifestError::UnknownVersion(2)));
    let lying = Node {
        size: 11,
        ..node(vec![Entry {
            hash: h(1),
            len: 10,
        }])
    };
    assert!(matches!(
        Node::decode(&lying.encode()),
        Err(ManifestError::Malformed(m)) if m.contains("sum")
    ));
    let bad_params = Node {
        chunker: ChunkerParams {
            min: 1,
            avg: 2,
            max: 3,
        },
        ..node(Vec::new())
    };
    assert!(Node::decode(&bad_params.encode()).is_err());
    let too_long = node(vec![Entry {
        hash: h(1),
        len: 5 << 20,
    }]);
    assert!(Node::decode(&too_long.encode()).is_err());
    // Truncations of a good node never panic.
    for n in 0..good.len() {
        let _ = Node::decode(&good[..n]);
    }
}

#[test]
fn locate_finds_the_entry_holding_an_offset() {
    let n = node(vec![
        Entry {
            hash: h(0),
            len: 10,
        },
        Entry { hash: h(1), len: 5 },
        Entry { hash: h(2), len: 1 },
    ]);
    assert_eq!(n.locate(0), Some((0, 0)));
    assert_eq!(n.locate(9), Some((0, 0)));
    assert_eq!(n.locate(10), Some((1, 10)));
    assert_eq!(n.locate(14), Some((1, 10)));
    assert_eq!(n.locate(15), Some((2, 15)));
    assert_eq!(n.locate(16), None);
    assert_eq!(node(Vec::new()).locate(0), None);
}

/// Build a tree from `n` chunks; returns the root and every node stored, by hash.
fn build(n: u64, fanout: usize) -> (Hash, HashMap<Hash, Node>) {
    let mut b = TreeBuilder::with_fanout(ChunkerParams::DEFAULT, fanout);
    let mut store = HashMap::new();
    for i in 0..n {
        for s in b.push(Entry {
            hash: h(i),
            len: 100 + i,
        }) {
            store.insert(
                s.hash,
                Node::decode(&s.bytes).expect("a sealed node decodes"),
            );
        }
    }
    let (root, sealed) = b.finish();
    for s in sealed {
        assert_eq!(blake2sum(&s.bytes), s.hash);
        store.insert(
            s.hash,
            Node::decode(&s.bytes).expect("a sealed node decodes"),
        );
    }
    (root, store)
}

/// The chunks under `hash`, in order, by walking the tree.
fn leaves(hash: &Hash, store: &HashMap<Hash, Node>, out: &mut Vec<Entry>) {
    let node = &store[hash];
    for e in &node.entries {
        if node.depth == 0 {
            out.push(*e);
        } else {
            assert_eq!(store[&e.hash].depth + 1, node.depth);
            assert_eq!(store[&e.hash].size, e.len);
            leaves(&e.hash, store, out);
        }
    }
}

#[test]
fn the_tree_splits_at_the_fanout_and_keeps_the_chunk_order() {
    for (n, fanout, depth) in [
        (0, 4, 0),
        (1, 4, 0),
        (4, 4, 0),
        (5, 4, 1),
        (16, 4, 1),
        (17, 4, 2),
        (64, 4, 2),
        (100, 4, 3),
        (1000, 16_384, 0),
    ] {
        let (root, store) = build(n, fanout);
        let r = &store[&root];
        assert_eq!(r.depth, depth, "{n} chunks, fanout {fanout}");
        assert_eq!(r.size, (0..n).map(|i| 100 + i).sum::<u64>());
        let mut got = Vec::new();
        leaves(&root, &store, &mut got);
        let want: Vec<Entry> = (0..n)
            .map(|i| Entry {
                hash: h(i),
                len: 100 + i,
            })
            .collect();
        assert_eq!(got, want, "{n} chunks, fanout {fanout}");
        assert!(store.values().all(|s| s.entries.len() <= fanout));
    }
}

#[test]
fn the_same_chunks_give_the_same_id() {
    assert_eq!(build(37, 4).0, build(37, 4).0);
    assert_ne!(build(37, 4).0, build(38, 4).0);
}
