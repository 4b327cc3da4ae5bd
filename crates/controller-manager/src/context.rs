//! What every controller is built from: the client, the shared informers, the clock, the
//! metrics, the settings and the stop signal.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rkube_client::{Client, Recorder};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::informer::{Informer, Informers, Object};
use crate::metrics::Metrics;

/// Settings of the controllers, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Concurrent reconciles per controller (upstream's `--concurrent-*-syncs`).
    pub workers: usize,
    /// How long a node may go without a heartbeat (Lease renewal or Ready condition) before
    /// it is marked NotReady/Unknown (`--node-monitor-grace-period`, default 40 s).
    pub node_monitor_grace_period: Duration,
    /// How long a newly registered node has to post its first heartbeat (default 60 s).
    pub node_startup_grace_period: Duration,
    /// How often every node is looked at although nothing about it changed
    /// (`--node-monitor-period`, default 5 s). Silence is also caught at its exact deadline,
    /// so this is only a resync.
    pub node_monitor_period: Duration,
    /// The delay before replacing a Job's first failed pod; it doubles with each further
    /// failure (`--job-pod-failure-backoff`, default 10 s as upstream's fixed value).
    pub job_pod_failure_backoff: Duration,
    /// The range pod CIDRs are carved from (`--cluster-cidr`); none disables node IPAM.
    pub cluster_cidr: Option<(IpAddr, u8)>,
    /// The prefix length of each node's pod CIDR (`--node-cidr-mask-size`, default 24).
    pub node_cidr_mask_size: u8,
    /// Terminated pods kept before the pod garbage collector deletes the oldest
    /// (`--terminated-pod-gc-threshold`, default 12500).
    pub terminated_pod_gc_threshold: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workers: 5,
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_monitor_period: Duration::from_secs(5),
            job_pod_failure_backoff: Duration::from_secs(10),
            cluster_cidr: None,
            node_cidr_mask_size: 24,
            terminated_pod_gc_threshold: 12_500,
        }
    }
}

/// Shared by every controller of one controller manager.
#[derive(Debug, Clone)]
pub struct Context {
    /// The apiserver.
    pub client: Client,
    /// One informer per object type.
    pub informers: Arc<Informers>,
    /// Wall-clock time.
    pub clock: Clock,
    /// Queue and reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Flags.
    pub settings: Arc<Settings>,
    /// Turns true when the controllers must stop.
    pub stop: watch::Receiver<bool>,
}

impl Context {
    /// The shared informer of `K`.
    pub fn informer<K: Object>(&self) -> Informer<K> {
        self.informers.get::<K>()
    }

    /// An event recorder that signs its Events as `component` (e.g.
    /// `replicaset-controller`, as upstream).
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder::new(self.client.clone(), component)
    }
}
