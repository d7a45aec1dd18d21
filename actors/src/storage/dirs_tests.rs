//! StorageActor with several data dirs, through its messages: placement on write, reads
//! that fall back to the other dirs, the mover after a capacity change, and a dir that
//! fails while the actor runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use super::dirs::{target, PlacedDir};
use super::*;
use crate::hash::blake2sum;

/// Bound on every wait for the actor's background work.
const WAIT: Duration = Duration::from_secs(20);

fn dirs(root: &Path, caps: &[u64]) -> Vec<DataDir> {
    caps.iter()
        .enumerate()
        .map(|(i, c)| DataDir {
            path: root.join(format!("d{i}")),
            capacity: Some(*c),
            read_only: false,
        })
        .collect()
}

fn start(dirs: Vec<DataDir>) -> Addr<StorageActor> {
    StorageActor::new(StorageConfig {
        dirs,
        data_fsync: false,
        markers: None,
    })
    .expect("storage starts on temp dirs")
    .start()
}

fn block(i: u32) -> (Hash, DataBlock) {
    let data = Bytes::from(format!("block number {i} of the multi-dir tests"));
    (blake2sum(&data), DataBlock::Plain(data))
}

fn path_in(dir: &Path, h: &Hash) -> PathBuf {
    let b = h.as_bytes();
    dir.join(format!("{:02x}", b[0]))
        .join(format!("{:02x}", b[1]))
        .join(h.to_hex())
}

/// Which dir (index) holds the block's file; panics naming the block if not exactly one.
fn holder(dirs: &[DataDir], h: &Hash) -> usize {
    let at: Vec<usize> = (0..dirs.len())
        .filter(|i| path_in(&dirs[*i].path, h).exists())
        .collect();
    assert_eq!(
        at.len(),
        1,
        "block {h} should be in exactly one dir, found in {at:?}"
    );
    at[0]
}

fn expected(dirs: &[DataDir], h: &Hash) -> usize {
    let placed: Vec<PlacedDir> = dirs.iter().map(|d| PlacedDir::of(d, false)).collect();
    target(h, &placed, |_| true).expect("a writable dir")
}

