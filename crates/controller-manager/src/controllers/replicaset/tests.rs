//! Tests of the ReplicaSet controller's handlers (which ReplicaSets a pod change concerns,
//! and which expectations it satisfies) and of its reconcile against an in-process
//! apiserver, with the informer caches filled by hand so each test decides exactly what the
//! controller has seen.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rkube_client::watcher;
use rkube_client::{ListParams, Patch};
use rkube_testing::TestApiserver;
use serde_json::json;

use super::*;
use crate::ownership::is_controlled_by;

fn controller(client: Client) -> Arc<ReplicaSetController> {
    controller_with_clock(client, Clock::system())
}

fn controller_with_clock(client: Client, clock: Clock) -> Arc<ReplicaSetController> {
    Arc::new(ReplicaSetController {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        replicasets: Informer::new(watcher::Config::default()),
        pods: Informer::new(watcher::Config::default()),
        tracking: Tracking::default(),
        clock,
    })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn replicaset(name: &str, uid: &str, replicas: i32, app: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": "1"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "app", "image": "registry.local/app:v1"}]},
            },
        },
    }))
    .expect("a replicaset")
}

fn pod(name: &str, rv: &str, app: &str, owner: Option<&ReplicaSet>) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.resource_version = Some(rv.into());
    p.metadata.labels = Some(labels(&[("app", app)]));
    p.metadata.owner_references = owner.map(|rs| vec![owner_reference(rs)]);
    p
}

fn key(name: &str) -> ObjectRef {
    ObjectRef::namespaced("default", name)
}

fn apply<K: crate::informer::Object>(informer: &Informer<K>, obj: K) {
    informer.apply(watcher::Event::Apply(obj), &mut None);
}

async fn offline() -> Arc<ReplicaSetController> {
    controller(Client::connect_lazy("127.0.0.1:1").expect("a lazy client"))
}

#[tokio::test]
async fn a_created_pod_counts_for_its_owner_and_an_orphan_wakes_every_selecting_replicaset() {
    let c = offline().await;
    let web = replicaset("web", "u-web", 3, "web");
    let web2 = replicaset("web-copy", "u-web2", 1, "web");
    apply(&c.replicasets, web.clone());
    apply(&c.replicasets, web2);
    apply(&c.replicasets, replicaset("db", "u-db", 1, "db"));

    let owned = Arc::new(pod("web-abc", "5", "web", Some(&web)));
    let effects = c.pod_effects(&Change::Added(owned));
    assert_eq!(effects.created, [key("web")]);
    assert_eq!(effects.sync, [key("web")]);

    let orphan = Arc::new(pod("stray", "6", "web", None));
    let mut effects = c.pod_effects(&Change::Added(orphan));
    effects.sync.sort();
    assert!(
        effects.created.is_empty(),
        "no controller waits for an orphan"
    );
    assert_eq!(effects.sync, [key("web"), key("web-copy")]);

    // A controller reference to a ReplicaSet of the same name but another UID (an old
    // incarnation) concerns nobody.
    let stale_owner = replicaset("web", "u-old", 3, "web");
    let stale = Arc::new(pod("web-old", "7", "web", Some(&stale_owner)));
    assert_eq!(c.pod_effects(&Change::Added(stale)), PodEffects::default());
}

#[tokio::test]
async fn graceful_deletion_and_removal_are_deletions_of_the_owner() {
    let c = offline().await;
    let web = replicaset("web", "u-web", 3, "web");
    apply(&c.replicasets, web.clone());
    let running = pod("web-abc", "5", "web", Some(&web));
    let mut terminating = pod("web-abc", "6", "web", Some(&web));
    terminating.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let effects = c.pod_effects(&Change::Updated {
        old: Arc::new(running),
        new: Arc::new(terminating.clone()),
    });
    assert_eq!(effects.deleted, [(key("web"), "uid-web-abc".to_string())]);
    assert_eq!(effects.sync, [key("web")]);

    let effects = c.pod_effects(&Change::Deleted(Arc::new(terminating.clone())));
    assert_eq!(effects.deleted, [(key("web"), "uid-web-abc".to_string())]);

    // Seen first while already terminating (a re-list after a restart): not a creation.
    let effects = c.pod_effects(&Change::Added(Arc::new(terminating)));
    assert!(effects.created.is_empty());
    assert_eq!(effects.deleted.len(), 1);
}

