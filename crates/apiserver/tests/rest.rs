//! The REST face against hostile and unusual requests: every refusal is a `Status`, nothing
//! is stored, and the server stays up.

use rkube_testing::{HttpsConn, TestApiserver};
use serde_json::{Value, json};

async fn conn(server: &TestApiserver) -> HttpsConn {
    let running = server.running();
    HttpsConn::connect(running.addr, &running.tls.ca_pem, None)
        .await
        .expect("connect")
}

fn status(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(v["kind"], "Status", "{v}");
    v
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn configmap_count(c: &mut HttpsConn) -> usize {
    let (code, body) = c.request("GET", CMS, &[], &[]).await.expect("list");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_slice(&body).expect("json");
    v["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_yaml_alias_bomb_is_refused() {
    let server = TestApiserver::start().await;
    let mut c = conn(&server).await;
    let mut doc = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n  big: &big \"{}\"\n  copies: [",
        "x".repeat(100 * 1024)
    );
    doc.push_str(&vec!["*big"; 1000].join(", "));
    doc.push_str("]\n");
    let (code, body) = c
        .request(
            "POST",
            CMS,
            &[("Content-Type", "application/yaml")],
            doc.as_bytes(),
        )
        .await
        .expect("request");
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(
        status(&body)["message"]
            .as_str()
            .expect("message")
            .contains("expands past")
    );
    let (code, _) = c
        .request(
            "PATCH",
            &format!("{CMS}/bomb?fieldManager=me"),
            &[("Content-Type", "application/apply-patch+yaml")],
            doc.as_bytes(),
        )
        .await
        .expect("request");
    assert_eq!(code, 400, "server-side apply refuses it too");
    assert_eq!(configmap_count(&mut c).await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_get_a_413_status() {
    let server = TestApiserver::start().await;
    let mut c = conn(&server).await;
    // Over the 1.5 MiB object limit, under the transport's body limit (which answers the
    // same Status before reading a larger body).
    let big = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big"}, "data": {"k": "x".repeat(2 * 1024 * 1024)}}))
    .expect("json");
    let (code, body) = c
        .request("POST", CMS, &[JSON], &big)
        .await
        .expect("request");
    assert_eq!(code, 413);
    assert_eq!(status(&body)["reason"], "RequestEntityTooLarge");
    server.shutdown().await;
}

#[tokio::test]
async fn deeply_nesting_json_patches_are_refused() {
    let server = TestApiserver::start().await;
    let mut c = conn(&server).await;
    let rev = serde_json::to_vec(
        &json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "deep"}, "revision": 1, "data": {}}),
    )
    .expect("json");
    let path = "/apis/apps/v1/namespaces/default/controllerrevisions";
    let (code, _) = c
        .request("POST", path, &[JSON], &rev)
        .await
        .expect("create");
    assert_eq!(code, 201);
    // 150 operations, each one level deeper: /data/a, /data/a/a, ...
    let ops: Vec<Value> = (1..=150)
        .map(|i| json!({"op": "add", "path": format!("/data{}", "/a".repeat(i)), "value": {}}))
        .collect();
    let (code, body) = c
        .request(
            "PATCH",
            &format!("{path}/deep"),
            &[("Content-Type", "application/json-patch+json")],
            &serde_json::to_vec(&ops).expect("json"),
        )
        .await
        .expect("patch");
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));
    assert!(
        status(&body)["message"]
            .as_str()
            .expect("message")
            .contains("deeper than")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn namespaced_kinds_are_not_created_or_deleted_cluster_wide() {
    let server = TestApiserver::start().await;
    let mut c = conn(&server).await;
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}})).expect("json");
    let (code, _) = c
        .request("POST", "/api/v1/configmaps", &[JSON], &body)
        .await
        .expect("post");
    assert_eq!(code, 405);
    let (code, _) = c
        .request("DELETE", "/api/v1/configmaps", &[], &[])
        .await
        .expect("delete");
    assert_eq!(code, 405);
    assert_eq!(configmap_count(&mut c).await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_and_strict_field_validation_store_nothing() {
    let server = TestApiserver::start().await;
    let mut c = conn(&server).await;
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "colour": "blue"})).expect("json");
    let (code, created) = c
        .request("POST", &format!("{CMS}?dryRun=All"), &[JSON], &body)
        .await
        .expect("dry run");
    assert_eq!(code, 201);
    let created: Value = serde_json::from_slice(&created).expect("json");
    assert!(
        created.get("colour").is_none(),
        "unknown fields are dropped: {created}"
    );
    let (code, body_out) = c
        .request(
            "POST",
            &format!("{CMS}?fieldValidation=Strict"),
            &[JSON],
            &body,
        )
        .await
        .expect("strict");
    assert_eq!(code, 400);
    assert!(
        status(&body_out)["message"]
            .as_str()
            .expect("message")
            .contains("unknown field \"colour\"")
    );
    let (code, _) = c
        .request("POST", &format!("{CMS}?dryRun=Some"), &[JSON], &body)
        .await
        .expect("bad dry run");
    assert_eq!(code, 400);
    assert_eq!(configmap_count(&mut c).await, 0, "nothing stored");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_subresources_do_not_grow_the_metrics() {
    let server = TestApiserver::start().await;
    let mut c = conn(&server).await;
    for i in 0..5 {
        let (code, body) = c
            .request(
                "GET",
                &format!("/api/v1/namespaces/default/pods/p/random-{i}"),
                &[],
                &[],
            )
            .await
            .expect("request");
        assert_eq!(code, 404);
        status(&body);
    }
    let (_, metrics) = c
        .request("GET", "/metrics", &[], &[])
        .await
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        !metrics.contains("random-"),
        "client paths leaked into labels:\n{metrics}"
    );
    assert!(metrics.contains("resource=\"pods/unknown\""), "{metrics}");
    server.shutdown().await;
}
