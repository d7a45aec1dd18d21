//! The default of every key that has one (serde's `default = "..."`). Durations shared
//! with an actor are that actor's constant, so each is defined once.

use std::net::SocketAddr;
use std::time::Duration;

use blocknode_actors::antientropy::{DEFAULT_ANTI_ENTROPY_INTERVAL, DEFAULT_MAX_HINTS_PER_MEMBER};
use blocknode_actors::gc::DEFAULT_GC_DELAY;
use blocknode_actors::peer::{BLOCK_RW_TIMEOUT, PEER_RPC_TIMEOUT};
use blocknode_actors::resync::{DEFAULT_RESYNC_BACKOFF, DEFAULT_SCRUB_INTERVAL};

use super::{DEFAULT_HTTP_LISTEN, DEFAULT_QUIC_LISTEN};
use crate::http::blocks::DEFAULT_BODY_READ_TIMEOUT;

pub(super) fn default_compression() -> Option<i32> {
    Some(1)
}
pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_zone() -> String {
    "z1".into()
}
pub(super) fn default_rf() -> usize {
    1
}
pub(super) fn default_gc_delay() -> Duration {
    DEFAULT_GC_DELAY
}
pub(super) fn default_max_offline() -> Duration {
    blocknode_actors::tokens::DEFAULT_MAX_OFFLINE
}
pub(super) fn default_block_rw_timeout() -> Duration {
    BLOCK_RW_TIMEOUT
}
pub(super) fn default_peer_rpc_timeout() -> Duration {
    PEER_RPC_TIMEOUT
}
pub(super) fn default_backoff() -> Duration {
    DEFAULT_RESYNC_BACKOFF
}
pub(super) fn default_anti_entropy_interval() -> Duration {
    DEFAULT_ANTI_ENTROPY_INTERVAL
}
pub(super) fn default_max_hints_per_member() -> u64 {
    DEFAULT_MAX_HINTS_PER_MEMBER
}
pub(super) fn default_scrub_interval() -> Duration {
    DEFAULT_SCRUB_INTERVAL
}
/// nginx's `keepalive_timeout`: pooled HTTP clients keep idle connections for tens of
/// seconds and must not find them closed under their next PUT (actix's default is 5 s).
pub(super) fn default_http_keep_alive() -> Duration {
    Duration::from_secs(75)
}
/// Time a new connection gets to deliver its first request's head (actix's default of
/// 5 s answers 408 to a pooled client that opened a connection ahead of need).
pub(super) fn default_http_request_timeout() -> Duration {
    Duration::from_secs(60)
}
/// A body that sends nothing for this long is cut off: a slow client cannot hold a
/// connection, or its share of the RAM budget, forever.
pub(super) fn default_http_body_read_timeout() -> Duration {
    DEFAULT_BODY_READ_TIMEOUT
}
pub(super) fn default_max_block_size() -> u64 {
    16 << 20
}
pub(super) fn default_ram_buffer() -> u64 {
    256 << 20
}
pub(super) fn default_capacity() -> u32 {
    1
}

pub(super) fn default_quic() -> SocketAddr {
    // unwrap: a constant, valid address.
    DEFAULT_QUIC_LISTEN.parse().unwrap()
}
pub(super) fn default_http() -> SocketAddr {
    // unwrap: a constant, valid address.
    DEFAULT_HTTP_LISTEN.parse().unwrap()
}
