//! The node's configuration: every key, its default and its meaning, in one place.
//!
//! A config file is TOML; unknown keys are refused with their name; durations are
//! human-readable (`"10m"`, `"30s"`, `"30days"`) and sizes too (`"16MiB"`). Without a
//! file, [`Config::embedded_default`] describes a single-node cluster under
//! `./blocknode-data`. The configuration reference in docs/operations.md mirrors this file
//! ([`EXAMPLE_CONFIG`] is parsed by a test so the example stays true).

mod defaults;
mod parse;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use blocknode_actors::storage::DataDir;
use blocknode_actors::NodeId;

use self::defaults::{
    default_anti_entropy_interval, default_backoff, default_block_rw_timeout, default_capacity,
    default_compression, default_gc_delay, default_http, default_http_body_read_timeout,
    default_http_keep_alive, default_http_request_timeout, default_max_block_size,
    default_max_hints_per_member, default_max_offline, default_peer_rpc_timeout, default_quic,
    default_ram_buffer, default_rf, default_scrub_interval, default_true, default_zone,
};
use self::parse::{de_compression, de_duration, de_opt_size, de_size};

/// Where the embedded default keeps everything.
pub const DEFAULT_BASE_DIR: &str = "blocknode-data";
/// HTTP API address of the embedded default.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:3900";
/// QUIC address of the embedded default.
pub const DEFAULT_QUIC_LISTEN: &str = "127.0.0.1:3901";

/// One cluster member.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Node id: 64 hex digits, printed by `blocknode cert node`.
    pub id: String,
    /// QUIC address of the node.
    pub addr: SocketAddr,
    /// Zone (failure domain); replicas spread over zones first.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Relative capacity; a node with capacity 2 gets about twice the partitions.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

/// One entry of `data_dirs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDirConfig {
    /// Root of this dir's block tree (created if missing).
    pub path: PathBuf,
    /// Bytes of blocks it may hold (`"4TB"`); also its share of the node's blocks.
    #[serde(deserialize_with = "de_size")]
    pub capacity: u64,
    /// Takes no new blocks; its blocks are moved to the other dirs (drain a disk).
    #[serde(default)]
    pub read_only: bool,
}

