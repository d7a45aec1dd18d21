//! A node offline longer than `max_offline` (the tombstone retention) must not bring a
//! revoked token back: its peers purged the tombstone, so its live record would look new.
//!
//! - A receiving node that has synced within the retention refuses a live record it has
//!   never seen whose creation is older than the retention: it would have been seen
//!   within that window, or it was revoked and its tombstone purged. (A new node, or
//!   one offline too long, takes every record.)
//! - A node whose last pull to the end from any peer (kept in the `token_sync`
//!   keyspace, so it survives a restart) is older than the retention asks its peers for
//!   every record at its next round and drops its live records created before the
//!   retention that no peer has (a peer would have them, live or as a tombstone).

use std::collections::HashSet;

use actix::prelude::*;
use fjall::Keyspace;
use tracing::{info, warn};

use super::{TokenActor, TokenError, TokenName, TokenRecord};
use crate::rc::now_msec;

/// The keyspace holding the time of the last pull to the end.
pub(super) const SYNC_KEYSPACE: &str = "token_sync";
const LAST_SYNC: &str = "last_sync_ms";

/// The stored time of the last pull to the end, if any.
pub(super) fn load_last_sync(ks: &Keyspace) -> Result<Option<u64>, TokenError> {
    Ok(ks
        .get(LAST_SYNC)?
        .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
        .map(u64::from_be_bytes))
}

/// One line for the live records a merge refused.
pub(super) fn log_refused(refused: &[TokenName]) {
    if let Some(first) = refused.first() {
        warn!(
            records = refused.len(),
            first = %first,
            "refused live token records never seen here and created before the longest \
             offline period (revoked and purged, or from a node offline too long)"
        );
    }
}

impl TokenActor {
    /// Whether `r` is a live record never seen here, created before `horizon`, on a
    /// node that has synced since `horizon` (one offline longer, or new, takes what its
    /// peers send: it may have missed such a token).
    pub(super) fn refuses_unseen(&self, r: &TokenRecord, horizon: u64) -> bool {
        self.last_sync_ms.is_some_and(|t| t >= horizon)
            && !r.is_revoked()
            && r.created_ms < horizon
            && !self.table.contains_key(&r.name)
    }

    /// The last pull to the end is older than the retention.
    pub(super) fn offline_too_long(&self) -> bool {
        self.last_sync_ms.is_some_and(|t| t < self.purge_horizon())
    }

    /// Record a pull to the end now (buffered; the next synced token write, or the
    /// database's own journal sync, makes it durable).
    pub(super) fn synced_now(&mut self) {
        let now = now_msec();
        self.last_sync_ms = Some(now);
        if let Err(e) = self.sync_state.insert(LAST_SYNC, now.to_be_bytes()) {
            warn!(error = %e, "time of the last token sync not stored");
        }
    }

    /// After a pull of every record from the peers: drop the live records here, created
    /// before the retention, that no peer has (revoked and purged while this node was
    /// away).
    pub(super) fn drop_unknown_live(
        &mut self,
        peer_names: &HashSet<TokenName>,
        ctx: &mut Context<Self>,
    ) {
        let horizon = self.purge_horizon();
        let gone: Vec<TokenName> = self
            .table
            .values()
            .filter(|r| !r.is_revoked() && r.created_ms < horizon)
            .filter(|r| !peer_names.contains(&r.name))
            .map(|r| r.name.clone())
            .collect();
        info!(
            dropped = gone.len(),
            "offline longer than the tombstone retention: resynced tokens in full from peers"
        );
        if gone.is_empty() {
            return;
        }
        for n in &gone {
            self.table.remove(n);
        }
        let (done, _rx) = tokio::sync::oneshot::channel();
        self.queued.push(super::QueuedWrite {
            records: gone.into_iter().map(|n| (n, None)).collect(),
            done,
        });
        self.start_write(ctx);
    }
}
