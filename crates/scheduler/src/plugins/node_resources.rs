//! NodeResourcesFit (requests against allocatable; LeastAllocated, MostAllocated or RequestedToCapacityRatio scoring) and NodeResourcesBalancedAllocation.

use std::sync::Arc;

use crate::framework::Plugin;

/// The plugin's name in configuration.
pub const NAME: &str = "NodeResourcesFit";

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

/// The name of the balanced-allocation score plugin.
pub const BALANCED_NAME: &str = "NodeResourcesBalancedAllocation";

/// Builds NodeResourcesBalancedAllocation.
pub fn new_balanced(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(Stub(BALANCED_NAME)))
}
