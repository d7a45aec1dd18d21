//! Frame codec tests: every message round-trips, lengths are checked before allocation,
//! and no input makes the decoder panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::block::{DataBlock, VerifiedBlock};
use crate::hash::blake2sum;

fn samples() -> Vec<BlockRpc> {
    let h = blake2sum(b"abc");
    vec![
        BlockRpc::Ok,
        BlockRpc::error(ErrorCode::NotFound, "no such block"),
        BlockRpc::Hello(Hello {
            layout_digest: h,
            layout_version: 3,
            version: "0.1.0".into(),
            stats: None,
        }),
        BlockRpc::Ping {
            nonce: 7,
            layout: crate::layout::LayoutStamp {
                version: 3,
                digest: h,
            },
            stats: None,
        },
        BlockRpc::Pong(7),
        BlockRpc::GetBlock(h),
        BlockRpc::PutBlock {
            hash: h,
            data: DataBlock::Plain(Bytes::from_static(b"abc")),
        },
        BlockRpc::PutBlock {
            hash: h,
            data: DataBlock::Compressed(Bytes::from_static(b"zz")),
        },
        BlockRpc::PutBlock {
            hash: blake2sum(b""),
            data: DataBlock::Plain(Bytes::new()),
        },
        BlockRpc::PutBlockRef {
            incarnation: 0,
            hash: h,
            data: DataBlock::Plain(Bytes::from_static(b"hello")),
            ref_id: "r1".parse().unwrap(),
        },
        BlockRpc::PutBlockRef {
            incarnation: 0,
            hash: h,
            data: DataBlock::Compressed(Bytes::from_static(b"zz")),
            ref_id: "obj:7".parse().unwrap(),
        },
        BlockRpc::NeedBlockQuery(h),
        BlockRpc::NeedBlockReply(true),
        BlockRpc::AddRef {
            incarnation: 1_765_000_000_000,
            hash: h,
            ref_id: "r1".parse().unwrap(),
        },
        BlockRpc::DropRef {
            incarnation: 3,
            hash: h,
            ref_id: "r1".parse().unwrap(),
        },
        BlockRpc::BlockInfoQuery(h),
        BlockRpc::BlockInfoReply(BlockInfo {
            present: true,
            rc: 2,
            deletable: false,
            error: Some("x".into()),
        }),
        BlockRpc::ScheduleResync(h),
        BlockRpc::RefDigestQuery {
            prefix: vec![1, 2],
            known: vec![3; 16],
        },
        BlockRpc::RefDigestReply(PrefixDigest {
            count: 3,
            digest: vec![7; 16],
            children: vec![ChildDigest {
                byte: 256,
                count: 1,
                digest: vec![1; 16],
            }],
        }),
        BlockRpc::RefRecordsQuery {
            prefix: vec![9],
            exact: false,
            limit: 128,
        },
        BlockRpc::RefRecords(vec![RefRecord {
            incarnation: 0,
            dropped_at: 0,
            hash: h,
            ref_id: "a".parse().unwrap(),
            live: false,
        }]),
        BlockRpc::MergeRefs(vec![RefRecord {
            incarnation: 0,
            dropped_at: 0,
            hash: h,
            ref_id: "b".parse().unwrap(),
            live: true,
        }]),
        BlockRpc::MergeTokens(vec![token_record()]),
        BlockRpc::TokenDigestQuery(crate::tokens::TokenSyncQuery {
            table_digest: vec![4; 32],
            after: None,
            until: Some("m".parse().unwrap()),
            digests: vec![(
                "a".parse().unwrap(),
                serde_bytes::ByteBuf::from(vec![5; 16]),
            )],
        }),
        BlockRpc::TokenRecords(crate::tokens::TokenSyncPage {
            same: false,
            records: vec![crate::tokens::TokenRecord {
                revoked_ms: Some(9),
                ..token_record()
            }],
            next: None,
        }),
        // Appended: the pinned encodings below index the ones before.
        BlockRpc::LayoutQuery,
        BlockRpc::LayoutReply {
            data: vec![1, 2, 3],
        },
        BlockRpc::HandoverQuery { version: 4 },
        BlockRpc::HandoverReply(crate::layout::HandoverLeft {
            version: 4,
            partitions: 2,
            blocks: 10,
            bytes: 1 << 20,
        }),
        BlockRpc::Hello(Hello {
            layout_digest: h,
            layout_version: 3,
            version: "0.1.0".into(),
            stats: Some(stats()),
        }),
        BlockRpc::Ping {
            nonce: 8,
            layout: crate::layout::LayoutStamp {
                version: 3,
                digest: h,
            },
            stats: Some(NodeStats {
                capacity: None,
                ..stats()
            }),
        },
    ]
}