async fn stats_when(
    s: &Addr<StorageActor>,
    what: &str,
    done: impl Fn(&StorageStats) -> bool,
) -> StorageStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = s.send(GetStorageStats).await.expect("storage actor alive");
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {WAIT:?}: {st:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn blocks_go_to_their_placed_dir_and_reads_fall_back_to_the_others() {
    let root = tempfile::tempdir().unwrap();
    let ds = dirs(root.path(), &[1 << 30, 2 << 30, 3 << 30]);
    let s = start(ds.clone());
    let mut per_dir = [0u32; 3];
    for i in 0..300 {
        let (h, b) = block(i);
        s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
        let at = holder(&ds, &h);
        assert_eq!(at, expected(&ds, &h), "block {h} written to the wrong dir");
        per_dir[at] += 1;
    }
    assert!(
        per_dir.iter().all(|n| *n > 0),
        "every dir got blocks: {per_dir:?}"
    );
    let st = stats_when(&s, "count done", |st| !st.counting).await;
    let counts: Vec<u64> = st.disks.iter().map(|d| d.blocks).collect();
    assert_eq!(counts, per_dir.map(u64::from).to_vec(), "per-dir counts");
    assert_eq!(st.blocks, 300);
    // A block whose file sits in another dir (placed under an older set of dirs) is
    // still read, found and deleted.
    let (h, b) = block(0);
    let from = holder(&ds, &h);
    let other = (from + 1) % 3;
    let dst = path_in(&ds[other].path, &h);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::rename(path_in(&ds[from].path, &h), &dst).unwrap();
    assert_eq!(s.send(ReadBlock::uncharged(h)).await.unwrap().unwrap(), b);
    assert!(s.send(BlockExists { hash: h }).await.unwrap().unwrap());
    let look = s.send(OpenGcLook { hash: h }).await.unwrap().unwrap();
    let del = DeleteIfUnwritten {
        hash: h,
        since: look.since,
    };
    assert_eq!(s.send(del).await.unwrap().unwrap(), DeleteOutcome::Deleted);
    assert!(!dst.exists(), "the moved copy was deleted");
}

#[actix_rt::test]
async fn a_capacity_change_moves_only_the_blocks_whose_dir_changed() {
    let root = tempfile::tempdir().unwrap();
    let before = dirs(root.path(), &[1 << 30, 1 << 30, 1 << 30]);
    let s = start(before.clone());
    let hashes: Vec<Hash> = (0..300).map(|i| block(i).0).collect();
    for i in 0..300 {
        let (h, b) = block(i);
        s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
    }
    stats_when(&s, "first pass", |st| st.rebalance.passes >= 1).await;
    let inodes: Vec<u64> = hashes
        .iter()
        .map(|h| {
            std::fs::metadata(path_in(&before[holder(&before, h)].path, h))
                .unwrap()
                .ino()
        })
        .collect();
    drop(s);
    // Dir 2 doubles: blocks move into it, and only into it.
    let mut after = before.clone();
    after[2].capacity = Some(2 << 30);
    let must_move: Vec<usize> = (0..hashes.len())
        .filter(|i| expected(&before, &hashes[*i]) != expected(&after, &hashes[*i]))
        .collect();
    assert!(
        !must_move.is_empty(),
        "the change should move some of 300 blocks"
    );
    let s = start(after.clone());
    let st = stats_when(&s, "rebalance pass", |st| st.rebalance.passes >= 1).await;
    assert_eq!(st.rebalance.moved, must_move.len() as u64, "{st:?}");
    assert_eq!(st.rebalance.errors, 0);
    for (i, h) in hashes.iter().enumerate() {
        let at = holder(&after, h);
        assert_eq!(at, expected(&after, h), "block {h} not where it belongs");
        let ino = std::fs::metadata(path_in(&after[at].path, h))
            .unwrap()
            .ino();
        if !must_move.contains(&i) {
            assert_eq!(
                ino, inodes[i],
                "block {h} did not have to move but its file changed"
            );
        }
        assert!(s.send(ReadBlock::uncharged(*h)).await.unwrap().is_ok());
    }
}

#[actix_rt::test]
async fn a_read_only_dir_is_drained_into_the_others() {
    let root = tempfile::tempdir().unwrap();
    let mut ds = dirs(root.path(), &[1 << 30, 1 << 30]);
    let s = start(ds.clone());
    for i in 0..60 {
        let (h, b) = block(i);
        s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
    }
    drop(s);
    ds[1].read_only = true;
    let s = start(ds.clone());
    let st = stats_when(&s, "drained", |st| st.rebalance.passes >= 1).await;
    assert_eq!(st.disks[1].blocks, 0, "{st:?}");
    assert_eq!(st.disks[1].state, DiskState::ReadOnly);
    assert_eq!(st.disks[0].blocks, 60);
    let (h, b) = block(1000);
    s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
    assert_eq!(holder(&ds, &h), 0, "a read-only dir takes no new block");
}

#[derive(Default)]
struct Heard(Vec<DiskFailed>);
impl Actor for Heard {
    type Context = Context<Self>;
}
impl Handler<DiskFailed> for Heard {
    type Result = ();
    fn handle(&mut self, m: DiskFailed, _: &mut Context<Self>) {
        self.0.push(m);
    }
}
#[derive(Message)]
#[rtype(result = "usize")]
struct HowMany;
impl Handler<HowMany> for Heard {
    type Result = usize;
    fn handle(&mut self, _: HowMany, _: &mut Context<Self>) -> usize {
        self.0.len()
    }
}

#[actix_rt::test]
async fn a_dir_gone_while_running_is_failed_and_the_others_keep_serving() {
    let root = tempfile::tempdir().unwrap();
    let ds = dirs(root.path(), &[1 << 30, 1 << 30]);
    let s = start(ds.clone());
    let heard = Heard::default().start();
    s.send(SetDiskFailureListener {
        listener: heard.clone().recipient(),
    })
    .await
    .unwrap();
    let mut on = [Vec::new(), Vec::new()];
    for i in 0..40 {
        let (h, b) = block(i);
        s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
        on[holder(&ds, &h)].push(i);
    }
    std::fs::rename(&ds[1].path, root.path().join("away")).unwrap();
    let st = stats_when(&s, "dir 1 failed", |st| {
        st.disks[1].state == DiskState::Failed
    })
    .await;
    assert_eq!(st.disks[0].state, DiskState::Ok);
    assert_eq!(
        st.blocks,
        on[0].len() as u64,
        "a failed dir leaves the counts"
    );
    assert_eq!(
        heard.send(HowMany).await.unwrap(),
        1,
        "the listener heard once"
    );
    for i in &on[0] {
        let (h, b) = block(*i);
        assert_eq!(s.send(ReadBlock::uncharged(h)).await.unwrap().unwrap(), b);
    }
    for i in &on[1] {
        let (h, b) = block(*i);
        assert!(matches!(
            s.send(ReadBlock::uncharged(h)).await.unwrap(),
            Err(StorageError::NotFound { .. })
        ));
        // Refetched blocks land on the dir that is left, and the gone dir is not made anew.
        s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
        assert!(path_in(&ds[0].path, &h).exists());
    }
    assert!(!ds[1].path.exists(), "the failed dir was not recreated");
}

#[actix_rt::test]
async fn the_mover_reads_a_block_only_once_its_bytes_are_charged() {
    let root = tempfile::tempdir().unwrap();
    let mut ds = dirs(root.path(), &[1 << 30, 1 << 30]);
    let s = start(ds.clone());
    for i in 0..20 {
        let (h, b) = block(i);
        s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
    }
    drop(s);
    ds[1].read_only = true;
    let pool = crate::budget::Pool::new("client", 64 << 10);
    let hog = pool.charge(64 << 10).await.unwrap();
    let s = StorageActor::new(StorageConfig {
        dirs: ds.clone(),
        data_fsync: false,
        markers: None,
    })
    .unwrap()
    .with_move_budget(pool.clone())
    .start();
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let st = s.send(GetStorageStats).await.unwrap();
    let blocks_in_1 = st.disks[1].blocks;
    assert_eq!(
        (st.rebalance.moved, st.bytes_read),
        (0, 0),
        "moved or read with no budget: {st:?}"
    );
    drop(hog);
    let st = stats_when(&s, "drained", |st| st.rebalance.passes >= 1).await;
    assert_eq!(st.disks[1].blocks, 0, "{st:?}");
    assert_eq!(st.rebalance.moved, blocks_in_1);
    assert_eq!(pool.available(), 64 << 10, "every move's charge came back");
}

/// The mover found the pool short for a block, waited for the charge and holds it; then
/// the block no longer moves (its target dir or its source dir failed meanwhile). The
/// held charge goes back to the pool at once, not at some later pass: a pool shared with
/// client work must not stay pinned by the mover.
#[actix_rt::test]
async fn a_charge_held_for_a_block_that_no_longer_moves_is_given_back() {
    for failing in [0usize, 1] {
        let root = tempfile::tempdir().unwrap();
        let mut ds = dirs(root.path(), &[1 << 30, 1 << 30]);
        let s = start(ds.clone());
        for i in 0..20 {
            let (h, b) = block(i);
            s.send(WriteBlock::new(h, b)).await.unwrap().unwrap();
        }
        drop(s);
        ds[1].read_only = true;
        let pool = crate::budget::Pool::new("client", 1 << 20);
        let hog = pool.charge(1 << 20).await.unwrap();
        let s = StorageActor::new(StorageConfig {
            dirs: ds.clone(),
            data_fsync: false,
            markers: None,
        })
        .unwrap()
        .with_move_budget(pool.clone())
        .start();
        // The first move finds the pool empty and waits for its charge.
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let st = s.send(GetStorageStats).await.unwrap();
        assert_eq!(st.rebalance.moved, 0, "moved with no budget: {st:?}");
        assert!(st.disks[1].blocks > 0, "dir 1 has blocks to move: {st:?}");
        std::fs::rename(&ds[failing].path, root.path().join("away")).unwrap();
        stats_when(&s, "dir failed", |st| {
            st.disks[failing].state == DiskState::Failed
        })
        .await;
        drop(hog);
        stats_when(&s, "pass over", |st| st.rebalance.passes >= 1).await;
        // Let a charge kept by mistake show.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            pool.available(),
            pool.capacity(),
            "dir {failing} failed: the mover kept a charge for a block it no longer moves"
        );
    }
}
