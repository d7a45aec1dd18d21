//! The GC fence, the refcount side of a GC delete (`actors/src/gc.rs` has the rule):
//! [`FenceForDelete`] durably marks a hash as being deleted (keyspace `gc_fence`) only
//! while its rc entry is still deletable, [`EndGcFence`] lifts it (clearing the entry if
//! the block went), and a ref that meets a fence is announced with `fenced` set so
//! resync fetches the block at once. Fences a crash left behind are lifted at start.
//! While a bare ref add of the hash is under way ([`BeginRefAdd`] .. [`EndRefAdd`], see
//! `crate::present_ref`) no fence is set: the add found, or is finding, the copy.

use actix::prelude::*;
use tracing::{debug, warn};

use super::{
    store_err, BeginRefAdd, CountRefAdds, EndGcFence, EndRefAdd, FenceForDelete, RcChanged,
    RefcountActor, RefcountError,
};
use crate::hash::Hash;
use crate::rc::{now_msec, RcEntry};

impl RefcountActor {
    /// Whether a GC fence holds the hash: pending write, else stored record.
    pub(super) fn is_fenced(&self, hash: &Hash) -> Result<bool, RefcountError> {
        if let Some(f) = self.pending.fence(hash) {
            return Ok(f.is_some());
        }
        self.fences.contains_key(hash.as_bytes()).map_err(store_err)
    }

    /// The notice of a zero/non-zero move of `hash`. A fence that cannot be read counts
    /// as set: an early fetch is harmless, a late one is what the fence prevents.
    pub(crate) fn rc_changed(&self, hash: Hash, old: RcEntry, new: RcEntry) -> RcChanged {
        let fenced = new.count() > 0 && self.is_fenced(&hash).unwrap_or(true);
        if fenced {
            debug!(hash = %hash.short(), "a ref met the GC fence; asking for an immediate fetch");
        }
        RcChanged {
            hash,
            old,
            new,
            fenced,
        }
    }

    /// Lift the fences a crash left behind (no GC run survives a restart). A fenced block
    /// that is referenced again may have been deleted: resync is told to fetch it now.
    pub(super) fn lift_stale_fences(&mut self) -> Result<(), RefcountError> {
        let mut stale = Vec::new();
        for item in self.fences.iter() {
            let k = item.key().map_err(store_err)?;
            match Hash::from_slice(&k) {
                Some(h) => stale.push(h),
                None => warn!(key = %hex::encode(&k), "gc_fence key is not a hash; skipped"),
            }
        }
        for hash in stale {
            let rc = self.current_rc(&hash)?.unwrap_or(RcEntry::Absent);
            warn!(hash = %hash.short(), ?rc, "lifting a GC fence left by a crash");
            let change = self.rc_changed(hash, RcEntry::Absent, rc);
            let g = self.pending.open_generation();
            g.fences.insert(hash, None);
            if rc.count() > 0 {
                g.changes.push(change);
            }
        }
        Ok(())
    }
}

impl Handler<FenceForDelete> for RefcountActor {
    type Result = ResponseFuture<Result<bool, RefcountError>>;
    fn handle(&mut self, m: FenceForDelete, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        let res = (|| {
            let rc = self.rc_entry(&hash)?;
            let now = now_msec();
            // A bare ref being added has found (or is finding) the copy: GC keeps it
            // (`present_ref.rs`); the ref counts in a moment, or was refused.
            if self.adds_under_way.contains_key(&hash) {
                debug!(hash = %hash.short(), "GC fence refused: a ref is being added");
                return Ok(false);
            }
            if !crate::gc::may_fence(rc, self.is_fenced(&hash)?, now) {
                debug!(hash = %hash.short(), ?rc, "GC fence refused: the block is needed again");
                return Ok(false);
            }
            self.pending
                .open_generation()
                .fences
                .insert(hash, Some(now));
            Ok(true)
        })();
        self.reply_when_durable(res, ctx)
    }
}

impl Handler<EndGcFence> for RefcountActor {
    type Result = ResponseFuture<Result<bool, RefcountError>>;
    fn handle(&mut self, m: EndGcFence, ctx: &mut Context<Self>) -> Self::Result {
        let hash = m.hash;
        let res = (|| {
            let rc = self.rc_entry(&hash)?;
            let clear = m.deleted && rc.is_deletable(now_msec()) && rc != RcEntry::Absent;
            // Computed while the fence still stands, so it reads as fenced.
            let change = self.rc_changed(hash, RcEntry::Absent, rc);
            let g = self.pending.open_generation();
            g.fences.insert(hash, None);
            if clear {
                g.rc.insert(hash, RcEntry::Absent);
            }
            if m.deleted && rc.count() > 0 {
                warn!(hash = %hash.short(), "a ref arrived while the block was being deleted; fetching it back");
                g.changes.push(change);
            }
            Ok(clear)
        })();
        self.reply_when_durable(res, ctx)
    }
}

impl Handler<BeginRefAdd> for RefcountActor {
    type Result = ();
    fn handle(&mut self, m: BeginRefAdd, _ctx: &mut Context<Self>) {
        *self.adds_under_way.entry(m.hash).or_insert(0) += 1;
    }
}

impl Handler<CountRefAdds> for RefcountActor {
    type Result = u32;
    fn handle(&mut self, m: CountRefAdds, _ctx: &mut Context<Self>) -> u32 {
        self.adds_under_way.get(&m.hash).copied().unwrap_or(0)
    }
}

impl Handler<EndRefAdd> for RefcountActor {
    type Result = ();
    fn handle(&mut self, m: EndRefAdd, _ctx: &mut Context<Self>) {
        if let std::collections::hash_map::Entry::Occupied(mut e) =
            self.adds_under_way.entry(m.hash)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}
