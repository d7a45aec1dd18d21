//! How the anti-entropy actor follows the layout: a `LayoutChanged` from the layout actor
//! replaces the placement and the agreement (nothing is forgotten while peers announce
//! another layout), and a new version starts a round at once so the partitions this node
//! gave up are handed over without waiting for the next interval; while the transition
//! runs, rounds follow each other ([`TRANSITION_ROUND_PAUSE`] apart), since writes keep
//! reaching the old holders until it ends.

use std::time::Duration;

use actix::prelude::*;

use super::AntiEntropyActor;
use crate::layout::LayoutChanged;

/// Pause between two rounds while a layout transition runs (a round then follows the
/// previous one instead of waiting for the interval).
pub(super) const TRANSITION_ROUND_PAUSE: Duration = Duration::from_secs(3);

impl Handler<LayoutChanged> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, m: LayoutChanged, ctx: &mut Context<Self>) {
        let new_version = self.layout_version != Some(m.layout.version);
        let became_agreed = m.agreed && self.layout_agreed != Some(true);
        self.layout_version = Some(m.layout.version);
        self.links.placement = m.placement;
        self.layout_agreed = Some(m.agreed);
        self.layout_differs = m.disagreeing;
        let was_in_transition = self.layout_in_transition;
        self.layout_in_transition = m.layout.in_transition();
        if new_version || became_agreed || (self.layout_in_transition && !was_in_transition) {
            tracing::debug!(
                version = m.layout.version,
                agreed = m.agreed,
                "layout changed: anti-entropy round now"
            );
            self.start_round(ctx);
        }
    }
}
