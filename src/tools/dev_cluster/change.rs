//! Changes to a dev cluster written before: `--restart NODE` starts a node that was
//! killed or stopped, `--add` writes one more node (a joining node: no `[[members]]`, the
//! first node as its bootstrap peer) and starts it. Both leave the node running in the
//! background, logging to its `node.log`; the foreground `dev-cluster` stops it with the
//! others.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

use super::process::{running_pid, spawn_node, wait_healthy};
use super::{toml_str, DevClusterFile, DevNode, PortReservation, TOKEN_FILE};
use crate::node::config::Config;
use crate::node::join::{assign_command, DEFAULT_JOIN_CAPACITY};
use blocknode_actors::tls::generate_node_cert;

/// How long a started node has to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `dev-cluster --dir DIR --restart NAME`.
pub fn restart(dir: &Path, name: &str) -> anyhow::Result<()> {
    let file = DevClusterFile::load(dir)?;
    let Some(n) = file.nodes.iter().find(|n| n.name == name) else {
        let names: Vec<&str> = file.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "no node {name} in {}; its nodes: {}",
            dir.display(),
            names.join(", ")
        );
    };
    if let Some(pid) = running_pid(n) {
        bail!("{name} is running (pid {pid}); nothing to restart");
    }
    let child = spawn_node(n)?;
    started(n, child.id())
}

/// Wait for a node started in the background, and say where it is.
fn started(n: &DevNode, pid: u32) -> anyhow::Result<()> {
    wait_healthy(
        &DevClusterFile {
            nodes: vec![n.clone()],
        },
        START_TIMEOUT,
    )?;
    println!(
        "{} started (pid {pid}), api {}, log {}",
        n.name,
        n.api,
        n.log().display()
    );
    Ok(())
}

/// `dev-cluster --dir DIR --add`.
pub fn add(dir: &Path) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{} is not a dev-cluster directory", dir.display()))?;
    let mut file = DevClusterFile::load(&dir)?;
    let first = file
        .nodes
        .first()
        .context("the cluster has no node to join through")?
        .clone();
    let template = Config::load(&first.config)?;
    let index = file.nodes.len() + 1;
    let name = format!("node{index}");
    let node_dir = dir.join(&name);
    anyhow::ensure!(!node_dir.exists(), "{} exists already", node_dir.display());
    let id = generate_node_cert(&dir.join("ca"), &name, &node_dir.join("certs"))?.to_hex();
    let mut ports = PortReservation::default();
    let (http, quic) = (ports.tcp()?, ports.udp()?);
    drop(ports);
    let certs = node_dir.join("certs");
    let data_dir = node_dir.join("data");
    let zone = format!("z{index}");
    let config = format!(
        "# blocknode dev-cluster node {name}, added to a running cluster\n\
         data_dir = {data}\n\
         metadata_dir = {meta}\n\
         zone = \"{zone}\"\n\
         replication_factor = {rf}\n\
         gc_delay = \"{gc}\"\n\
         quic_listen = \"127.0.0.1:{quic}\"\n\
         http_listen = \"127.0.0.1:{http}\"\n\
         ca_cert = {ca}\n\
         node_cert = {cert}\n\
         node_key = {key}\n\
         admin_token_file = {token}\n\
         bootstrap_peers = [\"{peer}\"]\n",
        data = toml_str(&data_dir),
        meta = toml_str(&node_dir.join("meta")),
        rf = template.replication_factor,
        gc = humantime::format_duration(template.gc_delay),
        ca = toml_str(&certs.join("ca.crt")),
        cert = toml_str(&certs.join("node.crt")),
        key = toml_str(&certs.join("node.key")),
        token = toml_str(&dir.join(TOKEN_FILE)),
        peer = template.quic_listen,
    );
    let config_path = node_dir.join("config.toml");
    Config::parse(&config, &config_path.display().to_string())?;
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let node = DevNode {
        name: name.clone(),
        id: id.clone(),
        config: config_path,
        api: format!("http://127.0.0.1:{http}"),
        token: first.token.clone(),
        data_dir,
    };
    file.nodes.push(node.clone());
    file.save(&dir)?;
    let child = spawn_node(&node)?;
    started(&node, child.id())?;
    println!("{name} waits to be assigned; on any member run:");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], quic));
    println!(
        "  {}",
        assign_command(&id, &zone, DEFAULT_JOIN_CAPACITY, addr)
    );
    println!("  blocknode layout apply --version N   # N: the version `blocknode layout show` prints, + 1");
    Ok(())
}
