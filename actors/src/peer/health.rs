//! How healthy a holder looks for a read, as pure functions over plain data: the
//! recent-latency window of each peer, the hedge delay derived from it, and the order in
//! which a block's holders are asked (this node, then up peers fastest first, then peers
//! that look stalled, then down peers). No I/O: the peer actor feeds the window and
//! answers [`super::PlanRead`] from it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::hash::NodeId;

/// Samples kept per peer: enough for a stable p95 (3 samples above it), few enough
/// that a peer that turned slow shows it within a few dozen reads.
pub const LATENCY_WINDOW: usize = 64;
/// Shortest hedge delay: below a few ms a hedge mostly duplicates reads that were about
/// to answer (loopback p50 of a small block is ~1 ms here).
pub const MIN_HEDGE_DELAY: Duration = Duration::from_millis(5);
/// Longest hedge delay: a slow-but-alive peer never holds a read for more than this
/// before the next holder is asked too (a whole GET should take at most 1 s).
pub const MAX_HEDGE_DELAY: Duration = Duration::from_millis(250);
/// Hedge delay while too few samples are known (a fresh peer, a fresh node).
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(50);
/// Samples needed before the window's percentiles are trusted.
const MIN_SAMPLES: usize = 8;
/// A peer with a read outstanding for longer than this is ordered after the peers that
/// answer: it is probably hung (SIGSTOP, a stuck disk) even though its connection has
/// not timed out yet.
pub const STALL_AFTER: Duration = Duration::from_millis(500);

/// The latencies of a peer's most recent reads (oldest dropped first).
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: VecDeque<Duration>,
}

impl LatencyWindow {
    /// Add one observed latency. A read that was cancelled after `d` is added too: `d`
    /// is a lower bound of what it would have taken, so a hung peer's window fills up
    /// with long samples instead of staying at its healthy past.
    pub fn record(&mut self, d: Duration) {
        if self.samples.len() == LATENCY_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(d);
    }

    /// The `q`-quantile (0.0–1.0) of the window, `None` with too few samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        let mut v: Vec<Duration> = self.samples.iter().copied().collect();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        v.get(i).copied()
    }

    /// How long to wait for this peer before asking the next holder as well: about its
    /// recent p95, within [`MIN_HEDGE_DELAY`, `MAX_HEDGE_DELAY`].
    pub fn hedge_delay(&self) -> Duration {
        self.quantile(0.95)
            .unwrap_or(DEFAULT_HEDGE_DELAY)
            .clamp(MIN_HEDGE_DELAY, MAX_HEDGE_DELAY)
    }

    /// The latency used to rank this peer among the up ones: its recent median, else
    /// `rtt` (from pings), else unknown (ranked after the known ones).
    pub fn typical(&self, rtt: Option<Duration>) -> Option<Duration> {
        self.quantile(0.5).or(rtt)
    }
}

/// What the read path knows of one holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderHealth {
    /// This node: no network.
    Local,
    /// Connected and answering; `typical` is its recent latency when known.
    Up { typical: Option<Duration> },
    /// Connected, but a read has been outstanding longer than [`STALL_AFTER`].
    Stalled,
    /// No connection (being redialled in the background).
    Down,
}

impl HolderHealth {
    fn rank(&self) -> (u8, Duration) {
        match self {
            HolderHealth::Local => (0, Duration::ZERO),
            HolderHealth::Up { typical: Some(d) } => (1, *d),
            HolderHealth::Up { typical: None } => (1, Duration::MAX),
            HolderHealth::Stalled => (2, Duration::ZERO),
            HolderHealth::Down => (3, Duration::ZERO),
        }
    }
}

/// The order in which to ask `holders` (given in placement order): this node, up peers
/// by typical latency, stalled peers, down peers. Ties keep the placement order, so
/// nodes with no history spread reads as placement does.
pub fn order_holders(holders: &[(NodeId, HolderHealth)]) -> Vec<NodeId> {
    let mut v: Vec<&(NodeId, HolderHealth)> = holders.iter().collect();
    v.sort_by_key(|(_, h)| h.rank());
    v.into_iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn hedge_delay_follows_the_recent_p95_within_bounds() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.hedge_delay(), DEFAULT_HEDGE_DELAY, "no samples yet");
        for i in 0..100u64 {
            w.record(ms(10 + i % 20)); // 10..29 ms
        }
        let d = w.hedge_delay();
        assert!(d >= ms(27) && d <= ms(29), "p95 of 10..29 ms, got {d:?}");
        for _ in 0..LATENCY_WINDOW {
            w.record(Duration::from_micros(200));
        }
        assert_eq!(w.hedge_delay(), MIN_HEDGE_DELAY, "fast peer: floor");
        for _ in 0..LATENCY_WINDOW {
            w.record(Duration::from_secs(10));
        }
        assert_eq!(w.hedge_delay(), MAX_HEDGE_DELAY, "hung peer: ceiling");
    }

    #[test]
    fn window_forgets_old_samples() {
        let mut w = LatencyWindow::default();
        for _ in 0..LATENCY_WINDOW {
            w.record(ms(100));
        }
        for _ in 0..LATENCY_WINDOW / 2 + 1 {
            w.record(ms(1));
        }
        assert_eq!(
            w.typical(None),
            Some(ms(1)),
            "median moved to the new samples"
        );
        assert_eq!(
            LatencyWindow::default().typical(Some(ms(3))),
            Some(ms(3)),
            "rtt when no samples"
        );
    }

    #[test]
    fn holders_are_ordered_local_then_fastest_then_stalled_then_down() {
        let n = |b: u8| NodeId([b; 32]);
        let holders = [
            (n(1), HolderHealth::Down),
            (
                n(2),
                HolderHealth::Up {
                    typical: Some(ms(9)),
                },
            ),
            (n(3), HolderHealth::Stalled),
            (n(4), HolderHealth::Up { typical: None }),
            (
                n(5),
                HolderHealth::Up {
                    typical: Some(ms(2)),
                },
            ),
            (n(6), HolderHealth::Local),
        ];
        assert_eq!(
            order_holders(&holders),
            vec![n(6), n(5), n(2), n(4), n(3), n(1)]
        );
        let ties = [
            (n(7), HolderHealth::Up { typical: None }),
            (n(8), HolderHealth::Up { typical: None }),
        ];
        assert_eq!(
            order_holders(&ties),
            vec![n(7), n(8)],
            "placement order kept"
        );
    }
}