fn stats() -> NodeStats {
    NodeStats {
        blocks: 12,
        bytes: 34_000,
        capacity: Some(1 << 30),
        age_ms: 1500,
    }
}

/// `Hello` and `Ping` as nodes that predate storage counts send and read them.
mod old {
    use serde::{Deserialize, Serialize};

    use crate::hash::Hash;
    use crate::layout::LayoutStamp;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    pub struct Hello {
        pub layout_digest: Hash,
        pub layout_version: u64,
        pub version: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    pub enum BlockRpc {
        Hello(Hello),
        Ping { nonce: u64, layout: LayoutStamp },
    }
}

/// Frames of an older node, which knows no storage counts, decode here with none, and
/// ours decode there (its serde ignores the field it does not know).
#[test]
fn hello_and_ping_without_stats_decode_both_ways() {
    let h = blake2sum(b"abc");
    let layout = crate::layout::LayoutStamp {
        version: 3,
        digest: h,
    };
    let frame = |header: Vec<u8>| {
        let mut v = (header.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&header);
        v
    };
    let old_hello = old::BlockRpc::Hello(old::Hello {
        layout_digest: h,
        layout_version: 3,
        version: "0.0.9".into(),
    });
    let old_ping = old::BlockRpc::Ping { nonce: 5, layout };
    let limits = FrameLimits::default();
    let got = decode(
        &frame(rmp_serde::to_vec_named(&old_hello).unwrap()),
        &limits,
    )
    .unwrap();
    assert_eq!(
        got,
        BlockRpc::Hello(Hello {
            layout_digest: h,
            layout_version: 3,
            version: "0.0.9".into(),
            stats: None,
        }),
        "an old hello decodes with no counts"
    );
    let got = decode(&frame(rmp_serde::to_vec_named(&old_ping).unwrap()), &limits).unwrap();
    assert_eq!(
        got,
        BlockRpc::Ping {
            nonce: 5,
            layout,
            stats: None
        },
        "an old ping decodes with no counts"
    );
    let n = samples().len();
    for (new, old) in samples()[n - 2..].iter().zip([old_hello, old_ping]) {
        let f = encode(new).unwrap().to_vec();
        let theirs: old::BlockRpc = rmp_serde::from_slice(&f[PREFIX_LEN..])
            .unwrap_or_else(|e| panic!("an old node cannot read our {}: {e}", new.kind()));
        let expected = match old {
            old::BlockRpc::Hello(h) => old::BlockRpc::Hello(old::Hello {
                version: "0.1.0".into(),
                ..h
            }),
            old::BlockRpc::Ping { layout, .. } => old::BlockRpc::Ping { nonce: 8, layout },
        };
        assert_eq!(theirs, expected);
    }
}

fn token_record() -> crate::tokens::TokenRecord {
    crate::tokens::TokenRecord {
        name: "backup".parse().unwrap(),
        scope: crate::tokens::Scope::Read,
        generation: 1,
        created_ms: 5,
        token_hash: blake2sum(b"secret"),
        revoked_ms: None,
    }
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let f = encode(&m).unwrap();
        assert_eq!(decode(&f.to_vec(), &FrameLimits::default()).unwrap(), m);
    }
}

