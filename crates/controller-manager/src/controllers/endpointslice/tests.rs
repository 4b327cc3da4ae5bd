//! Unit tests of the slice reconciler's plans and of the tracker.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rkube_client::ObjectRef;
use tokio::time::Instant;

use super::reconciler::{
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY, MAX_ENDPOINTS_PER_SLICE, NodeZone, Plan, plan,
};
use super::tracker::{STALE_LIMIT, Tracker};

fn service() -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("svc-uid".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Pod number `i`: IP 10.0.x.y on node-(i % 3 + 1), ready unless told otherwise.
fn pod(i: usize, ready: bool) -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(format!("web-{i}")),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{i}")),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node-{}", i % 3 + 1)),
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ips: Some(vec![PodIP {
                ip: format!("10.0.{}.{}", i / 250, i % 250 + 1),
            }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn zones(name: &str) -> NodeZone {
    match name {
        "node-1" | "node-2" | "node-3" => Some(Some(format!("zone-{}", &name[5..]))),
        _ => None,
    }
}

/// What the server would return for the planned writes: created slices named `web-<n>`,
/// every slice with a uid, resourceVersion and generation.
fn applied(existing: &[Arc<EndpointSlice>], plan: &Plan) -> Vec<Arc<EndpointSlice>> {
    let mut by_name: BTreeMap<String, EndpointSlice> = existing
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), (**s).clone()))
        .collect();
    for s in &plan.delete {
        by_name.remove(s.metadata.name.as_deref().unwrap());
    }
    for s in &plan.update {
        let mut s = s.clone();
        let g = s.metadata.generation.unwrap_or(1);
        s.metadata.generation = Some(g + 1);
        by_name.insert(s.metadata.name.clone().unwrap(), s);
    }
    let mut n = by_name.len();
    for s in &plan.create {
        let mut s = s.clone();
        let name = loop {
            n += 1;
            let name = format!("web-{n}");
            if !by_name.contains_key(&name) {
                break name;
            }
        };
        s.metadata.name = Some(name.clone());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.generation = Some(1);
        by_name.insert(name, s);
    }
    by_name.into_values().map(Arc::new).collect()
}

fn sizes(slices: &[Arc<EndpointSlice>]) -> Vec<usize> {
    let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort_unstable();
    sizes
}

#[test]
fn endpoints_are_packed_into_slices_of_at_most_the_maximum() {
    let svc = service();
    let pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
    let first = plan(&svc, &pods, &[], &zones, MAX_ENDPOINTS_PER_SLICE);
    assert_eq!(first.create.len(), 3);
    assert!(first.update.is_empty() && first.delete.is_empty());
    let slices = applied(&[], &first);
    assert_eq!(sizes(&slices), [50, 100, 100]);

    let s = &slices[0];
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(s.address_type, "IPv4");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", "svc-uid")
    );
    assert_eq!(owner.controller, Some(true));
    let port = &s.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(8080))
    );
    let ep = &s.endpoints[0];
    let cond = ep.conditions.as_ref().unwrap();
    assert_eq!(
        (cond.ready, cond.serving, cond.terminating),
        (Some(true), Some(true), Some(false))
    );
    assert!(ep.zone.as_deref().is_some_and(|z| z.starts_with("zone-")));
    assert_eq!(ep.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));

    // Nothing changed: nothing to write.
    let again = plan(&svc, &pods, &slices, &zones, MAX_ENDPOINTS_PER_SLICE);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn one_pod_changing_touches_only_the_slice_holding_it() {
    let svc = service();
    let mut pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
    let slices = applied(
        &[],
        &plan(&svc, &pods, &[], &zones, MAX_ENDPOINTS_PER_SLICE),
    );
    pods[123] = pod(123, false);
    let p = plan(&svc, &pods, &slices, &zones, MAX_ENDPOINTS_PER_SLICE);
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.update.len(), 1);
    let updated = &p.update[0];
    let holder = slices
        .iter()
        .find(|s| s.endpoints.iter().any(|e| e.addresses == ["10.0.0.124"]))
        .unwrap();
    assert_eq!(updated.metadata.name, holder.metadata.name);
    let ep = updated
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.0.0.124"])
        .unwrap();
    let cond = ep.conditions.as_ref().unwrap();
    assert_eq!((cond.ready, cond.serving), (Some(false), Some(false)));
    assert_eq!(updated.endpoints.len(), holder.endpoints.len());
}

