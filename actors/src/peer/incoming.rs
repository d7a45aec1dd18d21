//! Incoming connections: which Initials get a handshake, the per-peer connection cap,
//! serving each connection's streams, and redialling a down peer that connects to us.

use actix::prelude::*;
use quinn::{Connection, VarInt};
use tracing::{debug, warn};

use super::{conn, PeerActor};
use crate::frame::Hello;
use crate::hash::NodeId;
/// Incoming connections. Before a handshake is spent on it, an Initial must come from a
/// member's IP (others are dropped without an answer), from a validated address (else
/// a QUIC Retry is sent) and within the cap on handshakes in progress. The TLS verifier
/// then checks CA and membership; each peer id keeps at most
/// `max_connections_per_peer` connections; each connection's streams are served in
/// their own tasks.
impl StreamHandler<quinn::Incoming> for PeerActor {
    fn handle(&mut self, incoming: quinn::Incoming, ctx: &mut Context<Self>) {
        let remote = incoming.remote_address();
        match admit_incoming(
            self.is_member_ip(remote.ip()),
            incoming.remote_address_validated(),
            self.handshakes,
            self.tuning.max_handshakes,
        ) {
            Admission::Ignore => {
                debug!(%remote, "dropped an Initial (stranger or too many handshakes)");
                incoming.ignore();
                return;
            }
            Admission::Retry => {
                if let Err(e) = incoming.retry() {
                    debug!(%remote, error = %e, "cannot send a Retry");
                }
                return;
            }
            Admission::Handshake => {}
        }
        self.handshakes += 1;
        ctx.spawn(
            async move { incoming.await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.handshakes = act.handshakes.saturating_sub(1);
                    match res {
                        Ok(c) => match conn::peer_id(&c) {
                            Some(from) => {
                                // A peer that connects to us is up: redial it at once.
                                ctx.notify(PeerKnocked { from });
                                act.serve_incoming(from, c, ctx)
                            }
                            None => {
                                warn!(%remote, "incoming connection without a readable certificate");
                                c.close(VarInt::from_u32(conn::CLOSE_REMOVED), b"no certificate");
                            }
                        },
                        Err(e) => debug!(%remote, error = %e, "incoming handshake failed"),
                    }
                }),
        );
    }

    /// The endpoint was closed: nothing more will come, but the actor may still be
    /// answering local calls, so it is not stopped here.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// What to do with an incoming Initial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Drop it without an answer.
    Ignore,
    /// Answer with a QUIC Retry (address validation).
    Retry,
    /// Spend a handshake on it.
    Handshake,
}

/// The rule for an incoming Initial: strangers and Initials beyond the handshake cap are
/// dropped; a member's unvalidated address is asked to prove itself first.
pub(crate) fn admit_incoming(
    member_ip: bool,
    validated: bool,
    in_progress: usize,
    cap: usize,
) -> Admission {
    if !member_ip || in_progress >= cap {
        Admission::Ignore
    } else if !validated {
        Admission::Retry
    } else {
        Admission::Handshake
    }
}

impl PeerActor {
    /// Whether `ip` is the address of a cluster member or of this host (ports are not
    /// compared: a member dials from its one QUIC socket, but a NAT may change the port).
    pub(super) fn is_member_ip(&self, ip: std::net::IpAddr) -> bool {
        // This host's own address counts: other nodes of a test or dev cluster share it.
        // A joining node knows no member yet: whoever dials it may bring its layout.
        (self.joining && (self.bootstrap.is_empty() || self.bootstrap.iter().any(|b| b.ip() == ip)))
            || ip == self.local_addr.ip()
            || self.config.members.iter().any(|m| m.addr.ip() == ip)
            || self.peers.values().any(|p| p.addr.ip() == ip)
    }

    /// Serve an established incoming connection from `from`, closing its oldest one
    /// beyond the per-peer cap.
    pub(super) fn serve_incoming(&mut self, from: NodeId, c: Connection, ctx: &mut Context<Self>) {
        debug!(peer = %from.short(), remote = %c.remote_address(), "incoming connection");
        let conns = self.incoming.entry(from).or_default();
        conns.push(c.clone());
        while conns.len() > self.tuning.max_connections_per_peer.max(1) {
            let old = conns.remove(0);
            debug!(peer = %from.short(), "closing an older incoming connection of this peer");
            old.close(VarInt::from_u32(conn::CLOSE_SHUTDOWN), b"superseded");
        }
        let serve = conn::ServeCtx {
            handler: self.handler.clone(),
            // The reply to a peer's hello: counts sampled now would be stale for the
            // connection's life, so they travel in our own hello and pings only.
            hello: Hello {
                stats: None,
                ..self.hello()
            },
            limits: self.config.limits,
            read_timeout: self.tuning.request_read_timeout,
            reply_timeout: self.tuning.reply_write_timeout,
            budget: self.tuning.ram_budget.clone(),
            announced: ctx.address().recipient(),
        };
        let stable_id = c.stable_id();
        ctx.spawn(conn::serve_connection(c, from, serve).into_actor(self).map(
            move |(), act, _ctx| {
                if let Some(conns) = act.incoming.get_mut(&from) {
                    conns.retain(|c| c.stable_id() != stable_id);
                    if conns.is_empty() {
                        act.incoming.remove(&from);
                    }
                }
            },
        ));
    }
}

/// A member connected to us: if we see it down, redial it now instead of at the end of
/// the reconnect backoff (it is evidently back).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
struct PeerKnocked {
    from: NodeId,
}

impl Handler<PeerKnocked> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: PeerKnocked, ctx: &mut Context<Self>) {
        let Some(p) = self.peers.get_mut(&msg.from) else {
            return;
        };
        if p.conn.is_none() && !p.connecting {
            debug!(peer = %msg.from.short(), "down peer connected to us: redialling now");
            p.last_failure = None;
            self.start_connect(msg.from, ctx);
        }
    }
}
