//! Tests of hinted handoff: hint keys and values, replay groups, refused hints.

use super::*;

#[test]
fn keys_round_trip_and_refs_sort_before_the_block() {
    let n = NodeId([9; 32]);
    let h = Hash([4; 32]);
    let r: RefId = "obj:1".parse().unwrap();
    let hints = [
        Hint::Block { hash: h },
        Hint::AddRef {
            hash: h,
            ref_id: r.clone(),
            incarnation: 7,
        },
        Hint::DropRef {
            hash: h,
            ref_id: r.clone(),
            incarnation: 3,
        },
    ];
    for hint in &hints {
        assert_eq!(
            Hint::parse(&hint.key(&n), &hint.value()),
            Some((n, hint.clone()))
        );
    }
    // A hint written before incarnations existed (empty value) is incarnation 0.
    assert_eq!(
        Hint::parse(&hints[1].key(&n), &[]),
        Some((
            n,
            Hint::AddRef {
                hash: h,
                ref_id: r,
                incarnation: 0
            }
        ))
    );
    assert!(hints[1].key(&n) < hints[0].key(&n));
    assert!(hints[2].key(&n) < hints[0].key(&n));
    assert_eq!(Hint::parse(&[1, 2, 3], &[]), None);
    let mut bad = hints[0].key(&n);
    bad.push(b'x');
    assert_eq!(
        Hint::parse(&bad, &[]),
        None,
        "a block hint carries no ref id"
    );
}

/// A node that answers every bare ref with `BlockMissing`.
struct LacksEveryBlock;
impl Actor for LacksEveryBlock {
    type Context = Context<Self>;
}
impl Handler<Call> for LacksEveryBlock {
    type Result = Result<BlockRpc, RpcError>;
    fn handle(&mut self, c: Call, _: &mut Context<Self>) -> Self::Result {
        match c.rpc {
            BlockRpc::AddRef { .. } => Err(RpcError::Remote {
                node: c.node,
                code: ErrorCode::BlockMissing,
                message: "missing".into(),
            }),
            _ => Ok(BlockRpc::Ok),
        }
    }
}

#[actix_rt::test]
async fn a_hinted_ref_whose_block_stays_missing_is_dropped_not_kept_forever() {
    let n = NodeId([9; 32]);
    let h = Hash([4; 32]);
    let hints = [
        Hint::AddRef {
            hash: h,
            ref_id: "obj:1".parse().unwrap(),
            incarnation: 0,
        },
        Hint::Block { hash: h },
    ];
    let keys: Vec<Vec<u8>> = hints.iter().map(|x| x.key(&n)).collect();
    let group = hints.iter().map(|x| (x.key(&n), x.value())).collect();
    let peers = LacksEveryBlock.start().recipient();
    let out = replay_group(n, group, &peers, None, None, Duration::from_secs(5)).await;
    assert!(!out.stopped);
    assert_eq!(out.replayed, 2);
    let mut removed = out.removed;
    removed.sort();
    let mut all = keys;
    all.sort();
    assert_eq!(removed, all, "every hint of the group is done");
}

#[test]
fn a_missed_put_with_a_ref_leaves_its_ref_and_its_block() {
    let block = crate::VerifiedBlock::hash_plain(bytes::Bytes::from_static(b"b"), None);
    let h = block.hash();
    let r: RefId = "obj:2".parse().unwrap();
    let both = vec![
        Hint::AddRef {
            hash: h,
            ref_id: r.clone(),
            incarnation: 5,
        },
        Hint::Block { hash: h },
    ];
    let verified = BlockRpc::PutVerified {
        block: block.clone(),
        ref_id: Some(r.clone()),
        incarnation: 5,
    };
    assert_eq!(Hint::for_rpc(&verified), both);
    let wire = BlockRpc::PutBlockRef {
        hash: h,
        data: block.data().clone(),
        ref_id: r,
        incarnation: 5,
    };
    assert_eq!(Hint::for_rpc(&wire), both);
    let plain = BlockRpc::PutVerified {
        block,
        ref_id: None,
        incarnation: 0,
    };
    assert_eq!(Hint::for_rpc(&plain), vec![Hint::Block { hash: h }]);
    assert!(Hint::for_rpc(&BlockRpc::GetBlock(h)).is_empty());
}
