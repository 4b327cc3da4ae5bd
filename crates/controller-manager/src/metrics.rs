//! Prometheus metrics of the controller manager, served at `/metrics`: per controller, the
//! work queue's depth and the reconciles' count, latency and errors. The queue metrics keep
//! upstream's names (`workqueue_depth`, `workqueue_work_duration_seconds`, labelled `name`).

use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type DepthProbe = Box<dyn Fn() -> usize + Send + Sync>;

/// The controller manager's metrics and the registry that renders them.
pub struct Metrics {
    registry: Mutex<Registry>,
    depth: Family<Labels, Gauge>,
    depth_probes: Mutex<Vec<(&'static str, DepthProbe)>>,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn labels(name: &'static str) -> Labels {
    vec![("name", name.to_string())]
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let depth = Family::<Labels, Gauge>::default();
        registry.register(
            "workqueue_depth",
            "Keys waiting in a controller's work queue",
            depth.clone(),
        );
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "rkube_controller_reconciles",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "rkube_controller_reconcile_errors",
            "Reconciles that failed and were requeued with backoff, per controller",
            errors.clone(),
        );
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "workqueue_work_duration_seconds",
            "How long reconciling one key took, per controller",
            duration.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            depth,
            depth_probes: Mutex::default(),
            reconciles,
            errors,
            duration,
        }
    }

    /// Reports `controller`'s queue depth as `probe` says at each scrape.
    pub fn watch_depth(
        &self,
        controller: &'static str,
        probe: impl Fn() -> usize + Send + Sync + 'static,
    ) {
        self.depth_probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((controller, Box::new(probe)));
    }

    /// Counts one reconcile of `controller` that took `seconds` and failed or not.
    pub fn observe_reconcile(&self, controller: &'static str, seconds: f64, failed: bool) {
        let l = labels(controller);
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(seconds);
        if failed {
            self.errors.get_or_create(&l).inc();
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        for (name, probe) in self
            .depth_probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            self.depth
                .get_or_create(&labels(name))
                .set(i64::try_from(probe()).unwrap_or(i64::MAX));
        }
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_depth_reconciles_and_errors_per_controller() {
        let m = Metrics::new();
        m.watch_depth("replicaset", || 3);
        m.observe_reconcile("replicaset", 0.01, false);
        m.observe_reconcile("replicaset", 0.02, true);
        let out = m.render();
        assert!(
            out.contains(r#"workqueue_depth{name="replicaset"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(r#"rkube_controller_reconciles_total{name="replicaset"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"rkube_controller_reconcile_errors_total{name="replicaset"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"workqueue_work_duration_seconds_count{name="replicaset"} 2"#),
            "{out}"
        );
    }
}