#[test]
fn new_endpoints_fill_existing_slices_before_new_ones_and_empty_slices_go() {
    let svc = service();
    let pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
    let slices = applied(
        &[],
        &plan(&svc, &pods, &[], &zones, MAX_ENDPOINTS_PER_SLICE),
    );

    // 30 more pods fit in the slice with 50.
    let more: Vec<_> = (0..280).map(|i| pod(i, true)).collect();
    let p = plan(&svc, &more, &slices, &zones, MAX_ENDPOINTS_PER_SLICE);
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    assert_eq!(p.update.len(), 1);
    assert_eq!(p.update[0].endpoints.len(), 80);
    let slices = applied(&slices, &p);
    assert_eq!(sizes(&slices), [80, 100, 100]);

    // Removing every pod of one slice deletes that slice.
    let gone: Vec<String> = slices[0]
        .endpoints
        .iter()
        .map(|e| e.target_ref.as_ref().unwrap().name.clone().unwrap())
        .collect();
    let rest: Vec<_> = more
        .iter()
        .filter(|p| !gone.contains(p.metadata.name.as_ref().unwrap()))
        .cloned()
        .collect();
    let p = plan(&svc, &rest, &slices, &zones, MAX_ENDPOINTS_PER_SLICE);
    assert!(p.create.is_empty() && p.update.is_empty());
    assert_eq!(p.delete.len(), 1);
    assert_eq!(p.delete[0].metadata.name, slices[0].metadata.name);

    // Removing every pod keeps one empty placeholder (an update of a slice otherwise
    // deleted), and then nothing changes.
    let p = plan(&svc, &[], &slices, &zones, MAX_ENDPOINTS_PER_SLICE);
    assert_eq!(
        (p.create.len(), p.update.len(), p.delete.len()),
        (0, 1, 2),
        "{p:?}"
    );
    let slices = applied(&slices, &p);
    assert_eq!(sizes(&slices), [0]);
    assert!(slices[0].ports.as_deref().unwrap_or_default().is_empty());
    assert!(plan(&svc, &[], &slices, &zones, MAX_ENDPOINTS_PER_SLICE).is_empty());

    // The first pods after that reuse the placeholder.
    let p = plan(&svc, &pods[..2], &slices, &zones, MAX_ENDPOINTS_PER_SLICE);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    assert_eq!(p.update[0].endpoints.len(), 2);
    assert_eq!(p.update[0].metadata.name, slices[0].metadata.name);
}

#[test]
fn pods_without_the_named_port_get_slices_of_their_own() {
    let svc = service();
    let mut bare = (*pod(7, true)).clone();
    bare.spec.as_mut().unwrap().containers[0].ports = None;
    let pods = vec![pod(1, true), Arc::new(bare)];
    let p = plan(&svc, &pods, &[], &zones, MAX_ENDPOINTS_PER_SLICE);
    assert_eq!(p.create.len(), 2);
    let portless = p
        .create
        .iter()
        .find(|s| s.ports.as_deref().unwrap_or_default().is_empty())
        .unwrap();
    assert_eq!(portless.endpoints[0].addresses, ["10.0.0.8"]);
}

#[test]
fn terminating_pods_stay_as_serving_but_not_ready_unless_published() {
    let mut svc = service();
    let mut p = (*pod(1, true)).clone();
    p.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    let pods = vec![Arc::new(p)];
    let planned = plan(&svc, &pods, &[], &zones, MAX_ENDPOINTS_PER_SLICE);
    let cond = planned.create[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (cond.ready, cond.serving, cond.terminating),
        (Some(false), Some(true), Some(true))
    );
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let planned = plan(&svc, &[pod(2, false)], &[], &zones, MAX_ENDPOINTS_PER_SLICE);
    let cond = planned.create[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!((cond.ready, cond.serving), (Some(true), Some(false)));
}

#[test]
fn pods_on_unknown_nodes_wait_for_them() {
    let svc = service();
    let mut lost = (*pod(1, true)).clone();
    lost.spec.as_mut().unwrap().node_name = Some("node-9".into());
    let p = plan(
        &svc,
        &[Arc::new(lost), pod(2, true)],
        &[],
        &zones,
        MAX_ENDPOINTS_PER_SLICE,
    );
    assert_eq!(p.missing_nodes.iter().collect::<Vec<_>>(), ["node-9"]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].endpoints.len(), 1);
}

#[test]
fn slices_not_owned_by_the_service_are_replaced() {
    let svc = service();
    let slices = applied(
        &[],
        &plan(&svc, &[pod(1, true)], &[], &zones, MAX_ENDPOINTS_PER_SLICE),
    );
    let mut foreign = (*slices[0]).clone();
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "old-svc".into();
    let p = plan(
        &svc,
        &[pod(1, true)],
        &[Arc::new(foreign)],
        &zones,
        MAX_ENDPOINTS_PER_SLICE,
    );
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1));
}

#[test]
fn the_tracker_tells_own_writes_from_others_and_waits_for_a_stale_cache() {
    let svc = service();
    let tracker = Tracker::default();
    let key = ObjectRef::namespaced("default", "web");
    let slices = applied(
        &[],
        &plan(&svc, &[pod(1, true)], &[], &zones, MAX_ENDPOINTS_PER_SLICE),
    );
    let slice = slices[0].clone();
    let now = Instant::now();

    tracker.update(&slice);
    assert!(!tracker.should_sync(&slice), "the echo of our own create");
    assert!(
        tracker.stale(&key, &[], now),
        "the cache does not have our slice yet"
    );
    assert!(!tracker.stale(&key, &slices, now));

    let mut newer = (*slice).clone();
    newer.metadata.generation = Some(2);
    assert!(tracker.should_sync(&newer), "someone else changed it");
    tracker.update(&newer);
    assert!(
        tracker.stale(&key, &slices, now),
        "the cache still has generation 1"
    );

    tracker.expect_deletion(&newer);
    assert!(
        tracker.stale(&key, &slices, now),
        "the cache still has a deleted slice"
    );
    let mut held = newer.clone();
    held.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    assert!(
        !tracker.stale(&key, &[Arc::new(held)], now),
        "a slice held by a finalizer is on its way out"
    );
    assert!(tracker.handle_deletion(&newer), "we deleted it");
    assert!(!tracker.stale(&key, &[], now));
    assert!(!tracker.handle_deletion(&newer), "an unexpected deletion");

    // A cache that never catches up is trusted again after the limit.
    tracker.update(&slice);
    assert!(tracker.stale(&key, &[], now));
    assert!(tracker.stale(&key, &[], now + STALE_LIMIT / 2));
    assert!(!tracker.stale(&key, &[], now + STALE_LIMIT));
}
