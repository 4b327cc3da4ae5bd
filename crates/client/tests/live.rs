//! The client against a real in-process apiserver: typed CRUD, the watcher's recovery (resume
//! after a disconnect, re-list after 410) and a reflector fed by it.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::{Api, DeleteParams, ListParams, Patch, WatchStreamExt, reflector, watcher};
use rkube_testing::{Options, TestApiserver};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn typed_crud_round_trips() {
    let server = TestApiserver::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = api.create(&cm("a", "1")).await.expect("create");
    assert!(created.metadata.uid.is_some());
    let mut changed = created.clone();
    changed.data = Some(BTreeMap::from([("v".to_string(), "2".to_string())]));
    let replaced = api.replace("a", &changed).await.expect("replace");
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    let err = api
        .replace("a", &changed)
        .await
        .expect_err("stale resourceVersion");
    assert!(err.is_conflict(), "{err}");
    let patched = api
        .patch("a", &Patch::Merge(serde_json::json!({"data": {"w": "3"}})))
        .await
        .expect("patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("w"))
            .map(String::as_str),
        Some("3")
    );
    let list = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let err = api.get("a").await.expect_err("deleted");
    assert!(err.is_not_found(), "{err}");
    assert!(api.get_opt("a").await.expect("get_opt").is_none());
    server.shutdown().await;
}

/// Names in the watcher's view after each event, until `done` says it is complete.
async fn next_event<S>(events: &mut S, what: &str) -> watcher::Event<ConfigMap>
where
    S: futures::Stream<Item = rkube_client::Result<watcher::Event<ConfigMap>>> + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Ok(ev))) => return ev,
            Ok(Some(Err(_))) => continue, // recoverable; the watcher goes on by itself
            Ok(None) => panic!("waiting for {what}: watcher ended"),
            Err(_) => panic!("waiting for {what}: nothing within {WAIT:?}"),
        }
    }
}

fn name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_by_itself_after_410() {
    // A tiny watch window and watcher buffer: a watcher that stops reading is cut off, and
    // by the time it comes back its resourceVersion is below the window.
    let options = Options {
        watch_cache_size: 4,
        watcher_buffer: 4,
        ..Default::default()
    };
    let server = TestApiserver::start_with(options, false).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    api.create(&cm("before", "x")).await.expect("create");

    let mut events = Box::pin(watcher(api.clone(), watcher::Config::default()).default_backoff());
    let mut inits = 0;
    loop {
        match next_event(&mut events, "first InitDone").await {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(inits, 1);

    // While the watcher is not read: enough 32 KiB objects to overflow the HTTP/2 windows
    // and its buffer, and to push its resourceVersion out of the 4-event window.
    let padding = "p".repeat(32 * 1024);
    for i in 0..200 {
        api.create(&cm(&format!("while-away-{i}"), &padding))
            .await
            .expect("create");
    }

    // Reading again: the stream drains, ends, the resume gets 410, the watcher re-lists.
    let mut relisted = BTreeSet::new();
    loop {
        match next_event(&mut events, "a re-list after 410").await {
            watcher::Event::Init => {
                inits += 1;
                relisted.clear();
            }
            watcher::Event::InitApply(obj) => {
                relisted.insert(name(&obj));
            }
            watcher::Event::InitDone if inits >= 2 => break,
            _ => {}
        }
    }
    assert_eq!(relisted.len(), 201, "the re-list has every object");
    assert!(relisted.contains("before") && relisted.contains("while-away-199"));

    // And it carries on watching.
    api.create(&cm("after", "x")).await.expect("create");
    loop {
        if let watcher::Event::Apply(obj) =
            next_event(&mut events, "the event after the re-list").await
            && name(&obj) == "after"
        {
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn reflector_mirrors_the_server() {
    let server = TestApiserver::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for i in 0..5 {
        api.create(&cm(&format!("c{i}"), "x"))
            .await
            .expect("create");
    }
    let (writer, store) = reflector::store::<ConfigMap>();
    let stream = watcher(api.clone(), watcher::Config::default().page_size(2))
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    tokio::time::timeout(WAIT, store.wait_until_ready())
        .await
        .expect("initial sync in time")
        .expect("writer alive");
    assert_eq!(store.len(), 5, "paged initial list");
    api.delete("c0", &DeleteParams::default())
        .await
        .expect("delete");
    api.create(&cm("c9", "x")).await.expect("create");
    rkube_testing::eventually(
        "the reflector to see the delete and the create",
        WAIT,
        || {
            let store = store.clone();
            async move {
                let mut names: Vec<String> = store.state().iter().map(|o| name(o)).collect();
                names.sort();
                if names == ["c1", "c2", "c3", "c4", "c9"] {
                    Ok(())
                } else {
                    Err(format!("{names:?}"))
                }
            }
        },
    )
    .await;
    task.abort();
    server.shutdown().await;
}
