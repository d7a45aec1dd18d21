//! The pure parts of resync: what to do with a block, and when to retry after an error.

use std::time::Duration;

use crate::gc::{may_go, GcVerdict};
use crate::rc::RcEntry;

/// What resync does with one block, from "stored here (and since when)" and the rc entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Referenced here but not stored: fetch it from the other holders.
    Fetch,
    /// Stored, and its grace period is over ([`may_go`]): make sure the other holders
    /// that need it have it, then delete it here behind the fence (`offload.rs`).
    Offload,
    /// Stored but its grace period (rc deadline or file age) is still running: look
    /// again at `at_time` (ms).
    WaitUntil(u64),
    /// Deletable, but the member lists differ between nodes: look again later.
    PutOff,
    /// Present and needed, or absent and not needed.
    Nothing,
}

/// Garage's `resync_block` decision, with the grace period made explicit. `stored` is
/// the modification time (ms) of the copy here, `None` when there is none; whether a
/// stored block may go is the GC rule of `gc.rs`.
pub fn decide(
    stored: Option<u64>,
    rc: RcEntry,
    now_ms: u64,
    gc_delay: Duration,
    layout_agreed: bool,
) -> Decision {
    match (stored, rc) {
        (None, RcEntry::Present { .. }) => Decision::Fetch,
        (None, _) => Decision::Nothing,
        (Some(written), rc) => match may_go(rc, written, now_ms, gc_delay, layout_agreed) {
            GcVerdict::Keep => Decision::Nothing,
            GcVerdict::WaitUntil(at) => Decision::WaitUntil(at),
            GcVerdict::PutOff => Decision::PutOff,
            GcVerdict::Offload => Decision::Offload,
        },
    }
}

/// Delay before retry number `n + 1` after `n` consecutive errors (n ≥ 1):
/// `base × 2^(min(n, 7) − 1)`, i.e. base, 2×, 4× … capped at 64 × base
/// (with the default base of 60 s: 1 min, 2 min … 64 min).
pub fn backoff(base: Duration, errors: u64) -> Duration {
    let exp = errors.clamp(1, 7) - 1;
    base.saturating_mul(1u32 << exp)
}

/// The workers and tranquility actually used: the configured ones while clients use
/// the node (background work stays in its share), but `idle_workers` with no pause
/// while there is no client load, so a node that missed writes catches up at about the
/// rate they were made instead of at a third of one worker.
pub fn pace(
    workers: usize,
    tranquility: u32,
    client_idle: bool,
    idle_workers: usize,
) -> (usize, u32) {
    if client_idle {
        (workers.max(idle_workers), 0)
    } else {
        (workers, tranquility)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_opens_up_only_without_client_load() {
        assert_eq!(pace(1, 2, false, 8), (1, 2), "client load: configured");
        assert_eq!(pace(1, 2, true, 8), (8, 0), "idle: all workers, no pause");
        assert_eq!(pace(8, 5, true, 4), (8, 0), "never fewer than configured");
    }

    #[test]
    fn decision_table_follows_the_seed_with_the_files_age_as_grace() {
        let gc = Duration::from_millis(100);
        let dec = |stored, rc, now| decide(stored, rc, now, gc, true);
        let p = RcEntry::Present { count: 2 };
        assert_eq!(dec(None, p, 0), Decision::Fetch);
        assert_eq!(dec(Some(0), p, 10_000), Decision::Nothing);
        // An orphan written at 500 waits for its file's grace, then goes.
        assert_eq!(
            dec(Some(500), RcEntry::Absent, 550),
            Decision::WaitUntil(600)
        );
        assert_eq!(dec(Some(500), RcEntry::Absent, 600), Decision::Offload);
        assert_eq!(dec(None, RcEntry::Absent, 0), Decision::Nothing);
        let d = RcEntry::Deletable { at_time: 1000 };
        assert_eq!(dec(Some(0), d, 999), Decision::WaitUntil(1000));
        assert_eq!(dec(Some(0), d, 1000), Decision::Offload);
        assert_eq!(dec(None, d, 5000), Decision::Nothing);
        assert_eq!(
            decide(Some(0), d, 1000, gc, false),
            Decision::PutOff,
            "no delete while member lists differ"
        );
    }

    #[test]
    fn backoff_doubles_and_caps_at_64_times_base() {
        let b = Duration::from_secs(60);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 2), b * 2);
        assert_eq!(backoff(b, 3), b * 4);
        assert_eq!(backoff(b, 7), b * 64);
        assert_eq!(backoff(b, 100), b * 64);
        assert_eq!(backoff(b, 0), b);
    }
}
