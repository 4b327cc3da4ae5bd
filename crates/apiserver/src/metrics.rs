//! Prometheus metrics of the apiserver, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// The apiserver's metrics and the registry that renders them.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    watchers: Family<Labels, Gauge>,
    slow_watchers_closed: Counter,
    store_revision: Gauge,
    store_flushes: Gauge,
    store_flushed_writes: Gauge,
    watch_events: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rkube_apiserver");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "API requests by verb, resource and HTTP code",
            requests.clone(),
        );
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "API request latency by verb and resource (watches excluded)",
            latency.clone(),
        );
        let watchers = Family::<Labels, Gauge>::default();
        registry.register("watchers", "Open watches by resource", watchers.clone());
        let slow_watchers_closed = Counter::default();
        registry.register(
            "slow_watchers_closed",
            "Watches closed because their buffer filled",
            slow_watchers_closed.clone(),
        );
        let store_revision = Gauge::default();
        registry.register(
            "store_revision",
            "Newest durable store revision",
            store_revision.clone(),
        );
        let store_flushes = Gauge::default();
        registry.register(
            "store_flushes",
            "Store flushes (group commits) since start",
            store_flushes.clone(),
        );
        let store_flushed_writes = Gauge::default();
        registry.register(
            "store_flushed_writes",
            "Writes made durable by those flushes",
            store_flushed_writes.clone(),
        );
        let watch_events = Counter::default();
        registry.register(
            "watch_cache_events",
            "Store events applied to the watch caches",
            watch_events.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            watchers,
            slow_watchers_closed,
            store_revision,
            store_flushes,
            store_flushed_writes,
            watch_events,
        }
    }

    /// Counts one finished request and its latency.
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("resource", resource.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        if verb != "watch" {
            self.latency
                .get_or_create(&vec![
                    ("verb", verb.to_string()),
                    ("resource", resource.to_string()),
                ])
                .observe(seconds);
        }
    }

    /// Adds `delta` to the open watches of `resource`.
    pub fn add_watchers(&self, resource: &str, delta: i64) {
        self.watchers
            .get_or_create(&vec![("resource", resource.to_string())])
            .inc_by(delta);
    }

    /// Counts a watcher closed for being slow.
    pub fn slow_watcher_closed(&self) {
        self.slow_watchers_closed.inc();
    }

    /// Records the store's revision and one more applied event.
    pub fn watch_event(&self, revision: u64) {
        self.watch_events.inc();
        self.store_revision.set(revision as i64);
    }

    /// Renders the Prometheus text exposition, with the store's flush statistics as of now.
    pub fn render(&self, flushes: rkube_store::FlushStats) -> String {
        self.store_flushes.set(flushes.flushes as i64);
        self.store_flushed_writes.set(flushes.writes as i64);
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
