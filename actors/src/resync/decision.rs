//! The pure parts of resync: what to do with a block, and when to retry after an error.

use std::time::Duration;

use crate::rc::RcEntry;

/// What resync does with one block, from "exists here" and the rc entry here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Referenced here but not stored: fetch it from the other holders.
    Fetch,
    /// Stored, and its grace period is over (or it was never referenced): make sure the
    /// other holders that need it have it, then delete it here.
    Offload,
    /// Stored but its grace period is still running: look again at `at_time` (ms).
    WaitUntil(u64),
    /// Present and needed, or absent and not needed.
    Nothing,
}

/// The seed's `resync_block` decision, with the grace period made explicit.
pub fn decide(exists: bool, rc: RcEntry, now_ms: u64) -> Decision {
    match (exists, rc) {
        (false, RcEntry::Present { .. }) => Decision::Fetch,
        (true, RcEntry::Present { .. }) => Decision::Nothing,
        (true, e) if e.is_deletable(now_ms) => Decision::Offload,
        (true, RcEntry::Deletable { at_time }) => Decision::WaitUntil(at_time),
        _ => Decision::Nothing,
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
/// rate they were made (issue 13) instead of at a third of one worker.
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
    fn decision_table_follows_the_seed() {
        let p = RcEntry::Present { count: 2 };
        assert_eq!(decide(false, p, 0), Decision::Fetch);
        assert_eq!(decide(true, p, 0), Decision::Nothing);
        assert_eq!(decide(true, RcEntry::Absent, 0), Decision::Offload);
        assert_eq!(decide(false, RcEntry::Absent, 0), Decision::Nothing);
        let d = RcEntry::Deletable { at_time: 1000 };
        assert_eq!(decide(true, d, 999), Decision::WaitUntil(1000));
        assert_eq!(decide(true, d, 1000), Decision::Offload);
        assert_eq!(decide(false, d, 5000), Decision::Nothing);
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
