//! The deployment controller end to end: a control plane (apiserver, scheduler and
//! controller-manager processes, fake kubelets) driven with the stock kubectl — create,
//! scale, `set image` rolling updates watched step by step, `rollout status`, `history`,
//! `undo`, `pause`/`resume`, Recreate, the revision history limit and progress deadlines.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use rkube_client::{Api, ListParams, WatchEvent, WatchParams};
use rkube_controller_manager::controllers;
use rkube_controller_manager::informer::Informers;
use rkube_controller_manager::metrics::Metrics;
use rkube_controller_manager::ownership::is_controlled_by;
use rkube_controller_manager::pods::{is_active, is_ready};
use rkube_controller_manager::{Clock, Context, Settings, daemon};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

async fn start() -> Cluster {
    Cluster::start(ClusterOptions {
        nodes: 2,
        ..Default::default()
    })
    .await
}

/// `kubectl create deployment <name> --image=<image> --replicas=<n>` (kubectl sends it as
/// protobuf).
async fn create_deployment(cluster: &Cluster, name: &str, image: &str, replicas: u32) {
    let image = format!("--image={image}");
    let replicas = format!("--replicas={replicas}");
    cluster
        .kubectl
        .run(&["create", "deployment", name, &image, &replicas])
        .await
        .expect("create deployment");
}

async fn get_deployment(cluster: &Cluster, name: &str) -> Result<Deployment, String> {
    let api: Api<Deployment> = Api::namespaced(cluster.client(), "default");
    api.get(name).await.map_err(|e| e.to_string())
}

/// The ReplicaSets the Deployment controls, oldest revision first.
async fn replica_sets(cluster: &Cluster, name: &str) -> Result<Vec<ReplicaSet>, String> {
    let d = get_deployment(cluster, name).await?;
    let uid = d.metadata.uid.unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut owned: Vec<ReplicaSet> = list
        .items
        .into_iter()
        .filter(|rs| is_controlled_by(&rs.metadata, &uid))
        .collect();
    owned.sort_by_key(|rs| revision(rs).parse::<i64>().unwrap_or(0));
    Ok(owned)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> &'a str {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .unwrap_or_default()
}

fn revision(rs: &ReplicaSet) -> &str {
    annotation(&rs.metadata, REVISION)
}

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or_default()
}

fn size(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn image(template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> String {
    template
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The active pods labelled `app=<app>`.
async fn active_pods(cluster: &Cluster, app: &str) -> Result<Vec<Pod>, String> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.into_iter().filter(is_active).collect())
}

/// Waits for `n` active, ready pods labelled `app=<app>`.
async fn ready_pods(cluster: &Cluster, app: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} ready {app} pods"), WAIT, || async {
        let pods = active_pods(cluster, app).await?;
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        if pods.len() == n && ready == n {
            Ok(pods)
        } else {
            Err(format!("{} active, {ready} ready", pods.len()))
        }
    })
    .await
}

async fn rollout_status(cluster: &Cluster, name: &str) -> Result<String, String> {
    cluster
        .kubectl
        .run(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=45s",
        ])
        .await
}

