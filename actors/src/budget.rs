//! The node's RAM budget for block bytes in flight, split so that it cannot deadlock
//! across nodes.
//!
//! [`RamBudget`] holds two [`Pool`]s carved out of `block_ram_buffer_max`:
//! - the **client** pool pays for work this node starts: HTTP PUT bodies (and their
//!   compressed copy while it is made), HTTP GET bodies, the payloads of replies this
//!   node reads from peers (a `GetBlock` answer for a client read or a resync fetch), and
//!   blocks it reads to send or move itself (hint replay, GC offload, the disk mover);
//! - the **peer** pool pays for work peers ask of this node: the payload of an incoming
//!   request (`PutBlock`) and the block read to answer a peer's `GetBlock`.
//!
//! Every byte is charged before it is read from disk (`storage/charged.rs`) or received
//! (`peer/conn.rs`), and every wait is bounded ([`Pool::charge_within`], or the
//! timeout of the call it is part of).
//!
//! Why two, and why no cycle: a client PUT holds its share while it waits for its
//! holders to admit the block into their peer pools. Work holding a peer pool never
//! waits for memory: an incoming `PutBlock` waits for this node's disk, a served block
//! for its reader, and a reader charges a reply before reading it from what is free now
//! (or a charge it already holds), else drops it unread and waits holding nothing. So
//! peer pools always drain, and client work waits on peer pools, never the other way
//! round. Each pool admits at least one request of the largest size (a request larger
//! than the pool takes the whole pool), so a maximum-size block always gets through.
//!
//! A [`Charge`] is the permit; [`Charge::attach`] hangs it on the bytes it pays for
//! (`Bytes::from_owner`), so the budget comes back exactly when the last clone of those
//! bytes is dropped — a call to a slow holder still sending them, a QUIC send buffer,
//! an HTTP response body — not when the request that made them returns.
//!
//! Accounting is in KiB (a tokio semaphore counts `u32` permits). tokio's semaphore is
//! fair: a large acquire at the head of the queue holds back the smaller ones behind it,
//! which is the back-pressure we want (no starvation of large blocks), and is why every
//! request is clamped to the pool's size.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// One pool of the budget: a fair semaphore counting KiB.
#[derive(Clone, Debug)]
pub struct Pool {
    name: &'static str,
    sem: Arc<Semaphore>,
    capacity_kib: u32,
}

