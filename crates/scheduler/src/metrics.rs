//! Prometheus metrics of the scheduler, named as upstream's (`scheduler_*`) so existing
//! dashboards and alerts read them, served at `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// How a scheduling attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The pod was placed (its binding may still fail).
    Scheduled,
    /// No node fits.
    Unschedulable,
    /// An internal error.
    Error,
}

impl AttemptResult {
    fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

/// The scheduler's metrics and the registry that renders them.
pub struct Metrics {
    registry: Mutex<Registry>,
    attempts: Family<Labels, Counter>,
    attempt_duration: Family<Labels, Histogram>,
    pod_scheduling: Family<Labels, Histogram>,
    pending: Family<Labels, Gauge>,
    preemption_attempts: Counter,
    preemption_victims: Histogram,
    bind_duration: Family<Labels, Histogram>,
    events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let attempts = Family::<Labels, Counter>::default();
        registry.register(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result and profile",
            attempts.clone(),
        );
        let attempt_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
        });
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling cycle latency (algorithm, without binding) by result and profile",
            attempt_duration.clone(),
        );
        let pod_scheduling = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        registry.register(
            "scheduler_pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from entering the queue to its binding, by attempts",
            pod_scheduling.clone(),
        );
        let pending = Family::<Labels, Gauge>::default();
        registry.register(
            "scheduler_pending_pods",
            "Pending pods by queue: active, backoff, unschedulable",
            pending.clone(),
        );
        let preemption_attempts = Counter::default();
        registry.register(
            "scheduler_preemption_attempts",
            "Preemption attempts",
            preemption_attempts.clone(),
        );
        let preemption_victims = Histogram::new(exponential_buckets(1.0, 2.0, 7));
        registry.register(
            "scheduler_preemption_victims",
            "Victims chosen per successful preemption",
            preemption_victims.clone(),
        );
        let bind_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
        registry.register(
            "scheduler_binding_duration_seconds",
            "Binding API call latency by result",
            bind_duration.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "scheduler_events_dropped",
            "Events not recorded because the event queue was full",
            events_dropped.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            attempts,
            attempt_duration,
            pod_scheduling,
            pending,
            preemption_attempts,
            preemption_victims,
            bind_duration,
            events_dropped,
        }
    }

    /// Counts one scheduling attempt and its duration.
    pub fn attempt(&self, result: AttemptResult, profile: &str, seconds: f64) {
        let labels = vec![
            ("result", result.as_str().to_string()),
            ("profile", profile.to_string()),
        ];
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Records a pod bound after `attempts` attempts, `seconds` after it entered the queue.
    pub fn pod_scheduled(&self, attempts: u32, seconds: f64) {
        let bucket = if attempts >= 16 {
            "16+".to_string()
        } else {
            attempts.to_string()
        };
        self.pod_scheduling
            .get_or_create(&vec![("attempts", bucket)])
            .observe(seconds);
    }

    /// Sets the queue sizes.
    pub fn pending(&self, active: usize, backoff: usize, unschedulable: usize) {
        for (queue, n) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unschedulable),
        ] {
            self.pending
                .get_or_create(&vec![("queue", queue.to_string())])
                .set(n as i64);
        }
    }

    /// Counts a preemption attempt and, when it found a node, its victims.
    pub fn preemption(&self, victims: Option<usize>) {
        self.preemption_attempts.inc();
        if let Some(n) = victims {
            self.preemption_victims.observe(n as f64);
        }
    }

    /// Records one binding call.
    pub fn binding(&self, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.bind_duration
            .get_or_create(&vec![("result", result.to_string())])
            .observe(seconds);
    }

    /// Counts an event dropped because the event queue was full.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