/// A node's configuration. Every key is optional except where noted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the block files: one data dir. Exactly one of `data_dir` and
    /// `data_dirs` is required.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Several data dirs (one per disk); each block lives in one of them, chosen by its
    /// hash weighted by the dirs' capacities.
    #[serde(default)]
    pub data_dirs: Vec<DataDirConfig>,
    /// Directory of the metadata store (refs, rc, resync queue). Required.
    pub metadata_dir: PathBuf,
    /// This node's zone. Default `"z1"`.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Number of nodes holding each block. Default 1.
    #[serde(default = "default_rf")]
    pub replication_factor: usize,
    /// Acknowledgements a write needs. Default: a majority of `replication_factor`.
    #[serde(default)]
    pub write_quorum: Option<usize>,
    /// zstd level (1..=19) for new blocks, or `"none"`. Default 1.
    #[serde(default = "default_compression", deserialize_with = "de_compression")]
    pub compression_level: Option<i32>,
    /// fsync block files and directories before acknowledging a write. Default true.
    #[serde(default = "default_true")]
    pub data_fsync: bool,
    /// Grace period between a block's last ref dropped and its deletion; also the least
    /// age of a block file before GC may delete it (an orphan's whole grace). Default "10m".
    #[serde(default = "default_gc_delay", deserialize_with = "de_duration")]
    pub gc_delay: Duration,
    /// The longest a node may be offline and still catch up from its peers: tombstones
    /// (revoked tokens) are kept this long, then purged. A node offline longer must be
    /// wiped (data and metadata dirs) and join again, so that its stale records cannot
    /// bring back what the others dropped. Default "30days".
    #[serde(default = "default_max_offline", deserialize_with = "de_duration")]
    pub max_offline: Duration,
    /// Timeout of a block read or write between nodes. Default "30s".
    #[serde(default = "default_block_rw_timeout", deserialize_with = "de_duration")]
    pub block_rw_timeout: Duration,
    /// Timeout of small requests between nodes: need-block queries, ref writes,
    /// anti-entropy and hint replay. Default "5s". Was `need_block_timeout`, which is
    /// still read (an alias) since configs written before the rename carry it.
    #[serde(
        default = "default_peer_rpc_timeout",
        alias = "need_block_timeout",
        deserialize_with = "de_duration"
    )]
    pub peer_rpc_timeout: Duration,
    /// First retry delay of a failed resync (doubling, capped at 64×). Default "60s".
    #[serde(default = "default_backoff", deserialize_with = "de_duration")]
    pub resync_backoff_base: Duration,
    /// Automatic scrub interval (±5 days jitter). Default "30days".
    #[serde(default = "default_scrub_interval", deserialize_with = "de_duration")]
    pub scrub_interval: Duration,
    /// Time between two anti-entropy rounds over every partition (±10 % jitter); the
    /// first runs 30 s (or this interval, if shorter) after start. Default "10m".
    #[serde(
        default = "default_anti_entropy_interval",
        deserialize_with = "de_duration"
    )]
    pub anti_entropy_interval: Duration,
    /// Keep a write that missed a holder as a hint and replay it when the holder is
    /// back. Default true.
    #[serde(default = "default_true")]
    pub hinted_handoff: bool,
    /// Hints kept for one member that misses writes (a node down for long). Past it,
    /// its missed writes are no longer kept one by one: the member is marked for a full
    /// anti-entropy sync of the partitions it shares with this node, run once it is up
    /// (status shows it in `anti_entropy.full_sync_needed`). Default 100000; at least 1.
    #[serde(default = "default_max_hints_per_member")]
    pub max_hints_per_member: u64,
    /// Largest block accepted. Default "16MiB"; at most "256MiB".
    #[serde(default = "default_max_block_size", deserialize_with = "de_size")]
    pub max_block_size: u64,
    /// Most bytes of block files this node stores (a quota; unset: the filesystem's
    /// limit). Writes past it are refused with 507 Insufficient Storage.
    #[serde(default, deserialize_with = "de_opt_size")]
    pub data_dir_capacity: Option<u64>,
    /// Most bytes of block data held in memory by requests in flight, split in half
    /// between a client pool (PUT/GET bodies, replies read from peers) and a peer pool
    /// (incoming PutBlocks, blocks served to peers), each at least `max_block_size`
    /// (`blocknode_actors::budget`). Every block byte is charged before it is read or
    /// received; past the budget, new requests wait (back-pressure), at most
    /// `block_rw_timeout` (then a client gets 503).
    /// Default "256MiB".
    #[serde(default = "default_ram_buffer", deserialize_with = "de_size")]
    pub block_ram_buffer_max: u64,
    /// Idle time after which the HTTP API closes a keep-alive connection. Default "75s".
    #[serde(default = "default_http_keep_alive", deserialize_with = "de_duration")]
    pub http_keep_alive: Duration,
    /// Time a new HTTP connection has to send its first request's head; past it, 408.
    /// Default "60s".
    #[serde(
        default = "default_http_request_timeout",
        deserialize_with = "de_duration"
    )]
    pub http_request_timeout: Duration,
    /// Longest pause inside a request body; past it the request gets 408, its connection
    /// is closed and its RAM budget returned. Default "30s".
    #[serde(
        default = "default_http_body_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub http_body_read_timeout: Duration,
    /// QUIC (node-to-node) listen address. Default "127.0.0.1:3901".
    #[serde(default = "default_quic")]
    pub quic_listen: SocketAddr,
    /// HTTP API listen address. Default "127.0.0.1:3900".
    #[serde(default = "default_http")]
    pub http_listen: SocketAddr,
    /// Cluster CA certificate (PEM). Required.
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM). Required.
    pub node_cert: PathBuf,
    /// This node's private key (PEM, mode 0600). Required.
    pub node_key: PathBuf,
    /// File holding the admin API token (created with mode 0600 if missing). Required.
    pub admin_token_file: PathBuf,
    /// Every cluster member, this node included: layout version 1 (once a layout change
    /// is applied by command, the stored layout wins). Empty: a single-node cluster of
    /// this node, unless `bootstrap_peers` is set.
    #[serde(default)]
    pub members: Vec<Member>,
    /// QUIC addresses of cluster members, for a node that joins a running cluster (no
    /// `[[members]]`): it serves nothing until a layout names it, and until then accepts
    /// node connections only from these hosts. Default empty (`--join ADDR` adds one).
    #[serde(default)]
    pub bootstrap_peers: Vec<SocketAddr>,
}

/// An example cluster config, shown in docs/operations.md and parsed by a test.
pub const EXAMPLE_CONFIG: &str = r#"# /etc/blocknode/node1.toml
data_dir = "/var/lib/blocknode/data"
metadata_dir = "/var/lib/blocknode/meta"
zone = "dc1"
replication_factor = 3
write_quorum = 2                 # default: majority of replication_factor
compression_level = 1            # 1..=19 or "none"
data_fsync = true
gc_delay = "10m"
max_offline = "30days"
block_rw_timeout = "30s"
peer_rpc_timeout = "5s"
resync_backoff_base = "60s"
scrub_interval = "30days"
anti_entropy_interval = "10m"
hinted_handoff = true
max_block_size = "16MiB"
quic_listen = "0.0.0.0:3901"
http_listen = "127.0.0.1:3900"
ca_cert = "/etc/blocknode/certs/ca.crt"
node_cert = "/etc/blocknode/certs/node.crt"
node_key = "/etc/blocknode/certs/node.key"
admin_token_file = "/etc/blocknode/admin.token"

