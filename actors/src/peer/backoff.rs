//! The reconnect delay: capped exponential backoff, a pure function.

use std::time::Duration;

/// Delay before reconnect attempt number `failures` (1 after the first failure):
/// `min · 2^(failures-1)`, never above `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    min.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_and_stops_at_max() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(backoff(0, min, max), min);
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(2, min, max), Duration::from_millis(200));
        assert_eq!(backoff(4, min, max), Duration::from_millis(800));
        assert_eq!(backoff(8, min, max), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX, min, max), max);
    }
}
