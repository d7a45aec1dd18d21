//! StorageActor through its messages: replies, and the files they leave on disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use futures::future::join_all;

use super::*;
use crate::block::VerifiedBlock;
use crate::hash::blake2sum;

/// Bound on any single exchange with the actor (fsync on a busy VM can be slow).
const STEP: Duration = Duration::from_secs(30);

fn start(dir: &Path, fsync: bool) -> Addr<StorageActor> {
    StorageActor::new(StorageConfig::one_dir(dir.to_path_buf(), fsync, None))
        .expect("storage actor should start on a fresh or existing directory")
        .start()
}

/// A GC delete decided now, after every write the test has awaited: its look is opened
/// (and left open) first, as resync does.
async fn gc_delete(s: &Addr<StorageActor>, hash: Hash) -> DeleteIfUnwritten {
    let look = ask(s, OpenGcLook { hash }).await.expect("look opens");
    DeleteIfUnwritten {
        hash,
        since: look.since,
    }
}

async fn ask<M>(addr: &Addr<StorageActor>, m: M) -> M::Result
where
    M: Message + Send + 'static,
    M::Result: Send,
    StorageActor: Handler<M>,
{
    tokio::time::timeout(STEP, addr.send(m))
        .await
        .expect("storage actor did not answer in time")
        .expect("storage actor mailbox closed")
}

fn text(n: usize) -> Bytes {
    Bytes::from(
        "the quick brown fox jumps over the lazy dog "
            .repeat(n / 44 + 1)
            .into_bytes()[..n]
            .to_vec(),
    )
}

fn random(n: usize) -> Bytes {
    Bytes::from((0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())
}

fn plain_block(data: Bytes) -> (Hash, DataBlock) {
    (blake2sum(&data), DataBlock::Plain(data))
}

fn compressed_block(data: Bytes) -> (Hash, DataBlock) {
    let b = DataBlock::from_buffer(data.clone(), Some(1));
    assert!(b.is_compressed(), "test data should compress");
    (blake2sum(&data), b)
}

fn block_path(dir: &Path, hash: &Hash, zst: bool) -> PathBuf {
    let b = hash.as_bytes();
    let name = if zst {
        format!("{}.zst", hash.to_hex())
    } else {
        hash.to_hex()
    };
    dir.join(format!("{:02x}", b[0]))
        .join(format!("{:02x}", b[1]))
        .join(name)
}

/// Every regular file under `dir`, relative and sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn flip_byte(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    fs::write(path, b).unwrap();
}

#[actix_rt::test]
async fn write_then_read_round_trips_a_plain_block() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let (h, b) = plain_block(random(10_000));
    let out = ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    assert_eq!(out, WriteOutcome::Written);
    assert_eq!(
        fs::read(block_path(d.path(), &h, false)).unwrap(),
        b.inner_buffer()[..],
        "plain file should hold the block's bytes"
    );
    assert!(ask(&s, BlockExists { hash: h }).await.unwrap());
    let back = ask(&s, ReadBlock::uncharged(h)).await.unwrap();
    assert_eq!(back, b, "read should return what was written");
    let st = counted(&s).await;
    assert_eq!((st.blocks, st.bytes), (1, 10_000));
    assert_eq!((st.bytes_written, st.bytes_read), (10_000, 10_000));
}

#[actix_rt::test]
async fn write_then_read_round_trips_a_compressed_block_stored_as_is() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let (h, b) = compressed_block(text(100_000));
    let v = VerifiedBlock::verify(h, b.clone()).unwrap();
    let out = ask(&s, WriteBlock::verified(v)).await.unwrap();
    assert_eq!(out, WriteOutcome::Written);
    let zst = block_path(d.path(), &h, true);
    assert_eq!(fs::read(&zst).unwrap(), b.inner_buffer()[..]);
    assert!(!block_path(d.path(), &h, false).exists(), "no plain copy");
    let back = ask(&s, ReadBlock::uncharged(h)).await.unwrap();
    assert!(back.is_compressed(), "read should return the stored form");
    assert_eq!(back.verify_get(&h).unwrap(), text(100_000));
}

#[actix_rt::test]
async fn an_existing_copy_makes_a_write_a_no_op() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(5_000));
    assert_eq!(
        ask(&s, WriteBlock::new(h, b.clone())).await.unwrap(),
        WriteOutcome::Written
    );
    // A rewrite goes through a temp file and a rename: a new inode. (The mtime is
    // touched on purpose: it restarts the block's GC grace.)
    use std::os::unix::fs::MetadataExt;
    let before = fs::metadata(block_path(d.path(), &h, false)).unwrap().ino();
    assert_eq!(
        ask(&s, WriteBlock::new(h, b)).await.unwrap(),
        WriteOutcome::AlreadyPresent
    );
    let after = fs::metadata(block_path(d.path(), &h, false)).unwrap().ino();
    assert_eq!(
        before, after,
        "an existing plain copy must not be rewritten"
    );

    // A compressed copy wins over plain data too.
    let data = text(50_000);
    let (hc, bc) = compressed_block(data.clone());
    ask(&s, WriteBlock::new(hc, bc.clone())).await.unwrap();
    for again in [bc, DataBlock::Plain(data)] {
        assert_eq!(
            ask(&s, WriteBlock::new(hc, again)).await.unwrap(),
            WriteOutcome::AlreadyPresent
        );
    }
    assert!(!block_path(d.path(), &hc, false).exists());
    assert_eq!(counted(&s).await.blocks, 2);
}