#[tokio::test]
async fn a_released_pod_wakes_its_old_owner_and_the_replicasets_that_now_select_it() {
    let c = offline().await;
    let web = replicaset("web", "u-web", 3, "web");
    apply(&c.replicasets, web.clone());
    apply(&c.replicasets, replicaset("debug", "u-debug", 1, "debug"));

    let owned = Arc::new(pod("web-abc", "5", "web", Some(&web)));
    // Relabelled by a user: still owned, so only the owner (which will release it) syncs.
    let relabelled = Arc::new(pod("web-abc", "6", "debug", Some(&web)));
    let effects = c.pod_effects(&Change::Updated {
        old: owned.clone(),
        new: relabelled.clone(),
    });
    assert_eq!(effects.sync, [key("web")]);

    // Released by the owner: the old owner and the ReplicaSet selecting it now sync.
    let released = Arc::new(pod("web-abc", "7", "debug", None));
    let mut effects = c.pod_effects(&Change::Updated {
        old: relabelled,
        new: released.clone(),
    });
    effects.sync.sort();
    assert_eq!(effects.sync, [key("debug"), key("web")]);

    // A re-delivery of the same version changes nothing.
    let effects = c.pod_effects(&Change::Updated {
        old: released.clone(),
        new: released,
    });
    assert_eq!(effects, PodEffects::default());
}

// ---- reconcile against an apiserver ----

/// Replaces the controller's caches with what the apiserver holds now, the way a re-list
/// does (so the handlers see the differences).
async fn refresh(c: &ReplicaSetController, client: &Client) {
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut list = None;
    c.replicasets.apply(watcher::Event::Init, &mut list);
    for rs in rss.list(&ListParams::default()).await.expect("list").items {
        c.replicasets
            .apply(watcher::Event::InitApply(rs), &mut list);
    }
    c.replicasets.apply(watcher::Event::InitDone, &mut list);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut list = None;
    c.pods.apply(watcher::Event::Init, &mut list);
    for p in pods.list(&ListParams::default()).await.expect("list").items {
        c.pods.apply(watcher::Event::InitApply(p), &mut list);
    }
    c.pods.apply(watcher::Event::InitDone, &mut list);
}

async fn create_rs(client: &Client, name: &str, replicas: i32) -> ReplicaSet {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut rs = replicaset(name, "", replicas, name);
    rs.metadata.uid = None;
    rs.metadata.resource_version = None;
    api.create(&rs).await.expect("create replicaset")
}

