//! [`RcEntry`]: the reference count of a block, as stored in the `rc` keyspace.
//!
//! Byte format (Garage's, kept so data moves between the two):
//! - absent key: [`RcEntry::Absent`] (no reference, nothing to collect);
//! - 8 bytes: [`RcEntry::Present`], the count as a big-endian `u64` (never 0);
//! - 16 bytes, the first 8 zero: [`RcEntry::Deletable`], then the big-endian time in
//!   milliseconds since the Unix epoch after which the block may be deleted.
//!
//! Any other value is a [`RcParseError`], logged and repaired by rebuilding the count
//! from the `refs` keyspace; it never panics (Garage's did).

use std::time::Duration;

/// The reference state of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcEntry {
    /// `count` live references (at least 1).
    Present { count: u64 },
    /// No live reference since a while; deletable after `at_time` (ms since the epoch).
    Deletable { at_time: u64 },
    /// Never referenced, or its deletion is done.
    Absent,
}

/// A stored rc value that is none of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rc entry ({} bytes: {})", .0.len(), hex::encode(.0))]
pub struct RcParseError(pub Vec<u8>);

impl RcEntry {
    /// Parse a stored value; `None` (no key) is `Absent`.
    pub fn parse_opt(bytes: Option<&[u8]>) -> Result<RcEntry, RcParseError> {
        match bytes {
            None => Ok(RcEntry::Absent),
            Some(b) => RcEntry::parse(b),
        }
    }

    /// Parse a stored value.
    pub fn parse(bytes: &[u8]) -> Result<RcEntry, RcParseError> {
        match bytes.len() {
            8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(bytes);
                match u64::from_be_bytes(a) {
                    0 => Err(RcParseError(bytes.to_vec())),
                    count => Ok(RcEntry::Present { count }),
                }
            }
            16 if bytes[..8] == [0u8; 8] => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[8..]);
                Ok(RcEntry::Deletable {
                    at_time: u64::from_be_bytes(a),
                })
            }
            _ => Err(RcParseError(bytes.to_vec())),
        }
    }

    /// The stored value; `None` means "remove the key".
    pub fn serialize(&self) -> Option<Vec<u8>> {
        match self {
            RcEntry::Present { count } => Some(count.to_be_bytes().to_vec()),
            RcEntry::Deletable { at_time } => {
                let mut v = vec![0u8; 8];
                v.extend_from_slice(&at_time.to_be_bytes());
                Some(v)
            }
            RcEntry::Absent => None,
        }
    }

    /// The entry for a block that now has `count` live references, given its previous
    /// entry: dropping to zero starts the grace period, and a block that already was at
    /// zero keeps its deadline (a redundant drop must not push deletion further away).
    pub fn with_count(self, count: u64, now_ms: u64, gc_delay: Duration) -> RcEntry {
        match (count, self) {
            (0, RcEntry::Present { .. }) => RcEntry::Deletable {
                at_time: now_ms.saturating_add(gc_delay.as_millis() as u64),
            },
            (0, other) => other,
            (count, _) => RcEntry::Present { count },
        }
    }

    /// The number of live references.
    pub fn count(&self) -> u64 {
        match self {
            RcEntry::Present { count } => *count,
            _ => 0,
        }
    }

    /// Whether some reference wants this block kept (and stored here).
    pub fn is_needed(&self) -> bool {
        matches!(self, RcEntry::Present { .. })
    }

    /// Whether the grace period is over (or the block was never referenced).
    pub fn is_deletable(&self, now_ms: u64) -> bool {
        match self {
            RcEntry::Present { .. } => false,
            RcEntry::Deletable { at_time } => *at_time <= now_ms,
            RcEntry::Absent => true,
        }
    }
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_msec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_format_is_the_seeds() {
        assert_eq!(
            RcEntry::Present { count: 3 }.serialize().unwrap(),
            vec![0, 0, 0, 0, 0, 0, 0, 3]
        );
        let d = RcEntry::Deletable { at_time: 0x0102 }.serialize().unwrap();
        assert_eq!(d.len(), 16);
        assert_eq!(&d[..8], &[0u8; 8]);
        assert_eq!(&d[8..], &0x0102u64.to_be_bytes());
        assert_eq!(RcEntry::Absent.serialize(), None);
        for e in [
            RcEntry::Present { count: 1 },
            RcEntry::Present { count: u64::MAX },
            RcEntry::Deletable { at_time: 12345 },
        ] {
            assert_eq!(RcEntry::parse(&e.serialize().unwrap()), Ok(e));
        }
        assert_eq!(RcEntry::parse_opt(None), Ok(RcEntry::Absent));
    }

    #[test]
    fn invalid_bytes_are_errors_not_panics() {
        for bad in [
            &b""[..],
            &b"\x01"[..],
            &[0u8; 8][..],
            &[1u8; 16][..],
            &[0u8; 17][..],
            &[0u8; 9][..],
        ] {
            assert!(RcEntry::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn grace_period_state_machine() {
        let gc = Duration::from_secs(600);
        let e = RcEntry::Absent.with_count(1, 1000, gc);
        assert_eq!(e, RcEntry::Present { count: 1 });
        assert!(e.is_needed() && !e.is_deletable(u64::MAX));
        let e = e.with_count(2, 1000, gc).with_count(1, 1000, gc);
        assert_eq!(e.count(), 1);
        let d = e.with_count(0, 1000, gc);
        assert_eq!(d, RcEntry::Deletable { at_time: 601_000 });
        assert!(!d.is_deletable(600_999) && d.is_deletable(601_000));
        // A second drop to zero keeps the first deadline.
        assert_eq!(d.with_count(0, 5000, gc), d);
        // A new reference during the grace period wins.
        assert_eq!(d.with_count(1, 2000, gc), RcEntry::Present { count: 1 });
        assert_eq!(RcEntry::Absent.with_count(0, 1, gc), RcEntry::Absent);
    }
}
