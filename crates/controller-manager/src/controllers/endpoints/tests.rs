//! Unit tests of the endpoints controller's decisions: membership, port resolution, subset
//! repacking and truncation, and when an Endpoints object needs a write.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints,
    ObjectReference, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rkube_client::ObjectRef;
use rkube_client::watcher::{self, Event};

use super::membership::{self, find_port, services_for_pod_change};
use super::subsets::{MAX_CAPACITY, desired_subsets, repack_subsets, truncate};
use super::{HEADLESS_LABEL, desired_endpoints};
use crate::informer::{Change, Informer};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A running pod `name` with IP `ip` on node-1, labelled app=web, with a container port
/// `http` (8080/TCP) and `metrics` (9090/TCP).
fn pod(name: &str, ip: &str, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("1".into()),
            labels: Some(labels(&[("app", "web")])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "app".into(),
                ports: Some(vec![
                    ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                    ContainerPort {
                        name: Some("metrics".into()),
                        container_port: 9090,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn svc_port(name: &str, port: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(target),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn service(ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("svc-uid".into()),
            labels: Some(labels(&[("tier", "front")])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels(&[("app", "web")])),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn address(name: &str, ip: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.into(),
        node_name: Some("node-1".into()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }),
        hostname: None,
    }
}

fn port(name: &str, number: i32) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: number,
        protocol: Some("TCP".into()),
        app_protocol: None,
    }
}

fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
    list.iter().flatten().map(|a| a.ip.as_str()).collect()
}

#[test]
fn named_target_ports_resolve_against_each_pods_container_ports() {
    let p = pod("a", "10.0.0.1", true);
    let by_name = svc_port("web", 80, IntOrString::String("http".into()));
    assert_eq!(find_port(&p, &by_name), Some(8080));
    assert_eq!(
        find_port(
            &p,
            &svc_port("m", 90, IntOrString::String("metrics".into()))
        ),
        Some(9090)
    );
    assert_eq!(
        find_port(&p, &svc_port("n", 80, IntOrString::Int(8443))),
        Some(8443)
    );
    let mut unset = by_name.clone();
    unset.target_port = None;
    assert_eq!(
        find_port(&p, &unset),
        Some(80),
        "an unset targetPort is the port"
    );
    assert_eq!(
        find_port(&p, &svc_port("x", 80, IntOrString::String("nope".into()))),
        None
    );
    let mut udp = by_name;
    udp.protocol = Some("UDP".into());
    assert_eq!(find_port(&p, &udp), None, "the protocol must match too");
}

#[test]
fn repack_groups_addresses_by_the_ports_they_share() {
    // a and b offer http and metrics, c offers only http; b is not ready on metrics.
    let single = |addr: EndpointAddress, ready: bool, p: EndpointPort| EndpointSubset {
        addresses: ready.then(|| vec![addr.clone()]),
        not_ready_addresses: (!ready).then(|| vec![addr]),
        ports: Some(vec![p]),
    };
    let input = vec![
        single(address("c", "10.0.0.3"), true, port("http", 8080)),
        single(address("a", "10.0.0.1"), true, port("http", 8080)),
        single(address("a", "10.0.0.1"), true, port("metrics", 9090)),
        single(address("b", "10.0.0.2"), true, port("http", 8080)),
        single(address("b", "10.0.0.2"), false, port("metrics", 9090)),
        // The same address twice on one port: not ready wins.
        single(address("b", "10.0.0.2"), true, port("metrics", 9090)),
    ];
    let out = repack_subsets(&input);
    assert_eq!(out.len(), 2, "{out:?}");
    let http = out
        .iter()
        .find(|s| s.ports.as_deref() == Some(&[port("http", 8080)][..]))
        .expect("an http subset");
    assert_eq!(ips(&http.addresses), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(http.not_ready_addresses, None);
    let metrics = out
        .iter()
        .find(|s| s.ports.as_deref() == Some(&[port("metrics", 9090)][..]))
        .expect("a metrics subset");
    assert_eq!(ips(&metrics.addresses), ["10.0.0.1"]);
    assert_eq!(ips(&metrics.not_ready_addresses), ["10.0.0.2"]);

    // Repacking is stable: the same input in another order gives the same output.
    let mut reversed = input.clone();
    reversed.reverse();
    assert_eq!(repack_subsets(&reversed), out);
    assert_eq!(repack_subsets(&out), out);
}

#[test]
fn repack_merges_ports_offered_by_the_same_addresses_and_keeps_portless_subsets() {
    let both = EndpointSubset {
        addresses: Some(vec![address("a", "10.0.0.1")]),
        not_ready_addresses: None,
        ports: Some(vec![port("metrics", 9090), port("http", 8080)]),
    };
    let again = EndpointSubset {
        ports: Some(vec![port("http", 8080)]),
        ..both.clone()
    };
    let out = repack_subsets(&[both, again]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].ports.as_deref(),
        Some(&[port("http", 8080), port("metrics", 9090)][..])
    );

    let portless = EndpointSubset {
        addresses: Some(vec![address("a", "10.0.0.1")]),
        not_ready_addresses: Some(vec![address("b", "10.0.0.2")]),
        ports: None,
    };
    let out = repack_subsets(std::slice::from_ref(&portless));
    assert_eq!(out, [portless]);
}

#[test]
fn subsets_list_ready_and_not_ready_pods_and_skip_pods_without_the_named_port() {
    let svc = service(vec![
        svc_port("web", 80, IntOrString::String("http".into())),
        svc_port("admin", 81, IntOrString::String("admin".into())),
    ]);
    let mut no_admin = pod("c", "10.0.0.3", true);
    let mut with_admin = pod("a", "10.0.0.1", true);
    with_admin.spec.as_mut().unwrap().containers[0]
        .ports
        .as_mut()
        .unwrap()
        .push(ContainerPort {
            name: Some("admin".into()),
            container_port: 7000,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    no_admin.metadata.labels = Some(labels(&[("app", "web")]));
    let finished = {
        let mut p = pod("d", "10.0.0.4", true);
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        p
    };
    let no_ip = {
        let mut p = pod("e", "", false);
        p.status.as_mut().unwrap().pod_ips = None;
        p
    };
    let pods: Vec<Arc<Pod>> = [
        with_admin,
        pod("b", "10.0.0.2", false),
        no_admin,
        finished,
        no_ip,
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let subsets = desired_subsets(&svc, &pods);
    // web: a and c ready, b not ready; admin: only a has the port.
    assert_eq!(subsets.len(), 2, "{subsets:?}");
    let admin = subsets
        .iter()
        .find(|s| s.ports.as_deref() == Some(&[port("admin", 7000)][..]))
        .expect("a subset with the admin port");
    assert_eq!(ips(&admin.addresses), ["10.0.0.1"]);
    assert_eq!(admin.not_ready_addresses, None);
    let web = subsets
        .iter()
        .find(|s| s.ports.as_deref() == Some(&[port("web", 8080)][..]))
        .expect("a subset with the web port");
    assert_eq!(ips(&web.addresses), ["10.0.0.1", "10.0.0.3"]);
    assert_eq!(ips(&web.not_ready_addresses), ["10.0.0.2"]);
    let all: Vec<&str> = subsets
        .iter()
        .flat_map(|s| {
            ips(&s.addresses)
                .into_iter()
                .chain(ips(&s.not_ready_addresses))
        })
        .collect();
    assert!(!all.contains(&"10.0.0.4"), "finished pods are left out");
    let addr = admin.addresses.as_ref().unwrap()[0].clone();
    assert_eq!(
        addr,
        address("a", "10.0.0.1"),
        "nodeName and targetRef as upstream"
    );
}

#[test]
fn publish_not_ready_addresses_lists_every_pod_as_ready_including_terminating_ones() {
    let mut svc = service(vec![svc_port("web", 80, IntOrString::Int(8080))]);
    let mut terminating = pod("t", "10.0.0.9", true);
    terminating.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    let pods: Vec<Arc<Pod>> = [pod("b", "10.0.0.2", false), terminating]
        .into_iter()
        .map(Arc::new)
        .collect();

    let subsets = desired_subsets(&svc, &pods);
    assert_eq!(subsets.len(), 1);
    assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.2"]);
    assert_eq!(
        ips(&subsets[0].addresses),
        Vec::<&str>::new(),
        "terminating pods are left out"
    );

    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let subsets = desired_subsets(&svc, &pods);
    assert_eq!(ips(&subsets[0].addresses), ["10.0.0.2", "10.0.0.9"]);
    assert_eq!(subsets[0].not_ready_addresses, None);
}

#[test]
fn headless_services_without_ports_list_bare_addresses_with_hostnames() {
    let mut svc = service(Vec::new());
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let mut p = pod("db-0", "10.0.0.5", true);
    let spec = p.spec.as_mut().unwrap();
    spec.hostname = Some("db-0".into());
    spec.subdomain = Some("web".into());
    let subsets = desired_subsets(&svc, &[Arc::new(p)]);
    assert_eq!(subsets.len(), 1);
    assert_eq!(subsets[0].ports, None);
    let addr = &subsets[0].addresses.as_ref().unwrap()[0];
    assert_eq!(addr.hostname.as_deref(), Some("db-0"));

    let ep = desired_endpoints(&svc, &[], None).unwrap();
    let l = ep.metadata.labels.unwrap();
    assert_eq!(l.get(HEADLESS_LABEL).map(String::as_str), Some(""));
    assert_eq!(l.get("tier").map(String::as_str), Some("front"));

    // A service with ports but no cluster IP "None" lists nothing for pods without ports.
    let plain = service(Vec::new());
    assert!(desired_subsets(&plain, &[Arc::new(pod("a", "10.0.0.1", true))]).is_empty());
}

#[test]
fn truncation_drops_not_ready_addresses_first_and_marks_over_capacity() {
    let many = |n: usize, ready: bool| -> Vec<EndpointAddress> {
        (0..n)
            .map(|i| {
                address(
                    &format!("p{ready}{i}"),
                    &format!("10.{}.{}.{}", u8::from(ready), i / 250, i % 250),
                )
            })
            .collect()
    };
    let mut subsets = vec![EndpointSubset {
        addresses: Some(many(900, true)),
        not_ready_addresses: Some(many(300, false)),
        ports: Some(vec![port("web", 80)]),
    }];
    assert!(truncate(&mut subsets));
    assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 900);
    assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 100);

    let mut ready_only = vec![
        EndpointSubset {
            addresses: Some(many(900, true)),
            not_ready_addresses: Some(many(10, false)),
            ports: Some(vec![port("web", 80)]),
        },
        EndpointSubset {
            addresses: Some(many(300, true)),
            not_ready_addresses: None,
            ports: Some(vec![port("admin", 81)]),
        },
    ];
    assert!(truncate(&mut ready_only));
    let total: usize = ready_only
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(total, MAX_CAPACITY);
    assert_eq!(ready_only[0].addresses.as_ref().unwrap().len(), 750);
    assert_eq!(ready_only[0].not_ready_addresses, None);

    let mut small = vec![EndpointSubset {
        addresses: Some(many(3, true)),
        ..Default::default()
    }];
    assert!(!truncate(&mut small));
}

#[test]
fn endpoints_are_written_only_when_subsets_or_labels_differ() {
    let svc = service(vec![svc_port(
        "web",
        80,
        IntOrString::String("http".into()),
    )]);
    let pods: Vec<Arc<Pod>> = vec![Arc::new(pod("a", "10.0.0.1", true))];
    let created = desired_endpoints(&svc, &pods, None).expect("a new Endpoints");
    assert_eq!(created.metadata.name.as_deref(), Some("web"));
    assert_eq!(created.metadata.labels, Some(labels(&[("tier", "front")])));

    // As the server stores it: with a resourceVersion, and target references carrying one.
    let mut stored: Endpoints = created.clone();
    stored.metadata.resource_version = Some("7".into());
    for s in stored.subsets.iter_mut().flatten() {
        for a in s.addresses.iter_mut().flatten() {
            a.target_ref.as_mut().unwrap().resource_version = Some("3".into());
        }
    }
    assert!(
        desired_endpoints(&svc, &pods, Some(&stored)).is_none(),
        "nothing to write"
    );

    // A pod turning not ready changes the subsets; the update keeps the resourceVersion.
    let not_ready = vec![Arc::new(pod("a", "10.0.0.1", false))];
    let updated = desired_endpoints(&svc, &not_ready, Some(&stored)).expect("an update");
    assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(
        ips(&updated.subsets.as_ref().unwrap()[0].not_ready_addresses),
        ["10.0.0.1"]
    );

    // A label change on the Service alone is written too.
    let mut relabelled = svc.clone();
    relabelled.metadata.labels = Some(labels(&[("tier", "back")]));
    assert!(desired_endpoints(&relabelled, &pods, Some(&stored)).is_some());
}

#[test]
fn services_without_selector_and_external_names_are_not_managed() {
    let mut svc = service(Vec::new());
    assert!(membership::managed_selector(&svc).is_some());
    svc.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
    assert!(membership::managed_selector(&svc).is_none());
    svc.spec.as_mut().unwrap().selector = None;
    assert!(membership::managed_selector(&svc).is_none());
    let mut ext = service(Vec::new());
    ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    assert!(membership::managed_selector(&ext).is_none());
}

#[test]
fn pod_changes_queue_the_services_they_concern() {
    let services = Informer::<Service>::new(watcher::Config::default());
    let mut list = None;
    let mut other = service(Vec::new());
    other.metadata.name = Some("api".into());
    other.spec.as_mut().unwrap().selector = Some(labels(&[("app", "api")]));
    services.apply(Event::Apply(service(Vec::new())), &mut list);
    services.apply(Event::Apply(other), &mut list);
    let web = ObjectRef::namespaced("default", "web");
    let api = ObjectRef::namespaced("default", "api");

    let a = Arc::new(pod("a", "10.0.0.1", true));
    let keys = services_for_pod_change(&services, &Change::Added(a.clone()));
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec![web.clone()]);

    // An update that changes nothing endpoints show queues nothing.
    let mut annotated = (*a).clone();
    annotated.metadata.resource_version = Some("2".into());
    annotated.metadata.annotations = Some(labels(&[("x", "y")]));
    let change = Change::Updated {
        old: a.clone(),
        new: Arc::new(annotated),
    };
    assert!(services_for_pod_change(&services, &change).is_empty());

    // Readiness changes queue the pod's Services.
    let mut unready = pod("a", "10.0.0.1", false);
    unready.metadata.resource_version = Some("2".into());
    let change = Change::Updated {
        old: a.clone(),
        new: Arc::new(unready),
    };
    assert_eq!(
        services_for_pod_change(&services, &change)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![web.clone()]
    );

    // Moving from one Service to another queues both.
    let mut moved = (*a).clone();
    moved.metadata.resource_version = Some("2".into());
    moved.metadata.labels = Some(labels(&[("app", "api")]));
    let change = Change::Updated {
        old: a.clone(),
        new: Arc::new(moved),
    };
    let mut keys: Vec<_> = services_for_pod_change(&services, &change)
        .into_iter()
        .collect();
    keys.sort();
    assert_eq!(keys, [api, web]);
}
