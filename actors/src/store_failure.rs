//! A dead metadata store, reported once.
//!
//! fjall poisons the whole database after one failed journal write or sync (an fsync
//! EIO): that call fails with the I/O error, and every later write fails with
//! `Error::Poisoned` until the database is reopened. Carrying on would store blocks
//! whose refs are never recorded and log the same error on every step, so the actors
//! that write fjall (refcount, resync, anti-entropy) each own a [`StoreFailureReporter`]:
//! the first fatal error is sent as [`StoreFailed`] to whoever the node wired in (it
//! logs one line and exits, so a supervisor restarts it with a fresh store), and later
//! ones are only counted. Without a recipient (actor tests) the first one is logged.

use std::sync::Arc;

use actix::prelude::*;

/// The metadata store can no longer make writes durable.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StoreFailed {
    /// The actor that saw it (`refcount`, `resync`, `anti-entropy`).
    pub actor: &'static str,
    /// What it was doing (`committing a ref batch`, `syncing the journal`, ...).
    pub during: &'static str,
    /// fjall's error (the I/O error of the failed sync, or `Poisoned` after it).
    pub cause: Arc<fjall::Error>,
}

/// Whether an error from a fjall *write* (insert, remove, batch commit, persist) means
/// the store is dead. Every write failure poisons the database (fjall's `commit` and
/// `persist` poison it on any I/O error), so all of them are fatal except the two that
/// name a usage error rather than the disk.
pub fn is_fatal_write_error(e: &fjall::Error) -> bool {
    !matches!(e, fjall::Error::KeyspaceDeleted | fjall::Error::Locked)
}

/// Whether an error from a fjall *read* means the store is dead: only `Poisoned` (a
/// failed read of one entry is that entry's problem).
pub fn is_fatal_read_error(e: &fjall::Error) -> bool {
    matches!(e, fjall::Error::Poisoned)
}

/// One actor's link to the node's fatal-error handler. Owned by the actor (not shared):
/// it remembers whether this actor has reported already.
pub struct StoreFailureReporter {
    actor: &'static str,
    to: Option<Recipient<StoreFailed>>,
    failures: u64,
}

/// Why a blocking commit of metadata did not finish: the store refused it, or the task
/// that ran it died. Shared (`Arc`) so one value can be told to every waiter of a batch.
#[derive(Debug, Clone)]
pub enum CommitFailure {
    Store(Arc<fjall::Error>),
    Task(Arc<tokio::task::JoinError>),
}

impl StoreFailureReporter {
    /// A reporter for `actor` with no recipient yet (logs the first failure itself).
    pub fn new(actor: &'static str) -> Self {
        StoreFailureReporter {
            actor,
            to: None,
            failures: 0,
        }
    }

    /// Send fatal failures to `to` from now on.
    pub fn set_recipient(&mut self, to: Recipient<StoreFailed>) {
        self.to = Some(to);
    }

    /// Whether a fatal failure was seen: the store takes no more writes, so callers
    /// stop the work that needs them instead of retrying it.
    pub fn failed(&self) -> bool {
        self.failures > 0
    }

    /// Report `cause`, seen `during` something: the first one goes to the recipient (or
    /// the log); later ones are only counted, so a loop that keeps failing stays quiet.
    pub fn report(&mut self, during: &'static str, cause: fjall::Error) {
        self.report_shared(during, Arc::new(cause));
    }

    /// The result of a commit run with `spawn_blocking`, classified; a fatal store error
    /// is reported (`during` names the write), as [`Self::report`] does.
    pub fn commit_result(
        &mut self,
        during: &'static str,
        res: Result<Result<(), fjall::Error>, tokio::task::JoinError>,
    ) -> Result<(), CommitFailure> {
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let e = Arc::new(e);
                // Every commit failure poisons fjall: the node is told once (it exits).
                if is_fatal_write_error(&e) {
                    self.report_shared(during, Arc::clone(&e));
                }
                Err(CommitFailure::Store(e))
            }
            Err(join) => Err(CommitFailure::Task(Arc::new(join))),
        }
    }

    /// [`Self::report`] for a cause that is also kept elsewhere (e.g. in replies).
    pub fn report_shared(&mut self, during: &'static str, cause: Arc<fjall::Error>) {
        self.failures += 1;
        if self.failures > 1 {
            tracing::debug!(
                actor = self.actor,
                during,
                "metadata store still failed: {cause}"
            );
            return;
        }
        let msg = StoreFailed {
            actor: self.actor,
            during,
            cause,
        };
        match &self.to {
            Some(to) => to.do_send(msg),
            None => tracing::error!(
                actor = msg.actor,
                during = msg.during,
                "metadata store failed; it takes no more writes until reopened: {}",
                msg.cause
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_failures_are_fatal_but_usage_errors_are_not() {
        assert!(is_fatal_write_error(&fjall::Error::Poisoned));
        assert!(is_fatal_write_error(&fjall::Error::Io(
            std::io::Error::other("EIO")
        )));
        assert!(!is_fatal_write_error(&fjall::Error::KeyspaceDeleted));
        assert!(is_fatal_read_error(&fjall::Error::Poisoned));
        assert!(!is_fatal_read_error(&fjall::Error::Io(
            std::io::Error::other("EIO")
        )));
    }

    /// Counts what it receives.
    struct Sink(Vec<StoreFailed>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<StoreFailed> for Sink {
        type Result = ();
        fn handle(&mut self, m: StoreFailed, _: &mut Context<Self>) {
            self.0.push(m);
        }
    }
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Count;
    impl Handler<Count> for Sink {
        type Result = usize;
        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
            self.0.len()
        }
    }

    #[actix_rt::test]
    async fn only_the_first_failure_is_sent() {
        let sink = Sink(Vec::new()).start();
        let mut r = StoreFailureReporter::new("test");
        r.set_recipient(sink.clone().recipient());
        assert!(!r.failed());
        for _ in 0..100 {
            r.report("writing", fjall::Error::Poisoned);
        }
        assert!(r.failed());
        assert_eq!(
            sink.send(Count).await.expect("sink alive"),
            1,
            "a hundred failures should send one StoreFailed"
        );
    }
}
