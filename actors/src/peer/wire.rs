//! Requests and replies on QUIC streams: the client side ([`request`]) and the server
//! side ([`serve_connection`]), both plain async functions over quinn types, so the
//! actor only decides *which* connection to use.

use std::time::Duration;

use actix::prelude::*;
use quinn::{Connection, RecvStream, SendStream};

use super::{HandleRpc, PeerHello, Priority, RpcError, REQUEST_READ_TIMEOUT};
use crate::frame::{self, BlockRpc, ErrorCode, FrameError, FrameLimits};
use crate::hash::NodeId;
use crate::tls::node_id_of_cert;

/// How a request failed below the application.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    /// The connection is unusable (closed, reset, lost).
    #[error("connection error: {0}")]
    Connection(String),
    /// The peer answered something that is not a valid frame.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Turn a reply frame into a call result: an `Error` reply becomes [`RpcError::Remote`].
pub(super) fn reply_to_result(node: NodeId, reply: BlockRpc) -> Result<BlockRpc, RpcError> {
    match reply {
        BlockRpc::Error { code, message } => Err(RpcError::Remote {
            node,
            code,
            message,
        }),
        other => Ok(other),
    }
}

async fn write_frame(send: &mut SendStream, rpc: &BlockRpc) -> Result<(), String> {
    let f = frame::encode(rpc).map_err(|e| e.to_string())?;
    send.write_all(&f.head).await.map_err(|e| e.to_string())?;
    if let Some(p) = f.payload {
        // The block bytes go to quinn as they are: no copy.
        send.write_chunk(p).await.map_err(|e| e.to_string())?;
    }
    send.finish().map_err(|e| e.to_string())
}

/// Send one request on a new stream of `conn` and read its reply.
pub(super) async fn request(
    conn: &Connection,
    rpc: &BlockRpc,
    limits: &FrameLimits,
    priority: Priority,
) -> Result<BlockRpc, RequestError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| RequestError::Connection(e.to_string()))?;
    let _ = send.set_priority(priority.stream_priority());
    write_frame(&mut send, rpc)
        .await
        .map_err(RequestError::Connection)?;
    frame::read_frame(&mut recv, limits)
        .await
        .map_err(|e| match e {
            FrameError::Io(e) => RequestError::Connection(e.to_string()),
            other => RequestError::Protocol(other.to_string()),
        })
}

/// What a served connection needs from the actor.
#[derive(Clone)]
pub(super) struct ServeContext {
    pub handler: Recipient<HandleRpc>,
    pub limits: FrameLimits,
    pub hello: BlockRpc,
    pub actor: Recipient<PeerHello>,
}

/// Accept one incoming connection (TLS already checks chain and membership) and serve
/// every stream it opens.
pub(super) async fn serve_connection(incoming: quinn::Incoming, sc: ServeContext) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, "refused incoming connection: {e}");
            return;
        }
    };
    let Some(from) = peer_id(&conn) else {
        tracing::warn!(%remote, "incoming connection without a usable certificate; closing");
        conn.close(1u32.into(), b"no certificate");
        return;
    };
    tracing::debug!(peer = %from.short(), %remote, "incoming connection");
    while let Ok((send, recv)) = conn.accept_bi().await {
        actix_rt::spawn(serve_stream(send, recv, from, sc.clone()));
    }
}

fn peer_id(conn: &Connection) -> Option<NodeId> {
    let any = conn.peer_identity()?;
    let certs = any
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    node_id_of_cert(certs.first()?).ok()
}

async fn serve_stream(mut send: SendStream, mut recv: RecvStream, from: NodeId, sc: ServeContext) {
    let req = tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        frame::read_frame(&mut recv, &sc.limits),
    )
    .await;
    let reply = match req {
        Err(_) => {
            tracing::warn!(peer = %from.short(), "request frame not received within {REQUEST_READ_TIMEOUT:?}; resetting the stream");
            let _ = send.reset(1u32.into());
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(peer = %from.short(), "bad request frame: {e}");
            // Discard whatever else the peer sends on this stream.
            let _ = recv.stop(1u32.into());
            BlockRpc::error(ErrorCode::BadRequest, format!("bad frame: {e}"))
        }
        Ok(Ok(BlockRpc::Hello(h))) => {
            sc.actor.do_send(PeerHello {
                from,
                layout_digest: h.layout_digest,
            });
            sc.hello.clone()
        }
        Ok(Ok(BlockRpc::Ping(n))) => BlockRpc::Pong(n),
        Ok(Ok(rpc)) => match sc.handler.send(HandleRpc { from, rpc }).await {
            Ok(r) => r,
            Err(e) => BlockRpc::error(
                ErrorCode::Unavailable,
                format!("node is shutting down: {e}"),
            ),
        },
    };
    if let Err(e) = write_frame(&mut send, &reply).await {
        tracing::debug!(peer = %from.short(), "could not send reply: {e}");
    }
    // Give the reply a moment to leave before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}
