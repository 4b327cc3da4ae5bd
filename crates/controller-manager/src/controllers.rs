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

/// A `--controllers` value rkube cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownController {
    /// A name that is neither rkube's nor upstream's.
    #[error("unknown controller {0:?} in --controllers (known: {known})", known = known())]
    Unknown(String),
    /// An upstream controller that runs inside another one here, disabled alone or enabled
    /// with its host disabled.
    #[error(
        "--controllers: {0} runs inside {1} in rkube and cannot be switched apart from it; \
         enable or disable {1} as a whole"
    )]
    Folded(&'static str, &'static str),
}

fn known() -> String {
    ALL.iter().map(|d| d.alias).collect::<Vec<_>>().join(", ")
}

/// Upstream controllers that run inside another one here: (upstream name, alias, the
/// controller that does their work). Naming one enables its host; disabling one alone, or
/// enabling one while disabling its host, is refused at start-up rather than ignored.
pub const FOLDED: &[(&str, &str, &str)] = &[
    (
        "taint-eviction-controller",
        "taint-eviction-controller",
        "node-lifecycle-controller",
    ),
    (
        "ttl-after-finished-controller",
        "ttl-after-finished",
        "job-controller",
    ),
];

/// Upstream controllers (names and aliases) that rkube does not have: accepted in
/// `--controllers`, so upstream command lines (kubeadm's `*,bootstrapsigner,tokencleaner`)
/// still start, and ignored with a note.
pub const NOT_IMPLEMENTED: &[&str] = &[
    "bootstrap-signer-controller",
    "bootstrapsigner",
    "certificatesigningrequest-approving-controller",
    "csrapproving",
    "certificatesigningrequest-cleaner-controller",
    "csrcleaner",
    "certificatesigningrequest-signing-controller",
    "csrsigning",
    "cloud-node-lifecycle-controller",
    "cloud-node-lifecycle",
    "clusterrole-aggregation-controller",
    "clusterrole-aggregation",
    "disruption-controller",
    "disruption",
    "endpointslice-mirroring-controller",
    "endpointslicemirroring",
    "ephemeral-volume-controller",
    "ephemeral-volume",
    "horizontal-pod-autoscaler-controller",
    "horizontalpodautoscaling",
    "legacy-serviceaccount-token-cleaner-controller",
    "legacy-service-account-token-cleaner",
    "node-route-controller",
    "route",
    "persistentvolume-attach-detach-controller",
    "attachdetach",
    "persistentvolume-binder-controller",
    "persistentvolume-binder",
    "persistentvolume-expander-controller",
    "persistentvolume-expander",
    "persistentvolume-protection-controller",
    "pv-protection",
    "persistentvolumeclaim-protection-controller",
    "pvc-protection",
    "replicationcontroller-controller",
    "replicationcontroller",
    "resourceclaim-controller",
    "resourceclaim",
    "resourcequota-controller",
    "resourcequota",
    "root-ca-certificate-publisher-controller",
    "root-ca-cert-publisher",
    "service-cidr-controller",
    "service-lb-controller",
    "service",
    "serviceaccount-token-controller",
    "serviceaccount-token",
    "storageversion-garbage-collector-controller",
    "storage-version-migrator-controller",
    "token-cleaner-controller",
    "tokencleaner",
    "ttl-controller",
    "ttl",
    "validatingadmissionpolicy-status-controller",
    "storage-version-gc",
    "resource-claim-controller",
    "service-ca-certificate-publisher-controller",
    "service-ca-cert-publisher",
    "selinux-warning-controller",
    "device-taint-eviction-controller",
    "kube-apiserver-serving-clustertrustbundle-publisher-controller",
    "podcertificaterequest-cleaner-controller",
    "volumeattributesclass-protection-controller",
];

/// One item of `--controllers`, resolved.
enum Item {
    Star,
    On(&'static str),
    Off(&'static str),
    /// An upstream controller folded into a host here, enabled.
    FoldedOn(&'static str, &'static str),
    /// Accepted and ignored, with the reason.
    Ignored(String),
}

fn items(spec: &[String]) -> Result<Vec<Item>, UnknownController> {
    let find = |name: &str| ALL.iter().find(|d| d.name == name || d.alias == name);
    let folded = |name: &str| FOLDED.iter().find(|(n, a, _)| *n == name || *a == name);
    let mut out = Vec::new();
    for item in spec.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if item.is_empty() {
            continue;
        }
        if item == "*" {
            out.push(Item::Star);
            continue;
        }
        let (name, on) = match item.strip_prefix('-') {
            Some(name) => (name, false),
            None => (item, true),
        };
        out.push(if let Some(d) = find(name) {
            if on {
                Item::On(d.name)
            } else {
                Item::Off(d.name)
            }
        } else if let Some((upstream, _, host)) = folded(name) {
            if on {
                Item::FoldedOn(upstream, host)
            } else {
                return Err(UnknownController::Folded(upstream, host));
            }
        } else if NOT_IMPLEMENTED.contains(&name) {
            Item::Ignored(format!("{name} is not implemented by rkube; ignored"))
        } else {
            return Err(UnknownController::Unknown(name.to_string()));
        });
    }
    Ok(out)
}

/// The controllers `spec` selects (upstream's `--controllers` syntax), in [`ALL`]'s order.
pub fn select(spec: &[String]) -> Result<Vec<&'static Descriptor>, UnknownController> {
    let mut star = false;
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut folded = Vec::new();
    for item in items(spec)? {
        match item {
            Item::Star => star = true,
            Item::On(name) => on.push(name),
            Item::Off(name) => off.push(name),
            Item::FoldedOn(upstream, host) => {
                on.push(host);
                folded.push((upstream, host));
            }
            Item::Ignored(_) => {}
        }
    }
    if let Some((upstream, host)) = folded.into_iter().find(|(_, h)| off.contains(h)) {
        return Err(UnknownController::Folded(upstream, host));
    }
    Ok(ALL
        .iter()
        .filter(|d| !off.contains(&d.name) && (on.contains(&d.name) || (star && d.default_enabled)))
        .collect())
}

/// What [`select`] ignored in `spec`, one sentence each, for the daemon to log.
pub fn ignored(spec: &[String]) -> Vec<String> {
    items(spec)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match i {
            Item::Ignored(why) => Some(why),
            _ => None,
        })
        .collect()
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
        // kubeadm's value: the upstream-only controllers are accepted and ignored.
        let kubeadm = ["*,bootstrapsigner,tokencleaner".to_string()];
        assert_eq!(select(&kubeadm).unwrap().len(), ALL.len());
        assert_eq!(ignored(&kubeadm).len(), 2);
        // Folded controllers enable their host and cannot be disabled alone.
        assert_eq!(names(&["taint-eviction-controller"]), ["nodelifecycle"]);
        assert_eq!(names(&["ttl-after-finished"]), ["job"]);
        for spec in [
            "*,-ttl-after-finished-controller",
            "ttl-after-finished,-job-controller",
        ] {
            assert_eq!(
                select(&[spec.to_string()]).unwrap_err(),
                UnknownController::Folded("ttl-after-finished-controller", "job-controller"),
                "{spec}"
            );
        }
        let err = select(&["replicaset,nope".to_string()]).unwrap_err();
        assert_eq!(err, UnknownController::Unknown("nope".into()));
        assert!(err.to_string().contains("known: replicaset"), "{err}");
    }
}
