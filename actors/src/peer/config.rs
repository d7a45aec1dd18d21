//! Settings of the peer actor: [`PeerConfig`] (the cluster: listen address, members as
//! [`PeerAddr`], frame limits, layout digest), [`PeerTuning`] (timers and transport knobs,
//! with their defaults) and the default timeouts shared with other actors.

use std::net::SocketAddr;
use std::time::Duration;

use crate::budget::RamBudget;
use crate::frame::FrameLimits;
use crate::hash::{Hash, NodeId};
use crate::layout::LayoutMember;

/// Default timeout of a block read or write between nodes.
pub const BLOCK_RW_TIMEOUT: Duration = Duration::from_secs(30);
/// Default QUIC stream receive window: 64 KiB, a frame head and the start of its payload.
/// On loopback (RTT well under 1 ms) it still moves hundreds of MiB/s per stream, and it
/// bounds what 256 unadmitted streams of one peer can park in quinn to 16 MiB.
pub const DEFAULT_STREAM_RECEIVE_WINDOW: u32 = 64 << 10;
/// Default timeout of a small request between nodes (need-block queries, ref writes,
/// anti-entropy and hint replay): the node's `peer_rpc_timeout`.
pub const PEER_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest MTU that GSO batches of quinn's 10 packets keep under Linux's 64 KiB limit
/// (a larger batch fails with `EMSGSIZE`, which quinn drops silently: the "MTU 8952
/// stalls" seen on the development VM).
pub const GSO_MAX_MTU: u16 = 6_500;
/// Default [`PeerTuning::mtu_upper_bound`].
pub const DEFAULT_MTU_UPPER_BOUND: u16 = GSO_MAX_MTU;
/// [`PeerTuning::mtu_upper_bound`] of a cluster on loopback: quinn's largest.
pub const LOOPBACK_MTU_UPPER_BOUND: u16 = 65_527;
/// Default [`PeerTuning::ack_eliciting_threshold`].
pub const DEFAULT_ACK_ELICITING_THRESHOLD: u32 = 8;
/// A cluster member as the peer actor needs it.
#[derive(Debug, Clone)]
pub struct PeerAddr {
    pub id: NodeId,
    pub addr: SocketAddr,
}

impl From<&LayoutMember> for PeerAddr {
    fn from(m: &LayoutMember) -> Self {
        PeerAddr {
            id: m.id,
            addr: m.addr,
        }
    }
}
/// Settings of a [`PeerActor`](super::PeerActor).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub listen: SocketAddr,
    pub members: Vec<PeerAddr>,
    pub limits: FrameLimits,
    pub layout_digest: Hash,
}

/// Timers and transport knobs of a [`PeerActor`](super::PeerActor); [`Default`] suits a LAN cluster.
/// Kept apart from [`PeerConfig`] so the node's config stays about the cluster.
#[derive(Debug, Clone)]
pub struct PeerTuning {
    /// Bound on dialling a member and exchanging hellos.
    pub connect_timeout: Duration,
    /// First reconnect delay after a failure; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// A call to a member whose last dial failed less than this long ago fails at once
    /// with `Unreachable` instead of dialling again.
    pub redial_after: Duration,
    /// Interval of the `Ping` that measures RTT and refreshes `last_seen`; it also
    /// carries this node's storage counts, so peers' views of them are this much older
    /// at most (plus the node's push period).
    pub ping_interval: Duration,
    /// A connection silent this long is dead (keep-alives are sent at a third of it).
    pub idle_timeout: Duration,
    /// Streams one peer may have open to us at once (QUIC flow control), so a flood from
    /// one peer cannot starve the others. It also bounds what quinn buffers, outside the
    /// RAM budget, of requests not yet admitted (this × the stream receive window per
    /// connection): 64 rather than 256 took a node's peak RSS at 1 MiB c256 from
    /// 336–346 MiB to 310–315 at the same throughput (docs/performance.md).
    pub max_incoming_streams: u32,
    /// How long a peer may take to send a whole request frame.
    pub request_read_timeout: Duration,
    /// UDP send and receive buffer size in bytes (0: leave the OS default).
    pub socket_buffer: usize,
    /// Initial QUIC MTU; `None` keeps quinn's safe default (1200, then discovery).
    pub initial_mtu: Option<u16>,
    /// Largest UDP payload this endpoint accepts and MTU discovery searches up to
    /// (quinn's own default is 1452, an Ethernet frame). Discovery only ever settles on
    /// what the path carries, so a high bound is safe on any network; it pays on
    /// loopback and jumbo-frame LANs, where each packet's fixed cost (a syscall share,
    /// header protection, one AEAD call, its ACK) is spread over more bytes.
    pub mtu_upper_bound: u16,
    /// UDP segment offload (GSO): hand the kernel up to 10 packets in one `sendmsg`.
    /// Linux refuses a GSO batch over 64 KiB, so it only combines with MTUs up to
    /// [`GSO_MAX_MTU`]: with a larger `mtu_upper_bound` it is left off whatever this says.
    pub segmentation_offload: bool,
    /// Ack-eliciting packets a receiver may take before it must acknowledge (QUIC ACK
    /// frequency extension; `None`: the RFC's every second packet).
    pub ack_eliciting_threshold: Option<u32>,
    /// The node's RAM budget ([`RamBudget`]): incoming payloads are charged to its peer
    /// pool, reply payloads read by our calls to its client pool, each before it is read
    /// (a served block is charged by the replica side before it is read from disk).
    /// `None`: unbounded.
    pub ram_budget: Option<RamBudget>,
    /// QUIC stream receive window in bytes: what a peer may push on one stream before
    /// we read it (the unadmitted part of a request is at most this).
    pub stream_receive_window: u32,
    /// How long a peer may take to take our reply to its request before the stream is
    /// reset.
    pub reply_write_timeout: Duration,
    /// Incoming connections kept per peer id; a new one beyond it closes the oldest (a
    /// restarted peer's fresh connection wins over the dead one it replaces).
    pub max_connections_per_peer: usize,
    /// Incoming handshakes in progress at once; Initials beyond it are dropped.
    pub max_handshakes: usize,
}

