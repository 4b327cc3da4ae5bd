//! The StatefulSet controller end to end: ordered creation and scale down, parallel
//! creation, a partitioned rolling update, and `kubectl rollout` status, history and undo.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, ListParams};
use rkube_controller_manager::pods;
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;

const WAIT: Duration = Duration::from_secs(40);

/// One pod event as a test sees it.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    deleted: bool,
    deleting: bool,
    ready: bool,
    image: String,
}

/// Every pod event of `selector` in `default`, in watch order.
struct PodLog {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodLog {
    fn start(cluster: &Cluster, selector: &str) -> Self {
        let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
        let config = watcher::Config {
            label_selector: Some(selector.to_string()),
            ..Default::default()
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let stream = watcher::watcher(api, config);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let (pod, deleted) = match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => (p, false),
                    Ok(Event::Delete(p)) => (p, true),
                    _ => continue,
                };
                let image = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Seen {
                        name: pod.metadata.name.clone().unwrap_or_default(),
                        deleted,
                        deleting: pod.metadata.deletion_timestamp.is_some(),
                        ready: pods::is_ready(&pod),
                        image,
                    });
            }
        });
        PodLog { seen, task }
    }

    fn events(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The index of the first event of `name` that `pred` accepts.
    fn first(&self, name: &str, pred: impl Fn(&Seen) -> bool) -> Option<usize> {
        self.events().iter().position(|s| s.name == name && pred(s))
    }
}

fn statefulset(replicas: i32, policy: &str, image: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: {replicas}
  podManagementPolicy: {policy}
  serviceName: web
  selector:
    matchLabels:
      app: web
{extra_spec}  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: {image}
"#
    )
}

async fn web_pods(cluster: &Cluster) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let mut pods = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods
}

/// `name=image` of every live web pod, sorted by name.
async fn images(cluster: &Cluster) -> Vec<String> {
    web_pods(cluster)
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let image = p.spec.as_ref().and_then(|s| s.containers[0].image.clone());
            format!(
                "{}={}",
                p.metadata.name.as_deref().unwrap_or_default(),
                image.unwrap_or_default()
            )
        })
        .collect()
}