async fn pods_of(client: &Client, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

async fn wired(server: &TestApiserver) -> (Arc<ReplicaSetController>, WorkQueue<ObjectRef>) {
    let c = controller(server.client());
    let queue = WorkQueue::new();
    c.subscribe(&queue);
    (c, queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_keep_a_sync_from_creating_pods_the_cache_has_not_seen_yet() {
    let server = TestApiserver::start().await;
    let client = server.client();
    let (c, _queue) = wired(&server).await;
    create_rs(&client, "burst", 7).await;
    refresh(&c, &client).await;
    assert!(c.pods.is_empty());

    c.reconcile(key("burst")).await.expect("first sync");
    assert_eq!(pods_of(&client, "burst").await.len(), 7);
    // The cache still has no pods, but the creations are expected: nothing more is made.
    c.reconcile(key("burst")).await.expect("second sync");
    c.reconcile(key("burst")).await.expect("third sync");
    assert_eq!(pods_of(&client, "burst").await.len(), 7);
    assert!(!c.tracking.satisfied("default/burst"));

    // Once the cache has seen them, the ReplicaSet is satisfied and at its count.
    refresh(&c, &client).await;
    assert!(c.tracking.satisfied("default/burst"));
    c.reconcile(key("burst"))
        .await
        .expect("sync after observing");
    let pods = pods_of(&client, "burst").await;
    assert_eq!(pods.len(), 7);
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let stored = rs.get("burst").await.expect("get");
    let uid = stored.metadata.uid.clone().unwrap_or_default();
    assert!(pods.iter().all(|p| is_controlled_by(&p.metadata, &uid)));
    let status = stored.status.expect("status written");
    assert_eq!(status.replicas, 7);
    assert_eq!(status.observed_generation, stored.metadata.generation);

    // An idle sync writes nothing: the resourceVersion stays.
    refresh(&c, &client).await;
    c.reconcile(key("burst")).await.expect("idle sync");
    let again = rs.get("burst").await.expect("get");
    assert_eq!(
        again.metadata.resource_version,
        stored.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_deletes_the_least_valuable_pods_and_counts_each_deletion_once() {
    let server = TestApiserver::start().await;
    let client = server.client();
    let (c, _queue) = wired(&server).await;
    create_rs(&client, "shrink", 4).await;
    refresh(&c, &client).await;
    c.reconcile(key("shrink")).await.expect("create");
    refresh(&c, &client).await;

    // Mark two pods Running and Ready: the two unready ones must go first.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut names: Vec<String> = pods_of(&client, "shrink")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    for name in &names[..2] {
        pods.patch_status(
            name,
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ]}})),
        )
        .await
        .expect("mark ready");
    }
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    rs.patch("shrink", &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .expect("scale");
    refresh(&c, &client).await;
    c.reconcile(key("shrink")).await.expect("scale down");
    let mut left: Vec<String> = pods_of(&client, "shrink")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    left.sort();
    assert_eq!(left, names[..2], "the ready pods stay");

    // The deletions are expected until seen; seeing them once satisfies them.
    assert!(!c.tracking.satisfied("default/shrink"));
    refresh(&c, &client).await;
    assert!(c.tracking.satisfied("default/shrink"));
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    rkube_testing::eventually(
        "SuccessfulDelete events",
        std::time::Duration::from_secs(10),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let deletes = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
                .count();
            if deletes == 2 {
                Ok(())
            } else {
                Err(format!("{deletes} SuccessfulDelete events"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_adopts_matching_orphans_and_releases_pods_that_stopped_matching() {
    let server = TestApiserver::start().await;
    let client = server.client();
    let (c, _queue) = wired(&server).await;
    let owner = create_rs(&client, "claim", 2).await;
    let other = create_rs(&client, "other", 0).await;
    let uid = owner.metadata.uid.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let new_pod = |name: &str, app: &str, owner: Option<&ReplicaSet>| {
        let mut p = pod(name, "", app, owner);
        p.metadata.uid = None;
        p.metadata.resource_version = None;
        p.spec = Some(
            serde_json::from_value(json!({
                "containers": [{"name": "app", "image": "registry.local/app:v1"}],
            }))
            .expect("spec"),
        );
        p
    };
    pods.create(&new_pod("orphan", "claim", None))
        .await
        .expect("orphan");
    pods.create(&new_pod("stranger", "other-app", None))
        .await
        .expect("stranger");
    pods.create(&new_pod("relabelled", "elsewhere", Some(&owner)))
        .await
        .expect("relabelled");
    pods.create(&new_pod("taken", "claim", Some(&other)))
        .await
        .expect("taken");
    refresh(&c, &client).await;

    c.reconcile(key("claim")).await.expect("claim");
    let get = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get(name).await.expect("get pod") }
    };
    assert!(
        is_controlled_by(&get("orphan").await.metadata, &uid),
        "matching orphan adopted"
    );
    assert!(
        controller_ref(&get("stranger").await.metadata).is_none(),
        "non-matching orphan left alone"
    );
    assert!(
        controller_ref(&get("relabelled").await.metadata).is_none(),
        "no longer matching: released"
    );
    let other_uid = other.metadata.uid.clone().unwrap_or_default();
    assert!(
        is_controlled_by(&get("taken").await.metadata, &other_uid),
        "another controller's pod untouched"
    );

    // The adopted orphan counts as one of the two replicas: only one pod was created.
    let owned: Vec<Pod> = pods_of(&client, "claim")
        .await
        .into_iter()
        .filter(|p| is_controlled_by(&p.metadata, &uid))
        .collect();
    assert_eq!(owned.len(), 2, "one adopted and one created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_creations_set_replica_failure_and_stop_after_the_first_batch() {
    let server = TestApiserver::start().await;
    let client = server.client();
    let (c, _queue) = wired(&server).await;
    create_rs(&client, "broken", 50).await;
    refresh(&c, &client).await;
    // The cache holds a template the apiserver refuses pods for (no image): every create
    // fails validation.
    let mut cached = (*c.replicasets.get("default", "broken").expect("cached")).clone();
    if let Some(spec) = cached
        .spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .and_then(|t| t.spec.as_mut())
    {
        spec.containers[0].image = None;
    }
    apply(&c.replicasets, cached);

    let err = c
        .reconcile(key("broken"))
        .await
        .expect_err("creation fails");
    assert!(err.to_string().contains("image"), "{err}");
    assert!(pods_of(&client, "broken").await.is_empty());
    assert!(
        c.tracking.satisfied("default/broken"),
        "failed creations are not awaited"
    );
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let stored = rs.get("broken").await.expect("get");
    let conditions = stored.status.and_then(|s| s.conditions).unwrap_or_default();
    assert_eq!(conditions.len(), 1, "{conditions:?}");
    assert_eq!(conditions[0].type_, "ReplicaFailure");
    assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    rkube_testing::eventually(
        "one FailedCreate event",
        std::time::Duration::from_secs(10),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let failed: Vec<&Event> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
                .collect();
            match failed.as_slice() {
                [e] if e.count.unwrap_or(1) == 1 => Ok(()),
                _ => Err(format!("{failed:?}")),
            }
        },
    )
    .await;

    // Fixed (the real template again): pods are created and the condition goes away.
    refresh(&c, &client).await;
    c.reconcile(key("broken")).await.expect("creation works");
    assert_eq!(pods_of(&client, "broken").await.len(), 50);
    let stored = rs.get("broken").await.expect("get");
    assert_eq!(stored.status.and_then(|s| s.conditions), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_become_available_after_min_ready_seconds_on_the_controller_clock() {
    let server = TestApiserver::start().await;
    let client = server.client();
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
    let clock = Clock::manual(start);
    let c = controller_with_clock(client.clone(), clock.clone());
    c.subscribe(&WorkQueue::new());
    let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut slow = replicaset("slow", "", 2, "slow");
    slow.metadata.uid = None;
    slow.metadata.resource_version = None;
    if let Some(spec) = slow.spec.as_mut() {
        spec.min_ready_seconds = Some(30);
    }
    rs.create(&slow).await.expect("create");
    refresh(&c, &client).await;
    c.reconcile(key("slow")).await.expect("create pods");

    // Both pods turn ready at the clock's start.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for pod in pods_of(&client, "slow").await {
        let name = pod.metadata.name.unwrap_or_default();
        pods.patch_status(
            &name,
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": start.to_string()},
            ]}})),
        )
        .await
        .expect("mark ready");
    }
    clock.advance(std::time::Duration::from_secs(10));
    refresh(&c, &client).await;
    let action = c.reconcile(key("slow")).await.expect("sync");
    assert_eq!(
        action,
        Action::RequeueAfter(std::time::Duration::from_secs(20))
    );
    let status = rs.get("slow").await.expect("get").status.expect("status");
    assert_eq!(
        (status.ready_replicas, status.available_replicas),
        (Some(2), None)
    );

    clock.advance(std::time::Duration::from_secs(20));
    refresh(&c, &client).await;
    let action = c.reconcile(key("slow")).await.expect("sync");
    assert_eq!(action, Action::Done);
    let status = rs.get("slow").await.expect("get").status.expect("status");
    assert_eq!(
        (status.ready_replicas, status.available_replicas),
        (Some(2), Some(2))
    );
}