/// Why no charge could be taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetError {
    #[error("RAM budget pool {pool} is closed")]
    Closed { pool: &'static str },
    #[error("RAM budget pool {pool} has no {wanted_kib} KiB free now")]
    Busy { pool: &'static str, wanted_kib: u32 },
    #[error("RAM budget pool {pool} had no {wanted_kib} KiB free within {after:?}")]
    TimedOut {
        pool: &'static str,
        wanted_kib: u32,
        after: std::time::Duration,
    },
}

/// KiB permits for `bytes`, rounded up, clamped to `capacity_kib` so a request larger
/// than the pool still gets in (alone). At least one permit for a non-empty request.
pub fn kib_for(bytes: u64, capacity_kib: u32) -> u32 {
    let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    kib.min(capacity_kib)
}

impl Pool {
    /// A pool of `bytes` (rounded down to KiB, at least 1 KiB).
    pub fn new(name: &'static str, bytes: u64) -> Pool {
        let capacity_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Pool {
            name,
            sem: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
        }
    }

    /// The pool's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Size of the pool in bytes.
    pub fn capacity(&self) -> u64 {
        u64::from(self.capacity_kib) * 1024
    }

    /// Bytes free now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * 1024
    }

    /// Wait (in line, fairly) for `bytes` of the pool.
    pub async fn charge(&self, bytes: u64) -> Result<Charge, BudgetError> {
        let kib = kib_for(bytes, self.capacity_kib);
        if kib == 0 {
            return Ok(Charge { permit: None });
        }
        self.sem
            .clone()
            .acquire_many_owned(kib)
            .await
            .map(|p| Charge { permit: Some(p) })
            .map_err(|_| BudgetError::Closed { pool: self.name })
    }

    /// [`Pool::charge`], giving up after `wait`: every wait for the budget is bounded,
    /// so a node that cannot get memory answers "busy" instead of hanging.
    pub async fn charge_within(
        &self,
        bytes: u64,
        wait: std::time::Duration,
    ) -> Result<Charge, BudgetError> {
        match tokio::time::timeout(wait, self.charge(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(BudgetError::TimedOut {
                pool: self.name,
                wanted_kib: kib_for(bytes, self.capacity_kib),
                after: wait,
            }),
        }
    }

    /// Whether `charge` pays for `bytes` of this pool (a request larger than the pool
    /// is paid by the whole pool).
    pub fn covers(&self, charge: &Charge, bytes: u64) -> bool {
        charge.bytes() >= u64::from(kib_for(bytes, self.capacity_kib)) * 1024
    }

    /// Take `bytes` of the pool only if they are free now.
    pub fn try_charge(&self, bytes: u64) -> Result<Charge, BudgetError> {
        let kib = kib_for(bytes, self.capacity_kib);
        if kib == 0 {
            return Ok(Charge { permit: None });
        }
        match self.sem.clone().try_acquire_many_owned(kib) {
            Ok(p) => Ok(Charge { permit: Some(p) }),
            Err(TryAcquireError::NoPermits) => Err(BudgetError::Busy {
                pool: self.name,
                wanted_kib: kib,
            }),
            Err(TryAcquireError::Closed) => Err(BudgetError::Closed { pool: self.name }),
        }
    }
}

/// A share of a [`Pool`], returned when dropped (or when the bytes it is attached to
/// are all dropped).
#[derive(Debug)]
#[must_use = "a charge returns its share as soon as it is dropped"]
pub struct Charge {
    permit: Option<OwnedSemaphorePermit>,
}

/// The owner behind a charged `Bytes`: the bytes and the permit that pays for them.
struct Charged<T> {
    data: T,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Charged<T> {
    fn as_ref(&self) -> &[u8] {
        self.data.as_ref()
    }
}

impl Charge {
    /// Bytes of the pool this charge holds.
    pub fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64) * 1024
    }

    /// Keep only what `bytes` need of this charge (clamped as when charging) and return
    /// the rest to the pool now: a PUT charged twice its size while it was compressed
    /// keeps only the size of the form it sends.
    pub fn shrink_to(&mut self, bytes: u64) {
        if let Some(p) = self.permit.as_mut() {
            let keep = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX) as usize;
            let have = p.num_permits();
            if keep < have {
                // Dropping the split-off part returns it to the pool.
                drop(p.split(have - keep));
            }
        }
    }

    /// Move up to `bytes` (rounded up to KiB) of this charge into a new one: a task
    /// handed part of a charge its caller already holds never waits for the pool.
    pub fn split_off(&mut self, bytes: u64) -> Charge {
        let want = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX) as usize;
        let permit = self.permit.as_mut().and_then(|p| {
            let n = want.min(p.num_permits());
            if n == p.num_permits() {
                None
            } else {
                p.split(n)
            }
        });
        match permit {
            Some(p) => Charge { permit: Some(p) },
            // All of it (or nothing was held).
            None if want > 0 => Charge {
                permit: self.permit.take(),
            },
            None => Charge { permit: None },
        }
    }

    /// Add `other` (of the same pool) to this charge.
    pub fn merge(&mut self, other: Charge) {
        match (self.permit.as_mut(), other.permit) {
            (Some(p), Some(o)) => p.merge(o),
            (None, o) => self.permit = o,
            (Some(_), None) => {}
        }
    }

    /// Hang this charge on `data`: it is returned when the last clone of the result is
    /// dropped.
    pub fn attach(self, data: Bytes) -> Bytes {
        if self.permit.is_none() {
            return data;
        }
        Bytes::from_owner(Charged {
            data,
            _permit: self.permit,
        })
    }

    /// As [`Charge::attach`], for a freshly filled buffer (a `Vec`, a
    /// [`crate::bufpool::PooledBuf`]; no copy).
    pub fn attach_owned<T: AsRef<[u8]> + Send + 'static>(self, data: T) -> Bytes {
        if self.permit.is_none() {
            return Bytes::from_owner(data);
        }
        Bytes::from_owner(Charged {
            data,
            _permit: self.permit,
        })
    }
}

/// The node's whole budget: the client pool and the peer-ingress pool.
#[derive(Clone, Debug)]
pub struct RamBudget {
    /// Work this node starts (HTTP PUT/GET bodies, replies read from peers).
    pub client: Pool,
    /// Work peers ask of this node (incoming payloads, bytes served to a `GetBlock`).
    pub peer: Pool,
}

