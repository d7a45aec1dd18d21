//! One round's pull from one peer (`SyncTokensNow`): the queries of the asker's table
//! and the pages of each, every page merged here (durably) as it arrives, so a failure
//! on a later page keeps what the earlier ones brought (a revoke among them).

use actix::prelude::*;
use tracing::warn;

use super::{sync, MergeTokens, TokenActor, TokenName, TokenSyncQuery};
use crate::frame::BlockRpc;
use crate::hash::NodeId;
use crate::peer::{Call, Priority, RpcError};

/// Pull from `node` and merge each page into `me`; `Some(records changed here, and the
/// names the peer sent if `collect_names`)` once
/// every query was answered, `None` if the peer could not be asked to the end (logged
/// unless it is merely down). Pages merged before a failure stay merged.
pub(super) async fn pull_from(
    peers: Recipient<Call>,
    me: Addr<TokenActor>,
    node: NodeId,
    timeout: std::time::Duration,
    queries: Vec<TokenSyncQuery>,
    collect_names: bool,
) -> Option<(usize, Vec<TokenName>)> {
    let mut changed = 0;
    let mut names = Vec::new();
    for first in queries {
        let mut q = first;
        loop {
            let reply = peers
                .send(Call {
                    node,
                    rpc: BlockRpc::TokenDigestQuery(q.clone()),
                    timeout,
                    priority: Priority::Background,
                })
                .await;
            let page = match reply {
                Ok(Ok(BlockRpc::TokenRecords(page))) => page,
                Ok(Ok(other)) => {
                    warn!(peer = %node.short(), reply = other.kind(), "token pull: unexpected reply");
                    return None;
                }
                Ok(Err(RpcError::Timeout { .. } | RpcError::Unreachable { .. })) => return None,
                Ok(Err(e)) => {
                    warn!(peer = %node.short(), error = %e, "token pull failed");
                    return None;
                }
                Err(e) => {
                    warn!(error = %e, "peer actor unavailable for a token pull");
                    return None;
                }
            };
            if page.same {
                return Some((changed, names));
            }
            if collect_names {
                names.extend(page.records.iter().map(|r| r.name.clone()));
            }
            if !page.records.is_empty() {
                match me
                    .send(MergeTokens {
                        records: page.records,
                    })
                    .await
                {
                    Ok(Ok(n)) => changed += n,
                    // Applied in memory; the write is retried at the next round.
                    Ok(Err(e)) => warn!(error = %e, "pulled token records not persisted"),
                    Err(_) => return None,
                }
            }
            match page.next {
                Some(next) => q = sync::continue_after(&q, next),
                None => break,
            }
        }
    }
    Some((changed, names))
}