#[actix_rt::test]
async fn a_compressed_write_replaces_a_plain_copy() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let data = text(80_000);
    let (h, comp) = compressed_block(data.clone());
    ask(&s, WriteBlock::new(h, DataBlock::Plain(data)))
        .await
        .unwrap();
    assert!(block_path(d.path(), &h, false).exists());
    let out = ask(&s, WriteBlock::new(h, comp.clone())).await.unwrap();
    assert_eq!(out, WriteOutcome::ReplacedPlain);
    assert!(
        !block_path(d.path(), &h, false).exists(),
        "plain copy should be gone"
    );
    assert!(block_path(d.path(), &h, true).exists());
    let st = counted(&s).await;
    assert_eq!(st.blocks, 1);
    assert_eq!(st.bytes, comp.inner_buffer().len() as u64);
    assert_eq!(ask(&s, ReadBlock::uncharged(h)).await.unwrap(), comp);
}

#[actix_rt::test]
async fn mismatched_data_is_refused_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let wrong = blake2sum(b"some other block");
    let r = ask(&s, WriteBlock::new(wrong, DataBlock::Plain(random(100)))).await;
    assert!(
        matches!(r, Err(StorageError::CorruptData { hash }) if hash == wrong),
        "plain mismatch should be CorruptData, got {r:?}"
    );
    let (_, comp) = compressed_block(text(10_000));
    let r = ask(&s, WriteBlock::new(wrong, comp)).await;
    assert!(
        matches!(r, Err(StorageError::CorruptData { .. })),
        "compressed mismatch should be CorruptData, got {r:?}"
    );
    let r = ask(
        &s,
        WriteBlock::new(
            wrong,
            DataBlock::Compressed(Bytes::from_static(b"not zstd")),
        ),
    )
    .await;
    assert!(matches!(r, Err(StorageError::CorruptData { .. })), "{r:?}");
    assert_eq!(
        files_under(d.path()),
        Vec::<String>::new(),
        "no file written"
    );
    let st = counted(&s).await;
    assert_eq!((st.blocks, st.bytes, st.bytes_written), (0, 0, 0), "{st:?}");
}

async fn assert_rot_is_quarantined(zst: bool) {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let (h, b) = if zst {
        compressed_block(text(60_000))
    } else {
        plain_block(random(60_000))
    };
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    let path = block_path(d.path(), &h, zst);
    assert!(
        checksum_attr(&path).is_some(),
        "the file should carry a stored checksum: this test is of a rotten file with one"
    );
    let corrupted = PathBuf::from(format!("{}.corrupted", path.display()));
    let corrupted1 = PathBuf::from(format!("{}.1.corrupted", path.display()));

    for (round, expected) in [(0, &corrupted), (1, &corrupted1)] {
        flip_byte(&path);
        let r = ask(&s, ReadBlock::uncharged(h)).await;
        match r {
            Err(StorageError::Corrupted { hash, quarantined }) => {
                assert_eq!(hash, h);
                assert_eq!(&quarantined, expected, "round {round}: quarantine name");
            }
            other => panic!("round {round}: expected Corrupted, got {other:?}"),
        }
        assert!(
            !path.exists(),
            "round {round}: rotten file still under its name"
        );
        assert!(expected.exists(), "round {round}: quarantined copy missing");
        assert!(matches!(
            ask(&s, ReadBlock::uncharged(h)).await,
            Err(StorageError::NotFound { .. })
        ));
        // A repair writes it back; the second rot must not overwrite the first quarantine.
        assert_eq!(
            ask(&s, WriteBlock::new(h, b.clone())).await.unwrap(),
            WriteOutcome::Written
        );
    }
    assert!(corrupted.exists(), "first quarantined copy must be kept");
    let st = counted(&s).await;
    assert_eq!(st.corruptions_found, 2);
    assert_eq!(st.blocks, 1, "only the rewritten copy counts");
    assert_eq!(st.bytes, b.inner_buffer().len() as u64);
}

#[actix_rt::test]
async fn a_flipped_byte_in_a_plain_file_is_quarantined_on_read() {
    assert_rot_is_quarantined(false).await;
}

#[actix_rt::test]
async fn a_flipped_byte_in_a_compressed_file_is_quarantined_on_read() {
    assert_rot_is_quarantined(true).await;
}

#[actix_rt::test]
async fn a_zero_length_file_is_valid_only_for_the_empty_block() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (empty, b) = plain_block(Bytes::new());
    assert_eq!(
        ask(&s, WriteBlock::new(empty, b)).await.unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        ask(&s, ReadBlock::uncharged(empty)).await.unwrap(),
        DataBlock::Plain(Bytes::new())
    );

    // A truncated plain file of a non-empty block, and an empty .zst of the empty block.
    let (h, b) = plain_block(random(1000));
    ask(&s, WriteBlock::new(h, b)).await.unwrap();
    fs::write(block_path(d.path(), &h, false), b"").unwrap();
    fs::write(block_path(d.path(), &empty, true), b"").unwrap();
    for hash in [h, empty] {
        let r = ask(&s, ReadBlock::uncharged(hash)).await;
        assert!(
            matches!(r, Err(StorageError::Corrupted { .. })),
            "empty file for {hash} should be Corrupted, got {r:?}"
        );
    }
    // The plain copy of the empty block is still there once its bad .zst is gone.
    assert!(ask(&s, ReadBlock::uncharged(empty)).await.is_ok());
}

