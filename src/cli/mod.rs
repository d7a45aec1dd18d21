//! The command line (clap): the node, certificates, the tools and the client commands.
//!
//! - this file: the argument types (the tools define their own: [`DevClusterArgs`],
//!   [`BenchArgs`]);
//! - [`client`]: the HTTP client and what each client command asks the API;
//! - [`output`]: how the answers are printed.

pub mod client;
mod layout;
mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;
use crate::tools::bench::BenchArgs;
use crate::tools::dev_cluster::DevClusterArgs;

/// blocknode: a cluster node for a replicated, content-addressed block store.
#[derive(Parser, Debug)]
#[command(name = "blocknode", version, about)]
pub struct Cli {
    /// API base URL for client commands (default: the embedded node, http://127.0.0.1:3900).
    #[arg(long, global = true, env = "BLOCKNODE_API")]
    pub api: Option<String>,
    /// Admin token for client commands (default: ./blocknode-data/admin.token).
    #[arg(long, global = true, env = "BLOCKNODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log line format on stderr: `text` or `json` (one object per line). The filter is
    /// `RUST_LOG`, by default blocknode at `info` and its dependencies at `warn`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node (the embedded single-node default without --config).
    Run {
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Join a running cluster: a member's QUIC address (added to `bootstrap_peers`;
        /// repeatable).
        #[arg(long = "join", value_name = "ADDR")]
        join: Vec<std::net::SocketAddr>,
        /// Embedded default only: keep everything under DIR instead of
        /// `./blocknode-data`.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        dir: Option<PathBuf>,
        /// Embedded default only: the HTTP API address instead of 127.0.0.1:3900.
        #[arg(long, value_name = "ADDR", conflicts_with = "config")]
        http_listen: Option<std::net::SocketAddr>,
        /// Embedded default only: the QUIC address instead of 127.0.0.1:3901.
        #[arg(long, value_name = "ADDR", conflicts_with = "config")]
        quic_listen: Option<std::net::SocketAddr>,
    },
    /// Make a cluster CA or a node certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Write (and run) a cluster of N nodes on loopback.
    DevCluster(DevClusterArgs),
    /// Store a file as a block; prints its hash. Needs `--ref NAME`, or `--unreferenced`
    /// for a block that is collected after gc_delay unless a ref is added.
    Put {
        file: PathBuf,
        /// Add this named reference.
        #[arg(long = "ref", required_unless_present = "unreferenced")]
        ref_id: Option<String>,
        /// Store the block without a ref (collected after gc_delay unless one is added).
        #[arg(long, conflicts_with = "ref_id")]
        unreferenced: bool,
    },
    /// Read a block (to stdout, or -o FILE).
    Get {
        hash: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Add or drop a named reference.
    #[command(subcommand)]
    Ref(RefCommand),
    /// Block inspection and resync errors.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Node, peers, placement, storage, resync and scrub.
    Status,
    /// Queue every known block for resync.
    Repair {
        /// Recompute reference counts from the refs first.
        #[arg(long)]
        rebuild_rc: bool,
    },
    /// Scrub control.
    Scrub {
        #[arg(value_parser = ["start", "pause", "resume", "cancel"])]
        action: String,
    },
    /// Resync workers and tranquility.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Scoped API tokens: create (the secret is printed once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The cluster layout: show it, stage changes, apply or revert them.
    #[command(subcommand)]
    Layout(LayoutCommand),
    /// Benchmark a temporary (or, with --api, a running) cluster against this machine's limits.
    Bench(BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a cluster CA (ca.crt, ca.key) in DIR.
    Ca {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a node key and certificate signed by the CA; prints the node id.
    Node {
        /// Directory of the CA (ca.crt, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// Node name (certificate CN).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum RefCommand {
    Add { hash: String, r#ref: String },
    Drop { hash: String, r#ref: String },
}

#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// Holders, presence, rc and errors of a block.
    Info { hash: String },
    /// Blocks whose resync failed.
    ListErrors,
    /// Retry a block now (or every errored one with --all).
    RetryNow {
        hash: Option<String>,
        #[arg(long, conflicts_with = "hash")]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token; prints its secret once (only a hash of it is stored).
    Create {
        /// `read` (GET/HEAD blocks, info), `write` (read + PUT blocks, refs) or `admin`.
        #[arg(long, value_parser = ["read", "write", "admin"])]
        scope: String,
        /// Its name (1-64 of A-Z a-z 0-9 . _ -), unique among live tokens.
        #[arg(long)]
        name: String,
    },
    /// Names, scopes and creation times of the live tokens.
    List,
    /// Revoke a token on every node.
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    Get,
    /// KEY: resync_workers, resync_tranquility or scrub_tranquility.
    Set {
        #[arg(value_parser = ["resync_workers", "resync_tranquility", "scrub_tranquility"])]
        key: String,
        value: u64,
    },
}

/// `blocknode layout ...`: each prints what the change would move.
#[derive(Subcommand, Debug)]
pub enum LayoutCommand {
    /// The current layout, staged changes and the running transition.
    Show,
    /// Stage adding a node (or changing its zone, capacity or address).
    Assign {
        /// The node's id (64 hex digits, printed by `blocknode cert node`).
        node_id: String,
        #[arg(long)]
        zone: String,
        /// Its weight in placement (any unit shared by all members).
        #[arg(long)]
        capacity: u64,
        /// Its QUIC address.
        #[arg(long)]
        addr: String,
    },
    /// Stage taking a node out (its partitions go to the others first).
    Remove { node_id: String },
    /// Apply the staged changes as version N (must be the current version + 1).
    Apply {
        #[arg(long)]
        version: u64,
    },
    /// Drop the staged changes.
    Revert,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn documented_commands_parse() {
        for args in [
            vec!["blocknode", "run"],
            vec!["blocknode", "run", "--config", "c.toml"],
            vec!["blocknode", "layout", "show"],
            vec![
                "blocknode",
                "run",
                "--config",
                "c.toml",
                "--join",
                "10.0.0.1:3901",
            ],
            vec![
                "blocknode",
                "layout",
                "assign",
                "ab12",
                "--zone",
                "z1",
                "--capacity",
                "2",
                "--addr",
                "10.0.0.4:3901",
            ],
            vec!["blocknode", "layout", "remove", "ab12"],
            vec!["blocknode", "layout", "apply", "--version", "2"],
            vec!["blocknode", "layout", "revert"],
            vec![
                "blocknode",
                "cert",
                "node",
                "--ca",
                "x",
                "--name",
                "n",
                "--out",
                "y",
            ],
            vec![
                "blocknode",
                "dev-cluster",
                "--nodes",
                "3",
                "--dir",
                "d",
                "--init-only",
            ],
            vec![
                "blocknode",
                "--api",
                "http://x",
                "--token",
                "t",
                "put",
                "f",
                "--ref",
                "r",
            ],
            vec!["blocknode", "block", "retry-now", "--all"],
            vec!["blocknode", "worker", "set", "resync_workers", "4"],
            vec!["blocknode", "scrub", "pause"],
            vec![
                "blocknode",
                "bench",
                "--size",
                "4KiB",
                "--workload",
                "put,get,resync",
                "--json",
                "b.json",
            ],
        ] {
            assert!(Cli::try_parse_from(&args).is_ok(), "{args:?} should parse");
        }
        assert!(Cli::try_parse_from(["blocknode", "scrub", "explode"]).is_err());
    }

    #[test]
    fn put_needs_a_ref_or_the_explicit_unreferenced_flag() {
        assert!(Cli::try_parse_from(["blocknode", "put", "f"]).is_err());
        assert!(Cli::try_parse_from(["blocknode", "put", "f", "--unreferenced"]).is_ok());
        assert!(Cli::try_parse_from(["blocknode", "put", "f", "--ref", "r"]).is_ok());
        assert!(
            Cli::try_parse_from(["blocknode", "put", "f", "--ref", "r", "--unreferenced"]).is_err()
        );
    }
}
