//! The read side of the client path: this node first, then the peers hedged after each
//! one's recent p95; the first verified copy wins, and holders that lacked it are asked
//! to resync it.

use std::convert::Infallible;

use bytes::Bytes;

use blocknode_actors::fetch::{fetch_from_holders, FetchPlan};
use blocknode_actors::frame::BlockRpc;
use blocknode_actors::peer::{Call, HedgedCall, PlanRead, Priority, RpcError};
use blocknode_actors::resync::RepairAfterRead;
use blocknode_actors::storage::{read_charged, StorageError};
use blocknode_actors::{DataBlock, Hash, NodeId, Placement};

use super::{gone, Coordinator, CoordinatorError};

/// Plain bytes decompressed from a reply, and the compressed buffer that carries the
/// RAM budget charge for both.
struct KeptWith {
    plain: Bytes,
    _charged: Bytes,
}

impl AsRef<[u8]> for KeptWith {
    fn as_ref(&self) -> &[u8] {
        &self.plain
    }
}

/// How the holders that did not serve a read ended.
#[derive(Debug, Default)]
struct ReadTally {
    /// Answered "not here" or sent a rotten copy: asked to resync afterwards.
    lacking: Vec<NodeId>,
    /// Could not be asked or gave no usable answer (down, timeout, protocol error).
    unreachable: Vec<NodeId>,
}

impl Coordinator {
    /// Read a block. This node first when it holds one; then the peers in the order
    /// the peer actor gives ([`PlanRead`]: up peers fastest first, stalled and down
    /// peers last), hedged: when the peer asked last has not answered within its hedge
    /// delay (about its recent p95), the next one is asked too. The first verified copy
    /// wins and the reads still running are cancelled. Holders that lacked it or had it
    /// rotten are asked to resync it. `NotFound` only when every holder answered "not
    /// here" (or rotten); when some could not be asked, `Unavailable` naming them.
    pub async fn get_block(&self, hash: Hash) -> Result<Bytes, CoordinatorError> {
        let holders = self.holders(&hash);
        let mut tally = ReadTally::default();
        let mut found = None;
        if holders.contains(&self.self_id) {
            // The storage actor verified the copy it read: do not hash it again. Its
            // bytes (and a compressed copy's plain form) are charged to the client pool
            // before they are read, and held until the response body has been sent.
            let storage = self.storage.clone().recipient();
            let pool = &self.budget.client;
            let read = read_charged(&storage, hash, pool, true, self.cfg.block_rw_timeout);
            match read.await {
                Ok(data) => match data.into_plain_verified(&hash) {
                    Ok(plain) => found = Some(plain),
                    Err(e) => {
                        tracing::error!(hash = %hash.short(), "local read returned unverified data: {e}");
                        tally.unreachable.push(self.self_id);
                    }
                },
                Err(StorageError::NotFound { .. }) | Err(StorageError::Corrupted { .. }) => {
                    tally.lacking.push(self.self_id)
                }
                // No memory for it within the wait: the node is busy, and a peer's copy
                // would need the same memory here.
                Err(StorageError::Budget { source, .. }) => {
                    return Err(CoordinatorError::Budget(source))
                }
                Err(StorageError::ActorGone(e)) => return Err(gone("storage")(e)),
                Err(e) => {
                    tracing::warn!(hash = %hash.short(), "local read failed: {e}");
                    tally.unreachable.push(self.self_id);
                }
            }
        }
        if found.is_none() {
            let remote: Vec<NodeId> = holders
                .iter()
                .copied()
                .filter(|n| *n != self.self_id)
                .collect();
            found = self.hedged_remote_read(hash, remote, &mut tally).await?;
        }
        if found.is_none() {
            // A transition runs: the old holders may be the only ones with it yet. Their
            // lack is not repaired (they are giving the block up).
            let old: Vec<NodeId> = self
                .placement()
                .previous_nodes(&hash)
                .into_iter()
                .filter(|n| !holders.contains(n) && *n != self.self_id)
                .collect();
            let mut old_tally = ReadTally::default();
            found = self.hedged_remote_read(hash, old, &mut old_tally).await?;
            if found.is_none() {
                tally.unreachable.extend(old_tally.unreachable);
            }
        }
        // Each holder that lacked it is asked to resync it, at most once per hash and
        // interval (the resync actor keeps a bounded table: a 404 asked for again and
        // again costs one round of requests, not one per GET).
        let lacking = std::mem::take(&mut tally.lacking);
        if !lacking.is_empty() {
            self.resync.do_send(RepairAfterRead {
                hash,
                nodes: lacking,
            });
        }
        match found {
            Some(plain) => {
                self.metrics.bytes_read.inc_by(plain.len() as u64);
                Ok(plain)
            }
            None if tally.unreachable.is_empty() => Err(CoordinatorError::NotFound(hash)),
            None => Err(CoordinatorError::Unavailable {
                hash,
                unreachable: tally.unreachable,
            }),
        }
    }

    /// The hedged part of [`Self::get_block`] over the peers `remote`, in the order and
    /// with the hedge delays the peer actor plans ([`PlanRead`]); each copy is verified
    /// on a blocking thread (every served byte is checked here). Every holder that ends
    /// without serving the block lands in `tally` (lacking or unreachable).
    async fn hedged_remote_read(
        &self,
        hash: Hash,
        remote: Vec<NodeId>,
        tally: &mut ReadTally,
    ) -> Result<Option<Bytes>, CoordinatorError> {
        if remote.is_empty() {
            return Ok(None);
        }
        let plan = self
            .peers
            .send(PlanRead { holders: remote })
            .await
            .map_err(gone("peer"))?;
        let ask = |node| {
            // Dropping the ask (another holder answered first) cancels the read.
            let (cancel_on_drop, cancel) = tokio::sync::oneshot::channel::<()>();
            let reply = self.peers.send(HedgedCall {
                call: Call {
                    node,
                    rpc: BlockRpc::GetBlock(hash),
                    timeout: self.cfg.block_rw_timeout,
                    priority: Priority::Client,
                },
                cancel,
            });
            async move {
                let _cancel_on_drop = cancel_on_drop;
                Ok::<_, Infallible>(reply.await.unwrap_or_else(|e| {
                    Err(RpcError::Unreachable {
                        node,
                        reason: format!("peer actor: {e}"),
                    })
                }))
            }
        };
        // A reply's bytes were charged before they were read from the peer, a compressed
        // one for its plain size too (peer/conn.rs): the plain bytes keep the compressed
        // buffer, and with it that charge, alive for as long as they live.
        let verify = |hash: Hash, data: DataBlock| match data {
            DataBlock::Plain(_) => data.verify_get(&hash),
            DataBlock::Compressed(ref charged) => {
                let charged = charged.clone();
                let plain = data.verify_get(&hash)?;
                Ok(Bytes::from_owner(KeptWith {
                    plain,
                    _charged: charged,
                }))
            }
        };
        let fetched = fetch_from_holders(hash, FetchPlan::hedged(plan.order), ask, verify)
            .await
            .unwrap_or_else(|e| match e {});
        tally.lacking.extend(fetched.lacking());
        tally.unreachable.extend(fetched.unreachable());
        match fetched.found {
            None => Ok(None),
            Some((_, plain)) => Ok(Some(plain)),
        }
    }
}