#[test]
fn a_verified_block_goes_on_the_wire_as_a_plain_put_block() {
    let v = VerifiedBlock::hash_plain(Bytes::from(vec![7u8; 4096]), Some(1));
    let plain = BlockRpc::PutBlock {
        hash: v.hash(),
        data: v.data().clone(),
    };
    let f = encode(&BlockRpc::PutVerified {
        incarnation: 0,
        block: v.clone(),
        ref_id: None,
    })
    .unwrap();
    let payload = f.payload.as_ref().expect("the block bytes are the payload");
    assert_eq!(payload.as_ptr(), v.data().inner_buffer().as_ptr(), "copied");
    assert_eq!(f.to_vec(), encode(&plain).unwrap().to_vec());
    // Trust does not travel: the receiver decodes a PutBlock, which it verifies.
    assert_eq!(decode(&f.to_vec(), &FrameLimits::default()).unwrap(), plain);
}

#[test]
fn a_verified_block_with_a_ref_goes_on_the_wire_as_a_put_block_ref() {
    let v = VerifiedBlock::hash_plain(Bytes::from(vec![9u8; 4096]), Some(1));
    let ref_id: crate::RefId = "obj:1".parse().unwrap();
    let wire = BlockRpc::PutBlockRef {
        incarnation: 0,
        hash: v.hash(),
        data: v.data().clone(),
        ref_id: ref_id.clone(),
    };
    let f = encode(&BlockRpc::PutVerified {
        incarnation: 0,
        block: v.clone(),
        ref_id: Some(ref_id),
    })
    .unwrap();
    let payload = f.payload.as_ref().expect("the block bytes are the payload");
    assert_eq!(payload.as_ptr(), v.data().inner_buffer().as_ptr(), "copied");
    assert_eq!(f.to_vec(), encode(&wire).unwrap().to_vec());
    assert_eq!(decode(&f.to_vec(), &FrameLimits::default()).unwrap(), wire);
}

#[test]
fn put_block_payload_is_shared_not_copied() {
    let data = Bytes::from(vec![5u8; 1 << 20]);
    let m = BlockRpc::PutBlock {
        hash: blake2sum(&data),
        data: DataBlock::Plain(data.clone()),
    };
    let f = encode(&m).unwrap();
    let p = f.payload.unwrap();
    assert_eq!(p.as_ptr(), data.as_ptr());
    assert!(
        f.head.len() < 128,
        "header should be small: {}",
        f.head.len()
    );
}

#[test]
fn oversized_lengths_are_refused_before_allocation() {
    let limits = FrameLimits::default();
    let mut huge = Vec::new();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        decode(&huge, &limits),
        Err(FrameError::HeaderTooLarge { .. })
    ));
    let mut big_payload = Vec::new();
    big_payload.extend_from_slice(&10u32.to_be_bytes());
    big_payload.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode(&big_payload, &limits),
        Err(FrameError::PayloadTooLarge { .. })
    ));
}

#[test]
fn truncated_and_garbage_frames_are_errors() {
    let f = encode(&BlockRpc::GetBlock(blake2sum(b"x")))
        .unwrap()
        .to_vec();
    for cut in [0, 3, 8, f.len() - 1] {
        assert!(
            matches!(
                decode(&f[..cut], &FrameLimits::default()),
                Err(FrameError::Truncated(_))
            ),
            "cut at {cut}"
        );
    }
    let mut junk = vec![0, 0, 0, 4, 0, 0, 0, 0];
    junk.extend_from_slice(b"\xc1\xc1\xc1\xc1");
    assert!(matches!(
        decode(&junk, &FrameLimits::default()),
        Err(FrameError::Decode(_))
    ));
    // A payload on a message that carries none.
    let mut ok = encode(&BlockRpc::Ok).unwrap().to_vec();
    ok[7] = 2;
    ok.extend_from_slice(b"zz");
    assert!(matches!(
        decode(&ok, &FrameLimits::default()),
        Err(FrameError::UnexpectedPayload("ok", 2))
    ));
}

