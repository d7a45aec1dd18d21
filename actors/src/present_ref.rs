//! A bare ref (one that comes without the block's bytes: `PUT /v1/blocks/{h}/refs/{r}`,
//! a replayed hint) is counted on a holder only while the block is stored there, decided
//! in the same order as a GC delete of it. Three steps, each on the actor that owns
//! what it looks at:
//!
//! 1. [`BeginRefAdd`] (refcount): from now until the end, a GC [`FenceForDelete`] of the
//!    hash is refused, so no GC delete that starts its fence later can take the copy;
//! 2. [`KeepIfPresent`] (storage, on the hash's lane, where [`DeleteIfUnwritten`] runs):
//!    is a copy stored? If so it counts as written now, so a delete queued behind it,
//!    of a GC decision that was fenced before step 1, keeps the block; if not, the ref is
//!    refused ([`PresentRefError::BlockMissing`]) and nothing is counted;
//! 3. [`AddRef`] (refcount), durable; then the begin is ended ([`EndRefAdd`], also when
//!    the caller's future is dropped half way).
//!
//! Whatever the interleaving with GC's fence → delete → end, a ref acknowledged here
//! has its block stored here at that moment and kept from then on (it is counted), and
//! a refused ref has counted nothing. `resync/present_ref_tests.rs` runs 1,000 random
//! interleavings.
//!
//! [`FenceForDelete`]: crate::refcount::FenceForDelete
//! [`DeleteIfUnwritten`]: crate::storage::DeleteIfUnwritten

use std::time::Duration;

use actix::prelude::*;

use crate::hash::Hash;
use crate::ref_id::RefId;
use crate::refcount::{
    AddRef, BeginRefAdd, CountRefAdds, EndRefAdd, RefUpdate, RefcountActor, RefcountError,
};
use crate::storage::{KeepIfPresent, StorageActor, StorageError};

/// Why a bare ref was not counted.
#[derive(Debug, thiserror::Error)]
pub enum PresentRefError {
    /// No copy is stored here (never stored, or collected): the client must send the
    /// block again with its ref.
    #[error("block {hash} is not stored here; send it again with the ref")]
    BlockMissing { hash: Hash },
    #[error(transparent)]
    Refcount(#[from] RefcountError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An actor of this node stopped (the node is shutting down).
    #[error("{actor} actor unavailable: {source}")]
    Gone {
        actor: &'static str,
        #[source]
        source: MailboxError,
    },
}

fn gone(actor: &'static str) -> impl FnOnce(MailboxError) -> PresentRefError {
    move |source| PresentRefError::Gone { actor, source }
}

/// Ends a [`BeginRefAdd`] when dropped, however the add ends (answered, failed, or its
/// future dropped by a caller that gave up).
struct AddUnderWay {
    refcount: Addr<RefcountActor>,
    hash: Hash,
}

impl Drop for AddUnderWay {
    fn drop(&mut self) {
        self.refcount.do_send(EndRefAdd { hash: self.hash });
    }
}

/// Count incarnation `incarnation` of `ref_id` on `hash` here only if a copy of the block is stored here (see the
/// module's doc for the order and why it is safe against a concurrent GC delete).
pub async fn add_present_ref(
    storage: &Addr<StorageActor>,
    refcount: &Addr<RefcountActor>,
    hash: Hash,
    ref_id: RefId,
    incarnation: u64,
) -> Result<RefUpdate, PresentRefError> {
    add_present_ref_paused(
        storage,
        refcount,
        hash,
        ref_id,
        incarnation,
        [Duration::ZERO; 2],
    )
    .await
}

/// [`add_present_ref`] with pauses after steps 1 and 2 (interleaving tests only).
pub(crate) async fn add_present_ref_paused(
    storage: &Addr<StorageActor>,
    refcount: &Addr<RefcountActor>,
    hash: Hash,
    ref_id: RefId,
    incarnation: u64,
    pauses: [Duration; 2],
) -> Result<RefUpdate, PresentRefError> {
    // The begin is queued at once (`do_send` never waits for room) and its guard built
    // before any await: a future dropped at any later point still queues the end, and
    // the end always lands after its begin (the mailbox is in order), never ending
    // another add's begin. With `send`, a future dropped after the begin was queued but
    // before its answer left the hash's adds under way for good (no GC delete ever).
    refcount.do_send(BeginRefAdd { hash });
    let _under_way = AddUnderWay {
        refcount: refcount.clone(),
        hash,
    };
    // Step 2 must not start before the begin is in force: wait for it to be handled.
    refcount
        .send(CountRefAdds { hash })
        .await
        .map_err(gone("refcount"))?;
    pause(pauses[0]).await;
    let present = storage
        .send(KeepIfPresent { hash })
        .await
        .map_err(gone("storage"))??;
    if !present {
        return Err(PresentRefError::BlockMissing { hash });
    }
    pause(pauses[1]).await;
    Ok(refcount
        .send(AddRef {
            hash,
            ref_id,
            incarnation,
        })
        .await
        .map_err(gone("refcount"))??)
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}
