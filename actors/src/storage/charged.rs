//! Reads charged to the RAM budget before their bytes are read.
//!
//! A [`ReadBlock`] with a [`ReadCharge`] pays for its bytes once the copy's file is open
//! and its length known, before a byte of it is read: from a charge the caller already
//! holds, else from whatever its pool has free at that moment. A read that cannot pay
//! at once reads nothing and answers [`StorageError::OverBudget`] with the bytes it
//! needs; [`read_charged`] then waits (bounded) for that much of the pool, holding
//! nothing, and asks again with the charge in hand. The wait is never on a blocking
//! thread nor on the hash's lane, so a read waiting for memory holds up no other work.
//!
//! A caller that wants the plain bytes (a GET) says so: a compressed copy is then
//! charged for its stored and its plain size (from the zstd frame header, read first)
//! and decompressed on the blocking thread; the charge shrinks to the plain bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use actix::Recipient;

use super::messages::{ReadBlock, ReadCharge, StorageError};
use crate::block::{zstd_declared_len, DataBlock, ZSTD_MAX_FRAME_HEADER};
use crate::budget::{Charge, Pool};
use crate::hash::Hash;

/// The payment of one read, made once the copy's length is known.
#[derive(Debug)]
pub(super) struct Payer {
    hash: Hash,
    charge: Option<ReadCharge>,
    /// The charge paying for the copy being read.
    paid: Option<Charge>,
}

impl Payer {
    /// A payer for `hash`; `None`: an uncharged read (scrub, the mover's own copy,
    /// tests).
    pub(super) fn new(hash: Hash, mut charge: Option<ReadCharge>) -> Payer {
        let paid = charge.as_mut().and_then(|c| c.held.take());
        Payer { hash, charge, paid }
    }

    /// An uncharged read.
    pub(super) fn none(hash: Hash) -> Payer {
        Payer::new(hash, None)
    }

    /// Whether the reader wants plain bytes (a compressed copy is then charged for its
    /// plain size too, read from its header).
    pub(super) fn wants_plain(&self) -> bool {
        self.charge.as_ref().is_some_and(|c| c.plain)
    }

    /// Pay for reading the copy open as `file`, `len` bytes as stored: from the charge
    /// held, else from the pool if it has them now, else `OverBudget` (nothing read).
    pub(super) fn pay(
        &mut self,
        file: &File,
        len: u64,
        compressed: bool,
    ) -> Result<(), StorageError> {
        let Some(c) = &self.charge else {
            return Ok(());
        };
        let needed = len
            + if c.plain && compressed {
                plain_len(file)
            } else {
                0
            };
        if self.paid.as_ref().is_some_and(|p| c.pool.covers(p, needed)) {
            return Ok(());
        }
        // A held charge too small for the copy found (it changed since) goes back first.
        self.paid = None;
        match c.pool.try_charge(needed) {
            Ok(charge) => {
                self.paid = Some(charge);
                Ok(())
            }
            Err(_) => Err(StorageError::OverBudget {
                hash: self.hash,
                needed,
            }),
        }
    }

    /// The block read, with its charge hung on its bytes; decompressed first when the
    /// caller asked for plain bytes (the charge then shrinks to them).
    pub(super) fn finish(mut self, block: DataBlock) -> Result<DataBlock, StorageError> {
        let Some(c) = self.charge.take() else {
            return Ok(block);
        };
        let Some(mut charge) = self.paid.take() else {
            // Read without `pay` (cannot happen: every read path pays first); keep the
            // bytes uncharged rather than fail a sound read.
            return Ok(block);
        };
        let hash = self.hash;
        Ok(match block {
            DataBlock::Compressed(z) if c.plain => {
                let plain = DataBlock::Compressed(z)
                    .into_plain_verified(&hash)
                    .map_err(|source| StorageError::Decompress { hash, source })?;
                charge.shrink_to(plain.len() as u64);
                DataBlock::Plain(charge.attach(plain))
            }
            DataBlock::Compressed(z) => {
                charge.shrink_to(z.len() as u64);
                DataBlock::Compressed(charge.attach(z))
            }
            DataBlock::Plain(p) => {
                charge.shrink_to(p.len() as u64);
                DataBlock::Plain(charge.attach(p))
            }
        })
    }
}

/// The plain length a compressed copy declares in its zstd header (read from the file:
/// a few bytes), or the largest block when it declares none or cannot be read.
fn plain_len(file: &File) -> u64 {
    let mut head = [0u8; ZSTD_MAX_FRAME_HEADER];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    zstd_declared_len(&head[..n])
        .unwrap_or(crate::block::max_plain_len() as u64)
        .min(crate::block::max_plain_len() as u64)
}

/// How many times a read asks again after [`StorageError::OverBudget`]: more than once
/// only when the copy changed (grew) between the asks.
const ATTEMPTS: usize = 3;

/// Read `hash` through `storage` with its bytes charged to `pool` before they are read
/// (see the module doc). Waits at most `wait` for the pool each time it has to, holding
/// nothing meanwhile; past that answers [`StorageError::Budget`].
pub async fn read_charged(
    storage: &Recipient<ReadBlock>,
    hash: Hash,
    pool: &Pool,
    plain: bool,
    wait: Duration,
) -> Result<DataBlock, StorageError> {
    let mut held = None;
    let mut last_needed = 0;
    for _ in 0..ATTEMPTS {
        let read = ReadBlock {
            hash,
            charge: Some(ReadCharge {
                pool: pool.clone(),
                held: held.take(),
                plain,
            }),
        };
        match storage.send(read).await {
            Ok(Err(StorageError::OverBudget { needed, .. })) => {
                last_needed = needed;
                held = Some(
                    pool.charge_within(needed, wait)
                        .await
                        .map_err(|source| StorageError::Budget { hash, source })?,
                );
            }
            Ok(r) => return r,
            Err(e) => return Err(StorageError::ActorGone(e)),
        }
    }
    Err(StorageError::Budget {
        hash,
        source: crate::budget::BudgetError::Busy {
            pool: pool.name(),
            wanted_kib: crate::budget::kib_for(last_needed, u32::MAX),
        },
    })
}

#[cfg(test)]
#[path = "charged_tests.rs"]
mod tests;
