//! `blocknode dev-cluster`: a cluster of N nodes on loopback, for trying blocknode and
//! for tests and benchmarks. [`init`] writes a CA, node certificates, configs on free
//! ports, one admin token for every node (`admin.token`, 0600), `env` (the `export` line
//! for the client) and `cluster.json`; [`process`] starts and stops nodes, `command`
//! runs the cluster in the foreground and watches it; [`change`] restarts a node or adds
//! one to a cluster written before.

pub mod change;
mod command;
pub mod process;

pub use command::run;
pub use process::{spawn_nodes, stop_nodes, wait_healthy};

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};

use blocknode_actors::tls::{generate_ca, generate_node_cert};

use crate::node::ensure_token;

/// Options of `dev-cluster`.
#[derive(Args, Debug, Clone, Default)]
pub struct DevClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory to write the cluster into (must be empty or absent); with --restart or
    /// --add, the directory of a cluster written before.
    #[arg(long)]
    pub dir: PathBuf,
    /// Replication factor (default: min(3, nodes)).
    #[arg(long)]
    pub replication: Option<usize>,
    /// gc_delay of every node.
    #[arg(long, default_value = "10m")]
    pub gc_delay: String,
    /// Only write the files; do not start the nodes.
    #[arg(long)]
    pub init_only: bool,
    /// Start NODE (e.g. node2) of the cluster in --dir again, after it was killed or
    /// stopped; it runs in the background and logs to its node.log.
    #[arg(long, value_name = "NODE", conflicts_with_all = ["nodes", "replication", "gc_delay", "init_only", "add"])]
    pub restart: Option<String>,
    /// Add a node to the cluster in --dir and start it in the background; it waits to
    /// be assigned, and the `blocknode layout assign` line to run is printed.
    #[arg(long, conflicts_with_all = ["nodes", "replication", "gc_delay", "init_only"])]
    pub add: bool,
}

/// One node in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevNode {
    pub name: String,
    pub id: String,
    pub config: PathBuf,
    pub api: String,
    pub token: String,
    pub data_dir: PathBuf,
}

/// `cluster.json` (mode 0600: it holds the admin token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevClusterFile {
    pub nodes: Vec<DevNode>,
}

/// Name of the file in the cluster's directory that holds the one admin token.
pub const TOKEN_FILE: &str = "admin.token";
/// Name of the file in the cluster's directory with the client's `export` line.
pub const ENV_FILE: &str = "env";

impl DevNode {
    /// The node's own directory (config, certificates, data, metadata, node.log).
    pub fn dir(&self) -> &Path {
        self.config.parent().unwrap_or(Path::new("."))
    }

    /// Where the node logs when started by dev-cluster.
    pub fn log(&self) -> PathBuf {
        self.dir().join("node.log")
    }
}

impl DevClusterFile {
    /// Read `cluster.json` of the cluster in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<DevClusterFile> {
        let path = dir.join("cluster.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {}: is it a dev-cluster directory?",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Write `cluster.json` into `dir` (0600), replacing it whole.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        write_private(&dir.join("cluster.json"), &serde_json::to_vec_pretty(self)?)
    }

    /// The `export` line that points the client at the first node.
    pub fn export_line(&self, dir: &Path) -> String {
        format!(
            "export BLOCKNODE_API={} BLOCKNODE_TOKEN=$(cat {})",
            self.nodes.first().map_or("", |n| n.api.as_str()),
            dir.join(TOKEN_FILE).display()
        )
    }
}

/// Write `bytes` to `path`, readable by its owner only (replacing any older file).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Loopback ports from the OS, each kept bound until every node has its own: a port
/// released at once could be handed out again by the next `bind(0)`, giving two nodes
/// the same address. Dropping the reservation frees them for the nodes.
#[derive(Default)]
pub(crate) struct PortReservation {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl PortReservation {
    pub(crate) fn tcp(&mut self) -> anyhow::Result<u16> {
        let l = TcpListener::bind("127.0.0.1:0").context("reserving a TCP port")?;
        let port = l.local_addr()?.port();
        self.tcp.push(l);
        Ok(port)
    }

