//! `rkube-controller-manager`: the control loops that turn Deployments into pods, keep
//! replica counts, link Services to pods, clean up after deletions and react when nodes die.
//!
//! Every controller is level-triggered: handlers on the shared [`informer`]s add keys to the
//! controller's work queue, and `reconcile(key)` compares desired and actual state in the
//! caches and writes what differs. [`controllers`] lists them; [`daemon`] runs them.

pub mod clock;
pub mod context;
pub mod controllers;
pub mod daemon;
pub mod error;
pub mod expectations;
pub mod informer;
pub mod metadata;
pub mod metrics;
pub mod ownership;
pub mod pods;

pub use clock::Clock;
pub use context::{Context, Settings};
pub use error::{Error, Result};

/// Completes once `stop` holds `true` (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