[[members]]
id = "0c8e7c4f9d3a1b2e6f5a4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0918"
addr = "10.0.0.1:3901"
zone = "dc1"
capacity = 1

[[members]]
id = "5b4a39281706f5e4d3c2b1a09180c8e7c4f9d3a1b2e6f5a4d3c2b1a09f8e7d6c"
addr = "10.0.0.2:3901"
zone = "dc2"

[[members]]
id = "e7d6c5b4a39281706f5e4d3c2b1a09180c8e7c4f9d3a1b2e6f5a4d3c2b1a09f8"
addr = "10.0.0.3:3901"
zone = "dc3"
"#;

impl Config {
    /// Parse a config text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
        cfg.validate()
            .with_context(|| format!("invalid config {origin}"))?;
        Ok(cfg)
    }

    /// Read and parse a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Config::load_joining(path, &[])
    }

    /// As [`Config::load`], with `join` added to `bootstrap_peers` before the checks
    /// (`blocknode run --join ADDR`).
    pub fn load_joining(path: &Path, join: &[SocketAddr]) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let origin = path.display().to_string();
        let mut cfg: Config = toml::from_str(&text).map_err(|e| toml_error(&text, &origin, &e))?;
        cfg.bootstrap_peers.extend_from_slice(join);
        cfg.validate()
            .with_context(|| format!("invalid config {origin}"))?;
        Ok(cfg)
    }

    /// The embedded single-node default: everything under `./blocknode-data`.
    pub fn embedded_default() -> Config {
        Config::embedded_under(Path::new(DEFAULT_BASE_DIR))
    }

    /// The embedded single-node default with everything under `base`
    /// (`blocknode run --dir DIR`).
    pub fn embedded_under(base: &Path) -> Config {
        Config {
            data_dir: Some(base.join("data")),
            data_dirs: Vec::new(),
            metadata_dir: base.join("meta"),
            zone: default_zone(),
            replication_factor: 1,
            write_quorum: None,
            compression_level: default_compression(),
            data_fsync: true,
            gc_delay: default_gc_delay(),
            max_offline: default_max_offline(),
            block_rw_timeout: default_block_rw_timeout(),
            peer_rpc_timeout: default_peer_rpc_timeout(),
            resync_backoff_base: default_backoff(),
            scrub_interval: default_scrub_interval(),
            anti_entropy_interval: default_anti_entropy_interval(),
            hinted_handoff: true,
            max_hints_per_member: default_max_hints_per_member(),
            max_block_size: default_max_block_size(),
            data_dir_capacity: None,
            block_ram_buffer_max: default_ram_buffer(),
            http_keep_alive: default_http_keep_alive(),
            http_request_timeout: default_http_request_timeout(),
            http_body_read_timeout: default_http_body_read_timeout(),
            quic_listen: default_quic(),
            http_listen: default_http(),
            ca_cert: base.join("certs/node/ca.crt"),
            node_cert: base.join("certs/node/node.crt"),
            node_key: base.join("certs/node/node.key"),
            admin_token_file: base.join("admin.token"),
            members: Vec::new(),
            bootstrap_peers: Vec::new(),
        }
    }

    /// Whether this node joins a running cluster (no `[[members]]`, bootstrap peers set).
    pub fn joins(&self) -> bool {
        self.members.is_empty() && !self.bootstrap_peers.is_empty()
    }

    /// The write quorum in force (the configured one, else a majority).
    pub fn effective_write_quorum(&self) -> usize {
        self.write_quorum.unwrap_or(self.replication_factor / 2 + 1)
    }

    /// Member ids parsed.
    pub fn member_ids(&self) -> anyhow::Result<Vec<NodeId>> {
        self.members
            .iter()
            .map(|m| {
                m.id.parse::<NodeId>()
                    .map_err(|e| anyhow::anyhow!("members: invalid id {:?}: {e}", m.id))
            })
            .collect()
    }

    /// The storage actor's data dirs: `data_dir` as one entry (its quota
    /// `data_dir_capacity`), or the `data_dirs` list.
    pub fn storage_dirs(&self) -> Vec<DataDir> {
        match &self.data_dir {
            Some(path) => vec![DataDir {
                path: path.clone(),
                capacity: self.data_dir_capacity,
                read_only: false,
            }],
            None => self
                .data_dirs
                .iter()
                .map(|d| DataDir {
                    path: d.path.clone(),
                    capacity: Some(d.capacity),
                    read_only: d.read_only,
                })
                .collect(),
        }
    }
}

/// A TOML error as one line: where (line and column) and what, without the quoted
/// snippet and caret that toml's own message spreads over several lines.
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> anyhow::Error {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    anyhow::anyhow!(
        "invalid config {origin}{}: {}",
        at.unwrap_or_default(),
        e.message().trim()
    )
}
