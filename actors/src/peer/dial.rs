//! Connection state and dialing: one outgoing connection per member, its hellos, the
//! reconnect backoff, the calls waiting for a dial, and the pings that measure RTT.

use std::time::Instant;

use actix::prelude::*;
use quinn::VarInt;
use tracing::{debug, info, warn};

use super::backoff;
use super::{conn, PeerActor, Priority, RpcError};
use crate::frame::BlockRpc;
use crate::hash::NodeId;
use crate::layout::{LayoutStamp, PeerLayoutSeen};

impl PeerActor {
    /// Dial `id` unless connected or already dialling.
    pub(super) fn start_connect(&mut self, id: NodeId, ctx: &mut Context<Self>) {
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        let hello = self.hello();
        let (limits, timeout) = (self.config.limits, self.tuning.connect_timeout);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.connecting || p.conn.is_some() {
            return;
        }
        if let Some(h) = p.retry.take() {
            ctx.cancel_future(h);
        }
        p.connecting = true;
        debug!(peer = %id.short(), addr = %p.addr, "dialling");
        let dial = conn::dial(
            endpoint,
            p.client_config.clone(),
            id,
            p.addr,
            hello,
            limits,
            timeout,
        );
        ctx.spawn(
            dial.into_actor(self)
                .map(move |res, act, ctx| act.dial_done(id, res, ctx)),
        );
    }

    pub(super) fn dial_done(
        &mut self,
        id: NodeId,
        res: Result<conn::Dialed, RpcError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            // Removed from the cluster while we dialled.
            if let Ok(d) = res {
                d.conn
                    .close(VarInt::from_u32(conn::CLOSE_REMOVED), b"not a member");
            }
            return;
        };
        p.connecting = false;
        match res {
            Ok(d) => {
                info!(peer = %id.short(), addr = %p.addr, rtt = ?d.rtt, "peer up");
                let stamp = LayoutStamp {
                    version: d.hello.layout_version,
                    digest: d.hello.layout_digest,
                };
                if stamp != self.layout {
                    info!(peer = %id.short(), theirs = stamp.version, ours = self.layout.version,
                        "peer has another cluster layout");
                }
                if let Some(w) = &self.layout_watcher {
                    w.do_send(PeerLayoutSeen { peer: id, stamp });
                }
                p.failures = 0;
                p.ever_up = true;
                p.last_failure = None;
                p.last_seen = Some(Instant::now());
                p.rtt = Some(d.rtt);
                p.layout_digest = Some(d.hello.layout_digest);
                let stats = d.hello.stats;
                for w in p.waiters.drain(..) {
                    let _ = w.send(Ok(d.conn.clone()));
                }
                let stable_id = d.conn.stable_id();
                let watched = d.conn.clone();
                p.conn = Some(d.conn);
                self.peer_stats_seen(id, stats);
                ctx.spawn(
                    async move { watched.closed().await }
                        .into_actor(self)
                        .map(move |reason, act, ctx| act.conn_closed(id, stable_id, reason, ctx)),
                );
            }
            Err(e) => {
                p.failures += 1;
                if p.failures == 1 {
                    warn!(peer = %id.short(), addr = %p.addr, error = %e, "cannot reach peer");
                } else {
                    debug!(peer = %id.short(), failures = p.failures, error = %e, "still cannot reach peer");
                }
                for w in p.waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
                p.last_failure = Some((Instant::now(), e));
                let delay = backoff(p.failures, self.tuning.backoff_min, self.tuning.backoff_max);
                p.retry = Some(ctx.run_later(delay, move |act, ctx| {
                    if let Some(p) = act.peers.get_mut(&id) {
                        p.retry = None;
                    }
                    act.start_connect(id, ctx);
                }));
            }
        }
    }

    pub(super) fn conn_closed(
        &mut self,
        id: NodeId,
        stable_id: usize,
        reason: quinn::ConnectionError,
        ctx: &mut Context<Self>,
    ) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.conn.as_ref().map(|c| c.stable_id()) != Some(stable_id) {
            return;
        }
        p.conn = None;
        info!(peer = %id.short(), reason = %reason, "peer down");
        self.start_connect(id, ctx);
    }

    pub(super) fn ping_all(&mut self, ctx: &mut Context<Self>) {
        for (&id, p) in &self.peers {
            let Some(conn) = p.conn.clone() else {
                continue;
            };
            self.ping_nonce = self.ping_nonce.wrapping_add(1);
            let nonce = self.ping_nonce;
            let (limits, timeout) = (self.config.limits, self.tuning.ping_interval);
            let layout = self.layout;
            let stats = self.announced_stats();
            let ping = async move {
                let start = Instant::now();
                let res = tokio::time::timeout(
                    timeout,
                    conn::request(
                        &conn,
                        id,
                        &BlockRpc::Ping {
                            nonce,
                            layout,
                            stats,
                        },
                        Priority::Client,
                        &limits,
                        None,
                    ),
                )
                .await;
                (res, start.elapsed())
            };
            ctx.spawn(ping.into_actor(self).map(move |(res, rtt), act, _ctx| {
                let Some(p) = act.peers.get_mut(&id) else {
                    return;
                };
                match res {
                    Ok(Ok(BlockRpc::Pong(n))) if n == nonce => {
                        p.rtt = Some(rtt);
                        p.last_seen = Some(Instant::now());
                    }
                    Ok(Ok(other)) => {
                        warn!(peer = %id.short(), kind = other.kind(), "unexpected answer to ping")
                    }
                    Ok(Err(e)) => debug!(peer = %id.short(), error = %e, "ping failed"),
                    Err(_) => debug!(peer = %id.short(), "ping timed out"),
                }
            }));
        }
    }

    pub(super) fn close_endpoint(&mut self) {
        if let Some(ep) = self.endpoint.take() {
            ep.close(VarInt::from_u32(conn::CLOSE_SHUTDOWN), b"shutdown");
        }
        for p in self.peers.values_mut() {
            p.conn = None;
            for w in p.waiters.drain(..) {
                let _ = w.send(Err(RpcError::Gone));
            }
        }
    }
}
