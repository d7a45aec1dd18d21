//! The QUIC I/O of the peer actor, as plain async functions over quinn handles: building
//! the socket and the TLS/transport configs, dialling and greeting a member, sending one
//! request on one stream, and serving the streams a peer opens to us.
//!
//! Nothing here touches actor state: the actor spawns these futures and applies their
//! results. Every stream carries exactly one request frame and one reply frame
//! (see [`crate::frame`]); block bytes go to quinn as shared `Bytes`, never copied.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use tracing::{debug, warn};

use super::{HandleRpc, PeerError, PeerTuning, Priority, RpcError, GSO_MAX_MTU};
use crate::budget::{Charge, Pool, RamBudget};
use crate::frame::{self, BlockRpc, ErrorCode, FrameError, FrameLimits, Hello};
use crate::hash::NodeId;
use crate::layout::LayoutStamp;
use crate::tls::{self, TlsIdentity};

/// QUIC application error code sent when a node shuts its endpoint down.
pub(crate) const CLOSE_SHUTDOWN: u32 = 0;
/// QUIC application error code sent when a member is removed from the cluster.
pub(crate) const CLOSE_REMOVED: u32 = 1;

/// Bind the UDP socket (before the actix System runs, so the caller learns the port) and
/// enlarge its buffers: with default buffers the kernel drops tens of thousands of
/// packets during a bulk transfer on loopback (measured on the development VM: 626 vs
/// 413–497 MiB/s).
pub(crate) fn bind_socket(listen: SocketAddr, buffer: usize) -> Result<UdpSocket, PeerError> {
    let socket = UdpSocket::bind(listen).map_err(|source| PeerError::Bind {
        addr: listen,
        source,
    })?;
    if buffer > 0 {
        match quinn::udp::UdpSocketState::new((&socket).into()) {
            Ok(state) => {
                if let Err(e) = state.set_recv_buffer_size((&socket).into(), buffer) {
                    debug!(error = %e, "could not enlarge the UDP receive buffer");
                }
                if let Err(e) = state.set_send_buffer_size((&socket).into(), buffer) {
                    debug!(error = %e, "could not enlarge the UDP send buffer");
                }
            }
            Err(e) => debug!(error = %e, "could not inspect the UDP socket"),
        }
    }
    Ok(socket)
}

fn transport_config(tuning: &PeerTuning) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    // Bounds what one peer can make us serve at once; the rest wait in its open_bi().
    t.max_concurrent_bidi_streams(VarInt::from_u32(tuning.max_incoming_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // What a peer may push on a stream before we read it: a request's payload is read
    // only once the RAM budget admitted it, so with quinn's default (1.25 MB per stream)
    // 64 streams could park 80 MB per connection outside the budget. About one small
    // frame per stream bounds that to `max_incoming_streams` x this (the connection-level
    // window stays open, so buffered unadmitted streams never stall an admitted one).
    t.stream_receive_window(VarInt::from_u32(tuning.stream_receive_window));
    // A peer that vanishes without closing is declared down after the idle timeout;
    // keep-alives stop an idle but healthy connection from timing out.
    if let Ok(idle) = quinn::IdleTimeout::try_from(tuning.idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(tuning.idle_timeout / 3));
    if let Some(mtu) = tuning.initial_mtu {
        t.initial_mtu(mtu);
    }
    // Discovery climbs from the safe initial MTU to what the path carries, up to the
    // bound (quinn stops at 1452 by default: a tenth of loopback's 64 KiB).
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(tuning.mtu_upper_bound);
    t.mtu_discovery_config(Some(mtud));
    // Never GSO past its 64 KiB batch limit: those batches would be dropped unsent.
    t.enable_segmentation_offload(
        tuning.segmentation_offload && tuning.mtu_upper_bound <= GSO_MAX_MTU,
    );
    if let Some(n) = tuning.ack_eliciting_threshold {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(VarInt::from_u32(n));
        t.ack_frequency_config(Some(ack));
    }
    Arc::new(t)
}

/// The endpoint settings: the largest UDP payload we accept (advertised to peers, who
/// never send more) follows the MTU bound, or discovery could not go past 1472.
pub(crate) fn endpoint_config(tuning: &PeerTuning) -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    // Out of quinn's range (1200..=65527) keeps its default: a smaller MTU, not a fault.
    if c.max_udp_payload_size(tuning.mtu_upper_bound).is_err() {
        debug!(
            bound = tuning.mtu_upper_bound,
            "MTU bound out of range; keeping quinn's UDP payload limit"
        );
    }
    c
}

