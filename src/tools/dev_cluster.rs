//! `blocknode dev-cluster`: a cluster of N nodes on loopback, for trying blocknode and
//! for tests and benchmarks. [`init`] writes a CA, node certificates, configs on free
//! ports, admin tokens and `cluster.json`; [`run`] also starts the nodes as child
//! processes and stops them on Ctrl-C.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};

use blocknode_actors::tls::{generate_ca, generate_node_cert};

use crate::node::ensure_token;

/// Options of `dev-cluster`.
#[derive(Args, Debug, Clone)]
pub struct DevClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory to write the cluster into (must be empty or absent).
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

/// `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevClusterFile {
    pub nodes: Vec<DevNode>,
}

/// Loopback ports from the OS, each kept bound until every node has its own: a port
/// released at once could be handed out again by the next `bind(0)`, giving two nodes
/// the same address. Dropping the reservation frees them for the nodes.
#[derive(Default)]
struct PortReservation {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl PortReservation {
    fn tcp(&mut self) -> anyhow::Result<u16> {
        let l = TcpListener::bind("127.0.0.1:0").context("reserving a TCP port")?;
        let port = l.local_addr()?.port();
        self.tcp.push(l);
        Ok(port)
    }

    fn udp(&mut self) -> anyhow::Result<u16> {
        let s = UdpSocket::bind("127.0.0.1:0").context("reserving a UDP port")?;
        let port = s.local_addr()?.port();
        self.udp.push(s);
        Ok(port)
    }
}

fn toml_str(p: &Path) -> String {
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
    let mut nodes = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        let certs = p.node_dir.join("certs");
        let token_file = p.node_dir.join("admin.token");
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
        let token = hex::encode(rand::random::<[u8; 32]>());
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&token_file)?;
            writeln!(f, "{token}")?;
        }
        debug_assert_eq!(
            ensure_token(&token_file).ok().as_deref(),
            Some(token.as_str())
        );
        nodes.push(DevNode {
            name: p.name.clone(),
            id: p.id.clone(),
            config: config_path,
            api: format!("http://127.0.0.1:{}", p.http),
            token,
            data_dir,
        });
    }
    let file = DevClusterFile { nodes };
    std::fs::write(dir.join("cluster.json"), serde_json::to_vec_pretty(&file)?)?;
    Ok(file)
}

/// Start every node of an initialised cluster as a child process (logs in
/// `<node dir>/node.log`).
pub fn spawn_nodes(file: &DevClusterFile) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe().context("locating the blocknode binary")?;
    let mut children = Vec::new();
    for n in &file.nodes {
        let log_path = n.config.with_file_name("node.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(&n.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", n.name))?;
        children.push(child);
    }
    Ok(children)
}

/// Wait (bounded) until every node answers `/health`.
pub fn wait_healthy(file: &DevClusterFile, timeout: Duration) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let start = Instant::now();
    for n in &file.nodes {
        loop {
            if agent.get(&format!("{}/health", n.api)).call().is_ok() {
                break;
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not become healthy within {timeout:?}; see its node.log",
                    n.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// SIGTERM every child, then wait (bounded) and SIGKILL the ones that hang.
pub fn stop_nodes(children: &mut [Child]) {
    for c in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let start = Instant::now();
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if start.elapsed() > Duration::from_secs(15) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// `blocknode dev-cluster`.
pub fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    let file = init(&args)?;
    println!("wrote {} nodes to {}", file.nodes.len(), args.dir.display());
    for n in &file.nodes {
        println!(
            "  {}  id {}  api {}  config {}",
            n.name,
            &n.id[..16],
            n.api,
            n.config.display()
        );
    }
    if args.init_only {
        return Ok(());
    }
    let mut children = spawn_nodes(&file)?;
    let ready = wait_healthy(&file, Duration::from_secs(30));
    if let Err(e) = ready {
        stop_nodes(&mut children);
        return Err(e);
    }
    println!(
        "cluster running; tokens are in {}/cluster.json. Ctrl-C stops it.",
        args.dir.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        anyhow::Ok(())
    })?;
    println!("stopping the nodes");
    stop_nodes(&mut children);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_only_writes_a_valid_cluster() {
        let d = tempfile::tempdir().unwrap();
        let args = DevClusterArgs {
            nodes: 3,
            dir: d.path().join("c"),
            replication: None,
            gc_delay: "1s".into(),
            init_only: true,
        };
        let f = init(&args).unwrap();
        assert_eq!(f.nodes.len(), 3);
        let back: DevClusterFile =
            serde_json::from_slice(&std::fs::read(d.path().join("c/cluster.json")).unwrap())
                .unwrap();
        assert_eq!(back.nodes.len(), 3);
        let (mut http, mut quic) = (Vec::new(), Vec::new());
        for n in &f.nodes {
            let cfg = crate::node::config::Config::load(&n.config).unwrap();
            assert_eq!(n.api, format!("http://{}", cfg.http_listen));
            http.push(cfg.http_listen.port());
            quic.push(cfg.quic_listen.port());
            let identity = blocknode_actors::tls::TlsIdentity::load(
                &cfg.ca_cert,
                &cfg.node_cert,
                &cfg.node_key,
            )
            .unwrap();
            assert_eq!(
                identity.node_id().to_hex(),
                n.id,
                "cluster.json must give the id of {}'s certificate",
                n.name
            );
            assert!(
                cfg.members
                    .iter()
                    .any(|m| m.id == n.id && m.zone == cfg.zone),
                "{} must be a member, in its own zone",
                n.name
            );
            assert_eq!(cfg.members.len(), 3);
            assert_eq!(cfg.replication_factor, 3);
            assert_eq!(cfg.gc_delay, Duration::from_secs(1));
            for key in [&cfg.node_key, &cfg.admin_token_file] {
                let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} should be 0600", key.display());
            }
        }
        for (what, mut ports) in [("HTTP", http), ("QUIC", quic)] {
            ports.sort();
            ports.dedup();
            assert_eq!(ports.len(), 3, "every node needs its own {what} port");
        }
        assert!(init(&args).is_err(), "a non-empty directory is refused");
    }
}