async fn wait_ready(cluster: &Cluster, replicas: i32) {
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), "default");
    eventually(
        &format!("statefulset web with {replicas} ready replicas"),
        WAIT,
        || async {
            let set = sets.get("web").await.map_err(|e| e.to_string())?;
            let status = set.status.clone().unwrap_or_default();
            if status.ready_replicas.unwrap_or(0) == replicas && status.replicas == replicas {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
}

async fn rollout_status(cluster: &Cluster) -> String {
    cluster
        .kubectl
        .run(&["rollout", "status", "statefulset/web", "--timeout=40s"])
        .await
        .unwrap_or_else(|e| panic!("rollout status: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_in_order_and_scales_down_from_the_highest_ordinal() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let log = PodLog::start(&cluster, "app=web");
    let claims = "  volumeClaimTemplates:\n  - metadata:\n      name: www\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources:\n        requests:\n          storage: 1Gi\n";
    cluster
        .kubectl
        .apply(&statefulset(
            3,
            "OrderedReady",
            "registry.local/web:v1",
            claims,
        ))
        .await;
    wait_ready(&cluster, 3).await;
    let out = rollout_status(&cluster).await;
    assert!(out.contains("complete"), "{out}");

    // Each pod was created only after the one before it was Ready.
    for i in 1..3 {
        let created = log
            .first(&format!("web-{i}"), |_| true)
            .unwrap_or_else(|| panic!("web-{i} never seen: {:?}", log.events()));
        let previous_ready = log.first(&format!("web-{}", i - 1), |s| s.ready);
        assert!(
            previous_ready.is_some_and(|r| r < created),
            "web-{i} created (event {created}) before web-{} was ready ({previous_ready:?}): {:?}",
            i - 1,
            log.events()
        );
    }

    // Identity and storage.
    let pods = web_pods(&cluster).await;
    let names: Vec<_> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for (i, pod) in pods.iter().enumerate() {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels["statefulset.kubernetes.io/pod-name"],
            format!("web-{i}")
        );
        assert_eq!(labels["apps.kubernetes.io/pod-index"], i.to_string());
        assert!(
            labels["controller-revision-hash"].starts_with("web-"),
            "{labels:?}"
        );
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname, Some(format!("web-{i}")));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let volume = spec
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == "www");
        assert_eq!(
            volume
                .and_then(|v| v.persistent_volume_claim)
                .map(|c| c.claim_name),
            Some(format!("www-web-{i}"))
        );
    }
    // Converged, the controller writes nothing more. Absence can only be seen over a window.
    let versions = || async {
        let json = cluster
            .kubectl
            .json(&["get", "statefulsets,pods,controllerrevisions,pvc"])
            .await;
        json["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}@{}",
                    i["kind"], i["metadata"]["name"], i["metadata"]["resourceVersion"]
                )
            })
            .collect::<Vec<_>>()
    };
    let before = versions().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(versions().await, before, "an idle StatefulSet is rewritten");

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), "default");
    for i in 0..3 {
        let claim = claims
            .get(&format!("www-web-{i}"))
            .await
            .expect("claim exists");
        assert_eq!(claim.metadata.labels.unwrap_or_default()["app"], "web");
    }

    // Scale down: web-2 goes (entirely) before web-1 starts going.
    cluster
        .kubectl
        .run(&["scale", "statefulset/web", "--replicas=1"])
        .await
        .expect("scale");
    eventually("only web-0 left", WAIT, || async {
        let names: Vec<_> = web_pods(&cluster)
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        if names == ["web-0"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    let web2_gone = log.first("web-2", |s| s.deleted).expect("web-2 deleted");
    let web1_deleting = log
        .first("web-1", |s| s.deleting || s.deleted)
        .expect("web-1 deleted");
    assert!(
        web2_gone < web1_deleting,
        "web-1 went before web-2 was gone: {:?}",
        log.events()
    );
    wait_ready(&cluster, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_every_pod_without_waiting_for_readiness() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    // No node has this label, so no pod ever runs: only Parallel gets past web-0.
    let pending = "  minReadySeconds: 0\n";
    let yaml = statefulset(3, "Parallel", "registry.local/web:v1", pending).replace(
        "      containers:",
        "      nodeSelector:\n        nowhere: \"true\"\n      containers:",
    );
    cluster.kubectl.apply(&yaml).await;
    eventually("web-0, web-1 and web-2 created", WAIT, || async {
        let names: Vec<_> = web_pods(&cluster)
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        if names == ["web-0", "web-1", "web-2"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), "default");
    eventually("status counts 3 unready replicas", WAIT, || async {
        let status = sets
            .get("web")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        if status.replicas == 3 && status.ready_replicas.unwrap_or(0) == 0 {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_rolling_update_then_undo() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let partition =
        "  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: 1\n";
    cluster
        .kubectl
        .apply(&statefulset(
            3,
            "OrderedReady",
            "registry.local/web:v1",
            partition,
        ))
        .await;
    wait_ready(&cluster, 3).await;
    rollout_status(&cluster).await;

    let log = PodLog::start(&cluster, "app=web");
    cluster
        .kubectl
        .run(&[
            "set",
            "image",
            "statefulset/web",
            "web=registry.local/web:v2",
        ])
        .await
        .expect("set image");
    let want = [
        "web-0=registry.local/web:v1",
        "web-1=registry.local/web:v2",
        "web-2=registry.local/web:v2",
    ];
    eventually("web-2 and web-1 updated, web-0 kept", WAIT, || async {
        let now = images(&cluster).await;
        if now == want {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    let out = rollout_status(&cluster).await;
    assert!(out.contains("partitioned roll out complete"), "{out}");
    let web2_updated = log
        .first("web-2", |s| s.image.ends_with(":v2") && s.ready)
        .expect("web-2 ran v2");
    let web1_deleted = log
        .first("web-1", |s| s.deleting || s.deleted)
        .expect("web-1 replaced");
    assert!(
        web2_updated < web1_deleted,
        "web-1 was replaced before web-2 was ready at v2: {:?}",
        log.events()
    );
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), "default");
    let status = sets
        .get("web")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    assert_eq!(status.updated_replicas, Some(2), "{status:?}");
    assert_ne!(status.current_revision, status.update_revision);
    assert!(
        log.first("web-0", |s| s.deleting || s.deleted).is_none(),
        "web-0 untouched"
    );

    // The rest of the rollout.
    cluster
        .kubectl
        .run(&[
            "patch",
            "statefulset/web",
            "-p",
            r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
        ])
        .await
        .expect("patch partition");
    eventually("every pod at v2", WAIT, || async {
        let now = images(&cluster).await;
        if now.iter().all(|i| i.ends_with(":v2")) && now.len() == 3 {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    rollout_status(&cluster).await;
    eventually("the update revision became current", WAIT, || async {
        let status = sets
            .get("web")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        if status.current_revision == status.update_revision && status.current_replicas == Some(3) {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;

    let history = cluster
        .kubectl
        .run(&["rollout", "history", "statefulset/web"])
        .await
        .expect("rollout history");
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let revision1 = cluster
        .kubectl
        .run(&["rollout", "history", "statefulset/web", "--revision=1"])
        .await
        .expect("rollout history --revision=1");
    assert!(revision1.contains("registry.local/web:v1"), "{revision1}");

    cluster
        .kubectl
        .run(&["rollout", "undo", "statefulset/web"])
        .await
        .expect("rollout undo");
    eventually("every pod back at v1", WAIT, || async {
        let now = images(&cluster).await;
        if now.iter().all(|i| i.ends_with(":v1")) && now.len() == 3 {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    rollout_status(&cluster).await;
    // Undo reuses the v1 revision with the next number.
    let revisions = cluster
        .kubectl
        .json(&["get", "controllerrevisions", "-l", "app=web"])
        .await;
    let mut numbers: Vec<(i64, String)> = revisions["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let image = r["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (r["revision"].as_i64().unwrap_or(0), image)
        })
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [
            (2, "registry.local/web:v2".to_string()),
            (3, "registry.local/web:v1".to_string())
        ],
        "{revisions}"
    );
}