/// The server side of the endpoint: mutual TLS accepting any of `members`.
pub(crate) fn server_config(
    identity: &TlsIdentity,
    members: impl IntoIterator<Item = NodeId>,
    tuning: &PeerTuning,
) -> Result<quinn::ServerConfig, PeerError> {
    let crypto = tls::server_crypto(identity, members.into_iter().collect())?;
    finish_server_config(crypto, tuning)
}

fn finish_server_config(
    crypto: rustls::ServerConfig,
    tuning: &PeerTuning,
) -> Result<quinn::ServerConfig, PeerError> {
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| PeerError::Tls(tls::TlsError::Quic(e)))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport_config(tuning));
    // Initials queued before the actor decides on them (it drops strangers and those
    // past `max_handshakes`); beyond this quinn refuses on its own.
    cfg.max_incoming(tuning.max_handshakes.saturating_mul(4).max(64));
    Ok(cfg)
}

/// As [`server_config`], accepting any node of the cluster CA (a joining node, which
/// knows no member yet).
pub(crate) fn open_server_config(
    identity: &TlsIdentity,
    tuning: &PeerTuning,
) -> Result<quinn::ServerConfig, PeerError> {
    finish_server_config(tls::server_crypto_any_member(identity)?, tuning)
}

/// The client side for connections to `expected`: mutual TLS pinning its node id.
pub(crate) fn client_config(
    identity: &TlsIdentity,
    expected: NodeId,
    tuning: &PeerTuning,
) -> Result<quinn::ClientConfig, PeerError> {
    let crypto = tls::client_crypto(identity, expected)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| PeerError::Tls(tls::TlsError::Quic(e)))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport_config(tuning));
    Ok(cfg)
}

/// The node id of the peer at the other end of an established connection.
pub(crate) fn peer_id(conn: &Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::node_id_of_cert(certs.first()?).ok()
}

/// What a successful dial gives the actor.
pub(crate) struct Dialed {
    pub conn: Connection,
    pub hello: Hello,
    pub rtt: Duration,
}

/// Connect to `node` at `addr` and exchange hellos. With TLS 1.3 the client's handshake
/// completes before the server has judged our certificate, so the peer counts as
/// reachable only once its `Hello` came back on a stream.
pub(crate) async fn dial(
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    node: NodeId,
    addr: SocketAddr,
    hello: Hello,
    limits: FrameLimits,
    timeout: Duration,
) -> Result<Dialed, RpcError> {
    let unreachable = |reason: String| RpcError::Unreachable { node, reason };
    let attempt = async {
        let connecting = endpoint
            .connect_with(client, addr, tls::NODE_SAN)
            .map_err(|e| unreachable(format!("cannot connect to {addr}: {e}")))?;
        let conn = connecting
            .await
            .map_err(|e| unreachable(format!("handshake with {addr} failed: {e}")))?;
        let start = Instant::now();
        let reply = request(
            &conn,
            node,
            &BlockRpc::Hello(hello),
            Priority::Client,
            &limits,
            None,
        )
        .await
        .inspect_err(|_| conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"hello failed"))?;
        let rtt = start.elapsed();
        match reply {
            BlockRpc::Hello(h) => Ok(Dialed {
                conn,
                hello: h,
                rtt,
            }),
            other => {
                conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"bad hello");
                Err(RpcError::Protocol {
                    node,
                    reason: format!("answered hello with {}", other.kind()),
                })
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(RpcError::Timeout {
            node,
            after: timeout,
        }))
}

/// Quinn stream priority: higher goes first. Background (resync, scrub) yields to client
/// traffic sharing the connection.
fn stream_priority(p: Priority) -> i32 {
    match p {
        Priority::Client => 0,
        Priority::Background => -1,
    }
}

