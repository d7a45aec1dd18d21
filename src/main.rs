//! The `blocknode` binary: parse the command line and hand over to the library.

use clap::Parser;

use blocknode::cli::{client, commands, CertCommand, Cli, Command};
use blocknode::node::{self, config};
use blocknode::tools::{bench, dev_cluster, init};
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

/// The one line a client command prints when the reader of its output goes away
/// (`blocknode status | head -1`, `get HASH | head -c1`) before all was written.
const OUTPUT_CLOSED: &[u8] =
    b"error: the output was closed before all of it was written (broken pipe)\n";

/// Runs in place of the default SIGPIPE action, which would end the command silently
/// (Rust's runtime ignores SIGPIPE, and then every print would fail and panic). Only
/// async-signal-safe calls: one `write` to stderr, then `_exit` with [`exit::IOERR`].
/// Sockets are not affected: the HTTP client writes with `MSG_NOSIGNAL`.
extern "C" fn on_closed_output(_signal: libc::c_int) {
    // SAFETY: `write` and `_exit` are async-signal-safe; the buffer is a static.
    unsafe {
        libc::write(2, OUTPUT_CLOSED.as_ptr().cast(), OUTPUT_CLOSED.len());
        libc::_exit(exit::IOERR);
    }
}

/// A client command ends with one line and [`exit::IOERR`] when its output is closed
/// early. The node and the tools that talk to sockets keep ignoring SIGPIPE.
fn end_with_one_line_on_closed_output() {
    // SAFETY: installing a handler that only makes async-signal-safe calls, once,
    // before any thread is started.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            on_closed_output as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::DevCluster(_) | Command::Bench(_)
    ) {
        end_with_one_line_on_closed_output();
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
            dir: _,
            http_listen,
            quic_listen,
        } => {
            let mut cfg =
                config::Config::load_joining(&path, &join).map_err(exit::config_refused)?;
            cfg.http_listen = http_listen.unwrap_or(cfg.http_listen);
            cfg.quic_listen = quic_listen.unwrap_or(cfg.quic_listen);
            node::run(cfg, false)
        }
        Command::Init(args) => init::run(args),
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
