//! The storage actor's messages, their replies and its error type.

use std::path::PathBuf;
use std::time::Instant;

use actix::prelude::*;

use super::DiskState;
use crate::block::{BlockError, DataBlock, VerifiedBlock};
use crate::budget::{Charge, Pool};
use crate::hash::Hash;

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
    /// The actor stopped before this operation on `hash` ran or answered.
    #[error("storage task failed: operation on block {hash} was dropped before it finished")]
    Dropped { hash: Hash },
    /// The storage actor is gone (asked through its mailbox).
    #[error("storage task failed: storage actor stopped")]
    ActorGone(#[source] MailboxError),
    /// A blocking task of the actor died (it panicked).
    #[error("storage task failed: {what}: {source}")]
    Join {
        what: &'static str,
        #[source]
        source: actix_rt::task::JoinError,
    },
    /// A stored compressed block whose zstd frame does not decode.
    #[error("storage task failed: decompressing block {hash}: {source}")]
    Decompress {
        hash: Hash,
        #[source]
        source: BlockError,
    },
    #[error("storage task failed: no data dir configured")]
    NoDataDir,
    /// A charged read found a copy of `needed` bytes (stored, plus plain when asked)
    /// that its pool cannot pay for now; nothing was read.
    #[error("no RAM budget free now for the {needed} bytes of block {hash}")]
    OverBudget { hash: Hash, needed: u64 },
    /// A charged read waited for the RAM budget in vain (the node is busy).
    #[error("node busy: block {hash} not read: {source}")]
    Budget {
        hash: Hash,
        #[source]
        source: crate::budget::BudgetError,
    },
    /// A data dir that is not this node's (or not mounted) at start: see `marker.rs`.
    #[error("data dir {} refused: {reason}", path.display())]
    DataDirRefused { path: PathBuf, reason: String },
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
/// The fields are private so that no write made from a `VerifiedBlock` can have its
/// bytes or hash swapped afterwards.
#[derive(Message, Debug)]
#[rtype(result = "Result<WriteOutcome, StorageError>")]
pub struct WriteBlock {
    pub(super) hash: Hash,
    pub(super) data: DataBlock,
    pub(super) verified: bool,
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

    /// The block written.
    pub fn hash(&self) -> Hash {
        self.hash
    }
}

/// Read and verify a block: by the checksum stored with its file when that matches,
/// by BLAKE2 of its plain bytes otherwise (see `storage/checksum.rs`). A copy that fails
/// verification is renamed `.corrupted` and reported as [`StorageError::Corrupted`].
///
/// The reply may be served as it is (a compressed one still has its zstd frame checksum
/// checked when it is decompressed): the stored checksum shows the disk gave back what
/// this node wrote, and what it wrote had been verified by BLAKE2. It is not proof
/// against someone who rewrote both a file and its attribute; only [`VerifyBlock`] is.
/// A copy sent on to a peer is verified by BLAKE2 where it arrives.
///
/// With a [`ReadCharge`], the bytes are charged to the RAM budget before they are read
/// (see `storage/charged.rs`); without one the read is uncharged (scrub-like internal
/// reads and tests: every path that serves or sends bytes charges them).
#[derive(Message, Debug)]
#[rtype(result = "Result<DataBlock, StorageError>")]
pub struct ReadBlock {
    pub hash: Hash,
    pub charge: Option<ReadCharge>,
}

impl ReadBlock {
    /// A read that charges nothing (tests, tools).
    pub fn uncharged(hash: Hash) -> ReadBlock {
        ReadBlock { hash, charge: None }
    }
}

/// How a [`ReadBlock`] pays for the bytes it reads.
#[derive(Debug)]
pub struct ReadCharge {
    /// The pool charged.
    pub pool: Pool,
    /// A charge taken before asking (after an [`StorageError::OverBudget`]): used when
    /// it covers the copy found.
    pub held: Option<Charge>,
    /// Answer the plain bytes: a compressed copy is charged for both forms and
    /// decompressed here.
    pub plain: bool,
}

/// Read the block and verify it by BLAKE2 of its plain bytes whatever its stored
/// checksum says (scrub): the one check a file rewritten on purpose, bytes and
/// attribute alike, cannot pass. A rotten copy is quarantined as on [`ReadBlock`]; a
/// sound one whose stored checksum is missing or wrong gets it rewritten.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), StorageError>")]
pub struct VerifyBlock {
    pub hash: Hash,
}

/// Whether a copy of the block is stored (not verified).
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct BlockExists {
    pub hash: Hash,
}

/// A bare ref is about to be counted: whether a copy is stored, decided on the hash's
/// lane like a write. A copy found counts as written now for the GC fence, so a
/// [`DeleteIfUnwritten`] queued behind it, of a decision taken before, keeps the block
/// (`crate::present_ref` has the whole order).
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct KeepIfPresent {
    pub hash: Hash,
}

/// The plain length of the stored copy, `None` when none is stored: from the file size
/// or the zstd frame header, without reading or hashing the block (HTTP `HEAD`). Says
/// nothing about the copy being sound: only a [`ReadBlock`] verifies.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<u64>, StorageError>")]
pub struct BlockLength {
    pub hash: Hash,
}

/// The modification time of a stored block (ms since the epoch; a write that found the
/// block already stored touches it), or `None` when no copy is stored.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<u64>, StorageError>")]
pub struct StatBlock {
    pub hash: Hash,
}

/// Begin a GC look at a block: from this instant (taken on the actor's thread) until
/// the matching [`CloseGcLook`], every finished write of the hash is remembered, so a
/// [`DeleteIfUnwritten`] with the returned `since` can tell whether one came after the
/// decision. Then, on the hash's lane, stat the block as [`StatBlock`] does.
#[derive(Message, Debug)]
#[rtype(result = "Result<GcLook, StorageError>")]
pub struct OpenGcLook {
    pub hash: Hash,
}

/// The answer of [`OpenGcLook`].
#[derive(Debug, Clone, Copy)]
pub struct GcLook {
    /// The look's instant: the `since` of its [`DeleteIfUnwritten`].
    pub since: Instant,
    /// The stored copy's modification time (ms since the epoch), `None` when none.
    pub modified_ms: Option<u64>,
}

/// End a look opened by [`OpenGcLook`] (the hash's writes are no longer remembered once
/// no look at it is open). Sent once per open, whatever the look decided.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseGcLook {
    pub hash: Hash,
}

