//! `/healthz`, `/livez`, `/readyz` and `/metrics` answer on the API port.

use rkube_rpc::ResourcesClient;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::TestApiserver;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    rkube_testing::http_get(addr, path).await.expect("http get")
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestApiserver::start().await;
    let addr = server.running().addr;
    for path in ["/healthz", "/livez", "/readyz"] {
        let (code, body) = get(addr, path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.contains("ok"), "{path}: {body}");
    }
    let mut c = ResourcesClient::connect(server.endpoint())
        .await
        .expect("connect");
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
    let (code, metrics) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "rkube_apiserver_requests_total{verb=\"get\",resource=\"namespaces\",code=\"200\"} 1",
        "rkube_apiserver_request_duration_seconds_count{verb=\"get\",resource=\"namespaces\"} 1",
        "rkube_apiserver_watchers{resource=\"pods\"} 1",
        "rkube_apiserver_store_revision 4",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }
    server.shutdown().await;
}
