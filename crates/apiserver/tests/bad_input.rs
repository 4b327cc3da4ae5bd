//! Bad input gets the right Kubernetes error and changes nothing.

use rkube_rpc::ResourcesClient;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::TestApiserver;
use rkube_types::{ApiError, Reason};
use serde_json::json;
use tonic::transport::Channel;

async fn raw(server: &TestApiserver) -> ResourcesClient<Channel> {
    server.grpc()
}

fn configmaps() -> Option<ResourceRef> {
    Some(ResourceRef::new("", "v1", "configmaps", "default"))
}

async fn create(
    c: &mut ResourcesClient<Channel>,
    resource: Option<ResourceRef>,
    body: Vec<u8>,
) -> Result<serde_json::Value, ApiError> {
    c.create(v1::CreateRequest {
        resource,
        object: body.into(),
        ..Default::default()
    })
    .await
    .map(|r| serde_json::from_slice(&r.into_inner().object).expect("json response"))
    .map_err(|s| rkube_rpc::from_grpc(&s))
}

/// The number of ConfigMaps, and the store revision (which no refused request may move).
async fn count_configmaps(c: &mut ResourcesClient<Channel>) -> (usize, String) {
    let list = c
        .list(v1::ListRequest {
            resource: configmaps(),
            options: None,
        })
        .await
        .expect("list")
        .into_inner();
    (list.items.len(), list.resource_version)
}

fn cm(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": "v"}
    }))
    .expect("json")
}

fn expect_err(
    result: Result<serde_json::Value, ApiError>,
    code: u16,
    reason: Reason,
    what: &str,
) -> ApiError {
    match result {
        Ok(v) => panic!("{what}: expected {code} {reason:?}, got success: {v}"),
        Err(e) => {
            assert_eq!((e.code(), e.reason), (code, reason), "{what}: {e}");
            assert!(!e.message.is_empty(), "{what}: error has a message");
            e
        }
    }
}

