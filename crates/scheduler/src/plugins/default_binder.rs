//! Bind: claims every pod; the scheduler posts the `binding` subresource.

use std::sync::Arc;

use crate::framework::Plugin;

/// The plugin's name in configuration.
pub const NAME: &str = "DefaultBinder";

/// Placeholder until the plugin is written.
struct Stub(&'static str);

impl Plugin for Stub {
    fn name(&self) -> &'static str {
        self.0
    }
}

/// Builds the plugin from its args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(Stub(NAME)))
}
