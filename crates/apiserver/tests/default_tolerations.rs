//! The DefaultTolerationSeconds admission plugin, through the API: new pods tolerate the
//! not-ready and unreachable `NoExecute` taints for 300 s unless they say otherwise.

use k8s_openapi::api::core::v1::Pod;
use rkube_client::{Api, Patch};
use rkube_testing::TestApiserver;
use serde_json::json;

fn pod(name: &str, tolerations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "registry.local/app:v1"}],
            "tolerations": tolerations,
        },
    }))
    .expect("pod")
}

/// The pod's tolerations as (key, effect, tolerationSeconds).
fn tolerations(pod: &Pod) -> Vec<(String, String, Option<i64>)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t.key.unwrap_or_default(),
                t.effect.unwrap_or_default(),
                t.toleration_seconds,
            )
        })
        .collect()
}

fn default(key: &str) -> (String, String, Option<i64>) {
    (key.to_string(), "NoExecute".to_string(), Some(300))
}

#[tokio::test]
async fn new_pods_tolerate_node_failures_for_five_minutes_unless_they_say_otherwise() {
    let server = TestApiserver::start().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");

    let plain = pods
        .create(&pod("plain", json!(null)))
        .await
        .expect("create");
    assert_eq!(
        tolerations(&plain),
        [
            default("node.kubernetes.io/not-ready"),
            default("node.kubernetes.io/unreachable")
        ]
    );
    let stored = pods.get("plain").await.expect("get");
    assert_eq!(
        tolerations(&stored),
        tolerations(&plain),
        "the defaults are stored"
    );
    assert!(
        stored
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .expect("tolerations")
            .iter()
            .all(|t| t.operator.as_deref() == Some("Exists"))
    );

    let own = pods
        .create(&pod(
            "own",
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 2}]),
        ))
        .await
        .expect("create");
    assert_eq!(
        tolerations(&own),
        [
            (
                "node.kubernetes.io/unreachable".to_string(),
                "NoExecute".to_string(),
                Some(2)
            ),
            default("node.kubernetes.io/not-ready"),
        ],
        "the pod's own toleration wins, the missing one is added"
    );

    let everything = pods
        .create(&pod("everything", json!([{"operator": "Exists"}])))
        .await
        .expect("create");
    assert_eq!(
        tolerations(&everything),
        [(String::new(), String::new(), None)],
        "a toleration of every taint needs no defaults"
    );

    // Later writes leave the tolerations as they are.
    let patched = pods
        .patch(
            "plain",
            &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
        )
        .await
        .expect("patch");
    assert_eq!(tolerations(&patched), tolerations(&plain));
    server.shutdown().await;
}

#[tokio::test]
async fn the_default_seconds_follow_the_apiserver_options() {
    let options = rkube_testing::Options {
        default_tolerations: rkube_apiserver::objects::default_tolerations::Seconds {
            not_ready: 10,
            unreachable: 20,
        },
        ..Default::default()
    };
    let server = TestApiserver::start_with(options, false).await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(&pod("short", json!(null)))
        .await
        .expect("create");
    assert_eq!(
        tolerations(&created),
        [
            (
                "node.kubernetes.io/not-ready".to_string(),
                "NoExecute".to_string(),
                Some(10)
            ),
            (
                "node.kubernetes.io/unreachable".to_string(),
                "NoExecute".to_string(),
                Some(20)
            )
        ]
    );
}