impl PeerTuning {
    /// The transport settings for a cluster whose members are at `addrs`. When every
    /// one is on loopback (a dev cluster, `blocknode bench`), packets go up to 64 KiB
    /// without GSO: one syscall and one AEAD call per 64 KiB, which measured 2.3–2.7
    /// CPU s/GiB per transfer against 3.0–3.5 for 6.5 KB packets in GSO batches of 10
    /// and 7.5–8.4 for quinn's 1452 (`peer_bench` example, 16 streams of 1 MiB). On
    /// a real network the default keeps GSO, which pays more there than a large MTU.
    pub fn for_members(addrs: impl IntoIterator<Item = SocketAddr>) -> PeerTuning {
        let mut addrs = addrs.into_iter().peekable();
        let any = addrs.peek().is_some();
        if any && addrs.all(|a| a.ip().is_loopback()) {
            PeerTuning {
                mtu_upper_bound: LOOPBACK_MTU_UPPER_BOUND,
                segmentation_offload: false,
                ..PeerTuning::default()
            }
        } else {
            PeerTuning::default()
        }
    }
}

impl Default for PeerTuning {
    fn default() -> Self {
        PeerTuning {
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            redial_after: Duration::from_millis(500),
            ping_interval: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(15),
            max_incoming_streams: 64,
            request_read_timeout: BLOCK_RW_TIMEOUT,
            socket_buffer: 4 << 20,
            initial_mtu: None,
            mtu_upper_bound: DEFAULT_MTU_UPPER_BOUND,
            segmentation_offload: DEFAULT_MTU_UPPER_BOUND <= GSO_MAX_MTU,
            ack_eliciting_threshold: Some(DEFAULT_ACK_ELICITING_THRESHOLD),
            ram_budget: None,
            stream_receive_window: DEFAULT_STREAM_RECEIVE_WINDOW,
            reply_write_timeout: BLOCK_RW_TIMEOUT,
            max_connections_per_peer: 2,
            max_handshakes: 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_cluster_gets_large_packets_and_others_keep_gso() {
        let lo: Vec<SocketAddr> = vec![
            "127.0.0.1:3901".parse().unwrap(),
            "[::1]:3902".parse().unwrap(),
        ];
        let t = PeerTuning::for_members(lo.clone());
        assert_eq!(t.mtu_upper_bound, LOOPBACK_MTU_UPPER_BOUND);
        assert!(!t.segmentation_offload, "no GSO with 64 KiB packets");
        let mut mixed = lo;
        mixed.push("10.0.0.2:3901".parse().unwrap());
        let t = PeerTuning::for_members(mixed);
        assert_eq!(t.mtu_upper_bound, DEFAULT_MTU_UPPER_BOUND);
        assert!(t.segmentation_offload && t.mtu_upper_bound <= GSO_MAX_MTU);
        let t = PeerTuning::for_members(Vec::new());
        assert_eq!(
            t.mtu_upper_bound, DEFAULT_MTU_UPPER_BOUND,
            "no members: the default"
        );
    }
}
