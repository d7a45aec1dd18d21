//! Settings of the storage actor.

use std::path::PathBuf;

use super::marker::DirMarkers;
use super::DataDir;

/// Settings of a [`StorageActor`](super::StorageActor).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The data directories, each a block tree `<path>/<hh>/<hh>/<64-hex>[.zst]`; each
    /// block lives in one of them (`dirs.rs`). At least one.
    pub dirs: Vec<DataDir>,
    /// fsync each block file and its directory before acknowledging a write.
    pub data_fsync: bool,
    /// Check (and first write) each dir's marker against this node (`marker.rs`);
    /// `None`: bare dirs, no marker (tools and tests).
    pub markers: Option<DirMarkers>,
}

impl StorageConfig {
    /// One data directory with an optional quota on block bytes (a write past it is
    /// refused with [`StorageError::DiskFull`]).
    pub fn one_dir(path: PathBuf, data_fsync: bool, capacity: Option<u64>) -> Self {
        StorageConfig {
            dirs: vec![DataDir {
                path,
                capacity,
                read_only: false,
            }],
            data_fsync,
            markers: None,
        }
    }
}
