//! Names: the 32-byte [`Hash`] of a block and the [`NodeId`] of a cluster member.
//!
//! Both are BLAKE2b-512 digests truncated to their first 32 bytes ([`blake2sum`]), the
//! function Garage uses, so the same bytes get the same name in both systems. Their text
//! form is exactly 64 lowercase hex digits; anything else is refused at the edge.

use std::fmt;
use std::str::FromStr;

use blake2::{Blake2b512, Digest};
use serde::{Deserialize, Serialize};

/// Length in bytes of a [`Hash`] and a [`NodeId`].
pub const HASH_LEN: usize = 32;

/// Why a text could not be parsed as a hash or node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    #[error("expected 64 hex digits, got {0} characters")]
    BadLength(usize),
    #[error("expected lowercase hex digits [0-9a-f], found {0:?} at position {1}")]
    BadChar(char, usize),
}

fn parse_hex32(s: &str) -> Result<[u8; HASH_LEN], ParseHashError> {
    if s.len() != HASH_LEN * 2 {
        return Err(ParseHashError::BadLength(s.chars().count()));
    }
    if let Some((i, c)) = s
        .char_indices()
        .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
    {
        return Err(ParseHashError::BadChar(c, i));
    }
    let mut out = [0u8; HASH_LEN];
    // The checks above leave only ASCII lowercase hex of the right length.
    hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError::BadLength(s.len()))?;
    Ok(out)
}

/// The name of a block: `blake2sum` of its plain (uncompressed) bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(#[serde(with = "serde_bytes")] pub [u8; HASH_LEN]);

impl Hash {
    /// The first 8 hex digits, for logs and spans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Full 64-digit lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Build a hash from a 32-byte slice (e.g. a metadata key); `None` if the length is wrong.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; HASH_LEN]>::try_from(b).ok().map(Hash)
    }
}

/// The hash's bytes, in the order fjall sorts keys by (the same order as `Ord`).
impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl FromStr for Hash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Hash)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// BLAKE2b-512 of `data`, truncated to its first 32 bytes (as Garage's `blake2sum`).
///
/// Note: this is not `Blake2b<U32>`, whose output length is part of the hashed state.
pub fn blake2sum(data: &[u8]) -> Hash {
    let digest = Blake2b512::digest(data);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&digest[..HASH_LEN]);
    Hash(out)
}

/// The identity of a cluster member: `blake2sum` of its certificate's
/// SubjectPublicKeyInfo (DER), so it is bound to the node's key, not to a name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(#[serde(with = "serde_bytes")] pub [u8; HASH_LEN]);

impl NodeId {
    /// The first 8 hex digits, for logs and spans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Full 64-digit lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Derive a node id from a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Self {
        NodeId(blake2sum(spki).0)
    }
}

impl FromStr for NodeId {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(NodeId)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2sum_of_empty_input_matches_garage() {
        assert_eq!(
            blake2sum(b"").to_hex(),
            "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419"
        );
    }

    #[test]
    fn hash_text_round_trips() {
        let h = blake2sum(b"hello");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert_eq!(h.to_string().len(), 64);
    }

    #[test]
    fn hash_parse_rejects_bad_text() {
        let good = blake2sum(b"x").to_hex();
        assert_eq!(
            good[..63].parse::<Hash>(),
            Err(ParseHashError::BadLength(63))
        );
        assert!(format!("{good}0").parse::<Hash>().is_err());
        let upper = good.to_uppercase();
        assert!(matches!(
            upper.parse::<Hash>(),
            Err(ParseHashError::BadChar(_, _))
        ));
        let mut nonhex = good.clone();
        nonhex.replace_range(10..11, "g");
        assert_eq!(
            nonhex.parse::<Hash>(),
            Err(ParseHashError::BadChar('g', 10))
        );
        assert!("".parse::<Hash>().is_err());
        // 64 bytes but not 64 chars: multi-byte characters are refused, not sliced.
        let multibyte = "é".repeat(32);
        assert!(multibyte.parse::<Hash>().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

        /// Any text either parses to a hash that prints back identically, or is refused;
        /// it never panics.
        #[test]
        fn hash_parser_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(h) = s.parse::<Hash>() {
                proptest::prop_assert_eq!(h.to_hex(), s);
            }
        }

        #[test]
        fn hex_of_any_32_bytes_parses_back(b in proptest::array::uniform32(0u8..)) {
            proptest::prop_assert_eq!(Hash(b).to_hex().parse::<Hash>().unwrap(), Hash(b));
        }
    }
}
