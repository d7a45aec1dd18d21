//! The pure part of scoped API tokens: [`Scope`], [`TokenName`], the replicated
//! [`TokenRecord`] and its merge rule, how a secret is made and hashed, and the digest
//! nodes compare to find out whether their token tables differ.
//!
//! Only a hash of a token is ever stored or sent: `blake2sum(secret text)`. The secret
//! is 256 random bits, so a fast hash is enough (nothing to brute-force), and a stolen
//! metadata directory or a captured frame gives no usable token.
//!
//! Records merge without clocks, like ref records: the winner of two records of one name
//! is the greater by [`TokenRecord::rank`], so merging is commutative, associative and
//! idempotent. Within one generation (same creation) a revoked record wins, so a
//! revocation can never be undone by a replica that missed it; re-creating a revoked
//! name starts a new generation, which wins over the old tombstone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hash::{blake2sum, Hash};

/// Longest accepted token name, in bytes.
pub const MAX_TOKEN_NAME_LEN: usize = 64;

/// What a token may do. Ordered: each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET/HEAD blocks and their info.
    Read,
    /// `read`, plus PUT blocks and adding/dropping refs.
    Write,
    /// Everything, token administration included.
    Admin,
}

impl Scope {
    /// Whether a token of this scope may do what needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }

    /// The scope's name, as in the API and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; the scopes are read, write and admin")]
pub struct ParseScopeError(pub String);

impl FromStr for Scope {
    type Err = ParseScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(ParseScopeError(other.to_string())),
        }
    }
}

/// Why a text is not a valid token name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTokenNameError {
    #[error("token name is empty")]
    Empty,
    #[error("token name is {0} bytes long; at most {MAX_TOKEN_NAME_LEN} are allowed")]
    TooLong(usize),
    #[error("token name contains {0:?}; allowed are A-Z a-z 0-9 and . _ -")]
    BadChar(char),
}

/// A validated token name: 1..=64 bytes of `[A-Za-z0-9._-]` (it travels in URL paths
/// and is the fjall key of its record).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenName(String);

impl TokenName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TokenName {
    type Err = ParseTokenNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseTokenNameError::Empty);
        }
        if s.len() > MAX_TOKEN_NAME_LEN {
            return Err(ParseTokenNameError::TooLong(s.len()));
        }
        match s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            Some(c) => Err(ParseTokenNameError::BadChar(c)),
            None => Ok(TokenName(s.to_string())),
        }
    }
}