/// Why a frame could not be written on a stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteFrameError {
    #[error(transparent)]
    Encode(#[from] FrameError),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Closed(#[from] quinn::ClosedStream),
}

async fn write_frame(send: &mut SendStream, rpc: &BlockRpc) -> Result<(), WriteFrameError> {
    let encoded = frame::encode(rpc)?;
    let mut chunks = [
        Bytes::from(encoded.head),
        encoded.payload.unwrap_or_default(),
    ];
    send.write_all_chunks(&mut chunks).await?;
    Ok(send.finish()?)
}

/// Send one request on a new stream of `conn` and read its reply. No timeout here: the
/// caller bounds the whole exchange (waits for the budget included). An `Error` reply
/// becomes [`RpcError::Remote`].
///
/// A reply's payload (a `GetBlock` answer) is charged to `budget` before it is read,
/// and the charge travels with the bytes. This never waits while the peer holds the
/// reply: with no room now, the stream is dropped unread (the peer's write fails and
/// its charge returns at once), then this node waits for the room holding nothing and
/// asks again with it in hand. Waiting with the reply held would let this node's PUTs,
/// which wait for the peer's peer pool, block the replies holding that pool
/// (invariant 6).
pub(crate) async fn request(
    conn: &Connection,
    node: NodeId,
    rpc: &BlockRpc,
    priority: Priority,
    limits: &FrameLimits,
    budget: Option<&Pool>,
) -> Result<BlockRpc, RpcError> {
    let mut held = None;
    for _ in 0..REPLY_CHARGE_ATTEMPTS {
        match exchange(conn, node, rpc, priority, limits, budget, held.take()).await? {
            Exchanged::Reply(reply) => return reply_to_result(node, reply),
            Exchanged::NoRoom { needed, pool } => {
                // Only a read is asked again (its reply is the only one with bytes).
                if !matches!(rpc, BlockRpc::GetBlock(_)) {
                    break;
                }
                held = Some(
                    pool.charge(needed)
                        .await
                        .map_err(|e| RpcError::Unreachable {
                            node,
                            reason: e.to_string(),
                        })?,
                );
            }
        }
    }
    Err(RpcError::Unreachable {
        node,
        reason: format!("no RAM budget for the reply to {}", rpc.kind()),
    })
}

/// Tries of one request whose reply found no room in the budget: more than two only
/// if the peer's copy changed size between them.
const REPLY_CHARGE_ATTEMPTS: usize = 3;

/// How one exchange on one stream ended.
enum Exchanged {
    Reply(BlockRpc),
    /// The reply's payload needs `needed` bytes of `pool`, not free now: nothing of it
    /// was read and the stream is dropped.
    NoRoom {
        needed: u64,
        pool: Pool,
    },
}

/// Bytes a reply payload is charged for: its own, plus the plain size its zstd frame
/// header declares when it is one (it is decompressed to be verified, and a GET keeps
/// the plain bytes), bounded by the largest block.
fn reply_charge(payload_len: usize, start: &[u8]) -> u64 {
    let plain = crate::block::zstd_declared_len(start)
        .map_or(0, |n| n.min(crate::block::max_plain_len() as u64));
    payload_len as u64 + plain
}

