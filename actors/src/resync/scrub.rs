//! Scrub: read and verify every local block by BLAKE2, one at a time, throttled by the
//! scrub tranquility. It asks for [`VerifyBlock`], not [`crate::storage::ReadBlock`]:
//! ordinary reads trust a copy's stored checksum, which a file rewritten together with
//! its attribute passes; only BLAKE2 of the plain bytes tells such a copy apart. A `Corrupted` reply means the storage actor already quarantined the file:
//! the hash is counted and queued for resync now. The position (last hash checked), the
//! counters, the state and the next automatic run are persisted in `resync_settings`, so
//! a restart resumes where the walk stopped.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{keys, Rest, ResyncActor, ResyncError, ScrubCommand, ScrubState, PAGE};
use crate::rc::now_msec;
use crate::storage::{ListBlocks, StorageError, VerifyBlock};

impl ResyncActor {
    fn set_scrub_state(&mut self, s: ScrubState) {
        self.scrub_state = s;
        self.put_setting(
            keys::SCRUB_STATE,
            match s {
                ScrubState::Idle => 0,
                ScrubState::Running => 1,
                ScrubState::Paused => 2,
            },
        );
    }

    /// Check the next block of the scrub walk, then schedule the next step after
    /// `scrub_tranquility × time taken`.
    pub(super) fn scrub_step(&mut self, ctx: &mut Context<Self>) {
        if self.scrub_state != ScrubState::Running || self.scrub_stepping {
            return;
        }
        self.scrub_stepping = true;
        let storage = self.deps.storage.clone();
        if self.scrub_page.is_empty() {
            let after = self.scrub_position;
            ctx.spawn(
                async move { storage.send(ListBlocks { after, limit: PAGE }).await }
                    .into_actor(self)
                    .map(|res, act, ctx| {
                        act.scrub_stepping = false;
                        match res {
                            Ok(Ok(page)) if page.is_empty() => act.finish_scrub(),
                            Ok(Ok(mut page)) => {
                                page.reverse();
                                act.scrub_page = page;
                                act.scrub_step(ctx);
                            }
                            other => {
                                tracing::warn!(
                                    "scrub cannot list blocks ({other:?}); retrying in 10 s"
                                );
                                ctx.run_later(Duration::from_secs(10), |act, ctx| {
                                    act.scrub_step(ctx)
                                });
                            }
                        }
                    }),
            );
            return;
        }
        let Some(hash) = self.scrub_page.pop() else {
            self.scrub_stepping = false;
            return;
        };
        let start = Instant::now();
        ctx.spawn(
            async move { storage.send(VerifyBlock { hash }).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.scrub_stepping = false;
                    match res {
                        Ok(Err(StorageError::Corrupted { .. })) => {
                            act.scrub_corruptions += 1;
                            act.put_setting(keys::SCRUB_CORRUPTIONS, act.scrub_corruptions);
                            tracing::warn!(hash = %hash.short(), "scrub found a rotten block; quarantined, resyncing it");
                            act.enqueue(hash, now_msec());
                            act.pump(ctx);
                        }
                        Ok(Err(e)) => tracing::warn!(hash = %hash.short(), "scrub could not read block: {e}"),
                        _ => {}
                    }
                    act.scrub_checked += 1;
                    act.scrub_position = Some(hash);
                    let _ = act.settings.insert(keys::SCRUB_POSITION, hash.as_bytes().to_vec());
                    act.put_setting(keys::SCRUB_CHECKED, act.scrub_checked);
                    let took = start.elapsed();
                    let timer = ctx.run_later(took.saturating_mul(act.scrub_tranquility), |act, ctx| {
                        act.scrub_rest = None;
                        act.scrub_step(ctx)
                    });
                    act.scrub_rest = Some(Rest { since: Instant::now(), took, timer });
                }),
        );
    }

    /// The scrub tranquility changed: its rest, if any, is re-timed to the new value.
    pub(super) fn retime_scrub_rest(&mut self, ctx: &mut Context<Self>) {
        if let Some(rest) = self.scrub_rest.as_mut() {
            ctx.cancel_future(rest.timer);
            let left = rest.left(self.scrub_tranquility);
            rest.timer = ctx.run_later(left, |act, ctx| {
                act.scrub_rest = None;
                act.scrub_step(ctx)
            });
        }
    }

    fn finish_scrub(&mut self) {
        tracing::info!(
            checked = self.scrub_checked,
            corruptions = self.scrub_corruptions,
            "scrub finished"
        );
        self.set_scrub_state(ScrubState::Idle);
        self.scrub_position = None;
        let _ = self.settings.remove(keys::SCRUB_POSITION);
        self.scrub_next_run = next_scrub_time(self.config.scrub_interval);
        self.put_setting(keys::SCRUB_NEXT_RUN, self.scrub_next_run);
    }

    pub(super) fn start_scrub(&mut self, ctx: &mut Context<Self>) {
        tracing::info!("scrub started");
        self.scrub_position = None;
        self.scrub_page.clear();
        self.scrub_checked = 0;
        let _ = self.settings.remove(keys::SCRUB_POSITION);
        self.put_setting(keys::SCRUB_CHECKED, 0);
        self.set_scrub_state(ScrubState::Running);
        self.scrub_step(ctx);
    }
}

/// Next automatic scrub: now + interval, randomised by ±5 days when the interval is at
/// least 10 days, so a cluster started at once does not scrub everywhere at once.
pub(super) fn next_scrub_time(interval: Duration) -> u64 {
    let jitter_span = 5 * 86400 * 1000u64;
    let base = now_msec() + interval.as_millis() as u64;
    if interval >= Duration::from_secs(10 * 86400) {
        base - jitter_span + rand::random::<u64>() % (2 * jitter_span)
    } else {
        base
    }
}

impl Handler<ScrubCommand> for ResyncActor {
    type Result = Result<(), ResyncError>;

    fn handle(&mut self, msg: ScrubCommand, ctx: &mut Context<Self>) -> Self::Result {
        let state = self.scrub_state;
        let refuse = |action| {
            Err(ResyncError::ScrubState {
                action,
                state: state.name(),
            })
        };
        match (msg, state) {
            (ScrubCommand::Start, ScrubState::Running) => refuse("start"),
            (ScrubCommand::Start, _) => {
                self.start_scrub(ctx);
                Ok(())
            }
            (ScrubCommand::Pause, ScrubState::Running) => {
                tracing::info!("scrub paused");
                self.set_scrub_state(ScrubState::Paused);
                Ok(())
            }
            (ScrubCommand::Pause, _) => refuse("pause"),
            (ScrubCommand::Resume, ScrubState::Paused) => {
                tracing::info!("scrub resumed");
                self.set_scrub_state(ScrubState::Running);
                self.scrub_step(ctx);
                Ok(())
            }
            (ScrubCommand::Resume, _) => refuse("resume"),
            (ScrubCommand::Cancel, ScrubState::Idle) => refuse("cancel"),
            (ScrubCommand::Cancel, _) => {
                tracing::info!("scrub cancelled");
                self.set_scrub_state(ScrubState::Idle);
                self.scrub_position = None;
                self.scrub_page.clear();
                let _ = self.settings.remove(keys::SCRUB_POSITION);
                Ok(())
            }
        }
    }
}
