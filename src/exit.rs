//! Exit statuses of the `blocknode` binary, sysexits-style where one fits, and the one
//! line printed for an error. docs/operations.md, "Exit codes", lists them for users;
//! `tests/first_hour.rs` runs each case as a real process.

use std::io::ErrorKind;

use blocknode_actors::storage::StorageError;
use blocknode_actors::tls::TlsError;

use crate::node::preflight::StartError;

/// Any error without a status of its own (a client command the API refused, a failed
/// request, a fatal error while running).
pub const FAILURE: i32 = 1;
/// The command line does not parse (clap's own status).
pub const USAGE: i32 = 2;
/// A file the node was told to read (config, certificate, key) does not exist
/// (`EX_NOINPUT`).
pub const NOINPUT: i32 = 66;
/// An address could not be bound for another reason than being in use (`EX_OSERR`).
pub const OSERR: i32 = 71;
/// A data or metadata dir cannot be written (`EX_CANTCREAT`).
pub const CANTCREAT: i32 = 73;
/// The metadata store failed while running: restart the node; or a client command's
/// output was closed before all of it was written (`EX_IOERR`).
pub const IOERR: i32 = crate::node::store_watch::EXIT_STORE_FAILED;
/// Busy: a listen address is in use, or another blocknode runs on the same dir; it may
/// work once that one stops (`EX_TEMPFAIL`).
pub const TEMPFAIL: i32 = 75;
/// The config file was refused (`EX_CONFIG`).
pub const CONFIG: i32 = 78;

/// A config file that could not be used: [`NOINPUT`] when it does not exist, else
/// [`CONFIG`]. Made by [`config_refused`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConfigRefused {
    status: i32,
    message: String,
}

/// Mark an error of loading the config file so that it exits with its own status.
pub fn config_refused(e: anyhow::Error) -> anyhow::Error {
    let missing = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::NotFound)
    });
    anyhow::Error::new(ConfigRefused {
        status: if missing { NOINPUT } else { CONFIG },
        message: one_line(&e),
    })
}

/// The status an error ends the process with: the first cause in its chain that has one.
pub fn status_of(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StartError>() {
            return start_status(s);
        }
        if let Some(c) = cause.downcast_ref::<ConfigRefused>() {
            return c.status;
        }
        if let Some(StorageError::DataDirRefused { .. }) = cause.downcast_ref::<StorageError>() {
            return CONFIG;
        }
        if let Some(TlsError::Io { source, .. }) = cause.downcast_ref::<TlsError>() {
            return match source.kind() {
                ErrorKind::NotFound => NOINPUT,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

/// The status of a start refused before anything was written.
fn start_status(e: &StartError) -> i32 {
    match e {
        StartError::Locked { .. } | StartError::AddrInUse { .. } => TEMPFAIL,
        StartError::Bind { .. } => OSERR,
        StartError::NotWritable { .. } => CANTCREAT,
    }
}

/// The error as one line: each cause once (a cause whose text its parent already shows
/// is left out, as thiserror messages often embed their source), line breaks folded.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_shows_is_not_repeated() {
        let io = std::io::Error::new(ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(TlsError::Io {
            path: "/x/ca.crt".into(),
            source: io,
        })
        .context("loading the node's TLS identity");
        assert_eq!(
            one_line(&e),
            "loading the node's TLS identity: /x/ca.crt: No such file or directory"
        );
        assert_eq!(status_of(&e), NOINPUT);
    }

    #[test]
    fn a_multi_line_message_becomes_one_line() {
        let e = anyhow::anyhow!("first\n  second");
        assert_eq!(one_line(&e), "first second");
        assert_eq!(status_of(&e), FAILURE);
    }
}