#[actix_rt::test]
async fn a_directory_in_place_of_a_block_file_is_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let (h, b) = plain_block(random(300));
    let path = block_path(d.path(), &h, false);
    fs::create_dir_all(path.join("junk")).unwrap();
    assert!(!ask(&s, BlockExists { hash: h }).await.unwrap());
    let r = ask(&s, ReadBlock::uncharged(h)).await;
    assert!(
        matches!(&r, Err(StorageError::Corrupted { quarantined, .. })
            if quarantined.is_dir() && quarantined.ends_with(format!("{h}.corrupted"))),
        "expected the directory quarantined, got {r:?}"
    );
    assert!(!path.exists());
    // A write to a path blocked by a directory quarantines it and succeeds.
    fs::create_dir_all(&path).unwrap();
    assert_eq!(
        ask(&s, WriteBlock::new(h, b.clone())).await.unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(ask(&s, ReadBlock::uncharged(h)).await.unwrap(), b);
    assert_eq!(counted(&s).await.corruptions_found, 2);
}

#[actix_rt::test]
async fn an_unreadable_file_is_an_io_error_and_is_not_quarantined() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(300));
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    let path = block_path(d.path(), &h, false);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    let r = ask(&s, ReadBlock::uncharged(h)).await;
    if fs::read(&path).is_ok() {
        // Running as root: permissions do not stop reads, so the block reads fine.
        assert_eq!(r.unwrap(), b, "root reads the block despite mode 000");
    } else {
        assert!(
            matches!(&r, Err(StorageError::Io { path: p, .. }) if *p == path),
            "expected an Io error naming {}, got {r:?}",
            path.display()
        );
        assert!(path.exists(), "an unreadable file must not be quarantined");
        assert_eq!(counted(&s).await.corruptions_found, 0);
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
}

#[actix_rt::test]
async fn a_file_in_place_of_a_block_directory_gives_io_errors_naming_the_path() {
    // Unlike mode 000, this fails for root too.
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(300));
    let top = d.path().join(format!("{:02x}", h.as_bytes()[0]));
    fs::write(&top, b"in the way").unwrap();
    let r = ask(&s, ReadBlock::uncharged(h)).await;
    assert!(
        matches!(&r, Err(StorageError::Io { path, .. }) if path.starts_with(&top)),
        "read: {r:?}"
    );
    let r = ask(&s, WriteBlock::new(h, b)).await;
    assert!(
        matches!(&r, Err(StorageError::Io { path, .. }) if path.starts_with(&top)),
        "write: {r:?}"
    );
    assert!(ask(&s, BlockExists { hash: h }).await.is_err());
    assert_eq!(fs::read(&top).unwrap(), b"in the way");
}

#[actix_rt::test]
async fn delete_removes_both_copies_and_reports_whether_one_existed() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let data = text(40_000);
    let (h, comp) = compressed_block(data.clone());
    ask(&s, WriteBlock::new(h, comp)).await.unwrap();
    // A crash between writing the .zst and removing the plain file leaves both.
    fs::write(block_path(d.path(), &h, false), &data).unwrap();
    assert_eq!(
        ask(&s, gc_delete(&s, h).await).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(!block_path(d.path(), &h, false).exists());
    assert!(!block_path(d.path(), &h, true).exists());
    assert_eq!(
        ask(&s, gc_delete(&s, h).await).await.unwrap(),
        DeleteOutcome::Absent,
        "second delete finds nothing"
    );
    assert!(!ask(&s, BlockExists { hash: h }).await.unwrap());
    assert!(matches!(
        ask(&s, ReadBlock::uncharged(h)).await,
        Err(StorageError::NotFound { hash }) if hash == h
    ));
    let st = counted(&s).await;
    assert_eq!((st.blocks, st.bytes), (0, 0), "stats after delete: {st:?}");
}

#[actix_rt::test]
async fn list_blocks_pages_through_300_blocks_in_order_without_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let writes: Vec<_> = (0..300)
        .map(|_| {
            let (h, b) = plain_block(random(16));
            (h, s.send(WriteBlock::new(h, b)))
        })
        .collect();
    let mut expected = Vec::new();
    for (h, w) in writes {
        w.await.unwrap().unwrap();
        expected.push(h);
    }
    expected.sort();

    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = ask(&s, ListBlocks { after, limit: 7 }).await.unwrap();
        assert!(page.len() <= 7, "page longer than its limit");
        match page.last() {
            Some(last) => after = Some(*last),
            None => break,
        }
        got.extend(page);
    }
    assert_eq!(got, expected, "pages should list every block once, sorted");
    assert!(ask(
        &s,
        ListBlocks {
            after: None,
            limit: 0
        }
    )
    .await
    .unwrap()
    .is_empty());
}

#[actix_rt::test]
async fn list_blocks_skips_temp_quarantined_and_foreign_names() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let data = text(30_000);
    let (h, comp) = compressed_block(data.clone());
    ask(&s, WriteBlock::new(h, comp)).await.unwrap();
    let dir = block_path(d.path(), &h, false)
        .parent()
        .unwrap()
        .to_path_buf();
    fs::write(block_path(d.path(), &h, false), &data).unwrap();
    let other = blake2sum(b"not stored");
    for name in [
        format!("{other}.tmp.0123456789abcdef"),
        format!("{other}.corrupted"),
        other.to_hex().to_uppercase(),
        "README".to_string(),
    ] {
        fs::write(dir.join(name), b"x").unwrap();
    }
    // A valid name in the wrong directory cannot be read, so it is not listed either.
    fs::write(dir.join(other.to_hex()), b"x").unwrap();
    let all = ask(
        &s,
        ListBlocks {
            after: None,
            limit: 100,
        },
    )
    .await
    .unwrap();
    assert_eq!(all, vec![h], "only the real block, once");
}

