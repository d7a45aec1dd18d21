//! Where a layout lives outside memory: the `layout` keyspace of the metadata store and
//! the bytes of a `LayoutReply`.
//!
//! Keyspace `layout` (fjall), two keys:
//! - `current`: MessagePack (map form) of the [`Layout`] in force;
//! - `staged`: MessagePack of the `Vec<LayoutChange>` staged and not applied.
//!
//! Both are written in one batch and synced before the actor switches or answers, so a
//! crash leaves either the old pair or the new one. A value that does not decode is an
//! error naming the key, never a panic.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::messages::{BadOffer, LayoutError};
use super::model::{Layout, LayoutChange};

/// Name of the keyspace.
pub const LAYOUT_KEYSPACE: &str = "layout";
const CURRENT: &str = "current";
const STAGED: &str = "staged";

/// Largest decompressed `LayoutReply` accepted: far above any real layout (1,000
/// members × 8,192 partitions × rf 3 is ~1 MiB), small enough that a hostile zstd frame
/// cannot exhaust memory.
pub const MAX_LAYOUT_BYTES: usize = 16 << 20;

/// The persisted pair.
pub(super) struct Stored {
    pub current: Option<Layout>,
    pub staged: Vec<LayoutChange>,
}

/// Open the keyspace of `db`.
pub(super) fn open(db: &Database) -> Result<Keyspace, LayoutError> {
    Ok(db.keyspace(LAYOUT_KEYSPACE, KeyspaceCreateOptions::default)?)
}

/// Read what is stored.
pub(super) fn load(ks: &Keyspace) -> Result<Stored, LayoutError> {
    let current = match ks.get(CURRENT)? {
        Some(v) => Some(
            rmp_serde::from_slice::<Layout>(&v).map_err(|e| LayoutError::Corrupt {
                key: CURRENT,
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let staged = match ks.get(STAGED)? {
        Some(v) => rmp_serde::from_slice(&v).map_err(|e| LayoutError::Corrupt {
            key: STAGED,
            reason: e.to_string(),
        })?,
        None => Vec::new(),
    };
    Ok(Stored { current, staged })
}

/// Write the pair in one batch and sync it (blocking: run it off the actor's thread).
pub(super) fn save(
    db: &Database,
    ks: &Keyspace,
    current: &Layout,
    staged: &[LayoutChange],
) -> Result<(), LayoutError> {
    let cur = rmp_serde::to_vec_named(current)?;
    let st = rmp_serde::to_vec_named(staged)?;
    let mut b = db.batch();
    b.insert(ks, CURRENT, cur);
    b.insert(ks, STAGED, st);
    b.commit()?;
    db.persist(PersistMode::SyncAll)?;
    Ok(())
}

/// The bytes of a `LayoutReply`: MessagePack, then zstd.
pub fn encode_layout(layout: &Layout) -> Result<Vec<u8>, LayoutError> {
    let raw = rmp_serde::to_vec_named(layout)?;
    zstd::bulk::compress(&raw, 3).map_err(LayoutError::Compress)
}

/// Decode a `LayoutReply`'s bytes (bounded by [`MAX_LAYOUT_BYTES`]) and check its
/// structure.
pub fn decode_layout(data: &[u8]) -> Result<Layout, LayoutError> {
    let raw = zstd::bulk::decompress(data, MAX_LAYOUT_BYTES).map_err(BadOffer::Decompress)?;
    let layout: Layout = rmp_serde::from_slice(&raw).map_err(BadOffer::Decode)?;
    layout.validate()?;
    Ok(layout)
}
