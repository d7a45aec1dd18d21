//! The garbage-collection rule, as plain functions: may this present block go?
//!
//! A GC delete is the end of a chain that crosses three actors (resync decides, refcount
//! fences, storage deletes), so each link asks one question answered here:
//!
//! 1. [`may_go`] (resync, before anything is sent): the block is stored here, its rc entry
//!    is not `Present`, the grace period is over, and the nodes agree on the member list.
//!    The grace period of a block comes from its rc entry (`Deletable { at_time }`) *and*
//!    from its file: a file written (or re-written: an `AlreadyPresent` write touches it)
//!    less than `gc_delay` ago is kept. An orphan (stored, no rc entry: a PUT whose ref
//!    has not arrived yet) thus gets its whole grace from the file's age, and a block that
//!    a client has just re-uploaded (a dedup client re-sending a chunk that a dropped
//!    snapshot released) outlives the ref that follows it.
//! 2. [`may_fence`] (refcount, on `FenceForDelete`, after the other holders were served):
//!    the rc entry is still deletable. The fence is written durably; an `AddRef` that
//!    meets it asks for an immediate fetch, since the block may be gone a moment later.
//! 3. [`unwritten_since`] (storage, on `DeleteIfUnwritten`, on the hash's lane): no write
//!    of the hash finished since the GC look began (an `AlreadyPresent` answer counts);
//!    storage watches a hash's writes only while a look at it is open (`OpenGcLook`).
//!
//! A ref or a write that lands anywhere in the chain therefore either stops the delete or
//! is followed by a fetch: see docs/operations.md, "What a GC delete checks".

use std::time::{Duration, Instant};

use crate::rc::RcEntry;

/// Default grace period between a block's last ref dropped and its deletion, and the
/// least age of a block file before GC may delete it: ten minutes, as in Garage
/// (`BLOCK_GC_DELAY`), long enough for a concurrent `AddRef` racing the drop to win.
/// The node's `gc_delay` config key defaults to it; the actors' configs too.
pub const DEFAULT_GC_DELAY: Duration = Duration::from_secs(600);

/// What [`may_go`] says about a stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcVerdict {
    /// Referenced here: keep it, nothing to wait for.
    Keep,
    /// Not referenced, but its grace period runs until this time (ms since the epoch).
    WaitUntil(u64),
    /// Not referenced, grace over, but the member lists differ between nodes: the
    /// holders are not agreed on, so nothing is deleted now; look again later.
    PutOff,
    /// The offload may start (serve the holders that need it, fence, delete).
    Offload,
}

/// May a block stored here go? `written_ms` is the file's modification time (ms since
/// the epoch), `now_ms` the clock now, `layout_agreed` whether every node has the same
/// member list.
pub fn may_go(
    rc: RcEntry,
    written_ms: u64,
    now_ms: u64,
    gc_delay: Duration,
    layout_agreed: bool,
) -> GcVerdict {
    let file_grace_end = written_ms.saturating_add(gc_delay.as_millis() as u64);
    let grace_end = match rc {
        RcEntry::Present { .. } => return GcVerdict::Keep,
        RcEntry::Deletable { at_time } => at_time.max(file_grace_end),
        RcEntry::Absent => file_grace_end,
    };
    if grace_end > now_ms {
        GcVerdict::WaitUntil(grace_end)
    } else if !layout_agreed {
        GcVerdict::PutOff
    } else {
        GcVerdict::Offload
    }
}

/// May the refcount actor fence the hash for deletion? Only while its rc entry is still
/// deletable (a ref that came back meanwhile wins) and no other fence holds it (two GC
/// runs of one block never overlap: the resync busy set prevents it, and a stale fence
/// left by a crash is cleared at start).
pub fn may_fence(rc: RcEntry, already_fenced: bool, now_ms: u64) -> bool {
    !already_fenced && rc.is_deletable(now_ms)
}

