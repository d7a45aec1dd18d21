//! Charged reads through the storage actor's messages: nothing is read before it is
//! paid for, a read that cannot pay waits holding nothing, and the charge follows the
//! bytes.

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use super::read_charged;
use crate::block::DataBlock;
use crate::budget::Pool;
use crate::hash::{blake2sum, Hash};
use crate::storage::{
    GetStorageStats, ReadBlock, ReadCharge, StorageActor, StorageConfig, StorageError, WriteBlock,
};

const KIB: u64 = 1024;

async fn store(data: DataBlock, hash: Hash) -> (tempfile::TempDir, Addr<StorageActor>) {
    let d = tempfile::tempdir().unwrap();
    let s = StorageActor::new(StorageConfig::one_dir(d.path().to_path_buf(), false, None))
        .unwrap()
        .start();
    s.send(WriteBlock::new(hash, data)).await.unwrap().unwrap();
    (d, s)
}

fn random(n: usize) -> Bytes {
    Bytes::from((0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())
}

async fn bytes_read(s: &Addr<StorageActor>) -> u64 {
    s.send(GetStorageStats).await.unwrap().bytes_read
}

fn charged(pool: &Pool, plain: bool) -> Option<ReadCharge> {
    Some(ReadCharge {
        pool: pool.clone(),
        held: None,
        plain,
    })
}

#[actix_rt::test]
async fn a_read_the_pool_cannot_pay_now_reads_nothing_and_says_what_it_needs() {
    // 4 KiB (read on the actor's thread when cached) and 300 KiB (on the lane).
    for len in [4 << 10, 300 << 10] {
        let data = random(len);
        let hash = blake2sum(&data);
        let (_d, s) = store(DataBlock::Plain(data.clone()), hash).await;
        let pool = Pool::new("test", 1 << 20);
        let hog = pool.charge((1 << 20) - len as u64 + KIB).await.unwrap();
        let r = s
            .send(ReadBlock {
                hash,
                charge: charged(&pool, false),
            })
            .await
            .unwrap();
        assert!(
            matches!(r, Err(StorageError::OverBudget { needed, .. }) if needed == len as u64),
            "{len} bytes: {r:?}"
        );
        assert_eq!(bytes_read(&s).await, 0, "{len} bytes: read before paid for");
        drop(hog);
        let r = s
            .send(ReadBlock {
                hash,
                charge: charged(&pool, false),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.inner_buffer(), &data);
        assert_eq!(pool.available(), (1 << 20) - len as u64, "charged its size");
        drop(r);
        assert_eq!(pool.available(), 1 << 20, "the charge left with the bytes");
    }
}

#[actix_rt::test]
async fn read_charged_waits_for_room_holding_nothing_then_reads() {
    let data = random(200 << 10);
    let hash = blake2sum(&data);
    let (_d, s) = store(DataBlock::Plain(data.clone()), hash).await;
    let pool = Pool::new("test", 256 << 10);
    let hog = pool.charge(256 << 10).await.unwrap();
    let reader = {
        let (s, pool) = (s.clone().recipient(), pool.clone());
        actix_rt::spawn(async move {
            read_charged(&s, hash, &pool, false, Duration::from_secs(10)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!reader.is_finished(), "no room: the read must wait");
    assert_eq!(bytes_read(&s).await, 0, "nothing read while waiting");
    drop(hog);
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the read did not go on once the room was free")
        .unwrap()
        .unwrap();
    assert_eq!(got.inner_buffer(), &data);
    assert_eq!(pool.available(), 56 << 10);
    drop(got);
    assert_eq!(pool.available(), 256 << 10);
}

#[actix_rt::test]
async fn read_charged_gives_up_after_its_wait() {
    let data = random(100 << 10);
    let hash = blake2sum(&data);
    let (_d, s) = store(DataBlock::Plain(data), hash).await;
    let pool = Pool::new("test", 128 << 10);
    let _hog = pool.charge(128 << 10).await.unwrap();
    let r = read_charged(
        &s.clone().recipient(),
        hash,
        &pool,
        false,
        Duration::from_millis(200),
    )
    .await;
    assert!(matches!(r, Err(StorageError::Budget { .. })), "{r:?}");
    assert_eq!(bytes_read(&s).await, 0);
}

#[actix_rt::test]
async fn a_compressed_copy_read_as_plain_is_charged_for_both_forms_then_for_its_plain_bytes() {
    let plain = Bytes::from("the quick brown fox ".repeat(30_000).into_bytes());
    let hash = blake2sum(&plain);
    let block = DataBlock::from_buffer(plain.clone(), Some(1));
    let stored = block.inner_buffer().len() as u64;
    assert!(block.is_compressed());
    let (_d, s) = store(block, hash).await;
    let cap = 2 << 20;
    let pool = Pool::new("test", cap);
    // Room for the plain bytes but not for both forms.
    let hog = pool.charge(cap - plain.len() as u64).await.unwrap();
    let r = s
        .send(ReadBlock {
            hash,
            charge: charged(&pool, true),
        })
        .await
        .unwrap();
    let want = stored + plain.len() as u64;
    assert!(
        matches!(r, Err(StorageError::OverBudget { needed, .. }) if needed == want),
        "{r:?}"
    );
    drop(hog);
    let got = read_charged(
        &s.clone().recipient(),
        hash,
        &pool,
        true,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(got, DataBlock::Plain(plain.clone()));
    assert_eq!(
        pool.available(),
        cap - (plain.len() as u64).div_ceil(KIB) * KIB,
        "shrunk to the plain bytes"
    );
    drop(got);
    assert_eq!(pool.available(), cap);
}
