//! The resync actor's messages: [`Schedule`] (with its [`ScheduleReason`]), [`RetryNow`],
//! [`SetWorkers`], [`SetTranquility`], [`SetScrubTranquility`], [`StartRepair`],
//! [`ScrubCommand`], [`GetResyncStatus`], [`ListResyncErrors`], [`GetBlockError`],
//! [`SetLayoutAgreement`], [`SetClientLoad`]; the error [`ResyncError`] and the checks
//! of operator-set values that return it ([`check_workers`], [`check_tranquility`]).
//! (`RcChanged` comes from the refcount actor; [`ScheduleReason`] from `config.rs`.)

use std::time::Duration;

use actix::prelude::*;

use super::config::{ResyncConfig, ScheduleReason, MAX_TRANQUILITY, MAX_WORKERS};
use super::status::{ResyncErrorInfo, ResyncStatus};
use crate::hash::Hash;

/// Errors of the resync actor.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("metadata store error: {0}")]
    Store(#[from] fjall::Error),
    #[error("resync_workers must be between 1 and {MAX_WORKERS}, got {value}")]
    BadWorkers { value: usize },
    #[error("{key} must be between 0 and {MAX_TRANQUILITY}, got {value}")]
    BadTranquility { key: &'static str, value: u64 },
    #[error("a repair is already running")]
    RepairRunning,
    #[error("scrub cannot {action} while it is {state}")]
    ScrubState {
        action: &'static str,
        state: &'static str,
    },
}

/// Check a `resync_workers` value (1..=[`MAX_WORKERS`]); the API checks with it before
/// narrowing a JSON number, so nothing wraps.
pub fn check_workers(value: u64) -> Result<usize, ResyncError> {
    match usize::try_from(value) {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(ResyncError::BadWorkers {
            value: usize::try_from(value).unwrap_or(usize::MAX),
        }),
    }
}

/// Check a tranquility value named `key` (0..=[`MAX_TRANQUILITY`]).
pub fn check_tranquility(key: &'static str, value: u64) -> Result<u32, ResyncError> {
    match u32::try_from(value) {
        Ok(t) if t <= MAX_TRANQUILITY => Ok(t),
        _ => Err(ResyncError::BadTranquility { key, value }),
    }
}

/// Look at `hash` after `delay`. A hash waits in the queue once: if it already waits,
/// the earlier of the two times wins. A hash being resynced right now is looked at
/// again after that run (the new entry waits for the busy one).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Schedule {
    pub hash: Hash,
    pub delay: Duration,
    pub reason: ScheduleReason,
}

impl Schedule {
    /// Schedule `hash` after the delay `config` gives `reason` ([`ResyncConfig::delay_for`]).
    pub fn for_reason(hash: Hash, reason: ScheduleReason, config: &ResyncConfig) -> Self {
        Schedule {
            hash,
            delay: config.delay_for(reason),
            reason,
        }
    }
}

/// Retry one errored block now, or every errored block (`hash: None`); replies how many.
#[derive(Message, Debug, Clone)]
#[rtype(result = "usize")]
pub struct RetryNow {
    pub hash: Option<Hash>,
}

/// Set the number of resync workers (1..=8); persisted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct SetWorkers {
    pub workers: usize,
}

/// Set the resync tranquility; persisted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct SetTranquility {
    pub tranquility: u32,
}

/// Set the scrub tranquility; persisted.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct SetScrubTranquility {
    pub tranquility: u32,
}

/// Queue every hash with an rc entry and every block on disk; optionally rebuild `rc`
/// from `refs` first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ResyncError>")]
pub struct StartRepair {
    pub rebuild_rc: bool,
}

/// Scrub control.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "Result<(), ResyncError>")]
pub enum ScrubCommand {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// Ask for the [`ResyncStatus`].
#[derive(Message, Debug, Clone)]
#[rtype(result = "ResyncStatus")]
pub struct GetResyncStatus;

/// List the errors table.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Vec<ResyncErrorInfo>")]
pub struct ListResyncErrors;

/// The last resync error of one block, if any.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Option<String>")]
pub struct GetBlockError {
    pub hash: Hash,
}

/// Whether the nodes agree on the member list (sent by the anti-entropy actor). While
/// they do not, resync deletes nothing: it cannot know who the holders are.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetLayoutAgreement {
    pub agreed: bool,
}

/// Whether clients are using the node (sent periodically by the node). Without client
/// load, resync runs at full pace ([`super::decision::pace`]); the configured workers and
/// tranquility apply again as soon as clients return.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetClientLoad {
    pub idle: bool,
}

/// Fetch the block from its other holders now and write it here; answers once it is
/// stored (or why not). A bare ref that reaches a holder lacking the block uses it, so
/// the holder can count the ref once it has the block.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), super::ResyncBlockError>")]
pub struct FetchNow {
    pub hash: Hash,
}
