//! StorageActor tests: start the actor in an actix System, talk to it only through
//! messages, and check the replies and the files it owns.

use super::*;
use crate::hash::blake2sum;

fn start(dir: &Path) -> Addr<StorageActor> {
    StorageActor::new(StorageConfig {
        data_dir: dir.to_path_buf(),
        data_fsync: true,
        capacity: None,
    })
    .expect("opening storage")
    .start()
}

#[actix_rt::test]
async fn writes_past_the_capacity_are_refused_and_accepted_again_after_deletes() {
    let d = tempfile::tempdir().unwrap();
    let a = StorageActor::new(StorageConfig {
        data_dir: d.path().to_path_buf(),
        data_fsync: false,
        capacity: Some(25_000),
    })
    .unwrap()
    .start();
    let (h1, _) = write(&a, &random(10_000), None).await;
    write(&a, &random(10_000), None).await;
    let third = VerifiedBlock::hash_plain(random(10_000), None);
    let h3 = third.hash();
    let r = a.send(WriteBlock::verified(third.clone())).await.unwrap();
    match r {
        Err(StorageError::DiskFull { path }) => assert_eq!(path, d.path()),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    let p = paths(d.path(), &h3);
    assert!(
        !p.plain.exists() && !p.zst.exists(),
        "no partial file may stay"
    );
    assert!(
        a.send(ReadBlock { hash: h1 }).await.unwrap().is_ok(),
        "reads keep working when full"
    );
    a.send(DeleteBlock { hash: h1 }).await.unwrap().unwrap();
    assert!(
        a.send(WriteBlock::verified(third)).await.unwrap().is_ok(),
        "writes succeed again once space is freed"
    );
}

fn random(n: usize) -> Bytes {
    Bytes::from((0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())
}

fn text(n: usize) -> Bytes {
    Bytes::from(
        "all work and no play makes jack a dull boy "
            .repeat(n / 40 + 1)
            .into_bytes()[..n]
            .to_vec(),
    )
}

async fn write(a: &Addr<StorageActor>, data: &Bytes, level: Option<i32>) -> (Hash, WriteOutcome) {
    let v = VerifiedBlock::hash_plain(data.clone(), level);
    let h = v.hash();
    let out = a
        .send(WriteBlock::new(h, v.into_data()))
        .await
        .unwrap()
        .unwrap();
    (h, out)
}

fn paths(dir: &Path, h: &Hash) -> BlockPaths {
    BlockPaths::new(dir, h)
}

#[actix_rt::test]
async fn write_then_read_round_trips_plain_and_compressed() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    for (data, level, compressed) in [
        (random(10_000), Some(1), false),
        (text(50_000), Some(1), true),
    ] {
        let (h, out) = write(&a, &data, level).await;
        assert_eq!(out, WriteOutcome::Written);
        let p = paths(d.path(), &h);
        assert_eq!(
            p.zst.is_file(),
            compressed,
            "compressed copy should be stored as .zst"
        );
        assert_eq!(p.plain.is_file(), !compressed);
        let back = a.send(ReadBlock { hash: h }).await.unwrap().unwrap();
        assert_eq!(back.verify_get(&h).unwrap(), data, "read bytes differ");
        assert!(a.send(BlockExists { hash: h }).await.unwrap().unwrap());
    }
    let s = a.send(GetStorageStats).await.unwrap();
    assert_eq!(s.blocks, 2);
    assert!(s.bytes > 0 && s.bytes_written == s.bytes && s.bytes_read == s.bytes);
}

#[actix_rt::test]
async fn existing_copy_makes_a_write_a_no_op_and_compressed_replaces_plain() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    let data = text(20_000);
    let (h, first) = write(&a, &data, None).await;
    assert_eq!(first, WriteOutcome::Written);
    let (_, again) = write(&a, &data, None).await;
    assert_eq!(again, WriteOutcome::AlreadyPresent);
    let (_, replaced) = write(&a, &data, Some(3)).await;
    assert_eq!(replaced, WriteOutcome::ReplacedPlain);
    let p = paths(d.path(), &h);
    assert!(
        p.zst.is_file() && !p.plain.exists(),
        "plain copy should be gone"
    );
    // A plain copy never replaces a compressed one.
    let (_, plain_after) = write(&a, &data, None).await;
    assert_eq!(plain_after, WriteOutcome::AlreadyPresent);
    assert_eq!(a.send(GetStorageStats).await.unwrap().blocks, 1);
}

