//! How the resync actor follows the layout: a `LayoutChanged` from the layout actor
//! replaces the placement its workers use (which nodes should hold a block, whom to fetch
//! from) and the agreement that gates deletions, exactly as [`SetLayoutAgreement`] does.

use actix::prelude::*;

use super::{ResyncActor, SetLayoutAgreement};
use crate::layout::LayoutChanged;

impl Handler<LayoutChanged> for ResyncActor {
    type Result = ();

    fn handle(&mut self, m: LayoutChanged, ctx: &mut Context<Self>) {
        self.deps.placement = m.placement;
        <Self as Handler<SetLayoutAgreement>>::handle(
            self,
            SetLayoutAgreement { agreed: m.agreed },
            ctx,
        );
    }
}
