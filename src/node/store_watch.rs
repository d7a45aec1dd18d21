//! StoreWatch: what the node does when its metadata store dies — crash-only.
//!
//! State: the metadata directory (for the log line). Messages: [`StoreFailed`], sent once
//! by each actor that writes fjall (refcount, resync, anti-entropy) when a write or
//! journal sync fails. fjall then refuses every later write until the database is
//! reopened, so the node would store blocks whose refs are never recorded while
//! `/health` said ok. Instead it logs one line naming the cause and the path and exits
//! with [`EXIT_STORE_FAILED`]: a supervisor (systemd `Restart=on-failure`, see docs/operations.md)
//! starts it again, reopening the store from its journal, and peers catch it up (hints,
//! anti-entropy, resync). Exiting without the graceful shutdown is safe: every
//! acknowledged write was synced before its reply, and block files are written by
//! temp-file-and-rename.

use std::path::PathBuf;

use actix::prelude::*;

use blocknode_actors::store_failure::StoreFailed;

/// Exit status of a node whose metadata store failed (`EX_IOERR` of sysexits.h).
pub const EXIT_STORE_FAILED: i32 = 74;

/// The actor (see the module doc). Runs on the node's main arbiter.
pub struct StoreWatch {
    metadata_dir: PathBuf,
}

impl StoreWatch {
    /// Watch the store in `metadata_dir`.
    pub fn new(metadata_dir: PathBuf) -> Self {
        StoreWatch { metadata_dir }
    }
}

impl Actor for StoreWatch {
    type Context = Context<Self>;
}

/// The one line logged for a dead store.
pub fn failure_line(m: &StoreFailed, metadata_dir: &std::path::Path) -> String {
    // The actor that saw the failed sync itself may report after another that only saw
    // the poison it left: say so, fjall logged the I/O error just before.
    let cause = match *m.cause {
        fjall::Error::Poisoned => {
            "fjall refuses writes after an earlier failed journal write or sync, logged above"
                .to_string()
        }
        ref e => e.to_string(),
    };
    format!(
        "metadata store in {} failed ({} while {}: {}); it cannot make writes durable until \
         reopened: exiting with status {EXIT_STORE_FAILED} so that a supervisor restarts the node",
        metadata_dir.display(),
        m.actor,
        m.during,
        cause
    )
}

impl Handler<StoreFailed> for StoreWatch {
    type Result = ();

    fn handle(&mut self, m: StoreFailed, _ctx: &mut Context<Self>) {
        tracing::error!("{}", failure_line(&m, &self.metadata_dir));
        // No graceful shutdown: it would try to sync the dead store again, and answer
        // requests meanwhile. Nothing acknowledged is lost (see the module doc).
        std::process::exit(EXIT_STORE_FAILED);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_line_names_the_cause_the_path_and_the_exit_status() {
        let m = StoreFailed {
            actor: "refcount",
            during: "committing a ref batch",
            cause: Arc::new(fjall::Error::Io(std::io::Error::from_raw_os_error(5))),
        };
        let line = failure_line(&m, std::path::Path::new("/var/lib/blocknode/meta"));
        for part in [
            "/var/lib/blocknode/meta",
            "refcount",
            "committing a ref batch",
            "Input/output error",
            "74",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line:?}");
        }
        let poisoned = StoreFailed {
            cause: Arc::new(fjall::Error::Poisoned),
            ..m
        };
        let line = failure_line(&poisoned, std::path::Path::new("/m"));
        assert!(
            line.contains("earlier failed journal write or sync"),
            "{line}"
        );
    }
}
