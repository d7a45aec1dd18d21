//! Checks and encoding of the command-line arguments the client commands send to a
//! node: block hashes ([`hash_arg`]), ref names ([`ref_arg`]) and query values
//! ([`query_escape`]).

use blocknode_actors::{Hash, RefId};

/// A block hash given on the command line, checked here so a typo fails with a clear
/// reason instead of reaching (or, with a `/`, misrouting to) another API route.
pub(super) fn hash_arg(s: &str) -> anyhow::Result<Hash> {
    s.to_ascii_lowercase()
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid block hash {s:?}: {e}"))
}

/// A ref name given on the command line, checked for the same reason as [`hash_arg`].
pub(super) fn ref_arg(s: &str) -> anyhow::Result<RefId> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("invalid ref name {s:?}: {e}"))
}

/// Percent-encode a query value: everything but RFC 3986's unreserved characters.
/// Needed for refs: `+` is legal in a ref name but means a space in a query string.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
