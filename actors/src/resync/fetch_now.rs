//! [`FetchNow`] single-flight: one fetch per hash at a time, however many bare refs ask
//! for it (client retries, hint replays). A second `FetchNow` of a hash whose fetch is
//! under way joins it: its reply waits in `ResyncActor::fetching` and is answered when
//! that fetch ends, and the entry is cleared then.
//!
//! A caller waits at most [`fetch_now_wait`] (a little under the peer RPC timeout, so the
//! coordinator that sent the bare ref still hears the answer); past it, the caller gets
//! [`ResyncBlockError::FetchPending`] while the fetch keeps running here, and a retry of the
//! ref joins it (or finds the block stored).

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{work, FetchNow, ResyncActor, ResyncBlockError};
use crate::hash::Hash;

/// One waiter of a fetch under way: the fetch's outcome, its error as text.
pub(super) type FetchWaiter = oneshot::Sender<Result<(), String>>;

/// How long a `FetchNow` caller waits: four fifths of the peer RPC timeout, so the
/// holder answers before the coordinator that asked stops listening.
pub(super) fn fetch_now_wait(peer_rpc_timeout: Duration) -> Duration {
    peer_rpc_timeout.saturating_mul(4) / 5
}

impl Handler<FetchNow> for ResyncActor {
    type Result = ResponseFuture<Result<(), ResyncBlockError>>;

    fn handle(&mut self, msg: FetchNow, ctx: &mut Context<Self>) -> Self::Result {
        let hash = msg.hash;
        let (tx, rx) = oneshot::channel();
        match self.fetching.get_mut(&hash) {
            Some(waiters) => {
                // Callers that stopped waiting need no answer.
                waiters.retain(|w| !w.is_closed());
                waiters.push(tx);
            }
            None => {
                self.fetching.insert(hash, vec![tx]);
                let fetch = work::fetch_now(self.deps.clone(), hash);
                ctx.spawn(fetch.into_actor(self).map(move |res, act, _| {
                    let res = res.map_err(|e| e.to_string());
                    for w in act.fetching.remove(&hash).unwrap_or_default() {
                        let _ = w.send(res.clone());
                    }
                }));
            }
        }
        let wait = fetch_now_wait(self.deps.need_block_timeout);
        Box::pin(await_fetch(hash, rx, wait))
    }
}

async fn await_fetch(
    hash: Hash,
    rx: oneshot::Receiver<Result<(), String>>,
    wait: Duration,
) -> Result<(), ResyncBlockError> {
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(message))) => Err(ResyncBlockError::FetchFailed { message }),
        // The actor stopped before the fetch ended.
        Ok(Err(_)) => Err(ResyncBlockError::FetchFailed {
            message: format!("block {hash}: the resync actor stopped during its fetch"),
        }),
        Err(_) => Err(ResyncBlockError::FetchPending {
            hash,
            waited_ms: wait.as_millis() as u64,
        }),
    }
}