impl TryFrom<String> for TokenName {
    type Error = ParseTokenNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TokenName> for String {
    fn from(n: TokenName) -> String {
        n.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One token as every node stores and exchanges it (MessagePack, map form, as the value
/// of its name in the `tokens` keyspace). It holds the hash of the secret, never the
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's name (unique among live tokens).
    pub name: TokenName,
    /// What it may do.
    pub scope: Scope,
    /// 1 for a name's first token, one more each time a revoked name is re-created.
    pub generation: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// `blake2sum` of the secret's text.
    pub token_hash: Hash,
    /// Revocation time (ms since the epoch): the tombstone. `None`: live.
    pub revoked_ms: Option<u64>,
}

/// A record's place in the merge order: greater wins. Later generations win; within a
/// generation a revoked record wins over a live one, and the earliest revocation over a
/// later one, so two replicas revoking the same token concurrently agree.
type Rank = (u64, u64, [u8; 32], Scope, bool, std::cmp::Reverse<u64>);

impl TokenRecord {
    /// Whether the token is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_ms.is_some()
    }

    /// This record's position in the merge order (see [`merge`]).
    pub fn rank(&self) -> Rank {
        (
            self.generation,
            self.created_ms,
            self.token_hash.0,
            self.scope,
            self.revoked_ms.is_some(),
            std::cmp::Reverse(self.revoked_ms.unwrap_or(0)),
        )
    }
}

/// The record that wins when two replicas hold `a` and `b` for the same name.
pub fn merge(a: TokenRecord, b: TokenRecord) -> TokenRecord {
    if b.rank() > a.rank() {
        b
    } else {
        a
    }
}

/// A new secret: 256 random bits as 64 hex digits (the form clients send).
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> Hash {
    blake2sum(secret.as_bytes())
}

/// Compare two hashes without an early exit, so the time taken says nothing about how
/// many leading bytes matched.
pub fn hashes_equal(a: &Hash, b: &Hash) -> bool {
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Encode a record as stored and sent.
pub fn encode_record(r: &TokenRecord) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(r)
}

/// Decode a stored record.
pub fn decode_record(bytes: &[u8]) -> Result<TokenRecord, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// Digest of a whole token table, records in name order: two nodes whose digests are
/// equal hold the same records. An empty table digests to an empty vector.
pub fn table_digest<'a>(records: impl IntoIterator<Item = &'a TokenRecord>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut any = false;
    for r in records {
        any = true;
        // A record that does not encode cannot be sent either; it still changes the
        // digest (its name does), so the tables are seen to differ.
        match encode_record(r) {
            Ok(b) => buf.extend_from_slice(&b),
            Err(_) => buf.extend_from_slice(r.name.as_str().as_bytes()),
        }
    }
    if any {
        blake2sum(&buf).0.to_vec()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(generation: u64, created_ms: u64, revoked_ms: Option<u64>) -> TokenRecord {
        TokenRecord {
            name: "backup".parse().expect("valid name"),
            scope: Scope::Read,
            generation,
            created_ms,
            token_hash: hash_secret(&format!("s{generation}-{created_ms}")),
            revoked_ms,
        }
    }

    #[test]
    fn revocation_wins_within_a_generation_in_either_order() {
        let live = rec(1, 10, None);
        let dead = TokenRecord {
            revoked_ms: Some(20),
            ..live.clone()
        };
        assert_eq!(merge(live.clone(), dead.clone()), dead);
        assert_eq!(merge(dead.clone(), live), dead);
    }

    #[test]
    fn a_new_generation_wins_over_the_old_tombstone() {
        let dead = rec(1, 10, Some(20));
        let again = rec(2, 5, None);
        assert_eq!(merge(dead.clone(), again.clone()), again);
        assert_eq!(merge(again.clone(), dead), again);
    }

    #[test]
    fn merge_is_associative_and_idempotent() {
        let a = rec(1, 10, None);
        let b = TokenRecord {
            revoked_ms: Some(30),
            ..a.clone()
        };
        let c = TokenRecord {
            revoked_ms: Some(25),
            ..a.clone()
        };
        let left = merge(merge(a.clone(), b.clone()), c.clone());
        let right = merge(a.clone(), merge(b.clone(), c.clone()));
        assert_eq!(left, right);
        assert_eq!(left.revoked_ms, Some(25), "the earliest revocation wins");
        assert_eq!(merge(b.clone(), b.clone()), b);
    }

    #[test]
    fn scopes_include_the_lesser_ones() {
        assert!(Scope::Admin.allows(Scope::Write));
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert!(!Scope::Write.allows(Scope::Admin));
        assert_eq!("write".parse::<Scope>(), Ok(Scope::Write));
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn token_names_are_validated() {
        assert!("backup-01.job_a".parse::<TokenName>().is_ok());
        assert_eq!("".parse::<TokenName>(), Err(ParseTokenNameError::Empty));
        assert_eq!(
            "a/b".parse::<TokenName>(),
            Err(ParseTokenNameError::BadChar('/'))
        );
        assert!("x".repeat(65).parse::<TokenName>().is_err());
    }

    #[test]
    fn records_round_trip_and_digests_see_differences() {
        let a = rec(1, 10, None);
        let bytes = encode_record(&a).expect("encodes");
        assert_eq!(decode_record(&bytes).expect("decodes"), a);
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        let b = TokenRecord {
            revoked_ms: Some(11),
            ..a.clone()
        };
        assert_ne!(table_digest([&a]), table_digest([&b]));
        assert_eq!(table_digest([&a]), table_digest([&a.clone()]));
        assert!(table_digest(std::iter::empty()).is_empty());
    }

    #[test]
    fn secrets_are_random_and_compared_by_hash() {
        let s1 = new_secret();
        let s2 = new_secret();
        assert_eq!(s1.len(), 64);
        assert_ne!(s1, s2);
        assert!(hashes_equal(&hash_secret(&s1), &hash_secret(&s1)));
        assert!(!hashes_equal(&hash_secret(&s1), &hash_secret(&s2)));
    }
}
