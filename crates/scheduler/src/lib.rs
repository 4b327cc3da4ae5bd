//! `rkube-scheduler`: binds pending pods to nodes with the Kubernetes scheduling framework.
//!
//! The pure part (framework, plugins, profiles, the snapshot of nodes and pods, the queue)
//! does no I/O and is unit- and property-tested; the daemon part (informers, binder, events,
//! leader election, health and metrics) wraps it.

pub mod framework;
pub mod node_info;
pub mod plugins;
pub mod profile;
pub mod snapshot;
pub mod testing;
pub mod config;
pub mod queue;
