//! `/healthz`, `/livez`, `/readyz` and `/metrics` answer on the API port.

use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::TestApiserver;

async fn get(server: &TestApiserver, path: &str) -> (u16, String) {
    let running = server.running();
    rkube_testing::https_get(running.addr, &running.tls.ca_pem, path)
        .await
        .expect("https get")
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestApiserver::start().await;
    for path in ["/healthz", "/livez", "/readyz"] {
        let (code, body) = get(&server, path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.contains("ok"), "{path}: {body}");
    }
    let mut c = server.grpc();
    let _watch = c
        .watch(v1::WatchRequest {
            resource: Some(ResourceRef::new("", "v1", "pods", "")),
            options: None,
        })
        .await
        .expect("watch");
    c.get(v1::GetRequest {
        resource: Some(ResourceRef::new("", "v1", "namespaces", "")),
        name: "default".into(),
    })
    .await
    .expect("get");
    let (code, metrics) = get(&server, "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "rkube_apiserver_requests_total{verb=\"get\",resource=\"namespaces\",code=\"200\"} 1",
        "rkube_apiserver_request_duration_seconds_count{verb=\"get\",resource=\"namespaces\"} 1",
        "rkube_apiserver_watchers{resource=\"pods\"} 1",
        // Four system namespaces, two system priority classes, and the kubernetes Service
        // with its Endpoints and EndpointSlice.
        "rkube_apiserver_store_revision 9",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }
    server.shutdown().await;
}
