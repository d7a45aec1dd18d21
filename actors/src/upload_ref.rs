//! Upload refs: the ref an object upload in progress holds on every block it stored,
//! named `@upload:<start>:<random>` where `<start>` is the upload's start time (ms since
//! the epoch, decimal). The name carries its own age so that a ref left behind by a
//! coordinator or client that died mid-upload can be dropped by every node on its own
//! (the refcount actor's expiry pass, `refcount/expire.rs`), without any record of the
//! upload: such a ref is live for at most [`UPLOAD_REF_TTL`] (plus one pass interval),
//! after which its blocks are orphans like any other.
//!
//! An upload relies on its ref until the object's own refs are on every block, so it
//! must end (commit or fail) before the ref expires: it refuses to start its commit
//! once less than [`UPLOAD_REF_MARGIN`] of the lifetime is left (that margin covers
//! the commit itself and the clock skew between nodes), and fails cleanly instead.

use std::time::Duration;

use crate::ref_id::RefId;

/// Prefix of every upload ref.
pub const UPLOAD_REF_PREFIX: &str = "@upload:";

/// How long an upload ref lives after its upload started: far above the longest
/// upload's duration (a 1 TiB object at 50 MiB/s takes about 6 hours).
pub const UPLOAD_REF_TTL: Duration = Duration::from_secs(24 * 3600);

/// An upload does not start its commit when less than this is left of its ref's
/// lifetime: room for the commit (one ref per block) and for clocks that disagree.
pub const UPLOAD_REF_MARGIN: Duration = Duration::from_secs(3600);

/// A new upload ref for an upload started at `started_ms` (ms since the epoch).
pub fn new_upload_ref(started_ms: u64) -> RefId {
    format!(
        "{UPLOAD_REF_PREFIX}{started_ms}:{:032x}",
        rand::random::<u128>()
    )
    .parse()
    .expect("digits, hex and the prefix are valid ref name characters")
}

/// The start time (ms since the epoch) an upload ref names; `None` for any other ref,
/// or an upload ref without a start time (never expired).
pub fn upload_started_ms(r: &RefId) -> Option<u64> {
    let rest = r.as_str().strip_prefix(UPLOAD_REF_PREFIX)?;
    let (start, random) = rest.split_once(':')?;
    if random.is_empty() {
        return None;
    }
    start.parse().ok()
}

/// Whether `r` is an upload ref past its lifetime `ttl` at `now_ms`. A start time more
/// than `ttl` in the future cannot come from a running upload either (a clock that far
/// off, or a forged name): it is expired too, so no name escapes expiry.
pub fn upload_ref_expired(r: &RefId, now_ms: u64, ttl: Duration) -> bool {
    let Some(start) = upload_started_ms(r) else {
        return false;
    };
    let ttl = ttl.as_millis() as u64;
    start.saturating_add(ttl) < now_ms || start > now_ms.saturating_add(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_ref_carries_its_start_and_expires_after_the_ttl() {
        let ttl = Duration::from_secs(10);
        let r = new_upload_ref(1_000_000);
        assert!(r.as_str().starts_with("@upload:1000000:"));
        assert_eq!(upload_started_ms(&r), Some(1_000_000));
        assert!(!upload_ref_expired(&r, 1_000_000, ttl));
        assert!(
            !upload_ref_expired(&r, 1_010_000, ttl),
            "at the bound: kept"
        );
        assert!(upload_ref_expired(&r, 1_010_001, ttl));
        assert!(upload_ref_expired(&r, 989_999, ttl), "far in the future");
        for other in [
            "snap-1",
            "@obj:ab:x",
            "@upload:",
            "@upload:123",
            "@upload:x:y",
        ] {
            let o: RefId = other.parse().expect("valid");
            assert!(!upload_ref_expired(&o, u64::MAX, ttl), "{other}");
        }
    }
}
