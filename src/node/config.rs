//! The node's configuration: every key, its default and its meaning, in one place.
//!
//! A config file is TOML; unknown keys are refused with their name; durations are
//! human-readable (`"10m"`, `"30s"`, `"30days"`) and sizes too (`"16MiB"`). Without a
//! file, [`Config::embedded_default`] describes a single-node cluster under
//! `./blocknode-data`. README's configuration reference mirrors this file
//! ([`EXAMPLE_CONFIG`] is parsed by a test so the example stays true).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};

use blocknode_actors::antientropy::DEFAULT_ANTI_ENTROPY_INTERVAL;
use blocknode_actors::gc::DEFAULT_GC_DELAY;
use blocknode_actors::peer::{BLOCK_RW_TIMEOUT, PEER_RPC_TIMEOUT};
use blocknode_actors::resync::{DEFAULT_RESYNC_BACKOFF, DEFAULT_SCRUB_INTERVAL};
use blocknode_actors::storage::DataDir;
use blocknode_actors::NodeId;

/// Where the embedded default keeps everything.
pub const DEFAULT_BASE_DIR: &str = "blocknode-data";
/// HTTP API address of the embedded default.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:3900";
/// QUIC address of the embedded default.
pub const DEFAULT_QUIC_LISTEN: &str = "127.0.0.1:3901";

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); use e.g. \"30s\", \"10m\", \"30days\""
        ))
    })
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => s
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                serde::de::Error::custom(format!("invalid size {s:?} ({e}); use e.g. \"16MiB\""))
            }),
    }
}

fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

fn de_compression<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Level {
        Int(i32),
        Text(String),
    }
    match Level::deserialize(d)? {
        Level::Int(n) if (1..=19).contains(&n) => Ok(Some(n)),
        Level::Int(n) => Err(serde::de::Error::custom(format!(
            "compression_level {n} is out of range: use 1..=19 or \"none\""
        ))),
        Level::Text(s) if s == "none" => Ok(None),
        Level::Text(s) => Err(serde::de::Error::custom(format!(
            "compression_level {s:?}: use 1..=19 or \"none\""
        ))),
    }
}

fn default_compression() -> Option<i32> {
    Some(1)
}
fn default_true() -> bool {
    true
}
fn default_zone() -> String {
    "z1".into()
}
fn default_rf() -> usize {
    1
}
fn default_gc_delay() -> Duration {
    DEFAULT_GC_DELAY
}
fn default_block_rw_timeout() -> Duration {
    BLOCK_RW_TIMEOUT
}
fn default_peer_rpc_timeout() -> Duration {
    PEER_RPC_TIMEOUT
}
fn default_backoff() -> Duration {
    DEFAULT_RESYNC_BACKOFF
}
fn default_anti_entropy_interval() -> Duration {
    DEFAULT_ANTI_ENTROPY_INTERVAL
}
fn default_scrub_interval() -> Duration {
    DEFAULT_SCRUB_INTERVAL
}
/// nginx's `keepalive_timeout`: pooled HTTP clients keep idle connections for tens of
/// seconds and must not find them closed under their next PUT (actix's default is 5 s).
fn default_http_keep_alive() -> Duration {
    Duration::from_secs(75)
}
/// Time a new connection gets to deliver its first request's head (actix's default of
/// 5 s answers 408 to a pooled client that opened a connection ahead of need).
fn default_http_request_timeout() -> Duration {
    Duration::from_secs(60)
}
/// A body that sends nothing for this long is cut off: a slow client cannot hold a
/// connection, or its share of the RAM budget, forever.
fn default_http_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_block_size() -> u64 {
    16 << 20
}
fn default_ram_buffer() -> u64 {
    256 << 20
}
fn default_capacity() -> u32 {
    1
}

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
    /// (`blocknode_actors::budget`); past it, new requests wait (back-pressure).
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

fn default_quic() -> SocketAddr {
    // unwrap: a constant, valid address.
    DEFAULT_QUIC_LISTEN.parse().unwrap()
}
fn default_http() -> SocketAddr {
    // unwrap: a constant, valid address.
    DEFAULT_HTTP_LISTEN.parse().unwrap()
}