#[test]
fn stale_temp_files_are_removed_at_start_and_blocks_counted() {
    let d = tempfile::tempdir().unwrap();
    let (h, b) = plain_block(random(1234));
    let path = block_path(d.path(), &h, false);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b.inner_buffer()).unwrap();
    let temp = PathBuf::from(format!("{}.tmp.00000000deadbeef", path.display()));
    let corrupted = PathBuf::from(format!("{}.corrupted", path.display()));
    fs::write(&temp, b"half a block").unwrap();
    fs::write(&corrupted, b"rotten").unwrap();
    let top_temp = d.path().join("aa.tmp.0000000000000001");
    fs::write(&top_temp, b"x").unwrap();

    // A temp file of this run (a write in progress) must survive the sweep.
    let live = PathBuf::from(format!(
        "{}.tmp.{:08x}00000001",
        path.display(),
        crate::fsutil::run_tag()
    ));
    fs::write(&live, b"being written").unwrap();

    let actor =
        StorageActor::new(StorageConfig::one_dir(d.path().to_path_buf(), false, None)).unwrap();
    System::new().block_on(async move {
        let s = actor.start();
        let st = counted(&s).await;
        assert_eq!((st.blocks, st.bytes), (1, 1234), "startup count: {st:?}");
    });
    assert!(!temp.exists(), "stale temp file should be removed");
    assert!(!top_temp.exists(), "stale temp file should be removed");
    assert!(live.exists(), "this run's temp files are not stale");
    assert!(corrupted.exists(), "quarantined copies are kept");
    assert!(path.exists());
}

/// The stats once the start-up count is done (bounded: 10 s).
async fn counted(s: &Addr<StorageActor>) -> StorageStats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = ask(s, GetStorageStats).await;
        if !st.counting {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "start-up count not done after 10 s: {st:?}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[test]
fn blocks_persist_across_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let (hp, bp) = plain_block(random(777));
    let (hc, bc) = compressed_block(text(9_000));
    let (hd, bd) = plain_block(random(10));
    let (bp2, bc2) = (bp.clone(), bc.clone());
    let dir2 = dir.clone();
    std::thread::spawn(move || {
        System::new().block_on(async move {
            let s = start(&dir2, true);
            for (h, b) in [(hp, bp2), (hc, bc2), (hd, bd)] {
                ask(&s, WriteBlock::new(h, b)).await.unwrap();
            }
            assert_eq!(
                ask(&s, gc_delete(&s, hd).await).await.unwrap(),
                DeleteOutcome::Deleted
            );
        })
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        System::new().block_on(async move {
            let s = start(&dir, true);
            assert_eq!(ask(&s, ReadBlock::uncharged(hp)).await.unwrap(), bp);
            assert_eq!(ask(&s, ReadBlock::uncharged(hc)).await.unwrap(), bc);
            assert!(!ask(&s, BlockExists { hash: hd }).await.unwrap());
            let mut want = vec![hp, hc];
            want.sort();
            let listed = ask(
                &s,
                ListBlocks {
                    after: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
            assert_eq!(listed, want);
            let st = counted(&s).await;
            assert_eq!(st.blocks, 2, "blocks counted again after restart");
            assert_eq!(
                st.bytes,
                (bp.inner_buffer().len() + bc.inner_buffer().len()) as u64
            );
        })
    })
    .join()
    .unwrap();
}

#[actix_rt::test]
async fn concurrent_writes_of_one_hash_and_of_many_hashes_all_succeed() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    let data = text(64_000);
    let (h, comp) = compressed_block(data.clone());
    // Half plain, half compressed, all at once, on one hash.
    let same = join_all((0..50).map(|i| {
        let b = if i % 2 == 0 {
            DataBlock::Plain(data.clone())
        } else {
            comp.clone()
        };
        s.send(WriteBlock::new(h, b))
    }));
    let outcomes: Vec<WriteOutcome> = tokio::time::timeout(STEP, same)
        .await
        .expect("50 writes of one hash timed out")
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let written = outcomes
        .iter()
        .filter(|o| **o == WriteOutcome::Written)
        .count();
    assert_eq!(
        written, 1,
        "exactly one write creates the block: {outcomes:?}"
    );
    assert!(block_path(d.path(), &h, true).exists());
    assert!(
        !block_path(d.path(), &h, false).exists(),
        "compressed wins in the end"
    );

    let blocks: Vec<_> = (0..50).map(|_| plain_block(random(4096))).collect();
    let many = join_all(
        blocks
            .iter()
            .map(|(h, b)| s.send(WriteBlock::new(*h, b.clone()))),
    );
    for r in tokio::time::timeout(STEP, many)
        .await
        .expect("50 writes of different hashes timed out")
    {
        assert_eq!(r.unwrap().unwrap(), WriteOutcome::Written);
    }
    let reads = join_all(blocks.iter().map(|(h, _)| s.send(ReadBlock::uncharged(*h))));
    for (r, (_, b)) in tokio::time::timeout(STEP, reads)
        .await
        .unwrap()
        .into_iter()
        .zip(&blocks)
    {
        assert_eq!(&r.unwrap().unwrap(), b);
    }
    let st = counted(&s).await;
    assert_eq!(st.blocks, 51);
    assert_eq!(st.bytes, comp.inner_buffer().len() as u64 + 50 * 4096);
}

#[actix_rt::test]
async fn operations_on_one_hash_run_in_the_order_they_were_sent() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(2048));
    // Sent without waiting: write, delete, exists, write, read must see that order.
    ask(&s, OpenGcLook { hash: h }).await.unwrap();
    let w1 = s.send(WriteBlock::new(h, b.clone()));
    // A GC decision taken after this test's first write (an instant later than it).
    let del = s.send(DeleteIfUnwritten {
        hash: h,
        since: Instant::now() + Duration::from_secs(60),
    });
    let ex = s.send(BlockExists { hash: h });
    let w2 = s.send(WriteBlock::new(h, b.clone()));
    let rd = s.send(ReadBlock::uncharged(h));
    let (w1, del, ex, w2, rd) =
        tokio::time::timeout(STEP, futures::future::join5(w1, del, ex, w2, rd))
            .await
            .unwrap();
    assert_eq!(w1.unwrap().unwrap(), WriteOutcome::Written);
    assert_eq!(
        del.unwrap().unwrap(),
        DeleteOutcome::Deleted,
        "delete after write finds the block"
    );
    assert!(!ex.unwrap().unwrap(), "exists after delete is false");
    assert_eq!(w2.unwrap().unwrap(), WriteOutcome::Written);
    assert_eq!(rd.unwrap().unwrap(), b);
}

