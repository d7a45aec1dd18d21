//! The expiry pass: drop every live upload ref past its lifetime
//! ([`crate::upload_ref`]), left by an upload whose coordinator or client died before
//! it could drop it. Without it, the blocks such an upload stored would stay referenced
//! forever. Each node runs the pass on its own refs every
//! [`RefcountConfig::expire_interval`](super::RefcountConfig): the name says when the
//! upload started, so no node needs to know about the upload, and a drop reaching a
//! replica that has not expired the ref yet is simply the same drop (dropped wins).
//!
//! A dropped upload ref cannot be added again, so a late chunk of an upload that
//! outlived its ref is refused (the upload fails) instead of being stored unprotected.
//!
//! Cost: one pass reads every key of the `refs` keyspace, [`PAGE`] keys per message
//! (other messages are handled between pages); memory stays one page.

use std::ops::Bound;
use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::keys::{decode_rec, split_ref_key};
use super::record::RefRec;
use super::RefcountActor;
use crate::rc::now_msec;
use crate::upload_ref::{upload_ref_expired, UPLOAD_REF_PREFIX};

/// Default time between two expiry passes: a stale upload ref lives at most this
/// longer than its lifetime.
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(3600);

/// Ref records read per step of a pass.
const PAGE: usize = 1024;

/// One step of an expiry pass: the keys strictly after `after` (from the start when
/// `None`).
#[derive(Message)]
#[rtype(result = "()")]
struct ExpirePage {
    after: Option<Vec<u8>>,
    dropped: u64,
}

impl RefcountActor {
    /// Run a pass every `expire_interval` (called from `started`).
    pub(super) fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.expire_interval, |act, ctx| {
            if act.expiring {
                return;
            }
            act.expiring = true;
            ctx.notify(ExpirePage {
                after: None,
                dropped: 0,
            });
        });
    }
}

impl Handler<ExpirePage> for RefcountActor {
    type Result = ();

