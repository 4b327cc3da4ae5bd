//! The controller manager as a daemon: health, readiness and metrics endpoints, leader
//! election, and the test cluster's fake kubelets it relies on in the other tests.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use rkube_client::Api;
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_readiness_and_per_controller_metrics() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let cm = cluster
        .controller_manager
        .as_ref()
        .expect("controller manager");
    assert_eq!(cm.http_get("/healthz").await.expect("healthz"), "ok");
    eventually("the controller manager ready", WAIT, || async {
        cm.http_get("/readyz").await.map_err(|e| e.to_string())
    })
    .await;
    // Each controller registers its queue's metrics when it starts, which can be just
    // after /readyz turns ok (a CI run under load saw an empty exposition).
    eventually("per-controller workqueue metrics", WAIT, || async {
        let metrics = cm.http_get("/metrics").await.map_err(|e| e.to_string())?;
        for controller in [
            "replicaset-controller",
            "deployment-controller",
            "job-controller",
        ] {
            let depth = format!(r#"workqueue_depth{{name="{controller}"}}"#);
            if !metrics.contains(&depth) {
                return Err(format!("no {depth} in:\n{metrics}"));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kubelets_run_bound_pods_and_finish_their_deletion() {
    // No controllers or scheduler: this checks the test fake itself.
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        scheduler: false,
        controller_manager: false,
        ..Default::default()
    })
    .await;
    cluster
        .kubectl
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: node-1\n  containers:\n  - name: c\n    image: registry.local/app:v1\n",
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    eventually("pod p running and ready", WAIT, || async {
        let pod = pods.get("p").await.map_err(|e| e.to_string())?;
        match rkube_controller_manager::pods::is_ready(&pod) {
            true => Ok(()),
            false => Err(format!("{:?}", pod.status)),
        }
    })
    .await;
    cluster
        .kubectl
        .run(&["delete", "pod", "p", "--wait=false"])
        .await
        .expect("delete");
    eventually("pod p gone", WAIT, || async {
        match pods.get_opt("p").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("still there: {:?}", p.metadata.deletion_timestamp)),
        }
    })
    .await;
}