/// Needs a small filesystem: `mount -t tmpfs -o size=1m tmpfs /mnt/full`, then
/// `BLOCKNODE_FULL_DIR=/mnt/full cargo test -p blocknode-actors disk_full -- --ignored`.
#[actix_rt::test]
#[ignore = "needs BLOCKNODE_FULL_DIR on a filesystem smaller than 2 MiB"]
async fn a_full_disk_is_reported_and_leaves_no_partial_file() {
    let dir = PathBuf::from(
        std::env::var("BLOCKNODE_FULL_DIR").expect("set BLOCKNODE_FULL_DIR to a small fs"),
    );
    let d = tempfile::tempdir_in(&dir).unwrap();
    let s = start(d.path(), true);
    let (h, b) = plain_block(random(2 << 20));
    let r = ask(&s, WriteBlock::new(h, b)).await;
    assert!(
        matches!(&r, Err(StorageError::DiskFull { path }) if *path == block_path(d.path(), &h, false)),
        "expected DiskFull naming the block path, got {r:?}"
    );
    assert_eq!(
        files_under(d.path()),
        Vec::<String>::new(),
        "no partial file"
    );
    assert_eq!(counted(&s).await.blocks, 0);
    // The node keeps working once space is back.
    let (h2, b2) = plain_block(random(1000));
    assert_eq!(
        ask(&s, WriteBlock::new(h2, b2)).await.unwrap(),
        WriteOutcome::Written
    );
}

