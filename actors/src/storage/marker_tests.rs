//! Data dir markers through the actor: written at first use, checked at start (a dir
//! without its marker on a node that ran before, or another node's, is refused), an
//! upgrade's dir with blocks adopted, and a marker lost while running fails the dir.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use super::marker::{self, DirMarkers, MARKER_FILE, NEW_DIR_FILE};
use super::*;
use crate::hash::{blake2sum, NodeId};

const ME: NodeId = NodeId([7; 32]);

fn config(dir: &Path, started_before: bool, node: NodeId) -> StorageConfig {
    StorageConfig {
        markers: Some(DirMarkers {
            node,
            started_before,
        }),
        ..StorageConfig::one_dir(dir.to_path_buf(), false, None)
    }
}

fn refused_reason(r: Result<StorageActor, StorageError>, dir: &Path) -> String {
    match r {
        Err(StorageError::DataDirRefused { path, reason }) => {
            assert_eq!(path, dir, "the refusal names the dir");
            reason
        }
        Err(e) => panic!("expected a refusal, got: {e}"),
        Ok(_) => panic!("a dir without its marker must be refused"),
    }
}

fn data_dir(root: &Path) -> PathBuf {
    root.join("data")
}

#[actix_rt::test]
async fn a_fresh_dir_gets_its_marker_and_is_accepted_on_every_later_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(root.path());
    drop(StorageActor::new(config(&dir, false, ME)).expect("first start"));
    let m = marker::read(&dir).unwrap().expect("a marker was written");
    assert_eq!(m.node, ME);
    drop(StorageActor::new(config(&dir, true, ME)).expect("a marked dir is accepted"));
    assert_eq!(
        marker::read(&dir).unwrap(),
        Some(m),
        "the marker is kept as it is"
    );
}

#[actix_rt::test]
async fn a_dir_without_its_marker_is_refused_on_a_node_that_ran_before() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(root.path());
    drop(StorageActor::new(config(&dir, false, ME)).expect("first start"));
    // The disk is not mounted: an empty directory where the data dir was.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let reason = refused_reason(StorageActor::new(config(&dir, true, ME)), &dir);
    assert!(
        reason.contains(MARKER_FILE) && reason.contains(NEW_DIR_FILE),
        "the reason names the marker and what to do: {reason}"
    );
    assert!(
        marker::read(&dir).unwrap().is_none(),
        "a refused dir is not written to"
    );
    // A missing dir likewise (not created on the root filesystem).
    std::fs::remove_dir(&dir).unwrap();
    refused_reason(StorageActor::new(config(&dir, true, ME)), &dir);
    assert!(!dir.exists(), "a refused dir is not created");
    // The operator says it is a new disk: taken into use, the request file removed.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(NEW_DIR_FILE), b"").unwrap();
    drop(StorageActor::new(config(&dir, true, ME)).expect("a new disk, as the operator said"));
    assert!(marker::read(&dir).unwrap().is_some());
    assert!(!dir.join(NEW_DIR_FILE).exists());
}

#[actix_rt::test]
async fn another_nodes_dir_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(root.path());
    drop(StorageActor::new(config(&dir, false, NodeId([9; 32]))).expect("the other node"));
    let reason = refused_reason(StorageActor::new(config(&dir, false, ME)), &dir);
    assert!(reason.contains("belongs to node"), "{reason}");
}

#[actix_rt::test]
async fn a_dir_with_blocks_but_no_marker_is_adopted() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(root.path());
    // Written by a version without markers.
    let old = StorageActor::new(StorageConfig::one_dir(dir.clone(), false, None))
        .unwrap()
        .start();
    let data = Bytes::from_static(b"written before markers existed");
    let h = blake2sum(&data);
    old.send(WriteBlock::new(h, DataBlock::Plain(data)))
        .await
        .unwrap()
        .unwrap();
    let s = StorageActor::new(config(&dir, true, ME))
        .expect("blocks without a marker: adopted")
        .start();
    assert!(marker::read(&dir).unwrap().is_some());
    assert!(s.send(BlockExists { hash: h }).await.unwrap().unwrap());
}

#[actix_rt::test]
async fn a_marker_lost_while_running_fails_the_dir() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(root.path());
    let s = StorageActor::new(config(&dir, false, ME)).unwrap().start();
    // The disk is unmounted under the running node: its mount point is left, empty.
    std::fs::remove_file(dir.join(MARKER_FILE)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = s.send(GetStorageStats).await.unwrap();
        if st.disks[0].state == DiskState::Failed {
            let why = st.disks[0].failure.clone().unwrap_or_default();
            assert!(why.contains(MARKER_FILE), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "the dir was not failed: {st:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let data = Bytes::from_static(b"must not land on the root filesystem");
    let h = blake2sum(&data);
    assert!(s
        .send(WriteBlock::new(h, DataBlock::Plain(data)))
        .await
        .unwrap()
        .is_err());
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing is written into the dir once it failed"
    );
}
