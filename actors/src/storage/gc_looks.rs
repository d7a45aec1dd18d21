//! The storage actor's side of the GC fence: which hashes a GC look is deciding about,
//! and when each was last written since its look began.
//!
//! A GC delete is decided in the resync actor and carried out here, so a write that
//! lands between the decision and the delete must stop it ([`crate::gc::unwritten_since`]).
//! Only a hash under an open look can be deleted, so only those hashes' writes need
//! remembering: the look is opened here ([`super::OpenGcLook`], on the actor's thread,
//! which is also where every finished write is recorded, so no write can slip between
//! the look's instant and its watch), and closed by the resync look when it ends
//! ([`super::CloseGcLook`], sent from a drop guard whatever the look's outcome).
//! Memory is thus bounded by the looks in flight (at most one per resync worker), not by
//! the write rate. A look left open (its closing message lost with a stopped actor) is
//! forgotten after [`GC_LOOK_HORIZON`]; a delete decided by a forgotten look is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::hash::Hash;

/// How long a look may stay open before it is forgotten. A GC look never takes this long
/// (its calls time out in seconds); a delete decided by a look older than this finds no
/// watch and is refused rather than guessed about.
pub const GC_LOOK_HORIZON: Duration = Duration::from_secs(3600);

/// One hash's open looks.
#[derive(Debug, Clone, Copy)]
struct Look {
    /// Looks open on the hash (two resync looks of one hash do not overlap on one node,
    /// but a late close must not end a newer look).
    open: u32,
    /// When the first of them opened: writes are watched from then on.
    watched_from: Instant,
    /// The last write that finished since `watched_from`.
    last_write: Option<Instant>,
}

/// What a delete asks about its hash: from when its writes are watched (`None`: no look
/// is open, nothing is known) and the last one that finished since.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WriteWatch {
    pub(super) watched_from: Option<Instant>,
    pub(super) last_write: Option<Instant>,
}

/// The open looks: see the module documentation.
#[derive(Debug, Default)]
pub(super) struct GcLooks {
    looks: HashMap<Hash, Look>,
}

impl GcLooks {
    /// Open a look at `hash` now; returns its instant (the `since` of its delete).
    pub(super) fn open(&mut self, hash: Hash) -> Instant {
        let now = Instant::now();
        let look = self.looks.entry(hash).or_insert(Look {
            open: 0,
            watched_from: now,
            last_write: None,
        });
        look.open += 1;
        now
    }

    /// A look at `hash` ended.
    pub(super) fn close(&mut self, hash: Hash) {
        if let Some(look) = self.looks.get_mut(&hash) {
            look.open = look.open.saturating_sub(1);
            if look.open == 0 {
                self.looks.remove(&hash);
            }
        }
    }

    /// A write of `hash` finished now (remembered only while a look is open).
    pub(super) fn wrote(&mut self, hash: Hash) {
        if let Some(look) = self.looks.get_mut(&hash) {
            look.last_write = Some(Instant::now());
        }
    }

    pub(super) fn watch(&self, hash: &Hash) -> WriteWatch {
        self.looks
            .get(hash)
            .map(|l| WriteWatch {
                watched_from: Some(l.watched_from),
                last_write: l.last_write,
            })
            .unwrap_or_default()
    }

    /// Forget the looks opened more than `horizon` ago (left open by a lost close).
    pub(super) fn prune(&mut self, horizon: Duration) {
        if let Some(cutoff) = Instant::now().checked_sub(horizon) {
            self.looks.retain(|_, l| l.watched_from >= cutoff);
        }
    }

    /// Hashes whose writes are being remembered.
    pub(super) fn len(&self) -> usize {
        self.looks.len()
    }
}