#[actix_rt::test]
async fn writes_past_the_capacity_are_refused_and_accepted_again_after_deletes() {
    let d = tempfile::tempdir().unwrap();
    let a = StorageActor::new(StorageConfig::one_dir(
        d.path().to_path_buf(),
        false,
        Some(25_000),
    ))
    .unwrap()
    .start();
    // The quota is checked against the counted bytes: wait for the start-up count.
    counted(&a).await;
    let mk = |seed: u8| {
        let data: Vec<u8> = (0..10_000u32)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect();
        crate::block::VerifiedBlock::hash_plain(bytes::Bytes::from(data), None)
    };
    let (b1, b2, b3) = (mk(3), mk(5), mk(7));
    let h1 = b1.hash();
    a.send(WriteBlock::verified(b1)).await.unwrap().unwrap();
    a.send(WriteBlock::verified(b2)).await.unwrap().unwrap();
    let h3 = b3.hash();
    match a.send(WriteBlock::verified(b3.clone())).await.unwrap() {
        Err(StorageError::DiskFull { path }) => assert_eq!(path, d.path()),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(
        !a.send(BlockExists { hash: h3 }).await.unwrap().unwrap(),
        "no partial file may stay"
    );
    assert!(
        a.send(ReadBlock::uncharged(h1)).await.unwrap().is_ok(),
        "reads keep working when full"
    );
    a.send(gc_delete(&a, h1).await).await.unwrap().unwrap();
    assert!(
        a.send(WriteBlock::verified(b3)).await.unwrap().is_ok(),
        "writes succeed again once space is freed"
    );
}

/// Blocks and bytes of the block files under `dir`, counted from scratch.
fn recount(dir: &Path) -> (u64, u64) {
    let mut hashes = std::collections::HashSet::new();
    let mut bytes = 0;
    for f in files_under(dir) {
        let name = Path::new(&f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let stem = name.strip_suffix(".zst").unwrap_or(&name);
        if stem.len() == 64 && !name.contains(".tmp.") {
            hashes.insert(stem.to_string());
            bytes += fs::metadata(dir.join(&f)).unwrap().len();
        }
    }
    (hashes.len() as u64, bytes)
}

/// The start-up count runs while writes, rewrites, compressed replacements, deletes and
/// reads land at random points of its walk (a pause between directories widens the
/// window): once it is done, the counts equal a recount from scratch, every round.
#[test]
fn the_startup_count_is_exact_while_operations_run() {
    for round in 0..6u64 {
        let d = tempfile::tempdir().unwrap();
        // A tree made before the start, as a previous run left it.
        let before: Vec<(Hash, DataBlock)> = (0..300).map(|_| plain_block(random(3000))).collect();
        for (h, b) in &before {
            let p = block_path(d.path(), h, false);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b.inner_buffer()).unwrap();
        }
        let dir = d.path().to_path_buf();
        System::new().block_on(async move {
            let s = StorageActor::new(StorageConfig::one_dir(dir.clone(), false, None))
                .unwrap()
                .with_census_pause(Duration::from_micros(200 * (round + 1)))
                .start();
            let mut ops = Vec::new();
            for i in 0..400usize {
                let pick = rand::random::<u32>() as usize % before.len();
                let (h, b) = before[pick].clone();
                let s = s.clone();
                let jitter = Duration::from_micros(rand::random::<u64>() % 60_000);
                ops.push(async move {
                    actix_rt::time::sleep(jitter).await;
                    match i % 5 {
                        0 => {
                            let (nh, nb) = plain_block(random(1000 + i));
                            ask(&s, WriteBlock::new(nh, nb)).await.map(|_| ())
                        }
                        1 => ask(&s, gc_delete(&s, h).await).await.map(|_| ()),
                        2 => ask(&s, WriteBlock::new(h, b)).await.map(|_| ()),
                        3 => {
                            let (ch, cb) = compressed_block(text(2000 + i));
                            ask(&s, WriteBlock::new(ch, cb)).await.map(|_| ())
                        }
                        _ => ask(&s, ReadBlock::uncharged(h))
                            .await
                            .map(|_| ())
                            .or(Ok(())),
                    }
                });
            }
            for r in join_all(ops).await {
                r.expect("every operation should succeed");
            }
            let st = counted(&s).await;
            assert_eq!(
                (st.blocks, st.bytes),
                recount(&dir),
                "round {round}: counts after a count that ran beside 400 operations"
            );
        });
    }
}

#[actix_rt::test]
async fn a_gc_delete_is_refused_after_a_write_even_one_that_found_the_block_present() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(4096));
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    let since = ask(&s, OpenGcLook { hash: h }).await.unwrap().since;
    // A dedup client re-uploads the same bytes after the GC decision.
    assert_eq!(
        ask(&s, WriteBlock::new(h, b.clone())).await.unwrap(),
        WriteOutcome::AlreadyPresent
    );
    assert_eq!(
        ask(&s, DeleteIfUnwritten { hash: h, since }).await.unwrap(),
        DeleteOutcome::WrittenSince,
        "an AlreadyPresent write after the decision must stop the delete"
    );
    assert!(ask(&s, BlockExists { hash: h }).await.unwrap());
    // A write queued on the lane just before the delete runs first and counts.
    let since = ask(&s, OpenGcLook { hash: h }).await.unwrap().since;
    let w = s.send(WriteBlock::new(h, b.clone()));
    let del = s.send(DeleteIfUnwritten { hash: h, since });
    let (w, del) = futures::future::join(w, del).await;
    assert_eq!(w.unwrap().unwrap(), WriteOutcome::AlreadyPresent);
    assert_eq!(
        del.unwrap().unwrap(),
        DeleteOutcome::WrittenSince,
        "a write queued on the lane before the delete must stop it"
    );
    // A decision taken after every write: the delete goes ahead.
    assert_eq!(
        ask(&s, gc_delete(&s, h).await).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(!ask(&s, BlockExists { hash: h }).await.unwrap());
}

#[actix_rt::test]
async fn a_delete_decided_before_the_actor_started_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let since = Instant::now();
    let (h, b) = plain_block(random(100));
    fs::create_dir_all(block_path(d.path(), &h, false).parent().unwrap()).unwrap();
    fs::write(block_path(d.path(), &h, false), b.inner_buffer().as_ref()).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let s = start(d.path(), false);
    assert_eq!(
        ask(&s, DeleteIfUnwritten { hash: h, since }).await.unwrap(),
        DeleteOutcome::WrittenSince,
        "the actor cannot know the writes before its start, so it must refuse"
    );
    assert!(block_path(d.path(), &h, false).exists());
}

#[actix_rt::test]
async fn a_write_that_finds_the_block_present_restarts_its_file_age() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(512));
    assert_eq!(ask(&s, StatBlock { hash: h }).await.unwrap(), None);
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(block_path(d.path(), &h, false))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let stat = ask(&s, StatBlock { hash: h }).await.unwrap().unwrap();
    let now = crate::rc::now_msec();
    assert!(
        now - stat >= 7_100_000,
        "StatBlock must give the file's mtime, got {stat} at {now}"
    );
    ask(&s, WriteBlock::new(h, b)).await.unwrap();
    let stat = ask(&s, StatBlock { hash: h }).await.unwrap().unwrap();
    assert!(
        crate::rc::now_msec().saturating_sub(stat) < 60_000,
        "an AlreadyPresent write must touch the file (mtime {stat})"
    );
}

#[actix_rt::test]
async fn block_length_answers_plain_size_without_reading_the_data() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (hp, bp) = plain_block(random(10_000));
    let (hc, bc) = compressed_block(text(200_000));
    ask(&s, WriteBlock::new(hp, bp)).await.unwrap();
    ask(&s, WriteBlock::new(hc, bc)).await.unwrap();
    assert_eq!(
        ask(&s, BlockLength { hash: hp }).await.unwrap(),
        Some(10_000)
    );
    assert_eq!(
        ask(&s, BlockLength { hash: hc }).await.unwrap(),
        Some(200_000),
        "a compressed copy should report its plain length"
    );
    let absent = blake2sum(b"never written");
    assert_eq!(ask(&s, BlockLength { hash: absent }).await.unwrap(), None);
    // Only the header is read: a copy rotten past it still answers (HEAD does not
    // verify), and no byte counts as read from disk.
    flip_byte(&block_path(d.path(), &hc, true));
    assert_eq!(
        ask(&s, BlockLength { hash: hc }).await.unwrap(),
        Some(200_000)
    );
    let stats = ask(&s, GetStorageStats).await;
    assert_eq!(stats.bytes_read, 0, "BlockLength should read no block data");
}

