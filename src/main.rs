//! The `blocknode` binary: parse the command line and hand over to the library.

use clap::Parser;

use blocknode::cli::{client, commands, CertCommand, Cli, Command};
use blocknode::node::{self, config};
use blocknode::tools::{bench, dev_cluster};
use blocknode::{exit, logging};

/// Block buffers (up to 16 MiB by default) must go back to the OS when freed, or the
/// RAM budget (`block_ram_buffer_max`) bounds requests but not the process: glibc's
/// dynamic mmap threshold rises after the first large free, and later block buffers
/// then stay cached in per-thread arenas (measured: 8 concurrent 16 MiB puts left RSS
/// at 78 MiB instead of ~40). Pinning the threshold at 1 MiB keeps them mmapped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_mmap_threshold() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt is glibc's documented tuning call; it is called once, before any
    // thread is started, with a valid parameter and value.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_mmap_threshold() {}

fn main() {
    pin_mmap_threshold();
    if let Err(e) = real_main() {
        eprintln!("error: {}", exit::one_line(&e));
        std::process::exit(exit::status_of(&e));
    }
}

/// A client command whose reader goes away (`blocknode status | head -1`) ends at once
/// and silently, as any Unix filter does: the default SIGPIPE action, which Rust's
/// runtime replaces with "ignore" (then every print would fail and panic). The node and
/// the tools that talk to sockets keep ignoring it.
fn die_quietly_on_closed_stdout() {
    // SAFETY: resetting a signal's disposition to its default, once, before any thread
    // is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::DevCluster(_) | Command::Bench(_)
    ) {
        die_quietly_on_closed_stdout();
    }
    match cli.command {
        Command::Run {
            config: None,
            join,
            dir,
            http_listen,
            quic_listen,
        } => {
            let mut cfg = match dir {
                Some(dir) => config::Config::embedded_under(&dir),
                None => config::Config::embedded_default(),
            };
            cfg.bootstrap_peers = join;
            cfg.http_listen = http_listen.unwrap_or(cfg.http_listen);
            cfg.quic_listen = quic_listen.unwrap_or(cfg.quic_listen);
            node::run(cfg, true)
        }
        Command::Run {
            config: Some(path),
            join,
            ..
        } => {
            let cfg = config::Config::load_joining(&path, &join).map_err(exit::config_refused)?;
            node::run(cfg, false)
        }
        Command::Cert(CertCommand::Ca { out }) => {
            blocknode_actors::tls::generate_ca(&out)?;
            println!("cluster CA written to {} (ca.crt, ca.key)", out.display());
            Ok(())
        }
        Command::Cert(CertCommand::Node { ca, name, out }) => {
            let id = blocknode_actors::tls::generate_node_cert(&ca, &name, &out)?;
            println!("{id}");
            eprintln!(
                "node {name}: node.crt, node.key and ca.crt written to {}",
                out.display()
            );
            Ok(())
        }
        Command::DevCluster(args) => dev_cluster::run(args),
        Command::Bench(args) => bench::run(args, cli.api, cli.token),
        other => {
            let c = client::Client::new(cli.api, cli.token)?;
            commands::run(&c, other)
        }
    }
}
