//! First-start files: the embedded default's cluster CA and node certificate, and the
//! admin token. Each is created once, if missing, and read on every later start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context as _;

use blocknode_actors::tls::{generate_ca, generate_node_cert};

use crate::node::config::Config;

/// Create the embedded default's CA and node certificate if they do not exist yet.
pub fn ensure_default_certs(cfg: &Config) -> anyhow::Result<()> {
    if cfg.node_cert.exists() {
        return Ok(());
    }
    let node_dir = cfg
        .node_cert
        .parent()
        .context("node_cert has no parent directory")?;
    let base = node_dir
        .parent()
        .context("certificate directory has no parent")?;
    let ca_dir = base.join("ca");
    if !ca_dir.join("ca.crt").exists() {
        generate_ca(&ca_dir).context("creating the cluster CA")?;
    }
    let id = generate_node_cert(&ca_dir, "blocknode", node_dir)
        .context("creating the node certificate")?;
    tracing::info!(node = %id, "created a cluster CA and a node certificate in {}", base.display());
    Ok(())
}

/// Read the admin token, creating it (32 random bytes, hex, mode 0600) and printing it
/// once if the file does not exist.
pub fn ensure_token(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading admin token {}", path.display()))?;
        let t = t.trim().to_string();
        anyhow::ensure!(
            !t.is_empty(),
            "admin token file {} is empty",
            path.display()
        );
        return Ok(t);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating admin token {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    // Printed once, on creation: the file (mode 0600) is where it lives afterwards.
    println!("admin token (saved in {}): {token}", path.display());
    Ok(token)
}