    fn handle(&mut self, m: ExpirePage, ctx: &mut Context<Self>) {
        let now = now_msec();
        let ttl = self.config.upload_ref_ttl;
        let iter: Box<dyn Iterator<Item = _>> = match &m.after {
            Some(k) => Box::new(
                self.refs
                    .range::<&[u8], _>((Bound::Excluded(&k[..]), Bound::Unbounded)),
            ),
            None => Box::new(self.refs.iter()),
        };
        let mut last = None;
        let mut expired = Vec::new();
        let mut read = 0;
        for g in iter.take(PAGE) {
            read += 1;
            let (k, v) = match g.into_inner() {
                Ok(kv) => kv,
                Err(e) => {
                    warn!(error = %e, "expiry pass: reading the refs keyspace failed; stopped");
                    self.expiring = false;
                    return;
                }
            };
            if let Some((hash, ref_id)) = split_ref_key(&k) {
                if ref_id.as_str().starts_with(UPLOAD_REF_PREFIX)
                    && upload_ref_expired(&ref_id, now, ttl)
                {
                    let rec = decode_rec(&k, &v);
                    if rec.is_live() {
                        expired.push((hash, ref_id, rec.incarnation));
                    }
                }
            }
            last = Some(k.to_vec());
        }
        let mut dropped = m.dropped;
        for (hash, ref_id, incarnation) in expired {
            // The incarnation read: a newer add of the same name is not dropped.
            match self.set_ref(hash, ref_id.clone(), RefRec::dropped(incarnation, now)) {
                Ok(u) if u.changed => {
                    debug!(hash = %hash.short(), %ref_id, "expired upload ref dropped");
                    dropped += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(hash = %hash.short(), %ref_id, error = %e, "dropping an expired upload ref failed")
                }
            }
        }
        self.start_persist(ctx);
        if read == PAGE {
            ctx.notify(ExpirePage {
                after: last,
                dropped,
            });
        } else {
            self.expiring = false;
            if dropped > 0 {
                info!(
                    dropped,
                    "expiry pass: dropped upload refs past their lifetime"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::prelude::*;

    use super::super::{AddRef, GetRc, ListRefs, RefState, RefcountActor, RefcountConfig};
    use crate::hash::Hash;
    use crate::rc::{now_msec, RcEntry};
    use crate::ref_id::RefId;
    use crate::upload_ref::new_upload_ref;

    fn state(refs: &[(RefId, RefState)], r: &RefId) -> Option<RefState> {
        refs.iter().find(|(id, _)| id == r).map(|(_, s)| *s)
    }

    /// An upload ref older than its lifetime (a crashed upload's) is dropped by the
    /// periodic pass, and its block's count falls; a fresh one (an upload still running)
    /// and ordinary refs, even old-looking ones, stay live across many passes; a dropped
    /// upload ref cannot come back.
    #[actix_rt::test]
    async fn the_expiry_pass_drops_only_upload_refs_past_their_lifetime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let ttl = Duration::from_secs(60);
        let a = RefcountActor::new(
            db,
            RefcountConfig {
                upload_ref_ttl: ttl,
                expire_interval: Duration::from_millis(20),
                ..Default::default()
            },
            None,
        )
        .expect("opens")
        .start();
        let now = now_msec();
        let crashed = new_upload_ref(now - 2 * ttl.as_millis() as u64);
        let running = new_upload_ref(now);
        let user: RefId = "uploaded:12:snap".parse().expect("valid");
        let (h1, h2) = (Hash([1; 32]), Hash([2; 32]));
        // Enough refs for several pages, so the pass walks past its first page.
        let filler: Vec<(Hash, RefId)> = (0..2500u32)
            .map(|i| {
                let mut b = [3u8; 32];
                b[..4].copy_from_slice(&i.to_be_bytes());
                (Hash(b), format!("r{i}").parse().expect("valid"))
            })
            .collect();
        let mut adds = vec![
            (h1, crashed.clone()),
            (h2, crashed.clone()),
            (h2, running.clone()),
            (h2, user.clone()),
        ];
        adds.extend(filler.iter().cloned());
        let late = new_upload_ref(now - 2 * ttl.as_millis() as u64);
        adds.push((Hash([0xff; 32]), late.clone()));
        let replies = futures::future::join_all(adds.into_iter().map(|(hash, ref_id)| {
            a.send(AddRef {
                hash,
                ref_id,
                incarnation: 0,
            })
        }))
        .await;
        assert!(replies.into_iter().all(|r| matches!(r, Ok(Ok(_)))));
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let l1 = a
                .send(ListRefs { hash: h1 })
                .await
                .expect("alive")
                .expect("ok");
            let l2 = a
                .send(ListRefs { hash: h2 })
                .await
                .expect("alive")
                .expect("ok");
            assert_eq!(
                state(&l2, &running),
                Some(RefState::Live),
                "a running upload keeps its ref"
            );
            assert_eq!(state(&l2, &user), Some(RefState::Live));
            if state(&l1, &crashed) == Some(RefState::Dropped)
                && state(&l2, &crashed) == Some(RefState::Dropped)
            {
                break;
            }
        }
        let l1 = a
            .send(ListRefs { hash: h1 })
            .await
            .expect("alive")
            .expect("ok");
        assert_eq!(
            state(&l1, &crashed),
            Some(RefState::Dropped),
            "the crashed upload's ref expired"
        );
        let rc1 = a
            .send(GetRc { hash: h1 })
            .await
            .expect("alive")
            .expect("ok");
        assert!(
            matches!(rc1, RcEntry::Deletable { .. }),
            "its block became an orphan: {rc1:?}"
        );
        let rc2 = a
            .send(GetRc { hash: h2 })
            .await
            .expect("alive")
            .expect("ok");
        assert_eq!(
            rc2.count(),
            2,
            "the running upload's and the user's refs remain"
        );
        let last = a
            .send(ListRefs {
                hash: Hash([0xff; 32]),
            })
            .await
            .expect("alive")
            .expect("ok");
        assert_eq!(
            state(&last, &late),
            Some(RefState::Dropped),
            "the pass reached the last page"
        );
        let again = a
            .send(AddRef {
                hash: h1,
                ref_id: crashed.clone(),
                incarnation: 0,
            })
            .await
            .expect("alive");
        assert!(
            again.is_err(),
            "an expired upload ref cannot be added again"
        );
    }
}
