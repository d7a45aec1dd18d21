//! The token actor's messages and their replies: [`CreateToken`], [`RevokeToken`],
//! [`ListTokens`], [`Authenticate`] (for the HTTP API); [`MergeTokens`] and
//! [`TokensIfDiffer`] (for peers' pushes and pulls); [`SyncTokensNow`]; the error
//! [`TokenError`].

use std::sync::Arc;

use actix::prelude::*;

use super::record::{Scope, TokenName, TokenRecord};
use crate::store_failure::CommitFailure;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A live token already has this name.
    #[error("a token named {name} exists already (revoke it first)")]
    Exists { name: TokenName },
    /// No token ever had this name.
    #[error("no token named {name}")]
    NotFound { name: TokenName },
    /// The metadata store failed.
    #[error("metadata store error on the tokens keyspace: {0}")]
    Store(#[from] fjall::Error),
    /// A record could not be encoded.
    #[error("token record {name} does not encode: {source}")]
    Encode {
        name: TokenName,
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// The write did not finish (the store failed, the actor stopped or its blocking
    /// task died).
    #[error("token write of {name} did not finish: {source}")]
    NotPersisted {
        name: TokenName,
        #[source]
        source: WriteFailed,
    },
}

/// Why a queued write of token records did not become durable; one value is told to
/// every write of the batch, hence the `Arc`s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteFailed {
    #[error("{0}")]
    Store(#[source] Arc<fjall::Error>),
    #[error("blocking task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    #[error("the token actor stopped")]
    Stopped,
}

impl From<CommitFailure> for WriteFailed {
    fn from(f: CommitFailure) -> Self {
        match f {
            CommitFailure::Store(e) => WriteFailed::Store(e),
            CommitFailure::Task(e) => WriteFailed::Task(e),
        }
    }
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's name.
    pub name: TokenName,
    /// Its scope.
    pub scope: Scope,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        TokenInfo {
            name: r.name.clone(),
            scope: r.scope,
            created_ms: r.created_ms,
        }
    }
}

/// How far a create or revoke was pushed when it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushReport {
    /// Other members the change was sent to.
    pub peers: usize,
    /// Of those, the ones that confirmed it. The others get it by the periodic pull.
    pub confirmed: usize,
}

/// Reply to [`CreateToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedToken {
    /// The secret, shown once: it is stored nowhere.
    pub secret: String,
    /// The new token.
    pub info: TokenInfo,
    /// How far it was pushed.
    pub push: PushReport,
}

/// Make a new token (a new secret); answered once durable here and pushed to the peers.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<CreatedToken, TokenError>")]
pub struct CreateToken {
    /// Its name; refused if a live token has it.
    pub name: TokenName,
    /// Its scope.
    pub scope: Scope,
}

/// Revoke a token: refused at once here, then on every peer as the tombstone arrives.
/// Revoking a revoked token changes nothing and succeeds.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<PushReport, TokenError>")]
pub struct RevokeToken {
    /// The token's name.
    pub name: TokenName,
}

/// The live tokens, in name order.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<TokenInfo>")]
pub struct ListTokens;

/// Who a presented secret belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token's name.
    pub name: TokenName,
    /// Its scope.
    pub scope: Scope,
}

/// Look up a presented secret among the live tokens (`None`: unknown or revoked).
#[derive(Message, Clone)]
#[rtype(result = "Option<TokenGrant>")]
pub struct Authenticate {
    /// The secret as the client sent it.
    pub secret: String,
}

impl std::fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in a debug log.
        f.write_str("Authenticate { secret: <hidden> }")
    }
}

/// Merge records a peer pushed or sent back (the winner of each name kept); answered
/// with how many records changed here, once they are durable.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, TokenError>")]
pub struct MergeTokens {
    /// The records.
    pub records: Vec<TokenRecord>,
}

/// A peer's pull of one name range: a page of the records here that differ from the
/// asker's digests (`sync.rs`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "super::sync::TokenSyncPage")]
pub struct TokensIfDiffer {
    pub query: super::sync::TokenSyncQuery,
}

/// Pull every peer's records now (as the periodic round does); answered with the number
/// of peers that answered.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "usize")]
pub struct SyncTokensNow;
