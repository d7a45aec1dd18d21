//! The one merge the refcount actor reads through: a stored key range (a fjall scan)
//! overlaid with the writes applied but not yet durable (`pending.rs`).
//!
//! Both inputs come in ascending key order; [`overlay`] walks them together and yields
//! each key once, the pending write winning over the stored value of the same key, and a
//! pending removal (`None`) hiding the stored key. It streams: memory stays that of the
//! pending writes, however long the stored range is. Stored keys and pending keys may be
//! different types (fjall's `Slice` and a `Vec<u8>`, say), compared as the bytes fjall
//! orders them by, so neither side is copied to be compared. A pure iterator with no
//! fjall in it, so it is tested against a `BTreeMap` model on its own.

use std::cmp::Ordering;
use std::iter::Peekable;

/// One key of an overlaid range: its stored value, or the pending write that replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged<KS, S, KP, P> {
    /// No write of this key is pending: the stored key and value.
    Stored(KS, S),
    /// A write of this key is pending: the pending key and value.
    Pending(KP, P),
}

/// Iterator returned by [`overlay`].
pub struct Overlay<I, J: Iterator, KS, S> {
    stored: I,
    /// The stored pair read but not yielded yet (compared with the next pending key).
    head: Option<(KS, S)>,
    pending: Peekable<J>,
}

/// Overlay `pending` writes on `stored` pairs; both must be in ascending key order. A
/// pending `None` removes its key. A stored read error is yielded where it occurred
/// (the caller normally stops there).
pub fn overlay<I: Iterator, J: Iterator, KS, S>(stored: I, pending: J) -> Overlay<I, J, KS, S> {
    Overlay {
        stored,
        head: None,
        pending: pending.peekable(),
    }
}

impl<KS, S, KP, P, E, I, J> Iterator for Overlay<I, J, KS, S>
where
    KS: AsRef<[u8]>,
    KP: AsRef<[u8]>,
    I: Iterator<Item = Result<(KS, S), E>>,
    J: Iterator<Item = (KP, Option<P>)>,
{
    type Item = Result<Merged<KS, S, KP, P>, E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.head.is_none() {
                match self.stored.next() {
                    Some(Ok(kv)) => self.head = Some(kv),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            let order = match (&self.head, self.pending.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((ks, _)), Some((kp, _))) => ks.as_ref().cmp(kp.as_ref()),
            };
            if order == Ordering::Less {
                // unwrap: `order` is Less only when a stored pair is held.
                let (k, v) = self.head.take().unwrap();
                return Some(Ok(Merged::Stored(k, v)));
            }
            if order == Ordering::Equal {
                // The pending write replaces (or removes) the stored pair.
                self.head = None;
            }
            // unwrap: `order` is Equal or Greater only when a pending write was peeked.
            let (k, p) = self.pending.next().unwrap();
            if let Some(p) = p {
                return Some(Ok(Merged::Pending(k, p)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The model: apply the pending writes to a copy of the stored map.
    fn model(stored: &BTreeMap<u8, u32>, pending: &BTreeMap<u8, Option<u32>>) -> BTreeMap<u8, u32> {
        let mut out = stored.clone();
        for (k, p) in pending {
            match p {
                Some(v) => out.insert(*k, *v),
                None => out.remove(k),
            };
        }
        out
    }

    fn merged(
        stored: &BTreeMap<u8, u32>,
        pending: &BTreeMap<u8, Option<u32>>,
    ) -> Vec<(u8, u32, bool)> {
        let s = stored.iter().map(|(k, v)| Ok::<_, ()>(([*k], *v)));
        let p = pending.iter().map(|(k, v)| ([*k], *v));
        overlay(s, p)
            .map(|m| match m.unwrap() {
                Merged::Stored([k], v) => (k, v, false),
                Merged::Pending([k], v) => (k, v, true),
            })
            .collect()
    }

    #[test]
    fn pending_writes_replace_hide_and_add_keys() {
        let stored = BTreeMap::from([(1, 10), (3, 30), (5, 50)]);
        let pending = BTreeMap::from([(0, Some(0)), (3, Some(33)), (5, None), (6, Some(60))]);
        assert_eq!(
            merged(&stored, &pending),
            vec![(0, 0, true), (1, 10, false), (3, 33, true), (6, 60, true)]
        );
    }

    #[test]
    fn stored_and_pending_keys_of_different_types_compare_as_bytes() {
        let stored = [
            Ok::<_, ()>((Box::<[u8]>::from(&b"a"[..]), "stored a")),
            Ok((Box::from(&b"ab"[..]), "stored ab")),
        ];
        let pending = vec![(b"ab".to_vec(), Some("pending ab")), (b"b".to_vec(), None)];
        let got: Vec<(Vec<u8>, &str)> = overlay(stored.into_iter(), pending.into_iter())
            .map(|m| match m.unwrap() {
                Merged::Stored(k, v) => (k.to_vec(), v),
                Merged::Pending(k, v) => (k, v),
            })
            .collect();
        assert_eq!(
            got,
            vec![(b"a".to_vec(), "stored a"), (b"ab".to_vec(), "pending ab")]
        );
    }

    #[test]
    fn a_stored_read_error_is_yielded_where_it_occurs() {
        let stored = vec![Ok(([1u8], 1u32)), Err("disk"), Ok(([3], 3))];
        let pending = vec![([2u8], Some(2u32))];
        let got: Vec<Result<([u8; 1], u32), &str>> =
            overlay(stored.into_iter(), pending.into_iter())
                .map(|m| {
                    m.map(|m| match m {
                        Merged::Stored(k, v) | Merged::Pending(k, v) => (k, v),
                    })
                })
                .collect();
        assert_eq!(
            got,
            vec![Ok(([1], 1)), Err("disk"), Ok(([2], 2)), Ok(([3], 3))]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// The overlay yields exactly the model's map, in key order, each key marked with
        /// the layer it came from.
        #[test]
        fn overlay_equals_the_map_with_pending_writes_applied(
            stored in proptest::collection::btree_map(any::<u8>(), any::<u32>(), 0..40),
            pending in proptest::collection::btree_map(any::<u8>(), proptest::option::of(any::<u32>()), 0..40),
        ) {
            let got = merged(&stored, &pending);
            let want = model(&stored, &pending);
            let pairs: Vec<(u8, u32)> = got.iter().map(|(k, v, _)| (*k, *v)).collect();
            prop_assert_eq!(pairs, want.into_iter().collect::<Vec<_>>());
            for (k, _, from_pending) in got {
                prop_assert_eq!(from_pending, pending.contains_key(&k));
            }
        }
    }
}
