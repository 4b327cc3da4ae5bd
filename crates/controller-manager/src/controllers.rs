//! The controllers this manager runs, by name, and the runner they share.
//!
//! Each controller module exposes `start(&Context) -> Running`: it subscribes its event
//! handlers to the shared informers (handlers only add keys to its work queue) and returns
//! the future that runs its workers until the context's stop signal. The manager builds
//! every enabled controller first, then starts the informers, waits for them to list, and
//! only then runs the workers, so every handler sees every object and no reconcile acts on
//! a half-filled cache.
//!
//! `--controllers` selects them the way upstream's flag does: `*` for the defaults, a name
//! to enable one, `-name` to disable one; names are upstream's (`replicaset-controller`) and
//! their short forms (`replicaset`).

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use rkube_client::{Action, Controller, ObjectRef, WorkQueue};
use tokio::time::Instant;

use crate::context::Context;
use crate::error::Result;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod history;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod serviceaccount;
pub mod statefulset;

/// A built controller: runs its workers until the context's stop signal.
pub type Running = BoxFuture<'static, ()>;

/// One controller the manager can run.
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    /// Upstream's name, e.g. `replicaset-controller`.
    pub name: &'static str,
    /// The short name upstream also accepts, e.g. `replicaset`.
    pub alias: &'static str,
    /// Whether `*` includes it.
    pub default_enabled: bool,
    /// Subscribes the controller to the informers and returns its workers.
    pub start: fn(&Context) -> Running,
}

/// Every controller, in the order they are built.
pub const ALL: &[Descriptor] = &[
    Descriptor {
        name: "replicaset-controller",
        alias: "replicaset",
        default_enabled: true,
        start: replicaset::start,
    },
    Descriptor {
        name: "deployment-controller",
        alias: "deployment",
        default_enabled: true,
        start: deployment::start,
    },
    Descriptor {
        name: "endpoints-controller",
        alias: "endpoint",
        default_enabled: true,
        start: endpoints::start,
    },
    Descriptor {
        name: "endpointslice-controller",
        alias: "endpointslice",
        default_enabled: true,
        start: endpointslice::start,
    },
    Descriptor {
        name: "garbage-collector-controller",
        alias: "garbagecollector",
        default_enabled: true,
        start: garbagecollector::start,
    },
    Descriptor {
        name: "namespace-controller",
        alias: "namespace",
        default_enabled: true,
        start: namespace::start,
    },
    Descriptor {
        name: "node-lifecycle-controller",
        alias: "nodelifecycle",
        default_enabled: true,
        start: nodelifecycle::start,
    },
    Descriptor {
        name: "node-ipam-controller",
        alias: "nodeipam",
        default_enabled: true,
        start: nodeipam::start,
    },
    Descriptor {
        name: "pod-garbage-collector-controller",
        alias: "podgc",
        default_enabled: true,
        start: podgc::start,
    },
    Descriptor {
        name: "serviceaccount-controller",
        alias: "serviceaccount",
        default_enabled: true,
        start: serviceaccount::start,
    },
    Descriptor {
        name: "job-controller",
        alias: "job",
        default_enabled: true,
        start: job::start,
    },
    Descriptor {
        name: "cronjob-controller",
        alias: "cronjob",
        default_enabled: true,
        start: cronjob::start,
    },
    Descriptor {
        name: "daemonset-controller",
        alias: "daemonset",
        default_enabled: true,
        start: daemonset::start,
    },
    Descriptor {
        name: "statefulset-controller",
        alias: "statefulset",
        default_enabled: true,
        start: statefulset::start,
    },
];

/// A `--controllers` value names no known controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown controller {0:?} in --controllers (known: {known})", known = known())]
pub struct UnknownController(pub String);

fn known() -> String {
    ALL.iter().map(|d| d.alias).collect::<Vec<_>>().join(", ")
}

/// The controllers `spec` selects (upstream's `--controllers` syntax), in [`ALL`]'s order.
pub fn select(spec: &[String]) -> Result<Vec<&'static Descriptor>, UnknownController> {
    let find = |name: &str| {
        ALL.iter()
            .find(|d| d.name == name || d.alias == name)
            .ok_or_else(|| UnknownController(name.to_string()))
    };
    let mut star = false;
    let mut on = Vec::new();
    let mut off = Vec::new();
    for item in spec.iter().flat_map(|s| s.split(',')).map(str::trim) {
        match item {
            "" => {}
            "*" => star = true,
            _ => match item.strip_prefix('-') {
                Some(name) => off.push(find(name)?.name),
                None => on.push(find(item)?.name),
            },
        }
    }
    Ok(ALL
        .iter()
        .filter(|d| !off.contains(&d.name) && (on.contains(&d.name) || (star && d.default_enabled)))
        .collect())
}

/// Runs `workers` reconciles of `queue`'s keys until the context's stop signal, recording
/// the queue depth and each reconcile's latency and outcome under `name`.
pub fn run_queue<F, Fut>(
    ctx: &Context,
    name: &'static str,
    queue: WorkQueue<ObjectRef>,
    reconcile: F,
) -> Running
where
    F: Fn(ObjectRef) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let depth = queue.clone();
    ctx.metrics.watch_depth(name, move || depth.len());
    let metrics = ctx.metrics.clone();
    let mut stop = ctx.stop.clone();
    let workers = ctx.settings.workers;
    let reconcile = Arc::new(reconcile);
    Box::pin(async move {
        Controller::new(queue, workers)
            .run(
                move |key| {
                    let reconcile = reconcile.clone();
                    let metrics = metrics.clone();
                    async move {
                        let start = Instant::now();
                        let outcome = reconcile(key).await;
                        metrics.observe_reconcile(
                            name,
                            start.elapsed().as_secs_f64(),
                            outcome.is_err(),
                        );
                        outcome
                    }
                },
                async move { crate::stopped(&mut stop).await },
            )
            .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &[&str]) -> Vec<&'static str> {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        select(&spec).unwrap().iter().map(|d| d.alias).collect()
    }

    #[test]
    fn controllers_flag_selects_like_upstream() {
        assert_eq!(names(&["*"]).len(), ALL.len());
        assert_eq!(
            names(&["replicaset,deployment"]),
            ["replicaset", "deployment"]
        );
        assert_eq!(
            names(&["*", "-job", "-cronjob-controller"]).len(),
            ALL.len() - 2
        );
        assert_eq!(names(&["statefulset-controller"]), ["statefulset"]);
        assert!(names(&[]).is_empty());
        let err = select(&["replicaset,nope".to_string()]).unwrap_err();
        assert_eq!(err, UnknownController("nope".into()));
        assert!(err.to_string().contains("known: replicaset"), "{err}");
    }
}
