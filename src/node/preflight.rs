//! What `blocknode run` checks before it creates anything or starts an actor: that no
//! other blocknode runs on the same metadata dir (a lock file holding the owner's pid),
//! that the data dirs can be written, and that both listen addresses are free. A
//! failure here is one line and an exit status of its own (`crate::exit`,
//! docs/operations.md, "Exit codes"); nothing has been written yet (no CA, no token),
//! and no runtime exists whose teardown could add noise to that line.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::node::config::Config;

/// Name of the lock file in `metadata_dir`: it holds the pid of the node running there.
pub const LOCK_FILE: &str = "blocknode.lock";

/// Connections the kernel queues for the HTTP API before they are accepted (actix-web's
/// own default, kept now that the node binds the socket itself).
const HTTP_BACKLOG: i32 = 1024;

/// Why a node refused to start before doing anything.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "another blocknode is running on {} (pid {pid}); stop it or give this one other dirs",
        dir.display()
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("{what} address {addr} is already in use (another blocknode, or another program, listens there); choose another with --{what_flag}-listen or `{what_flag}_listen` in the config", what_flag = what.to_lowercase())]
    AddrInUse {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{} is not writable ({source}); blocknode needs to write its {what} there", path.display())]
    NotWritable {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock on a metadata dir, held (with the file open) for as long as the node runs;
/// the kernel releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// What the checks leave for the node: the lock and the bound HTTP listener.
#[derive(Debug)]
pub struct Preflight {
    pub lock: DirLock,
    pub http: TcpListener,
}

/// Run every check, in the order that writes least before a failure.
pub fn check(cfg: &Config) -> Result<Preflight, StartError> {
    let lock = lock_dir(&cfg.metadata_dir)?;
    check_data_dirs(cfg)?;
    let http = bind_http(cfg.http_listen)?;
    check_quic(cfg.quic_listen)?;
    Ok(Preflight { lock, http })
}

/// Take the lock file of `dir` (created if missing), or say which process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, StartError> {
    let not_writable = |source| StartError::NotWritable {
        what: "metadata",
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(not_writable)?;
    // SAFETY: flock on a descriptor this function owns, valid for the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    let lock_error = (locked != 0).then(std::io::Error::last_os_error);
    match lock_error {
        None => {}
        Some(e) if e.kind() == ErrorKind::WouldBlock => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StartError::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
            });
        }
        Some(e) => return Err(not_writable(e)),
    }
    // Only the holder writes its pid, so a reader never sees another node's half-write.
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(not_writable)?;
    Ok(DirLock { _file: file })
}

/// Every data dir that takes new blocks must accept a file; read-only ones are only read.
/// A node whose every such dir refuses would say "ready" and fail every PUT.
fn check_data_dirs(cfg: &Config) -> Result<(), StartError> {
    let mut failures = Vec::new();
    let mut writable = 0;
    for dir in cfg.storage_dirs().into_iter().filter(|d| !d.read_only) {
        match probe_write(&dir.path) {
            Ok(()) => writable += 1,
            Err(source) => failures.push(StartError::NotWritable {
                what: "blocks",
                path: dir.path,
                source,
            }),
        }
    }
    if writable == 0 {
        return failures.into_iter().next().map_or(Ok(()), Err);
    }
    // Others take the blocks; the storage actor marks these failed once it looks.
    for e in failures {
        tracing::error!("{e}");
    }
    Ok(())
}

/// Create `dir` if needed, then create and remove a file in it.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".blocknode-probe.{}", std::process::id()));
    File::create(&probe)?;
    std::fs::remove_file(&probe)
}

fn bind_http(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listener = TcpListener::bind(addr).map_err(|source| bind_error("HTTP", addr, source))?;
    // SAFETY: `listen` on a socket this function owns and that is already listening only
    // changes its backlog; the descriptor stays valid for the call.
    unsafe {
        libc::listen(listener.as_raw_fd(), HTTP_BACKLOG);
    }
    listener
        .set_nonblocking(true)
        .map_err(|source| bind_error("HTTP", addr, source))?;
    Ok(listener)
}

/// The QUIC endpoint is bound later, inside the actor system; a socket bound and closed
/// here catches the common case (another node on the port) before anything is written.
fn check_quic(addr: SocketAddr) -> Result<(), StartError> {
    UdpSocket::bind(addr)
        .map(drop)
        .map_err(|source| bind_error("QUIC", addr, source))
}

fn bind_error(what: &'static str, addr: SocketAddr, source: std::io::Error) -> StartError {
    if source.kind() == ErrorKind::AddrInUse {
        StartError::AddrInUse { what, addr }
    } else {
        StartError::Bind { what, addr, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_dir_names_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let _held = lock_dir(d.path()).unwrap();
        match lock_dir(d.path()) {
            Err(StartError::Locked { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn a_busy_port_is_named_with_the_flag_that_changes_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind_http(addr).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("already in use") && text.contains("--http-listen"),
            "{text}"
        );
    }
}