impl RamBudget {
    /// Split `total` bytes: half for each pool, each at least `max_block` so that one
    /// request of the largest size is always admitted in each.
    pub fn split(total: u64, max_block: u64) -> RamBudget {
        let (client, peer) = split_sizes(total, max_block);
        RamBudget {
            client: Pool::new("client", client),
            peer: Pool::new("peer", peer),
        }
    }
}

/// The sizes of the client and peer pools for a budget of `total` bytes: half each,
/// neither below `max_block`.
pub fn split_sizes(total: u64, max_block: u64) -> (u64, u64) {
    let half = total / 2;
    let peer = half.max(max_block);
    let client = total.saturating_sub(peer).max(max_block);
    (client, peer)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_budget_is_split_in_halves_each_holding_one_largest_block() {
        assert_eq!(split_sizes(256 << 20, 16 << 20), (128 << 20, 128 << 20));
        assert_eq!(split_sizes(32 << 20, 16 << 20), (16 << 20, 16 << 20));
        // A budget too small for two blocks still admits one in each pool.
        assert_eq!(split_sizes(20 << 20, 16 << 20), (16 << 20, 16 << 20));
    }

    #[test]
    fn requests_are_rounded_up_to_kib_and_clamped_to_the_pool() {
        assert_eq!(kib_for(0, 100), 0);
        assert_eq!(kib_for(1, 100), 1);
        assert_eq!(kib_for(1024, 100), 1);
        assert_eq!(kib_for(1025, 100), 2);
        assert_eq!(kib_for(1 << 30, 100), 100);
        assert_eq!(kib_for(u64::MAX, u32::MAX), u32::MAX);
    }

    #[actix_rt::test]
    async fn a_charge_attached_to_bytes_returns_when_the_last_clone_is_dropped() {
        let pool = Pool::new("test", 1 << 20);
        let charge = pool.charge(600 << 10).await.unwrap();
        assert_eq!(pool.available(), 424 << 10);
        let bytes = charge.attach_owned(vec![7u8; 600 << 10]);
        let clone = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.available(), 424 << 10, "a clone still holds the bytes");
        assert_eq!(&clone[..], &[7u8; 10]);
        drop(clone);
        assert_eq!(
            pool.available(),
            1 << 20,
            "the last clone returned the charge"
        );
    }

    #[actix_rt::test]
    async fn a_request_larger_than_the_pool_gets_the_whole_pool_alone() {
        let pool = Pool::new("test", 64 << 10);
        let big = pool.charge(1 << 30).await.unwrap();
        assert_eq!(big.bytes(), 64 << 10);
        assert!(matches!(pool.try_charge(1), Err(BudgetError::Busy { .. })));
        drop(big);
        assert!(pool.try_charge(1).is_ok());
    }

    #[actix_rt::test]
    async fn shrinking_a_charge_returns_the_rest_at_once() {
        let pool = Pool::new("test", 1 << 20);
        let mut c = pool.charge(800 << 10).await.unwrap();
        c.shrink_to(300 << 10);
        assert_eq!(c.bytes(), 300 << 10);
        assert_eq!(pool.available(), 724 << 10);
        c.shrink_to(900 << 10);
        assert_eq!(c.bytes(), 300 << 10, "shrinking never grows");
        drop(c);
        assert_eq!(pool.available(), 1 << 20);
    }

    #[actix_rt::test]
    async fn a_waiter_is_admitted_when_attached_bytes_are_dropped() {
        let pool = Pool::new("test", 1 << 20);
        let held = pool
            .charge(1 << 20)
            .await
            .unwrap()
            .attach_owned(vec![0; 1 << 20]);
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.charge(512 << 10).await.map(|c| c.bytes()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room yet: the waiter must wait");
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was not admitted after the bytes were dropped")
            .unwrap()
            .unwrap();
        assert_eq!(got, 512 << 10);
    }

    #[actix_rt::test]
    async fn the_peer_pool_admits_while_the_client_pool_is_exhausted() {
        // The cross-node deadlock the two pools prevent, at one node: client PUTs hold the whole
        // client pool while they wait for peers; a peer's PutBlock must still get in.
        let b = RamBudget::split(32 << 20, 16 << 20);
        let _puts = b.client.charge(32 << 20).await.unwrap();
        assert!(b.client.try_charge(1).is_err());
        let ingress = tokio::time::timeout(Duration::from_secs(1), b.peer.charge(16 << 20))
            .await
            .expect("peer ingress waited behind client PUTs")
            .unwrap();
        assert_eq!(ingress.bytes(), 16 << 20);
    }
}