/// An example cluster config, shown in README and parsed by a test.
pub const EXAMPLE_CONFIG: &str = r#"# /etc/blocknode/node1.toml
data_dir = "/var/lib/blocknode/data"
metadata_dir = "/var/lib/blocknode/meta"
zone = "dc1"
replication_factor = 3
write_quorum = 2                 # default: majority of replication_factor
compression_level = 1            # 1..=19 or "none"
data_fsync = true
gc_delay = "10m"
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
        let cfg: Config =
            toml::from_str(text).with_context(|| format!("invalid config {origin}"))?;
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
        let mut cfg: Config =
            toml::from_str(&text).with_context(|| format!("invalid config {origin}"))?;
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
            block_rw_timeout: default_block_rw_timeout(),
            peer_rpc_timeout: default_peer_rpc_timeout(),
            resync_backoff_base: default_backoff(),
            scrub_interval: default_scrub_interval(),
            anti_entropy_interval: default_anti_entropy_interval(),
            hinted_handoff: true,
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

    /// Check the values that serde alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.data_dir, self.data_dirs.is_empty()) {
            (Some(_), false) => bail!(
                "data_dir and data_dirs are both set: use data_dirs alone (data_dir is one entry of it)"
            ),
            (None, true) => bail!("missing data_dir or data_dirs: where to store the blocks"),
            _ => {}
        }
        if self.data_dir.is_none() && self.data_dir_capacity.is_some() {
            bail!(
                "data_dir_capacity applies to data_dir; with data_dirs give each entry a capacity"
            );
        }
        let mut paths: Vec<&PathBuf> = self.data_dirs.iter().map(|d| &d.path).collect();
        paths.sort();
        paths.dedup();
        if paths.len() != self.data_dirs.len() {
            bail!("data_dirs: a path is listed twice");
        }
        if self.data_dirs.iter().any(|d| d.capacity == 0) {
            bail!("data_dirs: capacity must be more than 0");
        }
        if !self.data_dirs.is_empty() && self.data_dirs.iter().all(|d| d.read_only) {
            bail!("data_dirs: every dir is read_only, so no block could be stored");
        }
        if self.replication_factor == 0 {
            bail!("replication_factor must be at least 1");
        }
        let n = if self.members.is_empty() {
            1
        } else {
            self.members.len()
        };
        if self.replication_factor > n && !self.joins() {
            bail!(
                "replication_factor {} is larger than the number of members ({n})",
                self.replication_factor
            );
        }
        let q = self.effective_write_quorum();
        if q == 0 || q > self.replication_factor {
            bail!(
                "write_quorum {q} must be between 1 and replication_factor ({})",
                self.replication_factor
            );
        }
        if self.block_ram_buffer_max < 2 * self.max_block_size {
            bail!(
                "block_ram_buffer_max ({}) must hold at least one block request (2 × max_block_size = {})",
                self.block_ram_buffer_max,
                2 * self.max_block_size
            );
        }
        if self.max_block_size > 256 << 20 {
            bail!(
                "max_block_size {} is over the 256 MiB limit",
                self.max_block_size
            );
        }
        let ids = self.member_ids()?;
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != ids.len() {
            bail!("members: a node id is listed twice");
        }
        if self.members.iter().any(|m| m.capacity == 0) {
            bail!("members: capacity must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
data_dir = "d"
metadata_dir = "m"
ca_cert = "ca.crt"
node_cert = "n.crt"
node_key = "n.key"
admin_token_file = "t"
"#;

    #[test]
    fn the_readme_example_parses() {
        let c = Config::parse(EXAMPLE_CONFIG, "example").unwrap();
        assert_eq!(c.replication_factor, 3);
        assert_eq!(c.effective_write_quorum(), 2);
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.max_block_size, 16 << 20);
        assert_eq!(c.scrub_interval, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn the_old_need_block_timeout_key_still_sets_the_peer_rpc_timeout() {
        let old = Config::parse(&format!("{MINIMAL}\nneed_block_timeout = \"7s\"\n"), "t").unwrap();
        assert_eq!(old.peer_rpc_timeout, Duration::from_secs(7));
        let new = Config::parse(&format!("{MINIMAL}\npeer_rpc_timeout = \"8s\"\n"), "t").unwrap();
        assert_eq!(new.peer_rpc_timeout, Duration::from_secs(8));
    }

    #[test]
    fn defaults_fill_missing_keys() {
        let c = Config::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.gc_delay, Duration::from_secs(600));
        assert_eq!(c.compression_level, Some(1));
        assert!(c.data_fsync);
        assert_eq!(c.effective_write_quorum(), 1);
        assert_eq!(c.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
    }

    #[test]
    fn data_dirs_parse_and_data_dir_is_one_entry_but_not_both() {
        let rest = MINIMAL.replace("data_dir = \"d\"\n", "");
        let c = Config::parse(
            &format!("data_dirs = [{{ path = \"a\", capacity = \"4TB\" }}, {{ path = \"b\", capacity = \"1TiB\", read_only = true }}]\n{rest}"),
            "t",
        )
        .unwrap();
        let dirs = c.storage_dirs();
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].capacity, Some(4_000_000_000_000));
        assert_eq!((dirs[1].capacity, dirs[1].read_only), (Some(1 << 40), true));
        let one = Config::parse(&format!("{MINIMAL}data_dir_capacity = \"1GB\"\n"), "t").unwrap();
        assert_eq!(one.storage_dirs()[0].path, PathBuf::from("d"));
        assert_eq!(one.storage_dirs()[0].capacity, Some(1_000_000_000));
        let both = Config::parse(
            &format!("{MINIMAL}data_dirs = [{{ path = \"a\", capacity = \"1TB\" }}]\n"),
            "t",
        )
        .unwrap_err();
        assert!(
            format!("{both:#}").contains("data_dir and data_dirs are both set"),
            "{both:#}"
        );
        let none = Config::parse(&rest, "t").unwrap_err();
        assert!(
            format!("{none:#}").contains("missing data_dir or data_dirs"),
            "{none:#}"
        );
        for bad in [
            "data_dirs = [{ path = \"a\" }]",
            "data_dirs = [{ path = \"a\", capacity = \"1TB\", size = 1 }]",
            "data_dirs = [{ path = \"a\", capacity = \"1TB\" }, { path = \"a\", capacity = \"1TB\" }]",
            "data_dirs = [{ path = \"a\", capacity = \"1TB\", read_only = true }]",
        ] {
            assert!(Config::parse(&format!("{bad}\n{rest}"), "t").is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = Config::parse(&format!("{MINIMAL}\ngc_dealy = \"1m\"\n"), "t").unwrap_err();
        assert!(format!("{e:#}").contains("gc_dealy"), "{e:#}");
    }

    #[test]
    fn durations_sizes_and_levels_are_human_readable_and_checked() {
        let c = Config::parse(
            &format!("{MINIMAL}\ngc_delay = \"1h 30m\"\nmax_block_size = \"1MiB\"\ncompression_level = \"none\"\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.gc_delay, Duration::from_secs(5400));
        assert_eq!(c.max_block_size, 1 << 20);
        assert_eq!(c.compression_level, None);
        for bad in [
            "gc_delay = \"soon\"",
            "max_block_size = \"big\"",
            "compression_level = 30",
            "max_block_size = \"1GiB\"",
        ] {
            assert!(
                Config::parse(&format!("{MINIMAL}\n{bad}\n"), "t").is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn inconsistent_replication_settings_are_refused() {
        for bad in [
            "replication_factor = 2",
            "replication_factor = 0",
            "write_quorum = 2",
        ] {
            let e = Config::parse(&format!("{MINIMAL}\n{bad}\n"), "t").unwrap_err();
            assert!(
                format!("{e:#}").contains("replication_factor")
                    || format!("{e:#}").contains("write_quorum"),
                "{e:#}"
            );
        }
        let e = Config::parse(
            &format!("{MINIMAL}\n[[members]]\nid = \"xyz\"\naddr = \"127.0.0.1:1\"\n"),
            "t",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("invalid id"), "{e:#}");
    }

    /// The field names serde knows for `T`, read from the list its derive hands to
    /// `deserialize_struct`, so the check below cannot drift from the struct.
    fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Capture<'a>(&'a mut &'static [&'static str]);
        impl<'de> Deserializer<'de> for Capture<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(
                self,
                _: V,
            ) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(serde::de::Error::custom("captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields: &'static [&'static str] = &[];
        let _ = T::deserialize(Capture(&mut fields));
        fields
    }

    #[test]
    fn every_config_key_is_in_the_readme_reference() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("## Configuration reference")
            .expect("README has a configuration reference");
        let reference = &readme[start..];
        let reference = &reference[..reference[3..]
            .find("\n## ")
            .map_or(reference.len(), |i| i + 3)];
        let config_fields = serde_fields::<Config>();
        let member_fields = serde_fields::<Member>();
        assert!(
            config_fields.len() > 20 && member_fields.len() == 4,
            "field capture failed"
        );
        for key in config_fields.iter().chain(member_fields) {
            assert!(
                reference.contains(&format!("`{key}`"))
                    || reference.contains(&format!("`[[{key}]]`")),
                "config key `{key}` is missing from README's configuration reference"
            );
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        Config::embedded_default().validate().unwrap();
    }

    #[test]
    fn embedded_under_a_dir_keeps_every_file_there() {
        let base = Path::new("/tmp/elsewhere");
        let cfg = Config::embedded_under(base);
        cfg.validate().expect("valid");
        let paths = [
            cfg.data_dir.clone().expect("one data dir"),
            cfg.metadata_dir.clone(),
            cfg.ca_cert.clone(),
            cfg.node_cert.clone(),
            cfg.node_key.clone(),
            cfg.admin_token_file.clone(),
        ];
        for p in paths {
            assert!(
                p.starts_with(base),
                "{} is outside {}",
                p.display(),
                base.display()
            );
        }
        let default = Config::embedded_default();
        assert_eq!(
            default.metadata_dir,
            Path::new(DEFAULT_BASE_DIR).join("meta")
        );
    }
}