#[actix_rt::test]
async fn mismatched_data_is_refused_and_nothing_written() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    let h = blake2sum(b"the real content");
    let r = a
        .send(WriteBlock::new(
            h,
            DataBlock::Plain(Bytes::from_static(b"forged content")),
        ))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(StorageError::CorruptData { .. })),
        "got {r:?}"
    );
    let p = paths(d.path(), &h);
    assert!(
        !p.plain.exists() && !p.zst.exists(),
        "nothing may be written"
    );
    assert!(!a.send(BlockExists { hash: h }).await.unwrap().unwrap());
}

#[actix_rt::test]
async fn flipped_byte_is_detected_and_quarantined() {
    for (data, level) in [(random(4096), None), (text(40_000), Some(1))] {
        let d = tempfile::tempdir().unwrap();
        let a = start(d.path());
        let (h, _) = write(&a, &data, level).await;
        let p = paths(d.path(), &h);
        let file = if p.zst.exists() {
            p.zst.clone()
        } else {
            p.plain.clone()
        };
        let mut bytes = fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&file, &bytes).unwrap();
        let r = a.send(ReadBlock { hash: h }).await.unwrap();
        match r {
            Err(StorageError::Corrupted { quarantined, .. }) => {
                assert!(quarantined.is_file(), "quarantined copy must be kept");
                assert!(quarantined.to_string_lossy().ends_with(".corrupted"));
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
        assert!(!file.exists(), "the rotten file must leave its name");
        assert!(!a.send(BlockExists { hash: h }).await.unwrap().unwrap());
        let s = a.send(GetStorageStats).await.unwrap();
        assert_eq!((s.corruptions_found, s.blocks), (1, 0));
        // A good copy can be written again after quarantine.
        let (_, out) = write(&a, &data, level).await;
        assert_eq!(out, WriteOutcome::Written);
    }
}

#[actix_rt::test]
async fn odd_files_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    // Zero-length file: valid only for the empty block.
    let (empty, _) = write(&a, &Bytes::new(), None).await;
    assert!(
        a.send(ReadBlock { hash: empty }).await.unwrap().is_ok(),
        "the empty block is valid"
    );
    let h = blake2sum(b"zero");
    let p = paths(d.path(), &h);
    fs::create_dir_all(&p.dir).unwrap();
    fs::write(&p.plain, b"").unwrap();
    let r = a.send(ReadBlock { hash: h }).await.unwrap();
    assert!(
        matches!(r, Err(StorageError::Corrupted { .. })),
        "zero-length file: {r:?}"
    );
    // A directory where a block file should be.
    let h2 = blake2sum(b"dir");
    let p2 = paths(d.path(), &h2);
    fs::create_dir_all(&p2.plain).unwrap();
    let r = a.send(ReadBlock { hash: h2 }).await.unwrap();
    assert!(
        matches!(r, Err(StorageError::Corrupted { .. })),
        "directory in place of a file: {r:?}"
    );
    assert!(!p2.plain.exists());
    // An unreadable file: an I/O error naming the path (root can read anything, so
    // only check the error when the permission really bites).
    let data = random(100);
    let (h3, _) = write(&a, &data, None).await;
    let p3 = paths(d.path(), &h3);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p3.plain, fs::Permissions::from_mode(0o000)).unwrap();
    let bites = fs::File::open(&p3.plain).is_err();
    let r = a.send(ReadBlock { hash: h3 }).await.unwrap();
    if bites {
        assert!(
            matches!(r, Err(StorageError::Io { .. })),
            "unreadable file: {r:?}"
        );
        assert!(p3.plain.exists(), "an unreadable file is not quarantined");
    } else {
        assert!(r.is_ok());
    }
}

#[actix_rt::test]
async fn delete_removes_every_copy() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    let (h, _) = write(&a, &text(10_000), Some(1)).await;
    assert!(a.send(DeleteBlock { hash: h }).await.unwrap().unwrap());
    assert!(
        !a.send(DeleteBlock { hash: h }).await.unwrap().unwrap(),
        "second delete finds nothing"
    );
    let p = paths(d.path(), &h);
    assert!(!p.plain.exists() && !p.zst.exists());
    assert!(matches!(
        a.send(ReadBlock { hash: h }).await.unwrap(),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(a.send(GetStorageStats).await.unwrap().blocks, 0);
}

#[actix_rt::test]
async fn list_blocks_pages_through_everything_in_order() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    let mut want = Vec::new();
    for i in 0..300u32 {
        let (h, _) = write(&a, &Bytes::from(i.to_be_bytes().to_vec()), None).await;
        want.push(h);
    }
    // Noise that must not be listed.
    let p = paths(d.path(), &want[0]);
    fs::write(p.dir.join("notes.txt"), b"x").unwrap();
    fs::write(format!("{}.corrupted", p.plain.display()), b"x").unwrap();
    want.sort();
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = a
            .send(ListBlocks { after, limit: 7 })
            .await
            .unwrap()
            .unwrap();
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        got.extend(page);
    }
    assert_eq!(got, want, "pages should list every block once, sorted");
}

