//! A controller never hot-loops: once a cluster with one of each workload has converged,
//! the controllers write nothing while nothing changes.
//!
//! The test converges a Deployment, a Service, a Job, a DaemonSet and a StatefulSet, then
//! watches every kind the controllers write for a fixed window and counts the events. The
//! window is a measurement, not a wait for state: hot loops write many times a second, so
//! a few seconds of silence shows there is none. Leases (heartbeats) and Events (which the
//! recorder aggregates) are not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rkube_client::{Api, ListParams, WatchEvent, WatchParams};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(6);

const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: registry.local/app:v1
        ports:
        - name: http
          containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: http
---
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    metadata:
      annotations:
        fake.rkube.io/complete: "true"
    spec:
      restartPolicy: Never
      containers:
      - name: job
        image: registry.local/app:v1
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: agent
        image: registry.local/agent:v1
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
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
        image: registry.local/db:v1
"#;

/// The watched kinds: (group, version, plural).
const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "pods"),
    ("", "v1", "nodes"),
    ("", "v1", "services"),
    ("", "v1", "endpoints"),
    ("", "v1", "namespaces"),
    ("", "v1", "serviceaccounts"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "replicasets"),
    ("apps", "v1", "daemonsets"),
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "controllerrevisions"),
    ("batch", "v1", "jobs"),
    ("discovery.k8s.io", "v1", "endpointslices"),
];

async fn converged(cluster: &Cluster) -> Result<(), String> {
    let k = &cluster.kubectl;
    let get = |args: &'static [&'static str]| async move {
        let out = k.run(args).await?;
        serde_json::from_str::<Value>(&out).map_err(|e| e.to_string())
    };
    let d = get(&["get", "deploy", "web", "-o", "json"]).await?;
    if d["status"]["availableReplicas"] != 3 || d["status"]["updatedReplicas"] != 3 {
        return Err(format!("deployment status {}", d["status"]));
    }
    let j = get(&["get", "job", "once", "-o", "json"]).await?;
    if j["status"]["succeeded"] != 1 {
        return Err(format!("job status {}", j["status"]));
    }
    let ds = get(&["get", "ds", "agent", "-o", "json"]).await?;
    if ds["status"]["numberReady"] != 3 {
        return Err(format!("daemonset status {}", ds["status"]));
    }
    let ss = get(&["get", "sts", "db", "-o", "json"]).await?;
    if ss["status"]["readyReplicas"] != 2 {
        return Err(format!("statefulset status {}", ss["status"]));
    }
    let ep = get(&["get", "endpoints", "web", "-o", "json"]).await?;
    let addresses = ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
    if addresses != 3 {
        return Err(format!("endpoints {}", ep["subsets"]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_cluster_sees_no_writes() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    cluster.kubectl.apply(MANIFESTS).await;
    eventually("every workload converged", WAIT, || converged(&cluster)).await;

    // Watch from the current revision of each kind.
    let writes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut watchers = Vec::new();
    for (group, version, plural) in KINDS {
        let api: Api<Value> = Api::dynamic(cluster.client(), group, version, plural, "");
        let rv = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .resource_version;
        let stream = api
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch");
        let writes = writes.clone();
        let seen = seen.clone();
        watchers.push(tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(ev)) = stream.next().await {
                let obj = match ev {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
                    _ => continue,
                };
                writes.fetch_add(1, Ordering::Relaxed);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                    "{plural} {}/{}",
                    obj["metadata"]["namespace"].as_str().unwrap_or_default(),
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                ));
            }
        }));
    }
    tokio::time::sleep(WINDOW).await;
    for w in watchers {
        w.abort();
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        writes.load(Ordering::Relaxed),
        0,
        "writes while idle for {WINDOW:?}: {seen:?}"
    );
}