#[actix_rt::test]
async fn a_cached_small_block_read_sent_behind_a_delete_waits_for_it() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let (h, b) = plain_block(random(4096));
    ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
    // Its entries and bytes are now in the kernel's caches: with no job on its lane, a
    // read is answered on the actor's thread (disk/nowait.rs), and must still be right.
    assert_eq!(ask(&s, ReadBlock::uncharged(h)).await.unwrap(), b);
    assert_eq!(ask(&s, ReadBlock::uncharged(h)).await.unwrap(), b);
    // Sent without waiting: the delete holds the lane, so the read queues behind it
    // instead of answering from the cached copy the delete is about to remove.
    let del = s.send(gc_delete(&s, h).await);
    let rd = s.send(ReadBlock::uncharged(h));
    let (del, rd) = tokio::time::timeout(STEP, futures::future::join(del, rd))
        .await
        .expect("storage actor did not answer in time");
    assert_eq!(del.unwrap().unwrap(), DeleteOutcome::Deleted);
    assert!(
        matches!(rd.unwrap(), Err(StorageError::NotFound { .. })),
        "a read sent after a delete must not see the deleted copy"
    );
    let st = counted(&s).await;
    assert_eq!(
        st.bytes_read,
        2 * 4096,
        "both reads of the cached copy counted"
    );
}

// The stored checksum (checksum.rs): set on every write, trusted by reads when it
// matches, never the only judge of a copy it disagrees with.

fn c_path(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a test path has no NUL")
}

/// The checksum attribute of a file, `None` if it has none.
fn checksum_attr(path: &Path) -> Option<Vec<u8>> {
    let p = c_path(path);
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings and a buffer of the length passed, all outliving
    // the call.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            checksum::XATTR_NAME.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

fn set_checksum_attr(path: &Path, value: &[u8]) {
    let p = c_path(path);
    // SAFETY: NUL-terminated strings and a value of the length passed.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            checksum::XATTR_NAME.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn remove_checksum_attr(path: &Path) {
    let p = c_path(path);
    // SAFETY: NUL-terminated strings outliving the call.
    let rc = unsafe { libc::removexattr(p.as_ptr(), checksum::XATTR_NAME.as_ptr()) };
    assert_eq!(
        rc,
        0,
        "removexattr on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The attribute a sound copy of `hash` stored at `path` should carry.
fn expected_attr(path: &Path, hash: &Hash, zst: bool) -> Vec<u8> {
    checksum::value(hash, zst, &fs::read(path).unwrap()).to_vec()
}

/// A small block goes through the cached read on the actor's thread (disk/nowait.rs),
/// a large one through the lane: every checksum test runs on both.
const SMALL: usize = 4096;
const LARGE: usize = 60_000;

/// A block unlike any other; a compressed one is stored in a file of about `len` bytes
/// (random bytes, then text that zstd shrinks to almost nothing), so a large one takes
/// the lane too.
fn test_block(len: usize, zst: bool) -> (Hash, DataBlock) {
    if !zst {
        return plain_block(random(len));
    }
    let mut data = random(len).to_vec();
    data.extend_from_slice(&text(64 << 10));
    let (h, b) = compressed_block(Bytes::from(data));
    assert_eq!(
        b.inner_buffer().len() > 32 << 10,
        len > 32 << 10,
        "a {len}-byte compressed test block should stay on its side of the cached-read limit"
    );
    (h, b)
}

async fn assert_corrupted(s: &Addr<StorageActor>, h: Hash, what: &str) {
    let r = ask(s, ReadBlock::uncharged(h)).await;
    assert!(
        matches!(r, Err(StorageError::Corrupted { hash, .. }) if hash == h),
        "{what}: expected Corrupted, got {r:?}"
    );
}

#[actix_rt::test]
async fn every_written_block_file_carries_its_checksum() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), true);
    for (len, zst) in [(SMALL, false), (LARGE, false), (SMALL, true), (LARGE, true)] {
        let (h, b) = test_block(len, zst);
        ask(&s, WriteBlock::new(h, b)).await.unwrap();
        let path = block_path(d.path(), &h, zst);
        let got = checksum_attr(&path);
        assert_eq!(
            got.as_deref(),
            Some(&expected_attr(&path, &h, zst)[..]),
            "{len} bytes, compressed {zst}: the file's checksum attribute"
        );
    }
    // A compressed copy replacing a plain one gets its own.
    let data = text(LARGE + 1);
    let (h, comp) = compressed_block(data.clone());
    ask(&s, WriteBlock::new(h, DataBlock::Plain(data)))
        .await
        .unwrap();
    assert_eq!(
        ask(&s, WriteBlock::new(h, comp)).await.unwrap(),
        WriteOutcome::ReplacedPlain
    );
    let zst = block_path(d.path(), &h, true);
    assert_eq!(
        checksum_attr(&zst),
        Some(expected_attr(&zst, &h, true)),
        "the replacing .zst file's attribute"
    );
}