/// GC's delete: remove every stored copy of the block, unless a write of it (an
/// `AlreadyPresent` answer included) finished at or after `since`, the instant the GC
/// look at it began ([`OpenGcLook`]). Runs on the hash's lane, so a write queued before
/// it is counted. Refused when no look at the hash is open since `since` (its writes
/// were not watched).
#[derive(Message, Debug)]
#[rtype(result = "Result<DeleteOutcome, StorageError>")]
pub struct DeleteIfUnwritten {
    pub hash: Hash,
    pub since: Instant,
}

/// What a [`DeleteIfUnwritten`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The copies were removed.
    Deleted,
    /// No copy was stored.
    Absent,
    /// Kept: a write finished since the decision (or no look at the hash is open since
    /// the decision, so the actor cannot tell).
    WrittenSince,
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
    /// Blocks stored on the data dirs that are not failed (a block caught mid-move on
    /// two dirs counts on each).
    pub blocks: u64,
    /// Bytes of block files on the data dirs that are not failed.
    pub bytes: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub corruptions_found: u64,
    /// The start-up count is still running: `blocks` and `bytes` only cover what it has
    /// reached, and the capacity quotas are checked against that.
    pub counting: bool,
    /// Each data dir, in config order.
    pub disks: Vec<DiskStatus>,
    /// The background mover (blocks whose dir changed).
    pub rebalance: RebalanceStatus,
    /// Hashes whose writes are remembered for a GC look in flight (see `gc_looks.rs`).
    pub gc_looks: u64,
}

impl StorageStats {
    /// The data dirs' capacities summed, bytes (`None`: a dir has no quota).
    pub fn capacity(&self) -> Option<u64> {
        self.disks.iter().map(|d| d.capacity).sum()
    }
}

/// One data dir in [`StorageStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStatus {
    pub path: PathBuf,
    /// Configured capacity in bytes (`None`: a lone `data_dir` without quota).
    pub capacity: Option<u64>,
    /// Bytes of block files counted on it (its last count once failed).
    pub used: u64,
    pub blocks: u64,
    pub state: DiskState,
    /// Why it was marked failed.
    pub failure: Option<String>,
}

/// Progress of the mover in [`StorageStats`] (as `storage.rebalance` of the HTTP status,
/// whose OpenAPI schema it gives).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RebalanceStatus {
    /// A pass over the dirs is under way.
    pub running: bool,
    /// Passes finished since start.
    pub passes: u64,
    /// Block files looked at in the current (or last) pass.
    pub scanned: u64,
    /// Blocks moved to the dir they belong in, and their bytes, since start.
    pub moved: u64,
    pub bytes_moved: u64,
    /// Moves that failed (the block stays where it was).
    pub errors: u64,
}

/// Ask for [`StorageStats`].
#[derive(Message, Debug)]
#[rtype(result = "StorageStats")]
pub struct GetStorageStats;

/// Told to the listener when a data dir is marked failed: every referenced block that
/// was on it should be fetched again (onto the other dirs).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DiskFailed {
    pub path: PathBuf,
    pub reason: String,
}

/// Who hears of a failed data dir (the resync actor, whose sweep fetches what it lost).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDiskFailureListener {
    pub listener: Recipient<DiskFailed>,
}

/// Told to the listener when a copy failed verification and was quarantined (a read,
/// scrub, or the mover's check of its source): the block should be fetched again now,
/// not at the next sweep.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct BlockQuarantined {
    pub hash: Hash,
}

/// Who hears of a quarantined copy (the resync actor, which schedules the block at once).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetQuarantineListener {
    pub listener: Recipient<BlockQuarantined>,
}
