//! [`RefId`]: the name of one reference to a block.
//!
//! A reference is `(hash, ref_id)`; adding or dropping the same name twice is a no-op,
//! which makes retried requests safe. Names travel in URL paths and in fjall keys, so the
//! alphabet is kept small and path-safe.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted ref name, in bytes.
pub const MAX_REF_ID_LEN: usize = 255;

/// Why a text is not a valid ref name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseRefIdError {
    #[error("ref name is empty")]
    Empty,
    #[error("ref name is {0} bytes long; at most {MAX_REF_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("ref name {0:?} is reserved")]
    Reserved(String),
    #[error("ref name contains {0:?}; allowed are A-Z a-z 0-9 and . _ - : @ + =")]
    BadChar(char),
}

/// A validated ref name: 1..=255 bytes of `[A-Za-z0-9._\-:@+=]`, not `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RefId(String);

impl RefId {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as bytes (its fjall key suffix).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Parse a ref name from key bytes read back from the metadata store.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ParseRefIdError> {
        match std::str::from_utf8(b) {
            Ok(s) => s.parse(),
            Err(_) => Err(ParseRefIdError::BadChar(char::REPLACEMENT_CHARACTER)),
        }
    }
}

impl FromStr for RefId {
    type Err = ParseRefIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseRefIdError::Empty);
        }
        if s.len() > MAX_REF_ID_LEN {
            return Err(ParseRefIdError::TooLong(s.len()));
        }
        if s == "." || s == ".." {
            return Err(ParseRefIdError::Reserved(s.to_string()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-:@+=".contains(*c)))
        {
            return Err(ParseRefIdError::BadChar(c));
        }
        Ok(RefId(s.to_string()))
    }
}

impl TryFrom<String> for RefId {
    type Error = ParseRefIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RefId> for String {
    fn from(r: RefId) -> String {
        r.0
    }
}

impl fmt::Display for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for ok in [
            "a",
            "obj:bucket/key".replace('/', ":").as_str(),
            "v1.2-x_y@z+q=r",
        ] {
            assert!(ok.parse::<RefId>().is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn refuses_path_tricks_and_junk() {
        assert_eq!("".parse::<RefId>(), Err(ParseRefIdError::Empty));
        assert!(matches!(
            "..".parse::<RefId>(),
            Err(ParseRefIdError::Reserved(_))
        ));
        assert!(matches!(
            ".".parse::<RefId>(),
            Err(ParseRefIdError::Reserved(_))
        ));
        assert_eq!("a/b".parse::<RefId>(), Err(ParseRefIdError::BadChar('/')));
        assert_eq!("a b".parse::<RefId>(), Err(ParseRefIdError::BadChar(' ')));
        assert_eq!("é".parse::<RefId>(), Err(ParseRefIdError::BadChar('é')));
        assert!(matches!(
            "x".repeat(256).parse::<RefId>(),
            Err(ParseRefIdError::TooLong(256))
        ));
        assert!("x".repeat(255).parse::<RefId>().is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, ..Default::default() })]

        /// Any text is either a valid, path-safe ref name or refused; never a panic.
        #[test]
        fn ref_parser_never_panics_and_accepts_only_path_safe_names(s in "\\PC{0,300}") {
            if let Ok(r) = s.parse::<RefId>() {
                proptest::prop_assert!(!r.as_str().contains('/') && r.as_str() != ".." && r.as_str() != ".");
                proptest::prop_assert!(r.as_str().len() <= MAX_REF_ID_LEN && !r.as_str().is_empty());
            }
            let _ = RefId::from_bytes(s.as_bytes());
        }
    }
}