#[actix_rt::test]
async fn stale_temp_files_are_removed_at_start_and_state_survives_restart() {
    let d = tempfile::tempdir().unwrap();
    let data = random(5000);
    let h = {
        let a = start(d.path());
        write(&a, &data, None).await.0
    };
    let p = paths(d.path(), &h);
    let stale = p.dir.join(format!("{}.tmp.0123456789abcdef", h.to_hex()));
    fs::write(&stale, b"half a block").unwrap();
    let a = start(d.path());
    assert!(
        !stale.exists(),
        "stale temp file should be removed at start"
    );
    assert_eq!(a.send(GetStorageStats).await.unwrap().blocks, 1);
    let back = a.send(ReadBlock { hash: h }).await.unwrap().unwrap();
    assert_eq!(back.verify_get(&h).unwrap(), data);
}

#[actix_rt::test]
async fn concurrent_writes_of_same_and_different_hashes_succeed() {
    let d = tempfile::tempdir().unwrap();
    let a = start(d.path());
    let same = random(20_000);
    let v = VerifiedBlock::hash_plain(same.clone(), None);
    let mut futs = Vec::new();
    for i in 0..50u32 {
        let msg = if i % 2 == 0 {
            WriteBlock::verified(v.clone())
        } else {
            WriteBlock::verified(VerifiedBlock::hash_plain(
                Bytes::from(i.to_le_bytes().to_vec()),
                None,
            ))
        };
        futs.push(a.send(msg));
    }
    let res = futures::future::join_all(futs).await;
    let written = res
        .iter()
        .filter(|r| matches!(r, Ok(Ok(WriteOutcome::Written))))
        .count();
    assert!(
        res.iter().all(|r| matches!(r, Ok(Ok(_)))),
        "every write should succeed"
    );
    assert_eq!(
        written, 26,
        "the same block is written once, the 25 others once each"
    );
    assert_eq!(a.send(GetStorageStats).await.unwrap().blocks, 26);
}

/// Storage write throughput vs a plain loop doing the same fsyncs, in the same run.
/// `cargo test --release -p blocknode-actors storage_write_bench -- --ignored --nocapture`
#[actix_rt::test]
#[ignore]
async fn storage_write_bench() {
    let n: usize = 256;
    let blocks: Vec<VerifiedBlock> = (0..n)
        .map(|_| VerifiedBlock::hash_plain(random(1 << 20), None))
        .collect();
    let mib = n as f64;
    for conc in [1usize, 16] {
        let base = tempfile::tempdir_in(".").unwrap();
        let t = std::time::Instant::now();
        let bufs: Vec<_> = blocks
            .iter()
            .map(|b| (b.hash(), b.data().inner_buffer().clone()))
            .collect();
        let chunks: Vec<Vec<_>> = bufs.chunks(n.div_ceil(conc)).map(|c| c.to_vec()).collect();
        let root = base.path().to_path_buf();
        std::thread::scope(|s| {
            for chunk in chunks {
                let root = root.clone();
                s.spawn(move || {
                    for (h, b) in chunk {
                        let p = BlockPaths::new(&root, &h);
                        fs::create_dir_all(&p.dir).unwrap();
                        write_atomic(&p.plain, &[&b], true).unwrap();
                    }
                });
            }
        });
        let raw = mib / t.elapsed().as_secs_f64();
        let d = tempfile::tempdir_in(".").unwrap();
        let a = start(d.path());
        let t = std::time::Instant::now();
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut it = blocks.iter().cloned();
        use futures::StreamExt;
        for b in it.by_ref().take(conc) {
            pending.push(a.send(WriteBlock::verified(b)));
        }
        while let Some(r) = pending.next().await {
            r.unwrap().unwrap();
            if let Some(b) = it.next() {
                pending.push(a.send(WriteBlock::verified(b)));
            }
        }
        let actor = mib / t.elapsed().as_secs_f64();
        println!(
            "concurrency {conc}: StorageActor {actor:.0} MiB/s, plain loop {raw:.0} MiB/s, ratio {:.2}",
            actor / raw
        );
    }
}