    pub(crate) fn udp(&mut self) -> anyhow::Result<u16> {
        let s = UdpSocket::bind("127.0.0.1:0").context("reserving a UDP port")?;
        let port = s.local_addr()?.port();
        self.udp.push(s);
        Ok(port)
    }
}

pub(crate) fn toml_str(p: &Path) -> String {
    // TOML basic strings: escape backslashes and quotes.
    format!(
        "\"{}\"",
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

/// Write the cluster's files into `args.dir` (which must be empty or absent).
pub fn init(args: &DevClusterArgs) -> anyhow::Result<DevClusterFile> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let rf = args.replication.unwrap_or(args.nodes.min(3));
    if rf == 0 || rf > args.nodes {
        bail!(
            "--replication {rf} must be between 1 and --nodes ({})",
            args.nodes
        );
    }
    humantime::parse_duration(&args.gc_delay)
        .with_context(|| format!("--gc-delay {:?}", args.gc_delay))?;
    if args.dir.exists() && std::fs::read_dir(&args.dir)?.next().is_some() {
        bail!(
            "{} is not empty; choose a new directory",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let ca = dir.join("ca");
    generate_ca(&ca)?;
    struct Pending {
        name: String,
        id: String,
        node_dir: PathBuf,
        http: u16,
        quic: u16,
    }
    let mut pending = Vec::new();
    let mut ports = PortReservation::default();
    for i in 1..=args.nodes {
        let name = format!("node{i}");
        let node_dir = dir.join(&name);
        let id = generate_node_cert(&ca, &name, &node_dir.join("certs"))?;
        pending.push(Pending {
            name,
            id: id.to_hex(),
            node_dir,
            http: ports.tcp()?,
            quic: ports.udp()?,
        });
    }
    drop(ports);
    let mut members = String::new();
    for (i, p) in pending.iter().enumerate() {
        members.push_str(&format!(
            "\n[[members]]\nid = \"{}\"\naddr = \"127.0.0.1:{}\"\nzone = \"z{}\"\n",
            p.id,
            p.quic,
            i + 1
        ));
    }
    // One admin token for the whole cluster, in one file every node reads.
    let token_file = dir.join(TOKEN_FILE);
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&token_file, format!("{token}\n").as_bytes())?;
    debug_assert_eq!(
        ensure_token(&token_file).ok().as_deref(),
        Some(token.as_str())
    );
    let mut nodes = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        let certs = p.node_dir.join("certs");
        let data_dir = p.node_dir.join("data");
        let config = format!(
            "# blocknode dev-cluster node {name}\n\
             data_dir = {data}\n\
             metadata_dir = {meta}\n\
             zone = \"z{zone}\"\n\
             replication_factor = {rf}\n\
             gc_delay = \"{gc}\"\n\
             quic_listen = \"127.0.0.1:{quic}\"\n\
             http_listen = \"127.0.0.1:{http}\"\n\
             ca_cert = {ca}\n\
             node_cert = {cert}\n\
             node_key = {key}\n\
             admin_token_file = {token}\n{members}",
            name = p.name,
            data = toml_str(&data_dir),
            meta = toml_str(&p.node_dir.join("meta")),
            zone = i + 1,
            rf = rf,
            gc = args.gc_delay,
            quic = p.quic,
            http = p.http,
            ca = toml_str(&certs.join("ca.crt")),
            cert = toml_str(&certs.join("node.crt")),
            key = toml_str(&certs.join("node.key")),
            token = toml_str(&token_file),
        );
        let config_path = p.node_dir.join("config.toml");
        // Check what we write parses, so a node never starts on a broken file.
        crate::node::config::Config::parse(&config, &config_path.display().to_string())?;
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        nodes.push(DevNode {
            name: p.name.clone(),
            id: p.id.clone(),
            config: config_path,
            api: format!("http://127.0.0.1:{}", p.http),
            token: token.clone(),
            data_dir,
        });
    }
    let file = DevClusterFile { nodes };
    file.save(&dir)?;
    write_private(
        &dir.join(ENV_FILE),
        format!("{}\n", file.export_line(&dir)).as_bytes(),
    )?;
    Ok(file)
}

#[cfg(test)]
mod tests;
