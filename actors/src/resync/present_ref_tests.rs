//! A bare ref against a concurrent GC delete (`present_ref.rs`): real storage and
//! refcount actors, the GC look run with random pauses before each of its steps while a
//! client adds a ref to the same block, itself paused at random before and between its
//! steps. A ref acknowledged must find its block stored afterwards; a ref refused must
//! have counted nothing. The other holders have no copy, so a wrong delete cannot be
//! repaired behind the test's back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::deps::Deps;
use super::offload_tests::{
    holders, jitter, node, node_files, pause_up_to, random_blocks, refcount, referenced_and_stored,
    ripe_for_gc, Ignore, GC_DELAY,
};
use super::work::{resync_block, Outcome};
use crate::placement::FixedPlacement;
use crate::present_ref::{add_present_ref_paused, PresentRefError};

/// Interleavings (1,000 random ones).
const ROUNDS: usize = 1000;
/// Rounds run at once (each on its own block).
const PARALLEL: usize = 25;

fn up_to(max_us: u64) -> Duration {
    Duration::from_micros(rand::random::<u64>() % (max_us + 1))
}

#[actix_rt::test]
async fn a_ref_added_during_a_gc_delete_keeps_the_block_or_is_refused() {
    let (_dir, db, storage) = node_files();
    let rc = refcount(&db, Ignore.start().recipient());
    let blocks = random_blocks(ROUNDS);
    ripe_for_gc(&storage, &rc, &blocks).await;

    let (me, b, c) = (node(1), node(2), node(3));
    let deps = Deps {
        self_id: me,
        storage: storage.clone(),
        refcount: rc.clone(),
        peers: holders(&[]).recipient(),
        placement: Arc::new(FixedPlacement(vec![me, b, c])),
        block_timeout: Duration::from_secs(5),
        need_block_timeout: Duration::from_secs(5),
        may_delete: true,
        gc_delay: GC_DELAY,
        pause: Some(jitter(1500)),
        budget: None,
    };
    let started = Instant::now();
    let (mut acked_lost, mut refused_counted, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let (mut acked, mut refused, mut gc_errors) = (0, 0, 0);
    for chunk in blocks.chunks(PARALLEL) {
        let rounds = chunk.iter().map(|block| {
            let deps = deps.clone();
            let (storage, rc) = (storage.clone(), rc.clone());
            async move {
                let hash = block.hash();
                // Either may start first, by up to 15 ms: the GC look (about six steps of
                // up to 1.5 ms each) and the ref's three steps overlap in every order.
                let gc = async {
                    pause_up_to(15_000).await;
                    resync_block(deps, hash).await
                };
                let client = async {
                    pause_up_to(15_000).await;
                    let ref_id = "snapshot-2".parse().expect("valid ref id");
                    let pauses = [up_to(3000), up_to(10_000)];
                    add_present_ref_paused(&storage, &rc, hash, ref_id, 0, pauses).await
                };
                let (gc, added) = futures::join!(gc, client);
                let state = referenced_and_stored(&storage, &rc, hash).await;
                (hash, gc, added, state)
            }
        });
        for (hash, gc, added, (referenced, stored)) in futures::future::join_all(rounds).await {
            if !matches!(gc, Ok(Outcome::Done) | Ok(Outcome::Later(_))) {
                gc_errors += 1;
            }
            match added {
                Ok(_) => {
                    acked += 1;
                    if !stored || !referenced {
                        acked_lost.push(hash);
                    }
                }
                Err(PresentRefError::BlockMissing { .. }) => {
                    refused += 1;
                    if referenced {
                        refused_counted.push(hash);
                    }
                }
                Err(e) => other.push(e.to_string()),
            }
        }
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}: {acked} refs acknowledged, {refused} refused \
         (block_missing), {gc_errors} GC errors",
        started.elapsed()
    );
    assert!(
        acked_lost.is_empty(),
        "{} of {ROUNDS} acknowledged refs have no block (first: {})",
        acked_lost.len(),
        acked_lost[0]
    );
    assert!(
        refused_counted.is_empty(),
        "{} refused refs were counted anyway (first: {})",
        refused_counted.len(),
        refused_counted[0]
    );
    assert!(other.is_empty(), "unexpected errors: {other:?}");
    assert_eq!(gc_errors, 0, "the GC look must not fail in this set-up");
    assert!(
        acked > 0 && refused > 0,
        "the rounds must cover both orders: {acked} acknowledged, {refused} refused"
    );
}

/// A caller that gives up on a bare ref after its first step was handled (its future
/// polled once, the refcount actor given time to handle what was sent, then the future
/// dropped unpolled) leaves no add under way: the hash's GC fences are not refused for
/// good.
#[actix_rt::test]
async fn a_ref_add_dropped_after_its_begin_was_handled_leaves_no_add_under_way() {
    let (_dir, db, storage) = node_files();
    let rc = refcount(&db, Ignore.start().recipient());
    let hash = random_blocks(1)[0].hash();
    for _ in 0..20 {
        let add = add_present_ref_paused(
            &storage,
            &rc,
            hash,
            "r".parse().expect("valid ref id"),
            0,
            [Duration::ZERO; 2],
        );
        let mut add = Box::pin(add);
        assert!(
            futures::poll!(add.as_mut()).is_pending(),
            "the add waits for the actors"
        );
        // The refcount actor handles what the first poll sent; the caller then gives up.
        actix_rt::time::sleep(Duration::from_millis(5)).await;
        drop(add);
    }
    let left = rc
        .send(crate::refcount::CountRefAdds { hash })
        .await
        .unwrap();
    assert_eq!(left, 0, "adds left under way by callers that gave up");
}
