//! How the anti-entropy actor follows the layout: a `LayoutChanged` from the layout actor
//! replaces the placement and the agreement (nothing is forgotten while peers announce
//! another layout), and a new version starts a round at once so the partitions this node
//! gave up are handed over without waiting for the next interval.

use actix::prelude::*;

use super::AntiEntropyActor;
use crate::layout::LayoutChanged;

impl Handler<LayoutChanged> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, m: LayoutChanged, ctx: &mut Context<Self>) {
        let new_version = self.layout_version != Some(m.layout.version);
        let became_agreed = m.agreed && self.layout_agreed != Some(true);
        self.layout_version = Some(m.layout.version);
        self.links.placement = m.placement;
        self.layout_agreed = Some(m.agreed);
        self.layout_differs = m.disagreeing;
        if new_version || became_agreed {
            tracing::debug!(
                version = m.layout.version,
                agreed = m.agreed,
                "layout changed: anti-entropy round now"
            );
            self.start_round(ctx);
        }
    }
}
