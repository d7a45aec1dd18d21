//! The command line (clap): the node, certificates, the tools and the client commands.
//!
//! - this file: the argument types (the tools define their own: [`DevClusterArgs`],
//!   [`BenchArgs`]);
//! - [`client`]: the HTTP client of one node's API (errors as one line);
//! - `args`: the checks of the hashes and ref names given as arguments;
//! - [`commands`]: what each client command asks the API;
//! - [`output`]: how the answers are printed.

mod args;
pub mod client;
pub mod commands;
mod layout;
mod object;
pub mod object_dedup;
mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use object::{ObjectCommand, ObjectRefCommand};

use crate::logging::LogFormat;
use crate::tools::bench::BenchArgs;
use crate::tools::dev_cluster::DevClusterArgs;
use crate::tools::init::InitArgs;

/// blocknode: a cluster node for a replicated, content-addressed block store.
///
/// The options below come before the command (`blocknode --api URL status`); they are
/// shown here only, not in each command's help.
#[derive(Parser, Debug)]
#[command(name = "blocknode", version, about)]
pub struct Cli {
    /// The node's API for client commands and `bench`: a URL, or HOST:PORT for
    /// http://HOST:PORT (default: the embedded node, http://127.0.0.1:3900).
    #[arg(long, env = "BLOCKNODE_API", value_name = "URL")]
    pub api: Option<String>,
    /// API token for client commands: the admin token or any scoped token whose scope
    /// covers the command (default: the file ./blocknode-data/admin.token).
    #[arg(long, env = "BLOCKNODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log line format on stderr: `text` or `json` (one object per line). The filter is
    /// `RUST_LOG`, by default blocknode at `info` and its dependencies at `warn`.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
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
        /// The HTTP API address: instead of 127.0.0.1:3900, or of the config's
        /// `http_listen`.
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<std::net::SocketAddr>,
        /// The QUIC address: instead of 127.0.0.1:3901, or of the config's `quic_listen`.
        #[arg(long, value_name = "ADDR")]
        quic_listen: Option<std::net::SocketAddr>,
    },
    /// Write the config of a node that joins a running cluster, and print what to run next.
    Init(InitArgs),
    /// Make a cluster CA or a node certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Write (and run) a cluster of N nodes on loopback.
    DevCluster(DevClusterArgs),
    /// Store a file as a block; prints its hash. Needs `--ref NAME`, or `--unreferenced`
    /// for a block that is collected after gc_delay unless a ref is added.
    Put {
        /// The file whose bytes become the block.
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
        /// The block's hash (64 hex digits).
        #[arg(value_parser = hex_arg)]
        hash: String,
        /// Write the block to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Add or drop a named reference.
    #[command(subcommand)]
    Ref(RefCommand),
    /// Objects of any size: put (from a file or stdin), get, info, refs.
    #[command(subcommand)]
    Object(ObjectCommand),
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
        /// What to do with the scrub.
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
        /// Directory to write ca.crt and ca.key to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Make a node key and certificate signed by the CA; prints the node id.
    Node {
        /// Directory of the CA (ca.crt, ca.key).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Node name (certificate CN).
        #[arg(long)]
        name: String,
        /// Directory to write node.crt, node.key and a copy of ca.crt to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum RefCommand {
    /// Add a named reference to a block (idempotent); the block is kept while it has one.
    Add {
        /// The block's hash (64 hex digits).
        #[arg(value_parser = hex_arg)]
        hash: String,
        /// The reference's name: 1-255 of A-Z a-z 0-9 . _ - : @ + = (a name once
        /// dropped cannot be added again).
        r#ref: String,
    },
    /// Drop a named reference (idempotent); a block without any is collected after
    /// gc_delay.
    Drop {
        /// The block's hash (64 hex digits).
        #[arg(value_parser = hex_arg)]
        hash: String,
        /// The reference's name.
        r#ref: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// Holders, presence, rc and errors of a block.
    Info {
        /// The block's hash (64 hex digits).
        #[arg(value_parser = hex_arg)]
        hash: String,
    },
    /// Blocks whose resync failed.
    ListErrors,
    /// Retry a block now (or every errored one with --all).
    RetryNow {
        /// The block's hash (64 hex digits).
        #[arg(value_parser = hex_arg)]
        hash: Option<String>,
        /// Retry every block in error.
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
    Revoke {
        /// The token's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// The resync workers and the resync and scrub tranquility in force.
    Get,
    /// Change one setting (persisted, effective at once).
    Set {
        /// The setting.
        #[arg(value_parser = ["resync_workers", "resync_tranquility", "scrub_tranquility"])]
        key: String,
        /// resync_workers 1-8; a tranquility 0-100 (rest that many times the time
        /// each item took).
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
        #[arg(value_parser = hex_arg)]
        node_id: String,
        /// Its zone (failure domain): replicas go to distinct zones while zones allow.
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
    Remove {
        /// The node's id (64 hex digits).
        #[arg(value_parser = hex_arg)]
        node_id: String,
    },
    /// Apply the staged changes as version N (must be the current version + 1).
    Apply {
        /// The new version: the current one + 1 (`layout show` prints it), so that two
        /// operators cannot apply over each other.
        #[arg(long, value_name = "N")]
        version: u64,
    },
    /// Drop the staged changes.
    Revert,
}

/// A hex argument (hash, node id) as given, lowercased: hex is case-insensitive, and
/// the API and stored names use lowercase.
fn hex_arg(s: &str) -> Result<String, String> {
    Ok(s.trim().to_ascii_lowercase())
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
            vec![
                "blocknode",
                "run",
                "--config",
                "c.toml",
                "--http-listen",
                "127.0.0.1:3910",
                "--quic-listen",
                "127.0.0.1:3911",
            ],
            vec![
                "blocknode",
                "init",
                "--join",
                "10.0.0.1:3901",
                "--dir",
                "d",
                "--ca",
                "ca",
                "--replication-factor",
                "3",
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
            vec!["blocknode", "object", "put", "-", "--ref", "snap-1"],
            vec![
                "blocknode",
                "object",
                "put",
                "f",
                "--ref",
                "r",
                "--dedup-on-client",
            ],
            vec!["blocknode", "object", "get", "ab12", "-o", "f"],
            vec!["blocknode", "object", "info", "ab12"],
            vec!["blocknode", "object", "ref", "drop", "ab12", "r"],
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
