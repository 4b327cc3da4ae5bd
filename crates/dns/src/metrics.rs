//! Prometheus metrics of the DNS server, served at `/metrics`: queries by type, response code
//! and where they were answered (the cluster zone or the upstream resolvers), their latency,
//! and the size of the zone.

use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Where a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the cluster's records.
    Cluster,
    /// Relayed to an upstream resolver.
    Forward,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Cluster => "cluster",
            Source::Forward => "forward",
        }
    }
}

/// The DNS server's metrics and the registry that renders them.
pub struct Metrics {
    registry: Mutex<Registry>,
    queries: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    services: Gauge,
    rebuilds: Counter,
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
        let queries = Family::<Labels, Counter>::default();
        registry.register(
            "rkube_dns_queries",
            "DNS queries answered, by query type, response code and source (cluster or forward)",
            queries.clone(),
        );
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 25 µs .. ~6.5 s.
            Histogram::new(exponential_buckets(0.000_025, 4.0, 10))
        });
        registry.register(
            "rkube_dns_query_duration_seconds",
            "Time from receiving a query to sending its answer, by source",
            duration.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "rkube_dns_services",
            "Services in the cluster zone",
            services.clone(),
        );
        let rebuilds = Counter::default();
        registry.register(
            "rkube_dns_zone_rebuilds",
            "Times the zone was rebuilt from the caches",
            rebuilds.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            queries,
            duration,
            services,
            rebuilds,
        }
    }

    /// Counts one answered query.
    pub fn observe_query(&self, qtype: &str, rcode: &str, source: Source, seconds: f64) {
        self.queries
            .get_or_create(&vec![
                ("type", qtype.to_string()),
                ("rcode", rcode.to_string()),
                ("source", source.as_str().to_string()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("source", source.as_str().to_string())])
            .observe(seconds);
    }

    /// Records a rebuilt zone of `services` Services.
    pub fn observe_rebuild(&self, services: usize) {
        self.rebuilds.inc();
        self.services
            .set(i64::try_from(services).unwrap_or(i64::MAX));
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
    fn renders_queries_by_type_rcode_and_source() {
        let m = Metrics::new();
        m.observe_query("A", "NOERROR", Source::Cluster, 0.0001);
        m.observe_query("A", "NOERROR", Source::Cluster, 0.0002);
        m.observe_query("AAAA", "NXDOMAIN", Source::Forward, 0.01);
        m.observe_rebuild(3);
        let out = m.render();
        assert!(
            out.contains(r#"rkube_dns_queries_total{type="A",rcode="NOERROR",source="cluster"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"rkube_dns_queries_total{type="AAAA",rcode="NXDOMAIN",source="forward"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"rkube_dns_query_duration_seconds_count{source="cluster"} 2"#),
            "{out}"
        );
        assert!(out.contains("rkube_dns_services 3"), "{out}");
        assert!(out.contains("rkube_dns_zone_rebuilds_total 1"), "{out}");
    }
}
