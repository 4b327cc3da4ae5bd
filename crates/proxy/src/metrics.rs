//! Prometheus metrics of the proxy, served at `/metrics`, named after upstream
//! kube-proxy's (`kubeproxy_sync_proxy_rules_*`) with an `rkube_proxy_` prefix.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The proxy's metrics and the registry that renders them.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// How long a sync took, from reading the caches to nft's answer.
    pub sync_duration: Histogram,
    /// From an endpoint change to its rules being applied.
    pub network_programming: Histogram,
    /// Rules in the per-Service chains.
    pub rules: Gauge,
    /// Elements in the verdict maps and the hairpin set.
    pub elements: Gauge,
    /// Unix time of the last successful sync.
    pub last_sync: Gauge<f64, AtomicU64>,
    syncs: Family<Labels, Counter>,
    failures: Counter,
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

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "rkube_proxy_sync_proxy_rules_duration_seconds",
            "How long one sync of the nftables rules took",
            sync_duration.clone(),
        );
        let network_programming = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "rkube_proxy_network_programming_duration_seconds",
            "From an EndpointSlice change (its last-change-trigger-time, else when the proxy saw it) to its rules being applied",
            network_programming.clone(),
        );
        let rules = Gauge::default();
        registry.register(
            "rkube_proxy_sync_proxy_rules_nftables_rules",
            "Rules in the per-Service chains after the last successful sync",
            rules.clone(),
        );
        let elements = Gauge::default();
        registry.register(
            "rkube_proxy_sync_proxy_rules_nftables_elements",
            "Elements in the Service verdict maps and the hairpin set after the last successful sync",
            elements.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "rkube_proxy_sync_proxy_rules_last_timestamp_seconds",
            "Unix time of the last successful sync",
            last_sync.clone(),
        );
        let syncs = Family::<Labels, Counter>::default();
        registry.register(
            "rkube_proxy_sync_proxy_rules_syncs",
            "Successful syncs, by kind (full or partial)",
            syncs.clone(),
        );
        let failures = Counter::default();
        registry.register(
            "rkube_proxy_sync_proxy_rules_nftables_sync_failures",
            "Syncs nft rejected or that could not run nft",
            failures.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            sync_duration,
            network_programming,
            rules,
            elements,
            last_sync,
            syncs,
            failures,
        }
    }

    /// Counts one successful sync.
    pub fn synced(&self, full: bool) {
        let kind = if full { "full" } else { "partial" };
        self.syncs.get_or_create(&vec![("kind", kind)]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_sync.set(now);
    }

    /// Counts one failed sync.
    pub fn failed(&self) {
        self.failures.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
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
    fn every_metric_renders_under_its_name() {
        let m = Metrics::new();
        m.sync_duration.observe(0.01);
        m.network_programming.observe(0.5);
        m.rules.set(12);
        m.elements.set(3);
        m.synced(true);
        m.failed();
        let text = m.render();
        for name in [
            "rkube_proxy_sync_proxy_rules_duration_seconds_bucket",
            "rkube_proxy_network_programming_duration_seconds_count 1",
            "rkube_proxy_sync_proxy_rules_nftables_rules 12",
            "rkube_proxy_sync_proxy_rules_nftables_elements 3",
            "rkube_proxy_sync_proxy_rules_last_timestamp_seconds",
            "rkube_proxy_sync_proxy_rules_syncs_total{kind=\"full\"} 1",
            "rkube_proxy_sync_proxy_rules_nftables_sync_failures_total 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
