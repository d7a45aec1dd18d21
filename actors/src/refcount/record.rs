//! One ref record and the rule that merges two of them (pure, no I/O).
//!
//! A ref name lives in incarnations: each add that finds the name dropped (or unknown)
//! starts a new one, numbered by the coordinator above every incarnation it read on the
//! holders. A record is `(incarnation, live | dropped)`, and the merge takes the larger of
//! two records by `(incarnation, dropped)`: a higher incarnation wins, and within one
//! incarnation dropped wins. That is a maximum over a total order, so the merge is
//! commutative, associative and idempotent, and it reads no clock. A drop names the
//! incarnation it drops, so a drop of incarnation k (replayed late from a hint, say)
//! never kills k+1.
//!
//! A tombstone also keeps the wall-clock time it was dropped (ms since the epoch; 0 when
//! unknown, as for a tombstone written before drop times were kept). It orders nothing:
//! it only tells when the tombstone may be purged (`max_offline` after the drop). Two
//! copies of one tombstone keep the earlier known time, so every holder purges it at
//! about the same time.

use super::RefState;

/// A ref record: its state, its incarnation and, for a tombstone, its drop time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefRec {
    pub state: RefState,
    pub incarnation: u64,
    /// When it was dropped (ms since the epoch); 0 while live or when unknown.
    pub dropped_at: u64,
}

impl RefRec {
    /// A live record of `incarnation`.
    pub fn live(incarnation: u64) -> Self {
        RefRec {
            state: RefState::Live,
            incarnation,
            dropped_at: 0,
        }
    }

    /// A tombstone of `incarnation`, dropped at `at` (ms).
    pub fn dropped(incarnation: u64, at: u64) -> Self {
        RefRec {
            state: RefState::Dropped,
            incarnation,
            dropped_at: at,
        }
    }

    pub fn is_live(&self) -> bool {
        self.state == RefState::Live
    }

    /// The merge order: higher incarnation first, then dropped over live.
    fn rank(&self) -> (u64, bool) {
        (self.incarnation, self.state == RefState::Dropped)
    }

    /// Whether `self` and `other` say the same thing (drop times aside).
    pub fn same(&self, other: &RefRec) -> bool {
        self.rank() == other.rank()
    }

    /// The merge of two records (see the module doc).
    pub fn merge(self, other: RefRec) -> RefRec {
        match self.rank().cmp(&other.rank()) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => RefRec {
                dropped_at: match (self.dropped_at, other.dropped_at) {
                    (0, b) => b,
                    (a, 0) => a,
                    (a, b) => a.min(b),
                },
                ..self
            },
        }
    }
}

/// `incoming` merged into the current record (`None`: none here).
pub fn merge_into(current: Option<RefRec>, incoming: RefRec) -> RefRec {
    match current {
        Some(c) => c.merge(incoming),
        None => incoming,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rec() -> impl Strategy<Value = RefRec> {
        (0u64..4, any::<bool>(), 0u64..3).prop_map(|(i, live, t)| {
            if live {
                RefRec::live(i)
            } else {
                RefRec::dropped(i, t)
            }
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in rec(), b in rec()) {
            prop_assert_eq!(a.merge(b), b.merge(a));
        }

        #[test]
        fn merge_is_associative(a in rec(), b in rec(), c in rec()) {
            prop_assert_eq!(a.merge(b).merge(c), a.merge(b.merge(c)));
        }

        #[test]
        fn merge_is_idempotent(a in rec(), b in rec()) {
            prop_assert_eq!(a.merge(a), a);
            prop_assert_eq!(a.merge(b).merge(b), a.merge(b));
        }

        #[test]
        fn higher_incarnation_wins(i in 0u64..100, live_old in any::<bool>(), live_new in any::<bool>()) {
            let old = if live_old { RefRec::live(i) } else { RefRec::dropped(i, 5) };
            let new = if live_new { RefRec::live(i + 1) } else { RefRec::dropped(i + 1, 5) };
            prop_assert!(old.merge(new).same(&new));
            prop_assert!(new.merge(old).same(&new));
        }

        #[test]
        fn dropped_wins_within_one_incarnation(i in 0u64..100, t in 0u64..10) {
            let d = RefRec::dropped(i, t);
            prop_assert_eq!(RefRec::live(i).merge(d), d);
            prop_assert_eq!(d.merge(RefRec::live(i)), d);
        }
    }

    #[test]
    fn equal_tombstones_keep_the_earlier_known_drop_time() {
        assert_eq!(
            RefRec::dropped(1, 9)
                .merge(RefRec::dropped(1, 4))
                .dropped_at,
            4
        );
        assert_eq!(
            RefRec::dropped(1, 0)
                .merge(RefRec::dropped(1, 4))
                .dropped_at,
            4
        );
        assert_eq!(merge_into(None, RefRec::live(3)), RefRec::live(3));
    }
}
