//! QueueSort: higher priority first, then earlier arrival, as upstream's `PrioritySort`.

use std::sync::Arc;

use crate::framework::{Plugin, QueueSortPlugin};
use crate::node_info::PodInfo;

/// The plugin's name in configuration.
pub const NAME: &str = "PrioritySort";

/// The PrioritySort plugin.
#[derive(Debug, Default)]
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &PodInfo, a_added: u64, b: &PodInfo, b_added: u64) -> bool {
        a.priority > b.priority || (a.priority == b.priority && a_added < b_added)
    }
}

/// Builds the plugin; it takes no args.
pub fn new(_args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(PrioritySort))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    fn with_priority(name: &str, priority: i32) -> PodInfo {
        PodInfo::new(Arc::new(pod(name).priority(priority).build()))
    }

    #[test]
    fn higher_priority_goes_first_regardless_of_arrival() {
        let (high, low) = (with_priority("high", 100), with_priority("low", 1));
        assert!(PrioritySort.less(&high, 9, &low, 1));
        assert!(!PrioritySort.less(&low, 1, &high, 9));
    }

    #[test]
    fn equal_priority_goes_in_arrival_order() {
        let (a, b) = (with_priority("a", 5), with_priority("b", 5));
        assert!(PrioritySort.less(&a, 1, &b, 2));
        assert!(!PrioritySort.less(&b, 2, &a, 1));
        assert!(
            !PrioritySort.less(&a, 1, &a, 1),
            "a pod is not before itself"
        );
    }

    #[test]
    fn unset_priority_counts_as_zero() {
        let unset = PodInfo::new(Arc::new(pod("unset").build()));
        let negative = with_priority("negative", -1);
        assert!(PrioritySort.less(&unset, 2, &negative, 1));
    }
}
