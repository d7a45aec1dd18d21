//! Report types of the refcount actor: [`RebuildReport`].

/// What [`RebuildRc`](super::RebuildRc) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// rc entries examined.
    pub entries: u64,
    /// rc entries rewritten because they were wrong or corrupt.
    pub fixed: u64,
}
