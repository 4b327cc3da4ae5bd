//! The nodeipam controller. Not built yet: it runs nothing.

use crate::context::Context;
use crate::controllers::Running;

/// Subscribes the controller to the informers and returns its workers.
pub fn start(_ctx: &Context) -> Running {
    Box::pin(async {})
}
