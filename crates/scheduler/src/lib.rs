//! `rkube-scheduler`: binds pending pods to nodes with the Kubernetes scheduling framework.
//!
//! The pure part (framework, plugins, profiles, the snapshot of nodes and pods, the queue)
//! does no I/O and is unit- and property-tested; the daemon part (informers, binder, events,
//! leader election, health and metrics) wraps it.

pub mod config;
pub mod cycle;
pub mod daemon;
pub mod events;
pub mod framework;
pub mod metrics;
pub mod node_info;
pub mod plugins;
pub mod profile;
pub mod queue;
pub mod scheduler;
pub mod snapshot;
pub mod testing;

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
