//! Bind: claims every pod; the scheduler then posts the `binding` subresource, as upstream's
//! `DefaultBinder` does itself.

use std::sync::Arc;

use crate::framework::{BindPlugin, Plugin, Status};
use crate::node_info::PodInfo;

/// The plugin's name in configuration.
pub const NAME: &str = "DefaultBinder";

/// The DefaultBinder plugin.
#[derive(Debug, Default)]
pub struct DefaultBinder;

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        Some(self)
    }
}

impl BindPlugin for DefaultBinder {
    fn claims(&self, _pod: &PodInfo) -> Status {
        Status::success()
    }
}

/// Builds the plugin; it takes no args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(DefaultBinder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn claims_every_pod() {
        let p = PodInfo::new(Arc::new(pod("p").build()));
        let plugin = new(None).expect("no args");
        let binder = plugin.as_bind().expect("a bind plugin");
        assert!(binder.claims(&p).is_success());
    }
}
