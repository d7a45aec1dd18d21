//! HTTP semantics of immutable, content-addressed blocks, as plain functions: the entity
//! tag of a block, `If-None-Match` matching and single byte ranges (RFC 9110 §8.8.3,
//! §13.1.2, §14). The API handlers apply them; nothing here touches a socket or a file.

use blocknode_actors::Hash;

/// `Cache-Control` of a block: its bytes can never change under its name.
pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The entity tag of a block: its hash, quoted (a strong tag: same name, same bytes).
pub fn etag(hash: &Hash) -> String {
    format!("\"{}\"", hash.to_hex())
}

/// Whether an `If-None-Match` value matches the block's tag: `*`, or a comma-separated
/// list holding the tag (weak comparison, so `W/"<hash>"` matches too).
pub fn if_none_match_matches(value: &str, hash: &Hash) -> bool {
    let tag = etag(hash);
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// What a `Range` header asks of a block of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Serve the whole block with 200 (no header, several ranges, or a header this node
    /// does not understand: RFC 9110 lets a server ignore `Range`).
    Full,
    /// Serve bytes `first..=last` with 206 and `Content-Range: bytes first-last/len`.
    Partial { first: u64, last: u64 },
    /// 416 with `Content-Range: bytes */len`: no byte of the range exists.
    Unsatisfiable,
}

/// Decide a `Range` header value for a block of `len` bytes. Only one range of the
/// `bytes` unit is served; a syntactically invalid value is ignored (200), a valid one
/// that selects nothing is unsatisfiable (416).
pub fn decide_range(value: &str, len: u64) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok().map(Some)
        } else {
            None
        }
    };
    let (Some(a), Some(b)) = (num(a), num(b)) else {
        return RangeAnswer::Full;
    };
    match (a, b) {
        (None, None) => RangeAnswer::Full,
        // A suffix: the last `n` bytes.
        (None, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    first: len.saturating_sub(n),
                    last: len - 1,
                }
            }
        }
        (Some(first), last) => {
            if last.is_some_and(|l| l < first) {
                return RangeAnswer::Full;
            }
            if first >= len {
                return RangeAnswer::Unsatisfiable;
            }
            RangeAnswer::Partial {
                first,
                last: last.map_or(len - 1, |l| l.min(len - 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blocknode_actors::blake2sum;

    use RangeAnswer::{Full, Partial, Unsatisfiable};

    #[test]
    fn single_ranges_are_clamped_and_suffixes_count_from_the_end() {
        let cases = [
            ("bytes=0-0", Partial { first: 0, last: 0 }),
            (
                "bytes=99-99",
                Partial {
                    first: 99,
                    last: 99,
                },
            ),
            (
                "bytes=10-19",
                Partial {
                    first: 10,
                    last: 19,
                },
            ),
            (
                "bytes=10-",
                Partial {
                    first: 10,
                    last: 99,
                },
            ),
            (
                "bytes=90-1000",
                Partial {
                    first: 90,
                    last: 99,
                },
            ),
            (
                "bytes=-1",
                Partial {
                    first: 99,
                    last: 99,
                },
            ),
            (
                "bytes=-30",
                Partial {
                    first: 70,
                    last: 99,
                },
            ),
            ("bytes=-1000", Partial { first: 0, last: 99 }),
            (" bytes= 5 - 6 ", Partial { first: 5, last: 6 }),
            ("bytes=100-", Unsatisfiable),
            ("bytes=100-200", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            // Ignored: not understood, several ranges, or reversed (invalid per RFC).
            ("bytes=0-1,5-6", Full),
            ("items=0-1", Full),
            ("bytes=a-b", Full),
            ("bytes=-", Full),
            ("bytes=20-10", Full),
            ("bytes=+1-2", Full),
            ("bytes=99999999999999999999999-", Full),
        ];
        for (header, want) in cases {
            assert_eq!(
                decide_range(header, 100),
                want,
                "Range: {header:?} of 100 bytes"
            );
        }
        assert_eq!(decide_range("bytes=0-", 0), Unsatisfiable, "empty block");
        assert_eq!(
            decide_range("bytes=-5", 0),
            Unsatisfiable,
            "empty block, suffix"
        );
    }

    #[test]
    fn if_none_match_takes_the_tag_in_a_list_weak_or_star() {
        let h = blake2sum(b"x");
        let other = blake2sum(b"y");
        assert!(if_none_match_matches(&etag(&h), &h));
        assert!(if_none_match_matches("*", &h));
        assert!(if_none_match_matches(&format!("W/{}", etag(&h)), &h));
        assert!(if_none_match_matches(
            &format!("{}, {}", etag(&other), etag(&h)),
            &h
        ));
        assert!(!if_none_match_matches(&etag(&other), &h));
        assert!(
            !if_none_match_matches(&h.to_hex(), &h),
            "an unquoted tag is not the tag"
        );
    }
}
