//! How the peer actor follows the cluster layout: the member set it dials and accepts
//! ([`PeerActor::apply_members`], driven by [`super::SetMembers`] or the layout actor's
//! [`LayoutChanged`]), the stamp it announces in `Hello`/`Ping`, and the stamps peers
//! announce ([`PeerAnnounced`], from served `Hello`s and `Ping`s), which go on to the
//! layout actor ([`PeerLayoutSeen`]).
//!
//! A node its own layout does not name is *joining*: it serves incoming connections from
//! any node of the cluster CA and adds such a peer at the address it came from, so the
//! member that dials it (once a layout names it) can hand the layout over.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use actix::prelude::*;
use quinn::VarInt;
use tracing::{info, warn};

use super::{conn, PeerActor, PeerAddr, RpcError};
use crate::frame::NodeStats;
use crate::hash::NodeId;
use crate::layout::{LayoutChanged, LayoutStamp, PeerLayoutSeen};

/// A peer announced its layout stamp on a connection it opened to us (`Hello` or
/// `Ping`), from `remote`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct PeerAnnounced {
    pub from: NodeId,
    pub remote: SocketAddr,
    pub stamp: LayoutStamp,
    /// The storage counts it announced with it, if any.
    pub stats: Option<NodeStats>,
}

impl PeerActor {
    /// Start with `stamp` (the layout the node starts with) and, for a node that is not
    /// in it, accept node connections only from the hosts of `bootstrap` (empty: any).
    pub fn with_layout_stamp(mut self, stamp: LayoutStamp, bootstrap: Vec<SocketAddr>) -> Self {
        self.layout = stamp;
        self.bootstrap = bootstrap;
        self
    }

    /// The command an operator runs on a member to add this node (`blocknode layout
    /// assign ...`), named in the log while this node waits to be assigned.
    pub fn with_assign_command(mut self, command: String) -> Self {
        self.assign_command = Some(command);
        self
    }

    /// Send peers' layout stamps to `watcher` (the layout actor).
    pub fn with_layout_watcher(mut self, watcher: Recipient<PeerLayoutSeen>) -> Self {
        self.layout_watcher = Some(watcher);
        self
    }

    /// Dial and accept exactly `members` (this node may be among them): drop the others'
    /// connections, rebuild the server's accepted ids, dial the new ones.
    pub(super) fn apply_members(&mut self, members: Vec<PeerAddr>, ctx: &mut Context<Self>) {
        let wanted: HashMap<NodeId, SocketAddr> = members.iter().map(|m| (m.id, m.addr)).collect();
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| wanted.get(id) != Some(&p.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(mut p) = self.peers.remove(&id) {
                if let Some(h) = p.retry.take() {
                    ctx.cancel_future(h);
                }
                if let Some(c) = p.conn.take() {
                    c.close(VarInt::from_u32(conn::CLOSE_REMOVED), b"not a member");
                }
                for w in p.waiters.drain(..) {
                    let _ = w.send(Err(RpcError::UnknownNode { node: id }));
                }
            }
        }
        self.config.members = members;
        self.rebuild_server_config();
        let known: HashSet<NodeId> = self.peers.keys().copied().collect();
        for m in self.config.members.clone() {
            if m.id == self.self_id || known.contains(&m.id) {
                continue;
            }
            let id = m.id;
            match self.add_peer(m) {
                Ok(()) => self.start_connect(id, ctx),
                Err(e) => tracing::error!(peer = %id.short(), error = %e, "cannot add member"),
            }
        }
    }

    fn rebuild_server_config(&mut self) {
        match self.server_config() {
            Ok(cfg) => {
                if let Some(ep) = &self.endpoint {
                    ep.set_server_config(Some(cfg));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot rebuild the server TLS config"),
        }
    }
}

impl Handler<LayoutChanged> for PeerActor {
    type Result = ();

    fn handle(&mut self, m: LayoutChanged, ctx: &mut Context<Self>) {
        self.layout = m.layout.stamp();
        let joining = !m.layout.names(&self.self_id);
        let members: Vec<PeerAddr> = m.layout.reachable().map(PeerAddr::from).collect();
        if joining {
            // Not named yet: keep whoever we know (the peers that dialled us) and serve
            // any node of the CA until a layout names this node.
            if !self.joining {
                match &self.assign_command {
                    Some(cmd) => info!(
                        version = m.layout.version,
                        "this node is not in the layout: waiting to be assigned; on a member, \
                         run `{cmd}`, then `blocknode layout apply --version N` (N: the \
                         version `blocknode layout show` prints, + 1)"
                    ),
                    None => info!(
                        version = m.layout.version,
                        "this node is not in the layout: waiting to be assigned"
                    ),
                }
            }
            self.joining = true;
            self.rebuild_server_config();
            return;
        }
        self.joining = false;
        let key = |v: &[PeerAddr]| {
            let mut k: Vec<(NodeId, SocketAddr)> = v.iter().map(|p| (p.id, p.addr)).collect();
            k.sort();
            k
        };
        let wanted = members;
        if key(&wanted) != key(&self.config.members) {
            info!(
                version = m.layout.version,
                members = wanted.len(),
                "member set follows the layout"
            );
            self.apply_members(wanted, ctx);
        } else {
            self.rebuild_server_config();
        }
    }
}

impl Handler<PeerAnnounced> for PeerActor {
    type Result = ();

    fn handle(&mut self, m: PeerAnnounced, ctx: &mut Context<Self>) {
        if !self.peers.contains_key(&m.from) {
            if !self.joining || m.from == self.self_id {
                return;
            }
            // Joining: a node of the cluster CA dialled us; its QUIC socket is the one
            // it listens on, so that is where we call it back.
            let addr = PeerAddr {
                id: m.from,
                addr: m.remote,
            };
            if let Err(e) = self.add_peer(addr.clone()) {
                warn!(peer = %m.from.short(), error = %e, "cannot add the peer that dialled us");
                return;
            }
            self.config.members.push(addr);
            self.start_connect(m.from, ctx);
        }
        if let Some(p) = self.peers.get_mut(&m.from) {
            p.layout_digest = Some(m.stamp.digest);
        }
        self.peer_stats_seen(m.from, m.stats);
        if let Some(w) = &self.layout_watcher {
            w.do_send(PeerLayoutSeen {
                peer: m.from,
                stamp: m.stamp,
            });
        }
    }
}