#[actix_rt::test]
async fn a_file_without_its_checksum_reads_by_blake2_and_rot_in_it_is_still_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    for (len, zst) in [(SMALL, false), (LARGE, false), (SMALL, true), (LARGE, true)] {
        let what = format!("{len} bytes, compressed {zst}");
        let (h, b) = test_block(len, zst);
        ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
        let path = block_path(d.path(), &h, zst);
        // As a file written before stored checksums.
        remove_checksum_attr(&path);
        assert_eq!(
            ask(&s, ReadBlock::uncharged(h)).await.unwrap(),
            b,
            "{what}: a sound file without the attribute reads"
        );
        // The lane's BLAKE2 read (scrub's) gives it back its attribute; a large block's
        // ordinary read already did.
        if len == SMALL {
            ask(&s, VerifyBlock { hash: h }).await.unwrap();
        }
        assert_eq!(
            checksum_attr(&path),
            Some(expected_attr(&path, &h, zst)),
            "{what}: a copy BLAKE2 accepted gets its attribute"
        );
        remove_checksum_attr(&path);
        flip_byte(&path);
        assert_corrupted(&s, h, &format!("{what}, no attribute")).await;
        assert!(!path.exists(), "{what}: the rotten file is still in place");
    }
    assert_eq!(counted(&s).await.corruptions_found, 4);
}

#[actix_rt::test]
async fn a_valid_block_file_under_another_blocks_name_or_form_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    for len in [SMALL, LARGE] {
        let (a, ba) = plain_block(random(len));
        let (b, bb) = plain_block(random(len));
        ask(&s, WriteBlock::new(a, ba)).await.unwrap();
        ask(&s, WriteBlock::new(b, bb)).await.unwrap();
        let (pa, pb) = (
            block_path(d.path(), &a, false),
            block_path(d.path(), &b, false),
        );
        // Copied bytes and attribute alike, as a botched restore or a bad rename would.
        fs::write(&pb, fs::read(&pa).unwrap()).unwrap();
        set_checksum_attr(&pb, &checksum_attr(&pa).expect("a's attribute"));
        assert_corrupted(&s, b, &format!("{len} bytes: a's file under b's name")).await;
        assert_eq!(
            ask(&s, ReadBlock::uncharged(a))
                .await
                .ok()
                .map(|x| x.inner_buffer().len()),
            Some(len),
            "the original is untouched"
        );
        // The same file renamed `.zst`: the form is part of the checksum too.
        let za = block_path(d.path(), &a, true);
        fs::rename(&pa, &za).unwrap();
        assert_corrupted(&s, a, &format!("{len} bytes: a plain file named .zst")).await;
    }
}

#[actix_rt::test]
async fn an_attribute_that_is_garbled_or_of_another_version_falls_back_to_blake2() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    let garbled: [(&str, Vec<u8>); 6] = [
        ("empty", vec![]),
        ("one byte", vec![checksum::FORMAT_XXH3_64]),
        ("too short", vec![checksum::FORMAT_XXH3_64; 8]),
        ("unknown version", vec![2; checksum::VALUE_LEN]),
        ("too long", vec![checksum::FORMAT_XXH3_64; 20]),
        ("wrong sum", {
            let mut v = vec![0xab; checksum::VALUE_LEN];
            v[0] = checksum::FORMAT_XXH3_64;
            v
        }),
    ];
    for len in [SMALL, LARGE] {
        for (name, value) in &garbled {
            let what = format!("{len} bytes, {name} attribute");
            let (h, b) = test_block(len, false);
            ask(&s, WriteBlock::new(h, b.clone())).await.unwrap();
            let path = block_path(d.path(), &h, false);
            set_checksum_attr(&path, value);
            assert_eq!(
                ask(&s, ReadBlock::uncharged(h)).await.unwrap(),
                b,
                "{what}: sound bytes are served"
            );
            ask(&s, VerifyBlock { hash: h }).await.unwrap();
            assert_eq!(
                checksum_attr(&path),
                Some(expected_attr(&path, &h, false)),
                "{what}: rewritten once BLAKE2 accepted the bytes"
            );
            set_checksum_attr(&path, value);
            flip_byte(&path);
            assert_corrupted(&s, h, &format!("{what}, rotten bytes")).await;
        }
    }
    assert_eq!(
        counted(&s).await.corruptions_found,
        2 * garbled.len() as u64
    );
}

#[actix_rt::test]
async fn only_the_blake2_check_catches_bytes_rewritten_with_a_matching_checksum() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), false);
    for (len, zst) in [(SMALL, false), (LARGE, false), (LARGE, true)] {
        let what = format!("{len} bytes, compressed {zst}");
        let (h, b) = test_block(len, zst);
        ask(&s, WriteBlock::new(h, b)).await.unwrap();
        let path = block_path(d.path(), &h, zst);
        // Another block's bytes with an attribute made for this name: what someone with
        // write access to the disk could do, not what rot does.
        let (_, other) = test_block(len, zst);
        let forged = other.inner_buffer().clone();
        fs::write(&path, &forged).unwrap();
        set_checksum_attr(&path, &checksum::value(&h, zst, &forged));
        // The trade-off docs/operations.md states: an ordinary read trusts the matching checksum.
        let served = ask(&s, ReadBlock::uncharged(h)).await.unwrap();
        assert_eq!(
            served.inner_buffer(),
            &forged,
            "{what}: the read should have trusted the checksum (no BLAKE2)"
        );
        let r = ask(&s, VerifyBlock { hash: h }).await;
        assert!(
            matches!(&r, Err(StorageError::Corrupted { hash, .. }) if *hash == h),
            "{what}: the BLAKE2 check must catch the forged file, got {r:?}"
        );
        assert!(!path.exists(), "{what}: the forged file is quarantined");
    }
}
