//! Watch: fan-out to many watchers in one order, resumption, and the compaction floor.

use futures::StreamExt;
use rkube_rpc::ResourcesClient;
use rkube_rpc::v1::{self, ResourceRef};
use rkube_testing::{Options, TestApiserver};
use rkube_types::Reason;
use serde_json::{Value, json};
use std::time::Duration;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

fn cms() -> Option<ResourceRef> {
    Some(ResourceRef::new("", "v1", "configmaps", "default"))
}

fn cm(name: &str, v: &str) -> bytes::Bytes {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}}))
        .expect("json")
        .into()
}

async fn connect(server: &TestApiserver) -> ResourcesClient<Channel> {
    // A connection of its own per call: tests spread watchers over connections.
    server.new_client().await.rpc()
}

async fn watch_from(
    c: &mut ResourcesClient<Channel>,
    rv: &str,
) -> Result<tonic::Streaming<v1::WatchEvent>, tonic::Status> {
    c.watch(v1::WatchRequest {
        resource: cms(),
        options: Some(v1::ListOptions {
            resource_version: rv.into(),
            ..Default::default()
        }),
    })
    .await
    .map(|r| r.into_inner())
}

async fn create(c: &mut ResourcesClient<Channel>, name: &str) -> u64 {
    let resp = c
        .create(v1::CreateRequest {
            resource: cms(),
            object: cm(name, "0"),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let v: Value = serde_json::from_slice(&resp.object).expect("json");
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric")
}

/// (type, resourceVersion, name) of the next `n` events, failing with what was seen.
async fn collect(
    stream: &mut tonic::Streaming<v1::WatchEvent>,
    n: usize,
) -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(ev))) => {
                if ev.r#type == "BOOKMARK" {
                    continue;
                }
                let v: Value = serde_json::from_slice(&ev.object).expect("json");
                seen.push((
                    ev.r#type,
                    ev.resource_version,
                    v["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            other => panic!(
                "expected {n} events, got {} ({seen:?}) then {other:?}",
                seen.len()
            ),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_see_the_same_events_in_the_same_order() {
    // On sled: the events come through the flusher and the dispatcher.
    let server = TestApiserver::start_sled().await;
    let mut c = connect(&server).await;
    let start_rv = create(&mut c, "seed").await.to_string();

    // hyper serves at most 200 streams per connection: spread the watchers over channels.
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut conn = connect(&server).await;
        for _ in 0..100 {
            streams.push(watch_from(&mut conn, &start_rv).await.expect("watch"));
        }
    }
    assert_eq!(streams.len(), 1000);

    const WRITES: usize = 30;
    for i in 0..WRITES / 3 {
        let name = format!("cm-{i}");
        create(&mut c, &name).await;
        c.patch(v1::PatchRequest {
            resource: cms(),
            name: name.clone(),
            patch_type: v1::PatchType::Merge as i32,
            patch: br#"{"data":{"v":"1"}}"#.to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("patch");
        c.delete(v1::DeleteRequest {
            resource: cms(),
            name,
            ..Default::default()
        })
        .await
        .expect("delete");
    }

    let collectors: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { collect(&mut s, WRITES).await }))
        .collect();
    let mut first: Option<Vec<(String, String, String)>> = None;
    for (i, task) in collectors.into_iter().enumerate() {
        let events = task.await.expect("collector");
        match &first {
            None => {
                let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
                assert_eq!(&types[..3], ["ADDED", "MODIFIED", "DELETED"]);
                let revs: Vec<u64> = events.iter().map(|e| e.1.parse().expect("rv")).collect();
                assert!(
                    revs.windows(2).all(|w| w[0] < w[1]),
                    "revision order: {revs:?}"
                );
                first = Some(events);
            }
            Some(expected) => assert_eq!(&events, expected, "watcher {i} saw a different sequence"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_watch_resuming_from_an_older_revision_gets_exactly_the_missed_events() {
    let server = TestApiserver::start_sled().await;
    let mut c = connect(&server).await;
    let r1 = create(&mut c, "a").await;
    let r2 = create(&mut c, "b").await;
    let r3 = create(&mut c, "c").await;
    let mut stream = watch_from(&mut c, &r1.to_string()).await.expect("watch");
    let missed = collect(&mut stream, 2).await;
    assert_eq!(
        missed,
        [
            ("ADDED".to_string(), r2.to_string(), "b".to_string()),
            ("ADDED".to_string(), r3.to_string(), "c".to_string())
        ]
    );
    let r4 = create(&mut c, "d").await;
    assert_eq!(
        collect(&mut stream, 1).await,
        [("ADDED".to_string(), r4.to_string(), "d".to_string())]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_watch_below_the_window_gets_410_expired() {
    let options = Options {
        watch_cache_size: 5,
        ..Default::default()
    };
    let server = TestApiserver::start_with(options, false).await;
    let mut c = connect(&server).await;
    let first = create(&mut c, "first").await;
    for i in 0..10 {
        create(&mut c, &format!("n{i}")).await;
    }
    let err = watch_from(&mut c, &first.to_string())
        .await
        .map(|_| ())
        .expect_err("too old");
    let err = rkube_rpc::from_grpc(&err);
    assert_eq!((err.code(), err.reason), (410, Reason::Expired), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_watcher_is_closed_without_slowing_the_others() {
    let options = Options {
        watcher_buffer: 8,
        ..Default::default()
    };
    let server = TestApiserver::start_with(options, false).await;
    let mut c = connect(&server).await;
    let rv = create(&mut c, "seed").await.to_string();
    // The slow watcher never reads; the fast one reads everything.
    let mut slow_conn = connect(&server).await;
    let slow = watch_from(&mut slow_conn, &rv).await.expect("slow watch");
    let mut fast = watch_from(&mut c, &rv).await.expect("fast watch");
    let reader = tokio::spawn(async move { collect(&mut fast, 400).await });
    // 32 KiB events, 12.5 MiB in all: far more than the HTTP/2 windows (hyper's client
    // grants 2 MiB per stream) and send buffers can absorb.
    let padding = "p".repeat(32 * 1024);
    for i in 0..400 {
        c.create(v1::CreateRequest {
            resource: cms(),
            object: cm(&format!("x{i}"), &padding),
            ..Default::default()
        })
        .await
        .expect("create");
    }
    let seen = reader.await.expect("fast watcher");
    assert_eq!(seen.len(), 400, "the fast watcher got everything");
    // The slow one is cut off: draining it ends the stream, and what it got is a prefix.
    let got: Vec<_> = tokio::time::timeout(WAIT, slow.collect::<Vec<_>>())
        .await
        .expect("slow stream ends");
    assert!(
        got.len() < 400,
        "slow watcher was closed after {} events",
        got.len()
    );
    let last_rv = got
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .last()
        .map(|e| e.resource_version.clone())
        .unwrap_or(rv);
    let mut resumed = watch_from(&mut slow_conn, &last_rv)
        .await
        .expect("resume from the last rv it saw");
    let rest = collect(&mut resumed, 400 - got.len()).await;
    assert_eq!(
        rest.last().map(|e| e.2.as_str()),
        Some("x399"),
        "resumed watcher catches up"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn watchers_that_ask_get_bookmarks_at_the_current_revision() {
    let options = Options {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let server = TestApiserver::start_with(options, false).await;
    let mut c = connect(&server).await;
    let rv = create(&mut c, "a").await;
    let mut stream = c
        .watch(v1::WatchRequest {
            resource: cms(),
            options: Some(v1::ListOptions {
                resource_version: rv.to_string(),
                allow_watch_bookmarks: true,
                ..Default::default()
            }),
        })
        .await
        .expect("watch")
        .into_inner();
    // Another resource moves the global revision; the bookmark must carry it.
    let mut secrets = server.grpc();
    let secret = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
    )
    .expect("json");
    let resp = secrets
        .create(v1::CreateRequest {
            resource: Some(ResourceRef::new("", "v1", "secrets", "default")),
            object: secret.into(),
            ..Default::default()
        })
        .await
        .expect("create secret")
        .into_inner();
    let secret: Value = serde_json::from_slice(&resp.object).expect("json");
    let secret_rv = secret["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    loop {
        let ev = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a bookmark in time")
            .expect("stream open")
            .expect("event");
        assert_eq!(ev.r#type, "BOOKMARK", "only bookmarks are expected here");
        let obj: Value = serde_json::from_slice(&ev.object).expect("json");
        assert_eq!(obj["kind"], "ConfigMap");
        if obj["metadata"]["resourceVersion"] == secret_rv.as_str() {
            break;
        }
    }
    // Without asking, no bookmarks: the next thing a plain watcher sees is a real event.
    let mut plain = watch_from(&mut c, &secret_rv).await.expect("watch");
    create(&mut c, "b").await;
    let ev = tokio::time::timeout(WAIT, plain.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("ok");
    assert_eq!(ev.r#type, "ADDED");
    server.shutdown().await;
}
