//! StorageActor: owns the data directory and every block file in it.
//!
//! INTERFACE SKELETON — the implementation replaces every `unimplemented!` below.

use std::path::PathBuf;

use actix::prelude::*;

use crate::block::{DataBlock, VerifiedBlock};
use crate::hash::Hash;

/// Settings of a [`StorageActor`].
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Root of the block tree: `<data_dir>/<hh>/<hh>/<64-hex>[.zst]`.
    pub data_dir: PathBuf,
    /// fsync each block file and its directory before acknowledging a write.
    pub data_fsync: bool,
}

/// Errors of the storage actor; each names the block or path involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("block {hash} is not stored here")]
    NotFound { hash: Hash },
    #[error("block {hash} failed verification; its file was quarantined as {}", quarantined.display())]
    Corrupted { hash: Hash, quarantined: PathBuf },
    #[error("data sent for block {hash} does not match its hash; nothing was written")]
    CorruptData { hash: Hash },
    #[error("no space left on the device holding {}", path.display())]
    DiskFull { path: PathBuf },
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage task failed: {0}")]
    Task(String),
}

/// What a [`WriteBlock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new file was written.
    Written,
    /// An equivalent copy was already there; nothing was written.
    AlreadyPresent,
    /// A compressed copy replaced a plain one.
    ReplacedPlain,
}

/// Store a block. Unverified data is hashed first and refused with
/// [`StorageError::CorruptData`] on mismatch; a [`VerifiedBlock`] is written as is.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StorageError>")]
pub struct WriteBlock {
    pub hash: Hash,
    pub data: DataBlock,
    verified: bool,
}

impl WriteBlock {
    /// A write whose data will be verified against `hash` before anything is written.
    pub fn new(hash: Hash, data: DataBlock) -> Self {
        WriteBlock {
            hash,
            data,
            verified: false,
        }
    }

    /// A write of a block already verified on this node (not hashed again).
    pub fn verified(block: VerifiedBlock) -> Self {
        WriteBlock {
            hash: block.hash(),
            data: block.into_data(),
            verified: true,
        }
    }

    /// Whether the data was already verified.
    pub fn is_verified(&self) -> bool {
        self.verified
    }
}

/// Read and verify a block. A copy that fails verification is renamed `.corrupted` and
/// reported as [`StorageError::Corrupted`].
#[derive(Message, Debug)]
#[rtype(result = "Result<DataBlock, StorageError>")]
pub struct ReadBlock {
    pub hash: Hash,
}

/// Whether a copy of the block is stored (not verified).
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct BlockExists {
    pub hash: Hash,
}

/// Delete every stored copy of the block; replies whether one was there.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct DeleteBlock {
    pub hash: Hash,
}

/// Up to `limit` stored hashes strictly after `after`, in ascending order, read from the
/// tree one directory at a time (so memory stays bounded and a walk can resume).
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<Hash>, StorageError>")]
pub struct ListBlocks {
    pub after: Option<Hash>,
    pub limit: usize,
}

/// Counters of the storage actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub blocks: u64,
    pub bytes: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub corruptions_found: u64,
}

/// Ask for [`StorageStats`].
#[derive(Message, Debug)]
#[rtype(result = "StorageStats")]
pub struct GetStorageStats;

/// The actor.
pub struct StorageActor {
    #[allow(dead_code)]
    config: StorageConfig,
}

impl StorageActor {
    /// Create the data directory if needed and remove temp files a crash left behind.
    pub fn new(config: StorageConfig) -> Result<Self, StorageError> {
        Ok(StorageActor { config })
    }
}

impl Actor for StorageActor {
    type Context = Context<Self>;
}

macro_rules! skeleton_handler {
    ($m:ty, $r:ty) => {
        impl Handler<$m> for StorageActor {
            type Result = ResponseFuture<$r>;
            fn handle(&mut self, _m: $m, _ctx: &mut Context<Self>) -> Self::Result {
                unimplemented!("storage skeleton")
            }
        }
    };
}
skeleton_handler!(WriteBlock, Result<WriteOutcome, StorageError>);
skeleton_handler!(ReadBlock, Result<DataBlock, StorageError>);
skeleton_handler!(BlockExists, Result<bool, StorageError>);
skeleton_handler!(DeleteBlock, Result<bool, StorageError>);
skeleton_handler!(ListBlocks, Result<Vec<Hash>, StorageError>);
skeleton_handler!(GetStorageStats, StorageStats);