#[tokio::test]
async fn malformed_and_mismatched_bodies_are_refused() {
    let server = TestApiserver::start().await;
    let mut c = raw(&server).await;
    let (_, revision_before) = count_configmaps(&mut c).await;

    expect_err(
        create(&mut c, configmaps(), b"{not json".to_vec()).await,
        400,
        Reason::BadRequest,
        "malformed JSON",
    );
    expect_err(
        create(&mut c, configmaps(), b"[1,2]".to_vec()).await,
        400,
        Reason::BadRequest,
        "JSON array",
    );
    let pod =
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
            .expect("json");
    expect_err(
        create(&mut c, configmaps(), pod).await,
        400,
        Reason::BadRequest,
        "wrong kind for the endpoint",
    );
    let wrong_version = serde_json::to_vec(
        &json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    )
    .expect("json");
    expect_err(
        create(&mut c, configmaps(), wrong_version).await,
        400,
        Reason::BadRequest,
        "wrong apiVersion",
    );
    expect_err(
        create(
            &mut c,
            Some(ResourceRef::new("", "v1", "widgets", "default")),
            cm("w"),
        )
        .await,
        404,
        Reason::NotFound,
        "unknown resource",
    );
    let with_rv = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rv", "resourceVersion": "5"}})).expect("json");
    expect_err(
        create(&mut c, configmaps(), with_rv).await,
        400,
        Reason::BadRequest,
        "resourceVersion on create",
    );
    assert_eq!(
        count_configmaps(&mut c).await,
        (0, revision_before.clone()),
        "nothing was stored, the revision did not move"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_names_get_422_with_field_causes() {
    let server = TestApiserver::start().await;
    let mut c = raw(&server).await;
    let (_, revision_before) = count_configmaps(&mut c).await;
    for name in ["Bad_Name", "-leading", "trailing-", "a..b"] {
        let err = expect_err(
            create(&mut c, configmaps(), cm(name)).await,
            422,
            Reason::Invalid,
            name,
        );
        assert!(
            err.causes.iter().any(|c| c.field == "metadata.name"),
            "{name}: causes name metadata.name: {:?}",
            err.causes
        );
    }
    let no_name =
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}))
            .expect("json");
    let err = expect_err(
        create(&mut c, configmaps(), no_name).await,
        422,
        Reason::Invalid,
        "missing name",
    );
    assert!(
        err.causes.iter().any(|c| c.reason == "FieldValueRequired"),
        "{:?}",
        err.causes
    );
    let pod = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}})).expect("json");
    let err = expect_err(
        create(
            &mut c,
            Some(ResourceRef::new("", "v1", "pods", "default")),
            pod,
        )
        .await,
        422,
        Reason::Invalid,
        "pod without containers",
    );
    assert!(
        err.causes
            .iter()
            .any(|c| c.field.starts_with("spec.containers")),
        "{:?}",
        err.causes
    );
    assert_eq!(
        count_configmaps(&mut c).await,
        (0, revision_before.clone()),
        "nothing was stored, the revision did not move"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_objects_get_413() {
    let server = TestApiserver::start().await;
    let mut c = raw(&server).await;
    let (_, revision_before) = count_configmaps(&mut c).await;
    let big = "x".repeat(rkube_rpc::MAX_OBJECT_BYTES + 1);
    let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": big}})).expect("json");
    expect_err(
        create(&mut c, configmaps(), body).await,
        413,
        Reason::RequestEntityTooLarge,
        "oversized create",
    );
    assert_eq!(
        count_configmaps(&mut c).await,
        (0, revision_before.clone()),
        "nothing was stored, the revision did not move"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn stale_and_missing_updates_are_refused() {
    let server = TestApiserver::start().await;
    let mut c = raw(&server).await;
    let created = create(&mut c, configmaps(), cm("a")).await.expect("create");
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();

    let mut v1obj = created.clone();
    v1obj["data"]["k"] = "v1".into();
    let updated = c
        .update(v1::UpdateRequest {
            resource: configmaps(),
            name: "a".into(),
            object: serde_json::to_vec(&v1obj).expect("json").into(),
            ..Default::default()
        })
        .await
        .expect("update at current rv")
        .into_inner();
    let updated: serde_json::Value = serde_json::from_slice(&updated.object).expect("json");
    assert_ne!(updated["metadata"]["resourceVersion"], rv.as_str());

    let mut stale = created.clone();
    stale["data"]["k"] = "stale".into();
    let err = c
        .update(v1::UpdateRequest {
            resource: configmaps(),
            name: "a".into(),
            object: serde_json::to_vec(&stale).expect("json").into(),
            ..Default::default()
        })
        .await
        .map_err(|s| rkube_rpc::from_grpc(&s))
        .expect_err("stale update must fail");
    assert_eq!((err.code(), err.reason), (409, Reason::Conflict), "{err}");

    let now = c
        .get(v1::GetRequest {
            resource: configmaps(),
            name: "a".into(),
        })
        .await
        .expect("get")
        .into_inner();
    let now: serde_json::Value = serde_json::from_slice(&now.object).expect("json");
    assert_eq!(now["data"]["k"], "v1", "the stale update changed nothing");

    let mut missing = created.clone();
    missing["metadata"]["name"] = "nope".into();
    missing["metadata"]
        .as_object_mut()
        .expect("meta")
        .remove("resourceVersion");
    let err = c
        .update(v1::UpdateRequest {
            resource: configmaps(),
            name: "nope".into(),
            object: serde_json::to_vec(&missing).expect("json").into(),
            ..Default::default()
        })
        .await
        .map_err(|s| rkube_rpc::from_grpc(&s))
        .expect_err("update of a missing object must fail");
    assert_eq!((err.code(), err.reason), (404, Reason::NotFound), "{err}");

    let err = c
        .get(v1::GetRequest {
            resource: configmaps(),
            name: "nope".into(),
        })
        .await
        .map_err(|s| rkube_rpc::from_grpc(&s))
        .expect_err("nothing was created");
    assert_eq!(err.code(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn objects_in_missing_namespaces_are_refused() {
    let server = TestApiserver::start().await;
    let mut c = raw(&server).await;
    let err = create(
        &mut c,
        Some(ResourceRef::new("", "v1", "configmaps", "ghost")),
        cm("a"),
    )
    .await
    .expect_err("namespace ghost does not exist");
    assert_eq!((err.code(), err.reason), (404, Reason::NotFound), "{err}");
    assert!(err.message.contains("ghost"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_selectors_and_resource_versions_get_400() {
    let server = TestApiserver::start().await;
    let mut c = raw(&server).await;
    for (labels, fields, rv) in [
        ("a in (", "", ""),
        ("", "spec.nope=x", ""),
        ("", "", "not-a-number"),
    ] {
        let err = c
            .list(v1::ListRequest {
                resource: configmaps(),
                options: Some(v1::ListOptions {
                    label_selector: labels.into(),
                    field_selector: fields.into(),
                    resource_version: rv.into(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| rkube_rpc::from_grpc(&s))
            .expect_err("bad list options must fail");
        assert_eq!(
            err.code(),
            400,
            "labels={labels:?} fields={fields:?} rv={rv:?}: {err}"
        );
    }
    server.shutdown().await;
}