async fn exchange(
    conn: &Connection,
    node: NodeId,
    rpc: &BlockRpc,
    priority: Priority,
    limits: &FrameLimits,
    budget: Option<&Pool>,
    held: Option<Charge>,
) -> Result<Exchanged, RpcError> {
    let unreachable = |reason: String| RpcError::Unreachable { node, reason };
    let (send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(format!("cannot open a stream: {e}")))?;
    // If the caller gives up (its timeout drops this future), the stream is reset so
    // quinn frees the bytes still queued for a slow or stopped peer at once; a plain
    // drop would finish the stream and keep them until the connection dies.
    let mut send = ResetOnDrop(Some(send));
    let stream = send.stream();
    // unwrap-free: failing to set a priority on a fresh stream only loses the ordering.
    let _ = stream.set_priority(stream_priority(priority));
    write_frame(stream, rpc)
        .await
        .map_err(|e| unreachable(format!("sending {} failed: {e}", rpc.kind())))?;
    let read_reply = async {
        let (hl, pl) = frame::read_prefix(&mut recv, limits).await?;
        let header = frame::read_header(&mut recv, hl).await?;
        let Some(pool) = budget.filter(|_| pl > 0) else {
            let payload = frame::read_payload_after(&mut recv, pl, &[], |v| v.freeze()).await?;
            return frame::decode_parts(&header, payload).map(Exchanged::Reply);
        };
        let mut start = [0u8; crate::block::ZSTD_MAX_FRAME_HEADER];
        let start = &mut start[..pl.min(crate::block::ZSTD_MAX_FRAME_HEADER)];
        frame::read_payload_start(&mut recv, start).await?;
        let needed = reply_charge(pl, start);
        let charge = match held {
            Some(mut c) if pool.covers(&c, needed) => {
                c.shrink_to(needed);
                c
            }
            _ => match pool.try_charge(needed) {
                Ok(c) => c,
                Err(_) => {
                    return Ok(Exchanged::NoRoom {
                        needed,
                        pool: pool.clone(),
                    })
                }
            },
        };
        let payload =
            frame::read_payload_after(&mut recv, pl, start, |v| charge.attach_owned(v)).await?;
        frame::decode_parts(&header, payload).map(Exchanged::Reply)
    };
    let reply = read_reply.await.map_err(|e| match e {
        // The io::Error only says "connection lost"; the close reason says why
        // (e.g. the peer refused our certificate).
        FrameError::Io(e) => match conn.close_reason() {
            Some(why) => unreachable(format!("connection closed: {why}")),
            None => unreachable(format!("reading the reply failed: {e}")),
        },
        other => RpcError::Protocol {
            node,
            reason: format!("bad reply to {}: {other}", rpc.kind()),
        },
    })?;
    if let Exchanged::Reply(_) = reply {
        send.disarm();
    }
    Ok(reply)
}

/// A request's send half, reset when dropped before the exchange completed.
struct ResetOnDrop(Option<SendStream>);

impl ResetOnDrop {
    fn stream(&mut self) -> &mut SendStream {
        // unwrap: the stream is taken only by `disarm`, which consumes the guard's use.
        self.0.as_mut().expect("send stream used after disarm")
    }

    /// The exchange completed: let the stream end normally.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if let Some(mut s) = self.0.take() {
            let _ = s.reset(VarInt::from_u32(RESET_ABANDONED));
        }
    }
}

/// QUIC stream reset code: the caller gave up on the request (timeout).
const RESET_ABANDONED: u32 = 2;
/// QUIC stream reset code: the reply could not be written in time.
const RESET_REPLY_TIMEOUT: u32 = 3;

/// An `Error` reply as [`RpcError::Remote`], anything else as the answer.
pub(crate) fn reply_to_result(node: NodeId, reply: BlockRpc) -> Result<BlockRpc, RpcError> {
    match reply {
        BlockRpc::Error { code, message } => Err(RpcError::Remote {
            node,
            code,
            message,
        }),
        other => Ok(other),
    }
}

/// Everything a served stream needs, shared by all streams of all connections.
#[derive(Clone)]
pub(crate) struct ServeCtx {
    /// Where the layout stamps peers announce in `Hello` and `Ping` go (the peer actor).
    pub announced: Recipient<super::layout::PeerAnnounced>,
    pub handler: Recipient<HandleRpc>,
    pub hello: Hello,
    pub limits: FrameLimits,
    /// How long a peer may take to send its whole request frame.
    pub read_timeout: Duration,
    /// How long a peer may take to take our whole reply: past it the stream is reset,
    /// so a stalled reader cannot keep a served block (and its charge) forever.
    pub reply_timeout: Duration,
    /// The node's RAM budget: incoming payloads are charged to its peer pool before
    /// they are read (a served block is charged by the replica side before it is read
    /// from disk). `None`: unbounded (tests of other things).
    pub budget: Option<RamBudget>,
}