/// `condition type → (status, reason, message)` of the Deployment.
fn conditions(d: &Deployment) -> BTreeMap<String, (String, String, String)> {
    d.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| {
            (
                c.type_.clone(),
                (
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

fn reason(d: &Deployment, type_: &str) -> String {
    conditions(d)
        .get(type_)
        .map(|c| c.1.clone())
        .unwrap_or_default()
}

/// The messages of the Events with `reason` about the Deployment `name`.
async fn events(cluster: &Cluster, name: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(cluster.client(), "default");
    let list = api.list(&ListParams::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Deployment")
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect()
}

/// Watches the ReplicaSets and pods of `app` and checks the rolling update bounds at every
/// event: the ReplicaSets' sizes add up to at most `replicas + surge`, their available pods
/// (at most their size each) to at least `replicas - unavailable`, and there are at most
/// `replicas + surge` active pods.
struct Bounds {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Seen {
    violations: Vec<String>,
    /// name → (size, available).
    replica_sets: BTreeMap<String, (i32, i32)>,
    /// name → active.
    pods: BTreeMap<String, bool>,
    /// The most ReplicaSets of the app with a non-zero size at once.
    most_active_sets: usize,
    rs_events: usize,
    pod_events: usize,
}

impl Bounds {
    async fn watch(
        cluster: &Cluster,
        app: &str,
        replicas: i32,
        surge: i32,
        unavailable: i32,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let params = WatchParams::default().labels(&format!("app={app}"));
        let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
        let rs_stream = rs_api.watch(&params, "").await.expect("watch replicasets");
        let pod_api: Api<Pod> = Api::namespaced(cluster.client(), "default");
        let pod_stream = pod_api.watch(&params, "").await.expect("watch pods");

        let rs_seen = seen.clone();
        let rs_task = tokio::spawn(async move {
            futures::pin_mut!(rs_stream);
            while let Some(Ok(event)) = rs_stream.next().await {
                let mut seen = rs_seen.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    WatchEvent::Added(rs) | WatchEvent::Modified(rs) => {
                        seen.replica_sets
                            .insert(name(&rs).to_string(), (size(&rs), available(&rs)));
                    }
                    WatchEvent::Deleted(rs) => {
                        seen.replica_sets.remove(name(&rs));
                    }
                    _ => continue,
                }
                seen.rs_events += 1;
                let total: i32 = seen.replica_sets.values().map(|(s, _)| s).sum();
                let floor: i32 = seen.replica_sets.values().map(|(s, a)| (*a).min(*s)).sum();
                let active_sets = seen.replica_sets.values().filter(|(s, _)| *s > 0).count();
                seen.most_active_sets = seen.most_active_sets.max(active_sets);
                if total > replicas + surge {
                    let state = format!("{:?}", seen.replica_sets);
                    seen.violations.push(format!(
                        "replica sets sized {total} > {replicas} + {surge}: {state}"
                    ));
                }
                if floor < replicas - unavailable {
                    let state = format!("{:?}", seen.replica_sets);
                    seen.violations.push(format!(
                        "replica sets with {floor} available < {replicas} - {unavailable}: {state}"
                    ));
                }
            }
        });
        let pod_seen = seen.clone();
        let pod_task = tokio::spawn(async move {
            futures::pin_mut!(pod_stream);
            while let Some(Ok(event)) = pod_stream.next().await {
                let mut seen = pod_seen.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        let pod_name = p.metadata.name.clone().unwrap_or_default();
                        seen.pods.insert(pod_name, is_active(&p));
                    }
                    WatchEvent::Deleted(p) => {
                        seen.pods
                            .remove(p.metadata.name.as_deref().unwrap_or_default());
                    }
                    _ => continue,
                }
                seen.pod_events += 1;
                let active = seen.pods.values().filter(|a| **a).count();
                if active > (replicas + surge) as usize {
                    let state = format!("{:?}", seen.pods);
                    seen.violations.push(format!(
                        "{active} active pods > {replicas} + {surge}: {state}"
                    ));
                }
            }
        });
        Bounds {
            seen,
            tasks: vec![rs_task, pod_task],
        }
    }

    fn stop(self) -> Seen {
        for task in &self.tasks {
            task.abort();
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_out_scales_and_rolls_back_within_surge_and_availability() {
    let cluster = start().await;
    let k = &cluster.kubectl;
    create_deployment(&cluster, "web", "registry.local/app:v1", 4).await;
    let out = rollout_status(&cluster, "web").await.expect("v1 rolls out");
    assert!(out.contains("successfully rolled out"), "{out}");

    // One ReplicaSet named after the template hash, which it carries in its labels,
    // selector and template, with revision 1 and its sizes.
    let rss = replica_sets(&cluster, "web").await.expect("replica sets");
    assert_eq!(rss.len(), 1, "{rss:?}");
    let v1 = rss[0].clone();
    let hash = v1.metadata.labels.as_ref().unwrap()[HASH_LABEL].clone();
    assert_eq!(name(&v1), format!("web-{hash}"));
    assert!(
        (1..=10).contains(&hash.len())
            && hash
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{hash}"
    );
    let spec = v1.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()[HASH_LABEL],
        hash
    );
    let template_labels = spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(template_labels[HASH_LABEL], hash);
    assert_eq!(template_labels["app"], "web");
    assert_eq!(revision(&v1), "1");
    assert_eq!(
        annotation(&v1.metadata, "deployment.kubernetes.io/desired-replicas"),
        "4"
    );
    assert_eq!(
        annotation(&v1.metadata, "deployment.kubernetes.io/max-replicas"),
        "5"
    );
    let pods = ready_pods(&cluster, "web", 4).await;
    let v1_uid = v1.metadata.uid.clone().unwrap_or_default();
    for pod in &pods {
        assert!(
            is_controlled_by(&pod.metadata, &v1_uid),
            "{:?}",
            pod.metadata
        );
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[HASH_LABEL], hash);
    }
    let d = get_deployment(&cluster, "web").await.expect("deployment");
    assert_eq!(annotation(&d.metadata, REVISION), "1");
    let status = d.status.clone().unwrap_or_default();
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (Some(4), Some(4), Some(4), Some(4))
    );
    assert_eq!(reason(&d, "Available"), "MinimumReplicasAvailable");
    assert_eq!(reason(&d, "Progressing"), "NewReplicaSetAvailable");
    let scaled = events(&cluster, "web", "ScalingReplicaSet").await;
    let created = format!("Scaled up replica set {} from 0 to 4", name(&v1));
    assert!(scaled.contains(&created), "{scaled:?}");

    // Scaling up and down resizes the one ReplicaSet.
    k.run(&["scale", "deployment/web", "--replicas=6"])
        .await
        .expect("scale up");
    ready_pods(&cluster, "web", 6).await;
    k.run(&["scale", "deployment/web", "--replicas=4"])
        .await
        .expect("scale down");
    ready_pods(&cluster, "web", 4).await;
    rollout_status(&cluster, "web").await.expect("scaled");
    let rss = replica_sets(&cluster, "web").await.expect("replica sets");
    assert_eq!(rss.len(), 1, "scaling rolls nothing out: {rss:?}");
    assert_eq!(size(&rss[0]), 4);
    assert_eq!(
        annotation(
            &rss[0].metadata,
            "deployment.kubernetes.io/desired-replicas"
        ),
        "4"
    );

    // A rolling update with maxSurge 1 and maxUnavailable 1, watched event by event.
    k.run(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#,
    ])
    .await
    .expect("patch strategy");
    eventually("the strategy change observed", WAIT, || async {
        let d = get_deployment(&cluster, "web").await?;
        let observed = d.status.as_ref().and_then(|s| s.observed_generation);
        if observed == d.metadata.generation {
            Ok(())
        } else {
            Err(format!(
                "observed {observed:?} of {:?}",
                d.metadata.generation
            ))
        }
    })
    .await;
    let bounds = Bounds::watch(&cluster, "web", 4, 1, 1).await;
    k.run(&[
        "set",
        "image",
        "deployment/web",
        "app=registry.local/app:v2",
    ])
    .await
    .expect("set image");
    let out = rollout_status(&cluster, "web").await.expect("v2 rolls out");
    assert!(out.contains("successfully rolled out"), "{out}");
    ready_pods(&cluster, "web", 4).await;
    let seen = bounds.stop();
    assert!(
        seen.violations.is_empty(),
        "bounds broken: {:#?}",
        seen.violations
    );
    assert!(
        seen.most_active_sets >= 2 && seen.rs_events > 4 && seen.pod_events > 8,
        "the rollout went through intermediate states: {seen:?}"
    );

    let rss = replica_sets(&cluster, "web").await.expect("replica sets");
    assert_eq!(rss.len(), 2, "{rss:?}");
    let (old, new) = (&rss[0], &rss[1]);
    assert_eq!(name(old), name(&v1));
    assert_eq!((revision(old), size(old)), ("1", 0));
    assert_eq!((revision(new), size(new)), ("2", 4));
    assert_eq!(
        image(new.spec.as_ref().unwrap().template.as_ref()),
        "registry.local/app:v2"
    );
    let v2_name = name(new).to_string();
    let d = get_deployment(&cluster, "web").await.expect("deployment");
    assert_eq!(annotation(&d.metadata, REVISION), "2");
    let scaled = events(&cluster, "web", "ScalingReplicaSet").await;
    for expected in [
        format!("Scaled up replica set {v2_name} from 0 to 1"),
        format!("Scaled down replica set {} from 4 to 3", name(&v1)),
    ] {
        assert!(scaled.contains(&expected), "no {expected:?} in {scaled:?}");
    }

    // History lists both revisions; undo goes back to the v1 template and its ReplicaSet.
    let history = k
        .run(&["rollout", "history", "deployment/web"])
        .await
        .expect("history");
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    k.run(&["rollout", "undo", "deployment/web"])
        .await
        .expect("undo");
    rollout_status(&cluster, "web")
        .await
        .expect("undo rolls out");
    let rss = eventually("the v1 replica set reused at revision 3", WAIT, || async {
        let rss = replica_sets(&cluster, "web").await?;
        let summary: Vec<_> = rss
            .iter()
            .map(|rs| (name(rs).to_string(), revision(rs).to_string(), size(rs)))
            .collect();
        match summary.as_slice() {
            [(a, ra, 0), (b, rb, 4)]
                if *a == v2_name && ra == "2" && *b == name(&v1) && rb == "3" =>
            {
                Ok(rss)
            }
            _ => Err(format!("{summary:?}")),
        }
    })
    .await;
    assert_eq!(
        annotation(
            &rss[1].metadata,
            "deployment.kubernetes.io/revision-history"
        ),
        "1"
    );
    let d = get_deployment(&cluster, "web").await.expect("deployment");
    assert_eq!(
        image(d.spec.as_ref().map(|s| &s.template)),
        "registry.local/app:v1"
    );
    assert_eq!(annotation(&d.metadata, REVISION), "3");
    let pods = ready_pods(&cluster, "web", 4).await;
    for pod in &pods {
        assert!(
            is_controlled_by(&pod.metadata, &v1_uid),
            "{:?}",
            pod.metadata
        );
    }
    let history = k
        .run(&["rollout", "history", "deployment/web"])
        .await
        .expect("history");
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let cluster = start().await;
    let k = &cluster.kubectl;
    create_deployment(&cluster, "web", "registry.local/app:v1", 2).await;
    rollout_status(&cluster, "web").await.expect("v1 rolls out");

    k.run(&["rollout", "pause", "deployment/web"])
        .await
        .expect("pause");
    k.run(&[
        "set",
        "image",
        "deployment/web",
        "app=registry.local/app:v2",
    ])
    .await
    .expect("set image");
    eventually("the paused template change observed", WAIT, || async {
        let d = get_deployment(&cluster, "web").await?;
        let observed = d.status.as_ref().and_then(|s| s.observed_generation);
        if observed == d.metadata.generation && reason(&d, "Progressing") == "DeploymentPaused" {
            Ok(())
        } else {
            Err(format!(
                "observed {observed:?} of {:?}, {:?}",
                d.metadata.generation,
                conditions(&d)
            ))
        }
    })
    .await;
    let rss = replica_sets(&cluster, "web").await.expect("replica sets");
    assert_eq!(rss.len(), 1, "paused: no new replica set: {rss:?}");

    // Scaling still happens while paused.
    k.run(&["scale", "deployment/web", "--replicas=3"])
        .await
        .expect("scale");
    let pods = ready_pods(&cluster, "web", 3).await;
    let rss = replica_sets(&cluster, "web").await.expect("replica sets");
    assert_eq!((rss.len(), size(&rss[0])), (1, 3), "{rss:?}");
    for pod in &pods {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.local/app:v1")
        );
    }

    k.run(&["rollout", "resume", "deployment/web"])
        .await
        .expect("resume");
    let out = rollout_status(&cluster, "web").await.expect("v2 rolls out");
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = replica_sets(&cluster, "web").await.expect("replica sets");
    assert_eq!(rss.len(), 2, "{rss:?}");
    assert_eq!((size(&rss[0]), size(&rss[1])), (0, 3));
    assert_eq!(
        image(rss[1].spec.as_ref().unwrap().template.as_ref()),
        "registry.local/app:v2"
    );
    let d = get_deployment(&cluster, "web").await.expect("deployment");
    assert_eq!(reason(&d, "Progressing"), "NewReplicaSetAvailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_cannot_progress_exceeds_its_deadline() {
    let cluster = start().await;
    // No node has the label: the pods stay pending and never become ready.
    cluster
        .kubectl
        .apply(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
spec:
  replicas: 2
  progressDeadlineSeconds: 5
  selector:
    matchLabels:
      app: stuck
  template:
    metadata:
      labels:
        app: stuck
    spec:
      nodeSelector:
        disktype: none
      containers:
      - name: app
        image: registry.local/app:v1
"#,
        )
        .await;
    let err = rollout_status(&cluster, "stuck")
        .await
        .expect_err("rollout status fails");
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let d = get_deployment(&cluster, "stuck").await.expect("deployment");
    let conditions = conditions(&d);
    let (status, reason, message) = &conditions["Progressing"];
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ProgressDeadlineExceeded")
    );
    assert!(message.ends_with("has timed out progressing."), "{message}");
    assert_eq!(conditions["Available"].1, "MinimumReplicasUnavailable");
    let status = d.status.unwrap_or_default();
    assert_eq!(
        (status.replicas, status.unavailable_replicas),
        (Some(2), Some(2))
    );
}

/// Pod name → the template hash it runs, and every state where two hashes coexisted.
type HashesSeen = (BTreeMap<String, String>, Vec<String>);

const STUCK: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
spec:
  replicas: 2
  selector:
    matchLabels:
      app: stuck
  template:
    metadata:
      labels:
        app: stuck
    spec:
      nodeSelector:
        disktype: none
      containers:
      - name: app
        image: registry.local/app:v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_deadline_is_measured_on_the_controller_clock() {
    // The ReplicaSet and deployment controllers run in this process on a manual clock; the
    // default deadline of ten minutes passes when the test moves the clock.
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let clock = Clock::manual(Timestamp::now());
    let (stop, stop_rx) = watch::channel(false);
    let ctx = Context {
        client: cluster.client(),
        informers: Arc::new(Informers::default()),
        clock: clock.clone(),
        metrics: Arc::new(Metrics::new()),
        settings: Arc::new(Settings::default()),
        stop: stop_rx,
    };
    let selected = controllers::select(&["replicaset".into(), "deployment".into()])
        .expect("known controllers");
    tokio::spawn(async move { daemon::run(ctx, &selected, Arc::new(AtomicBool::new(true))).await });

    cluster.kubectl.apply(STUCK).await;
    eventually("the rollout under way", WAIT, || async {
        let d = get_deployment(&cluster, "stuck").await?;
        let replicas = d.status.as_ref().and_then(|s| s.replicas);
        let progressing = reason(&d, "Progressing");
        if replicas == Some(2) && progressing == "ReplicaSetUpdated" {
            Ok(())
        } else {
            Err(format!("replicas {replicas:?}, {:?}", conditions(&d)))
        }
    })
    .await;
    clock.advance(Duration::from_secs(602));
    eventually("the deadline exceeded", WAIT, || async {
        let d = get_deployment(&cluster, "stuck").await?;
        match conditions(&d).get("Progressing") {
            Some((status, reason, _))
                if status == "False" && reason == "ProgressDeadlineExceeded" =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_starts_new_pods_only_after_the_old_are_gone_and_keeps_limited_history() {
    let cluster = start().await;
    let manifest = |image: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: db
spec:
  replicas: 3
  revisionHistoryLimit: 1
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      containers:
      - name: db
        image: {image}
"#
        )
    };
    cluster
        .kubectl
        .apply(&manifest("registry.local/db:v1"))
        .await;
    rollout_status(&cluster, "db").await.expect("v1 rolls out");
    ready_pods(&cluster, "db", 3).await;

    // Every pod seen, by the template hash it runs: two hashes must never coexist.
    let seen: Arc<Mutex<HashesSeen>> = Arc::default();
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let stream = api
        .watch(&WatchParams::default().labels("app=db"), "")
        .await
        .expect("watch pods");
    let sink = seen.clone();
    let watcher = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            let mut seen = sink.lock().unwrap_or_else(PoisonError::into_inner);
            let (pods, violations) = &mut *seen;
            match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    let hash = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(HASH_LABEL))
                        .cloned()
                        .unwrap_or_default();
                    pods.insert(p.metadata.name.clone().unwrap_or_default(), hash);
                }
                WatchEvent::Deleted(p) => {
                    pods.remove(p.metadata.name.as_deref().unwrap_or_default());
                }
                _ => continue,
            }
            let hashes: std::collections::BTreeSet<&String> = pods.values().collect();
            if hashes.len() > 1 {
                let state = format!("{pods:?}");
                violations.push(state);
            }
        }
    });
    cluster
        .kubectl
        .apply(&manifest("registry.local/db:v2"))
        .await;
    rollout_status(&cluster, "db").await.expect("v2 rolls out");
    ready_pods(&cluster, "db", 3).await;
    watcher.abort();
    let (pods, violations) =
        std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    assert!(
        violations.is_empty(),
        "old and new pods at once: {violations:#?}"
    );
    assert_eq!(pods.len(), 3, "{pods:?}");

    // A third template: with a history limit of 1, revision 1's ReplicaSet goes.
    cluster
        .kubectl
        .apply(&manifest("registry.local/db:v3"))
        .await;
    rollout_status(&cluster, "db").await.expect("v3 rolls out");
    eventually(
        "two replica sets left (revisions 2 and 3)",
        WAIT,
        || async {
            let rss = replica_sets(&cluster, "db").await?;
            let revisions: Vec<&str> = rss.iter().map(revision).collect();
            if revisions == ["2", "3"] {
                Ok(())
            } else {
                Err(format!("{revisions:?}"))
            }
        },
    )
    .await;
}