/// May storage delete the hash? Only if no write of it finished at or after `since`
/// (the instant the GC look began). `watched_from` is when the storage actor began
/// remembering the hash's writes (the look it opened; `None`: no look is open, so its
/// writes are not known), `last_write` the last one it saw since: a decision older than
/// the watch, or one about a hash nobody watches, cannot be checked and is refused.
pub fn unwritten_since(
    watched_from: Option<Instant>,
    last_write: Option<Instant>,
    since: Instant,
) -> bool {
    match watched_from {
        Some(from) if since >= from => last_write.is_none_or(|w| w < since),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GC: Duration = Duration::from_millis(1000);

    #[test]
    fn a_referenced_block_is_kept_whatever_its_age() {
        let rc = RcEntry::Present { count: 1 };
        assert_eq!(may_go(rc, 0, u64::MAX, GC, true), GcVerdict::Keep);
    }

    #[test]
    fn an_orphan_gets_its_grace_from_the_files_age() {
        // Written at t=5000: kept until 6000, then it may go.
        assert_eq!(
            may_go(RcEntry::Absent, 5000, 5000, GC, true),
            GcVerdict::WaitUntil(6000)
        );
        assert_eq!(
            may_go(RcEntry::Absent, 5000, 5999, GC, true),
            GcVerdict::WaitUntil(6000)
        );
        assert_eq!(
            may_go(RcEntry::Absent, 5000, 6000, GC, true),
            GcVerdict::Offload
        );
    }

    #[test]
    fn a_deletable_block_waits_for_the_later_of_its_deadline_and_its_files_grace() {
        let d = RcEntry::Deletable { at_time: 3000 };
        // Old file: the rc deadline rules.
        assert_eq!(may_go(d, 0, 2999, GC, true), GcVerdict::WaitUntil(3000));
        assert_eq!(may_go(d, 0, 3000, GC, true), GcVerdict::Offload);
        // Re-written at 2500 (a dedup re-upload): kept until 3500.
        assert_eq!(may_go(d, 2500, 3000, GC, true), GcVerdict::WaitUntil(3500));
        assert_eq!(may_go(d, 2500, 3500, GC, true), GcVerdict::Offload);
    }

    #[test]
    fn nothing_goes_while_member_lists_differ() {
        assert_eq!(
            may_go(RcEntry::Absent, 0, 10_000, GC, false),
            GcVerdict::PutOff
        );
        // The grace period is still reported first: there is nothing to put off yet.
        assert_eq!(
            may_go(RcEntry::Absent, 9500, 10_000, GC, false),
            GcVerdict::WaitUntil(10_500)
        );
    }

    #[test]
    fn the_fence_needs_a_still_deletable_entry_and_no_other_fence() {
        assert!(may_fence(RcEntry::Absent, false, 0));
        assert!(may_fence(RcEntry::Deletable { at_time: 10 }, false, 10));
        assert!(!may_fence(RcEntry::Deletable { at_time: 10 }, false, 9));
        assert!(!may_fence(RcEntry::Present { count: 1 }, false, 100));
        assert!(!may_fence(RcEntry::Absent, true, 100));
    }

    #[test]
    fn a_write_since_the_decision_or_a_forgotten_decision_stops_the_delete() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let t2 = t0 + Duration::from_millis(2);
        assert!(unwritten_since(Some(t0), None, t1));
        assert!(
            unwritten_since(Some(t0), Some(t0), t1),
            "written before: may go"
        );
        assert!(
            !unwritten_since(Some(t0), Some(t1), t1),
            "written at the decision"
        );
        assert!(!unwritten_since(Some(t0), Some(t2), t1), "written after");
        assert!(
            !unwritten_since(Some(t2), None, t1),
            "a decision older than the watch is refused"
        );
        assert!(
            !unwritten_since(None, None, t1),
            "a hash nobody watches is refused"
        );
    }
}