#[tokio::test]
async fn read_frame_reads_one_frame_from_a_stream() {
    let m = BlockRpc::PutBlock {
        hash: blake2sum(b"abc"),
        data: DataBlock::Plain(Bytes::from_static(b"abc")),
    };
    let bytes = encode(&m).unwrap().to_vec();
    let mut r = &bytes[..];
    assert_eq!(
        read_frame(&mut r, &FrameLimits::default()).await.unwrap(),
        m
    );
    let mut short = &bytes[..bytes.len() - 1];
    assert!(matches!(
        read_frame(&mut short, &FrameLimits::default()).await,
        Err(FrameError::Truncated("payload"))
    ));
}

/// The header bytes of a few messages, pinned: the wire format is the messages' serde
/// form, so renaming a variant or field, or letting block bytes into the header, is a
/// protocol change between versions and must show up here.
#[test]
fn wire_encoding_is_unchanged() {
    let hex = |m: &BlockRpc| {
        encode(m)
            .unwrap()
            .to_vec()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let s = samples();
    assert_eq!(hex(&s[0]), "0000000300000000a24f6b", "Ok");
    assert_eq!(
        hex(&s[7]),
        "0000003e0000000281a8507574426c6f636b82a468617368c420\
         ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
         aa636f6d70726573736564c37a7a",
        "PutBlock: hash and the flag `compressed` in the header, the bytes after it"
    );
    assert_eq!(
        hex(&s[10]),
        "0000005b0000000281ab507574426c6f636b52656684a468617368c420\
         ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
         aa636f6d70726573736564c3a67265665f6964a56f626a3a37\
         ab696e6361726e6174696f6e007a7a",
        "PutBlockRef: hash, the flag `compressed`, the ref id and its incarnation in the \
         header, the bytes after it"
    );
    // The same frame from a node that predates incarnations decodes as incarnation 0.
    let old = "0000004e0000000281ab507574426c6f636b52656683a468617368c420\
         ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
         aa636f6d70726573736564c3a67265665f6964a56f626a3a377a7a";
    let old: Vec<u8> = (0..old.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&old[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(decode(&old, &FrameLimits::default()).unwrap(), s[10]);
    assert_eq!(
        hex(&s[18]),
        "000000340000000081ae526566446967657374517565727982a6707265666978c4020102\
         a56b6e6f776ec41003030303030303030303030303030303",
        "RefDigestQuery: prefix and known as MessagePack bin"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// The decoder never panics, whatever the bytes.
    #[test]
    fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &FrameLimits::default());
    }

    /// Mutating one byte of a valid frame gives an error or a valid message, never a panic.
    #[test]
    fn decoder_survives_mutated_frames(idx in 0usize..64, val in any::<u8>(), which in 0usize..16) {
        let s = samples();
        let mut f = encode(&s[which % s.len()]).unwrap().to_vec();
        let i = idx % f.len();
        f[i] = val;
        let _ = decode(&f, &FrameLimits::default());
    }
}

#[tokio::test]
async fn read_frame_takes_a_payload_in_pieces_and_nothing_past_it() {
    use tokio::io::AsyncReadExt;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let m = BlockRpc::PutBlock {
        hash: blake2sum(&data),
        data: DataBlock::Plain(Bytes::from(data)),
    };
    let mut bytes = encode(&m).unwrap().to_vec();
    bytes.extend_from_slice(b"next");
    // A pipe of 7 bytes: the payload arrives in thousands of short reads.
    let (mut tx, mut rx) = tokio::io::duplex(7);
    let writer = tokio::spawn(async move {
        tokio::io::AsyncWriteExt::write_all(&mut tx, &bytes)
            .await
            .unwrap();
    });
    let got = read_frame(&mut rx, &FrameLimits::default()).await.unwrap();
    assert_eq!(got, m, "payload read in pieces differs");
    let mut rest = Vec::new();
    writer.await.unwrap();
    rx.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"next", "read_frame consumed bytes past its frame");
}
