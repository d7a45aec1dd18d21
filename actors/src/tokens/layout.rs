//! How the token actor follows the layout: a `LayoutChanged` from the layout actor
//! replaces the peers it pushes to and pulls from with the layout's reachable members
//! (members and retiring members, this node left out). A peer that is new to the list
//! gets every record at once (a joined node must refuse a token revoked before it
//! joined, and accept the live ones, without waiting for its own first pull), and a
//! pull from every peer starts at once.

use actix::prelude::*;
use tracing::{info, warn};

use super::{SyncTokensNow, TokenActor, RECORDS_PER_PAGE};
use crate::frame::BlockRpc;
use crate::hash::NodeId;
use crate::layout::{Layout, LayoutChanged};
use crate::peer::{Call, Priority};

/// The nodes a token actor on `me` exchanges records with under `layout`, in layout
/// order, without duplicates.
pub fn token_peers(layout: &Layout, me: &NodeId) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = Vec::new();
    for m in layout.reachable() {
        if m.id != *me && !out.contains(&m.id) {
            out.push(m.id);
        }
    }
    out
}

impl Handler<LayoutChanged> for TokenActor {
    type Result = ();

    fn handle(&mut self, m: LayoutChanged, ctx: &mut Context<Self>) {
        let next = token_peers(&m.layout, &self.config.node);
        if next == self.config.peers {
            return;
        }
        let added: Vec<NodeId> = next
            .iter()
            .filter(|id| !self.config.peers.contains(id))
            .copied()
            .collect();
        info!(
            version = m.layout.version,
            peers = next.len(),
            added = added.len(),
            "token peers follow the layout"
        );
        self.config.peers = next;
        let Some(peers) = self.peers.clone() else {
            return;
        };
        if !added.is_empty() && !self.table.is_empty() {
            // In pages that fit a frame's header, one after another per new member.
            let pages: Vec<Vec<_>> = self
                .table
                .values()
                .cloned()
                .collect::<Vec<_>>()
                .chunks(RECORDS_PER_PAGE)
                .map(<[_]>::to_vec)
                .collect();
            let timeout = self.config.call_timeout;
            for node in added {
                let (peers, pages) = (peers.clone(), pages.clone());
                actix::spawn(async move {
                    for page in pages {
                        let call = peers.send(Call {
                            node,
                            rpc: BlockRpc::MergeTokens(page),
                            timeout,
                            priority: Priority::Background,
                        });
                        match call.await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                warn!(peer = %node.short(), error = %e,
                                    "token records not pushed to a new member; it gets them by its pull");
                                return;
                            }
                            Err(e) => {
                                warn!(error = %e, "peer actor unavailable for a token push");
                                return;
                            }
                        }
                    }
                });
            }
        }
        ctx.notify(SyncTokensNow);
    }
}