/// Read one request frame. Its payload is charged to the peer pool before it is
/// allocated, and the charge is attached to the payload's bytes: it returns when the
/// handler (the storage write) has dropped them, however the request ends.
async fn read_request(
    recv: &mut RecvStream,
    ctx: &ServeCtx,
) -> Result<BlockRpc, frame::FrameError> {
    let (hl, pl) = frame::read_prefix(recv, &ctx.limits).await?;
    match &ctx.budget {
        Some(b) if pl > 0 => {
            let charge = b
                .peer
                .charge(pl as u64)
                .await
                .map_err(|e| frame::FrameError::Io(std::io::Error::other(e.to_string())))?;
            frame::read_body_with(recv, hl, pl, |v| charge.attach_owned(v)).await
        }
        _ => frame::read_body(recv, hl, pl).await,
    }
}

/// Serve the streams `from` opens on `conn` until the connection ends; each stream runs
/// as its own task so one slow request does not hold up the others.
pub(crate) async fn serve_connection(conn: Connection, from: NodeId, ctx: ServeCtx) {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let remote = conn.remote_address();
                actix_rt::spawn(serve_stream(send, recv, from, remote, ctx.clone()));
            }
            Err(e) => {
                debug!(peer = %from.short(), reason = %e, "incoming connection ended");
                return;
            }
        }
    }
}

/// Messages that only ever come back as replies: a peer sending one as a request is
/// confused or hostile.
fn is_reply_only(rpc: &BlockRpc) -> bool {
    matches!(
        rpc,
        BlockRpc::Ok
            | BlockRpc::Error { .. }
            | BlockRpc::Pong(_)
            | BlockRpc::NeedBlockReply(_)
            | BlockRpc::BlockInfoReply(_)
            | BlockRpc::LayoutReply { .. }
            | BlockRpc::HandoverReply(_)
    )
}

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    from: NodeId,
    remote: std::net::SocketAddr,
    ctx: ServeCtx,
) {
    let request = match tokio::time::timeout(ctx.read_timeout, read_request(&mut recv, &ctx)).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            warn!(peer = %from.short(), error = %e, "bad request frame");
            let _ = write_frame(
                &mut send,
                &BlockRpc::error(ErrorCode::BadRequest, e.to_string()),
            )
            .await;
            return;
        }
        Err(_) => {
            warn!(peer = %from.short(), after = ?ctx.read_timeout, "request frame not received in time");
            let _ = send.reset(VarInt::from_u32(1));
            return;
        }
    };
    let kind = request.kind();
    let reply = match request {
        BlockRpc::Hello(h) => {
            if h.layout_digest != ctx.hello.layout_digest {
                debug!(peer = %from.short(), theirs = %h.layout_digest.short(),
                    "peer's layout differs from ours");
            }
            ctx.announced.do_send(super::layout::PeerAnnounced {
                from,
                remote,
                stamp: LayoutStamp {
                    version: h.layout_version,
                    digest: h.layout_digest,
                },
                stats: h.stats,
            });
            BlockRpc::Hello(ctx.hello.clone())
        }
        BlockRpc::Ping {
            nonce,
            layout,
            stats,
        } => {
            ctx.announced.do_send(super::layout::PeerAnnounced {
                from,
                remote,
                stamp: layout,
                stats,
            });
            BlockRpc::Pong(nonce)
        }
        rpc if is_reply_only(&rpc) => {
            warn!(peer = %from.short(), kind, "unexpected message as a request");
            BlockRpc::error(ErrorCode::BadRequest, format!("{kind} is not a request"))
        }
        rpc => match ctx.handler.send(HandleRpc { from, rpc }).await {
            Ok(reply) => reply,
            Err(e) => BlockRpc::error(ErrorCode::Unavailable, format!("handler unavailable: {e}")),
        },
    };
    match tokio::time::timeout(ctx.reply_timeout, write_frame(&mut send, &reply)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(peer = %from.short(), kind, error = %e, "reply not delivered"),
        Err(_) => {
            warn!(peer = %from.short(), kind, after = ?ctx.reply_timeout, "reply not taken in time; stream reset");
            let _ = send.reset(VarInt::from_u32(RESET_REPLY_TIMEOUT));
        }
    }
}
