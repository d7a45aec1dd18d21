//! `blocknode init --join ADDR --dir DIR`: write the config of a node that joins a
//! running cluster (no `[[members]]`, the member's address as its bootstrap peer), with
//! its key and certificate made from the cluster CA when `--ca` is given, and print the
//! commands that follow: start it, then assign it on a member.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use blocknode_actors::tls::{generate_node_cert, TlsIdentity};

use crate::node::config::{Config, DEFAULT_HTTP_LISTEN, DEFAULT_QUIC_LISTEN};
use crate::node::join::{assign_command, DEFAULT_JOIN_CAPACITY};
use crate::tools::dev_cluster::toml_str;

/// Options of `init`.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// QUIC address of a running member to join through (repeatable).
    #[arg(long = "join", value_name = "ADDR", required = true)]
    pub join: Vec<SocketAddr>,
    /// Directory of the new node: config.toml, data/, meta/, certs/, admin.token.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Directory of the cluster CA (ca.crt, ca.key): the node's key and certificate are
    /// made from it into DIR/certs. Without it, DIR/certs must already hold ca.crt,
    /// node.crt and node.key (from `blocknode cert node --out DIR/certs`).
    #[arg(long, value_name = "CA_DIR")]
    pub ca: Option<PathBuf>,
    /// Certificate name (CN) of the node (default: DIR's last component).
    #[arg(long)]
    pub name: Option<String>,
    /// The cluster's replication factor (every node must use the same).
    #[arg(long, value_name = "N")]
    pub replication_factor: usize,
    /// The cluster's write quorum, if it sets one (default: a majority).
    #[arg(long, value_name = "N")]
    pub write_quorum: Option<usize>,
    /// The node's zone (failure domain).
    #[arg(long, default_value = "z1")]
    pub zone: String,
    /// The node's HTTP API address.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,
    /// The node's QUIC address (members dial it).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_QUIC_LISTEN)]
    pub quic_listen: SocketAddr,
}

/// Write DIR/config.toml (and the certificate, with `--ca`), then print what to run next.
pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let config_path = args.dir.join("config.toml");
    if config_path.exists() {
        bail!(
            "{} exists already; init writes a new node only",
            config_path.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let certs = dir.join("certs");
    let id = match &args.ca {
        Some(ca) => {
            let name = match &args.name {
                Some(n) => n.clone(),
                None => default_name(&dir),
            };
            generate_node_cert(ca, &name, &certs)?
        }
        None => TlsIdentity::load_dir(&certs)
            .with_context(|| {
                format!(
                    "no --ca given and no usable certificate in {}: give --ca CA_DIR",
                    certs.display()
                )
            })?
            .node_id(),
    }
    .to_hex();
    let text = config_text(&args, &dir);
    Config::parse(&text, &config_path.display().to_string())?;
    std::fs::write(&config_path, text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    println!("config of node {id} written to {}", config_path.display());
    println!("next, start it (it waits to be assigned):");
    println!("  blocknode run --config {}", config_path.display());
    println!("then, on any member:");
    println!(
        "  {}",
        assign_command(&id, &args.zone, DEFAULT_JOIN_CAPACITY, args.quic_listen)
    );
    println!(
        "  blocknode layout apply --version N   # N: the version `blocknode layout show` prints, + 1"
    );
    Ok(())
}

fn default_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "blocknode".into())
}

/// The joining node's config file.
fn config_text(args: &InitArgs, dir: &Path) -> String {
    let peers: Vec<String> = args.join.iter().map(|a| format!("\"{a}\"")).collect();
    let quorum = args
        .write_quorum
        .map(|q| format!("write_quorum = {q}\n"))
        .unwrap_or_default();
    let certs = dir.join("certs");
    format!(
        "# A node that joins a running cluster: it serves no data until a member assigns it\n\
         # (`blocknode layout assign ...`, then `blocknode layout apply`).\n\
         data_dir = {data}\n\
         metadata_dir = {meta}\n\
         zone = \"{zone}\"\n\
         replication_factor = {rf}\n\
         {quorum}\
         quic_listen = \"{quic}\"\n\
         http_listen = \"{http}\"\n\
         ca_cert = {ca}\n\
         node_cert = {cert}\n\
         node_key = {key}\n\
         admin_token_file = {token}\n\
         bootstrap_peers = [{peers}]\n",
        data = toml_str(&dir.join("data")),
        meta = toml_str(&dir.join("meta")),
        zone = args.zone.replace('\\', "\\\\").replace('"', "\\\""),
        rf = args.replication_factor,
        quic = args.quic_listen,
        http = args.http_listen,
        ca = toml_str(&certs.join("ca.crt")),
        cert = toml_str(&certs.join("node.crt")),
        key = toml_str(&certs.join("node.key")),
        token = toml_str(&dir.join("admin.token")),
        peers = peers.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, ca: Option<PathBuf>) -> InitArgs {
        InitArgs {
            join: vec!["127.0.0.1:3901".parse().unwrap()],
            dir: dir.to_path_buf(),
            ca,
            name: None,
            replication_factor: 3,
            write_quorum: None,
            zone: "dc2".into(),
            http_listen: "127.0.0.1:3910".parse().unwrap(),
            quic_listen: "127.0.0.1:3911".parse().unwrap(),
        }
    }

    #[test]
    fn init_writes_a_joining_config_and_a_certificate_of_the_ca() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        blocknode_actors::tls::generate_ca(&ca).unwrap();
        let node = d.path().join("n4");
        run(args(&node, Some(ca))).unwrap();
        let cfg = Config::load(&node.join("config.toml")).unwrap();
        assert!(cfg.joins(), "no members, a bootstrap peer");
        assert_eq!(cfg.replication_factor, 3);
        assert_eq!(cfg.zone, "dc2");
        assert_eq!(cfg.quic_listen.port(), 3911);
        TlsIdentity::load(&cfg.ca_cert, &cfg.node_cert, &cfg.node_key).unwrap();
        // A second init on the same dir is refused rather than overwriting anything.
        let e = run(args(&node, None)).unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
    }

    #[test]
    fn init_without_a_ca_or_certificate_says_what_to_give() {
        let d = tempfile::tempdir().unwrap();
        let e = run(args(&d.path().join("n"), None)).unwrap_err();
        assert!(format!("{e:#}").contains("give --ca CA_DIR"), "{e:#}");
    }
}
