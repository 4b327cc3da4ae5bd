use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn port(name: &str, protocol: &str, number: i32) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.to_string()),
        protocol: Some(protocol.to_string()),
        port: number,
        ..Default::default()
    }
}

fn service(ns: &str, name: &str, spec: ServiceSpec) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn cluster_ip(ns: &str, name: &str, ips: &[&str], ports: Vec<ServicePort>) -> Service {
    service(
        ns,
        name,
        ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            cluster_ip: ips.first().map(|s| s.to_string()),
            cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(ports),
            ..Default::default()
        },
    )
}

fn headless(ns: &str, name: &str, ports: Vec<ServicePort>) -> Service {
    cluster_ip(ns, name, &["None"], ports)
}

fn external(ns: &str, name: &str, target: &str) -> Service {
    service(
        ns,
        name,
        ServiceSpec {
            type_: Some("ExternalName".to_string()),
            external_name: Some(target.to_string()),
            ..Default::default()
        },
    )
}

/// An endpoint: addresses, hostname, ready condition (`None`: unset).
type Ep<'a> = (&'a [&'a str], Option<&'a str>, Option<bool>);

fn slice(ns: &str, svc: &str, name: &str, ports: &[(&str, i32)], eps: &[Ep<'_>]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                svc.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".to_string(),
        endpoints: eps
            .iter()
            .map(|(addrs, hostname, ready)| SliceEndpoint {
                addresses: addrs.iter().map(|a| a.to_string()).collect(),
                hostname: hostname.map(str::to_string),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port)| EndpointPort {
                    name: (!name.is_empty()).then(|| name.to_string()),
                    protocol: Some("TCP".to_string()),
                    port: Some(*port),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn snapshot(services: &[Service], slices: &[EndpointSlice]) -> Snapshot {
    Snapshot::build("cluster.local", DEFAULT_TTL, 7, services, slices)
}

fn a(name: &str, ip: &str) -> Rr {
    Rr {
        name: name.to_string(),
        ttl: DEFAULT_TTL,
        data: RData::A(ip.parse().unwrap()),
    }
}

fn aaaa(name: &str, ip: &str) -> Rr {
    Rr {
        name: name.to_string(),
        ttl: DEFAULT_TTL,
        data: RData::Aaaa(ip.parse().unwrap()),
    }
}

fn srv(name: &str, weight: u16, port: u16, target: &str) -> Rr {
    Rr {
        name: name.to_string(),
        ttl: DEFAULT_TTL,
        data: RData::Srv {
            priority: 0,
            weight,
            port,
            target: target.to_string(),
        },
    }
}

fn answers(answer: Answer) -> Vec<Rr> {
    match answer {
        Answer::Records { answers, .. } => answers,
        other => panic!("expected records, got {other:?}"),
    }
}

fn sample() -> Snapshot {
    snapshot(
        &[
            cluster_ip(
                "default",
                "web",
                &["10.96.0.10"],
                vec![port("http", "TCP", 80), port("", "TCP", 8080)],
            ),
            cluster_ip(
                "default",
                "dual",
                &["10.96.0.11", "fd00::11"],
                vec![port("dns", "UDP", 53)],
            ),
            headless("db", "pg", vec![port("pg", "TCP", 5432)]),
            headless("db", "empty", vec![]),
            external("default", "ext", "Example.COM."),
            external("default", "alias", "web.default.svc.cluster.local"),
            external("default", "loop1", "loop2.default.svc.cluster.local"),
            external("default", "loop2", "loop1.default.svc.cluster.local"),
        ],
        &[
            slice(
                "db",
                "pg",
                "pg-abc",
                &[("pg", 5432)],
                &[
                    (&["10.244.1.5"], Some("pg-0"), Some(true)),
                    (&["10.244.2.6"], Some("pg-1"), None),
                    (&["10.244.3.7"], None, Some(true)),
                    (&["10.244.4.8"], Some("pg-2"), Some(false)),
                ],
            ),
            // A slice of another Service must not leak into pg's records.
            slice(
                "default",
                "pg",
                "pg-other-ns",
                &[],
                &[(&["10.9.9.9"], None, None)],
            ),
        ],
    )
}

#[test]
fn cluster_ip_service_answers_its_address() {
    let s = sample();
    assert_eq!(
        answers(s.lookup("web.default.svc.cluster.local.", RecordType::A)),
        vec![a("web.default.svc.cluster.local", "10.96.0.10")]
    );
}

#[test]
fn names_are_case_insensitive_and_the_trailing_dot_optional() {
    let s = sample();
    assert_eq!(
        answers(s.lookup("WEB.Default.SVC.cluster.LOCAL", RecordType::A)),
        vec![a("web.default.svc.cluster.local", "10.96.0.10")]
    );
}

#[test]
fn aaaa_of_an_ipv4_only_service_is_nodata_not_nxdomain() {
    let s = sample();
    assert_eq!(
        s.lookup("web.default.svc.cluster.local", RecordType::AAAA),
        Answer::NoData
    );
    assert_eq!(
        s.lookup("web.default.svc.cluster.local", RecordType::MX),
        Answer::NoData
    );
}

#[test]
fn dual_stack_service_answers_a_and_aaaa_separately() {
    let s = sample();
    let name = "dual.default.svc.cluster.local";
    assert_eq!(
        answers(s.lookup(name, RecordType::A)),
        vec![a(name, "10.96.0.11")]
    );
    assert_eq!(
        answers(s.lookup(name, RecordType::AAAA)),
        vec![aaaa(name, "fd00::11")]
    );
}

#[test]
fn srv_of_a_named_port_targets_the_service_with_its_address_additional() {
    let s = sample();
    let name = "_http._tcp.web.default.svc.cluster.local";
    match s.lookup(name, RecordType::SRV) {
        Answer::Records {
            answers,
            additionals,
        } => {
            assert_eq!(
                answers,
                vec![srv(name, 100, 80, "web.default.svc.cluster.local")]
            );
            assert_eq!(
                additionals,
                vec![a("web.default.svc.cluster.local", "10.96.0.10")]
            );
        }
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn srv_protocol_must_match_and_unknown_ports_are_nxdomain() {
    let s = sample();
    assert_eq!(
        s.lookup("_http._udp.web.default.svc.cluster.local", RecordType::SRV),
        Answer::NxDomain
    );
    assert_eq!(
        s.lookup("_nope._tcp.web.default.svc.cluster.local", RecordType::SRV),
        Answer::NxDomain
    );
    assert_eq!(
        answers(s.lookup("_dns._udp.dual.default.svc.cluster.local", RecordType::SRV)).len(),
        1
    );
}

#[test]
fn srv_name_asked_for_another_type_is_nodata() {
    let s = sample();
    assert_eq!(
        s.lookup("_http._tcp.web.default.svc.cluster.local", RecordType::A),
        Answer::NoData
    );
    // `_tcp.<svc>` exists as the parent of the SRV names.
    assert_eq!(
        s.lookup("_tcp.web.default.svc.cluster.local", RecordType::A),
        Answer::NoData
    );
}

#[test]
fn unnamed_ports_have_no_srv_records() {
    let s = sample();
    // Only `http` is named: the service-level SRV query lists just it.
    assert_eq!(
        answers(s.lookup("web.default.svc.cluster.local", RecordType::SRV)),
        vec![srv(
            "web.default.svc.cluster.local",
            100,
            80,
            "web.default.svc.cluster.local"
        )]
    );
}

#[test]
fn headless_service_answers_ready_endpoints_only() {
    let s = sample();
    let name = "pg.db.svc.cluster.local";
    assert_eq!(
        answers(s.lookup(name, RecordType::A)),
        vec![
            a(name, "10.244.1.5"),
            a(name, "10.244.2.6"),
            a(name, "10.244.3.7"),
        ],
        "pg-2 is not ready, an unset condition counts as ready"
    );
}

#[test]
fn headless_service_without_endpoints_is_nodata() {
    let s = sample();
    assert_eq!(
        s.lookup("empty.db.svc.cluster.local", RecordType::A),
        Answer::NoData
    );
}

#[test]
fn headless_endpoint_hostnames_resolve_like_statefulset_pods() {
    let s = sample();
    assert_eq!(
        answers(s.lookup("pg-0.pg.db.svc.cluster.local", RecordType::A)),
        vec![a("pg-0.pg.db.svc.cluster.local", "10.244.1.5")]
    );
    // Without a hostname an endpoint is named by its dashed address.
    assert_eq!(
        answers(s.lookup("10-244-3-7.pg.db.svc.cluster.local", RecordType::A)),
        vec![a("10-244-3-7.pg.db.svc.cluster.local", "10.244.3.7")]
    );
    assert_eq!(
        s.lookup("pg-2.pg.db.svc.cluster.local", RecordType::A),
        Answer::NxDomain,
        "not ready endpoints have no name"
    );
    assert_eq!(
        s.lookup("pg-0.pg.db.svc.cluster.local", RecordType::AAAA),
        Answer::NoData
    );
}

#[test]
fn headless_srv_has_one_record_per_endpoint_and_their_addresses() {
    let s = sample();
    let name = "_pg._tcp.pg.db.svc.cluster.local";
    let Answer::Records {
        answers,
        additionals,
    } = s.lookup(name, RecordType::SRV)
    else {
        panic!("expected records")
    };
    assert_eq!(
        answers,
        vec![
            srv(name, 33, 5432, "10-244-3-7.pg.db.svc.cluster.local"),
            srv(name, 33, 5432, "pg-0.pg.db.svc.cluster.local"),
            srv(name, 33, 5432, "pg-1.pg.db.svc.cluster.local"),
        ]
    );
    assert_eq!(
        additionals,
        vec![
            a("10-244-3-7.pg.db.svc.cluster.local", "10.244.3.7"),
            a("pg-0.pg.db.svc.cluster.local", "10.244.1.5"),
            a("pg-1.pg.db.svc.cluster.local", "10.244.2.6"),
        ]
    );
}

#[test]
fn publish_not_ready_addresses_includes_unready_endpoints() {
    let mut svc = headless("db", "pg", vec![]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(true);
    }
    let s = snapshot(
        &[svc],
        &[slice(
            "db",
            "pg",
            "pg-x",
            &[],
            &[(&["10.244.4.8"], Some("pg-2"), Some(false))],
        )],
    );
    assert_eq!(
        answers(s.lookup("pg-2.pg.db.svc.cluster.local", RecordType::A)),
        vec![a("pg-2.pg.db.svc.cluster.local", "10.244.4.8")]
    );
}

#[test]
fn endpoints_in_several_slices_are_merged_and_deduplicated() {
    let s = snapshot(
        &[headless("db", "pg", vec![])],
        &[
            slice("db", "pg", "a", &[], &[(&["10.0.0.1"], Some("pg-0"), None)]),
            slice("db", "pg", "b", &[], &[(&["10.0.0.2"], None, None)]),
            slice("db", "pg", "c", &[], &[(&["10.0.0.1"], Some("pg-0"), None)]),
        ],
    );
    assert_eq!(
        answers(s.lookup("pg.db.svc.cluster.local", RecordType::A)).len(),
        2
    );
}

#[test]
fn external_name_answers_a_cname_for_any_type() {
    let s = sample();
    let name = "ext.default.svc.cluster.local";
    let cname = Rr {
        name: name.to_string(),
        ttl: DEFAULT_TTL,
        data: RData::Cname("example.com".to_string()),
    };
    assert_eq!(answers(s.lookup(name, RecordType::A)), vec![cname.clone()]);
    assert_eq!(answers(s.lookup(name, RecordType::CNAME)), vec![cname]);
}

#[test]
fn external_name_inside_the_zone_is_chased() {
    let s = sample();
    assert_eq!(
        answers(s.lookup("alias.default.svc.cluster.local", RecordType::A)),
        vec![
            Rr {
                name: "alias.default.svc.cluster.local".to_string(),
                ttl: DEFAULT_TTL,
                data: RData::Cname("web.default.svc.cluster.local".to_string()),
            },
            a("web.default.svc.cluster.local", "10.96.0.10"),
        ]
    );
}

#[test]
fn external_name_loops_end() {
    let s = sample();
    let records = answers(s.lookup("loop1.default.svc.cluster.local", RecordType::A));
    assert!(records.len() <= 10, "{records:?}");
    assert!(records.iter().all(|r| matches!(r.data, RData::Cname(_))));
}

#[test]
fn pod_names_answer_their_dashed_address_unverified() {
    let s = sample();
    assert_eq!(
        answers(s.lookup("10-244-1-5.default.pod.cluster.local", RecordType::A)),
        vec![a("10-244-1-5.default.pod.cluster.local", "10.244.1.5")]
    );
    assert_eq!(
        answers(s.lookup("fd00--5.any.pod.cluster.local", RecordType::AAAA)),
        vec![aaaa("fd00--5.any.pod.cluster.local", "fd00::5")]
    );
    assert_eq!(
        s.lookup("10-244-1-5.default.pod.cluster.local", RecordType::AAAA),
        Answer::NoData
    );
    assert_eq!(
        s.lookup("10-244-1.default.pod.cluster.local", RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(
        s.lookup("not-an-ip.default.pod.cluster.local", RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(
        s.lookup("10-244-1-256.default.pod.cluster.local", RecordType::A),
        Answer::NxDomain
    );
}

#[test]
fn unknown_names_in_the_zone_are_nxdomain() {
    let s = sample();
    for name in [
        "nope.default.svc.cluster.local",
        "web.nope.svc.cluster.local",
        "x.y.web.default.svc.cluster.local.extra.svc.cluster.local",
        "nope.cluster.local",
        "pg-9.pg.db.svc.cluster.local",
        "x.web.default.svc.cluster.local",
        "a.b.c.d.e.f.svc.cluster.local",
    ] {
        assert_eq!(s.lookup(name, RecordType::A), Answer::NxDomain, "{name}");
    }
}

#[test]
fn the_zone_and_its_structural_names_exist_without_addresses() {
    let s = sample();
    for name in [
        "cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "default.svc.cluster.local",
    ] {
        assert_eq!(s.lookup(name, RecordType::A), Answer::NoData, "{name}");
    }
    assert_eq!(
        answers(s.lookup("cluster.local", RecordType::SOA)),
        vec![s.soa()]
    );
    let RData::Soa {
        serial, minimum, ..
    } = s.soa().data
    else {
        panic!("soa");
    };
    assert_eq!((serial, minimum), (7, DEFAULT_TTL));
}

#[test]
fn dns_version_is_published() {
    let s = sample();
    assert_eq!(
        answers(s.lookup("dns-version.cluster.local", RecordType::TXT)),
        vec![Rr {
            name: "dns-version.cluster.local".to_string(),
            ttl: DEFAULT_TTL,
            data: RData::Txt("1.1.0".to_string()),
        }]
    );
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    let s = sample();
    assert_eq!(s.lookup("example.com", RecordType::A), Answer::Forward);
    assert_eq!(s.lookup("local", RecordType::A), Answer::Forward);
    // A suffix match on a label boundary only.
    assert_eq!(
        s.lookup("evilcluster.local", RecordType::A),
        Answer::Forward
    );
    assert!(!s.in_zone("evilcluster.local"));
    assert!(s.in_zone("Cluster.Local."));
}

#[test]
fn ptr_for_cluster_ips_and_headless_endpoints() {
    let s = sample();
    let ptr = |name: &str, target: &str| Rr {
        name: name.to_string(),
        ttl: DEFAULT_TTL,
        data: RData::Ptr(target.to_string()),
    };
    assert_eq!(
        answers(s.lookup("10.0.96.10.in-addr.arpa.", RecordType::PTR)),
        vec![ptr(
            "10.0.96.10.in-addr.arpa",
            "web.default.svc.cluster.local"
        )]
    );
    assert_eq!(
        answers(s.lookup("5.1.244.10.in-addr.arpa", RecordType::PTR)),
        vec![ptr(
            "5.1.244.10.in-addr.arpa",
            "pg-0.pg.db.svc.cluster.local"
        )]
    );
    let v6 = "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(
        answers(s.lookup(v6, RecordType::PTR)),
        vec![ptr(v6, "dual.default.svc.cluster.local")]
    );
    assert_eq!(
        s.lookup("10.0.96.10.in-addr.arpa", RecordType::A),
        Answer::NoData
    );
    // Addresses the cluster does not know are someone else's.
    assert_eq!(
        s.lookup("8.8.8.8.in-addr.arpa", RecordType::PTR),
        Answer::Forward
    );
    assert_eq!(
        s.lookup("010.0.96.10.in-addr.arpa", RecordType::PTR),
        Answer::Forward
    );
}

#[test]
fn reverse_names_parse_only_when_complete() {
    assert_eq!(
        parse_reverse("4.3.2.1.in-addr.arpa"),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(parse_reverse("3.2.1.in-addr.arpa"), None);
    assert_eq!(parse_reverse("256.3.2.1.in-addr.arpa"), None);
    assert_eq!(parse_reverse("0.0.ip6.arpa"), None);
    assert_eq!(parse_reverse("example.com"), None);
}

#[test]
fn dashed_ips_round_trip() {
    for ip in ["10.1.2.3", "fd00::7", "2001:db8::1:2"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(parse_dashed_ip(&dashed_ip(ip)), Some(ip), "{ip}");
    }
}

#[test]
fn services_without_a_usable_cluster_ip_exist_without_addresses() {
    let s = snapshot(
        &[
            cluster_ip("default", "pending", &[], vec![]),
            external("default", "blank", ""),
        ],
        &[],
    );
    assert_eq!(
        s.lookup("pending.default.svc.cluster.local", RecordType::A),
        Answer::NoData
    );
    assert_eq!(
        s.lookup("blank.default.svc.cluster.local", RecordType::A),
        Answer::NoData
    );
    assert_eq!(s.service_count(), 2);
}

#[test]
fn a_custom_zone_is_honoured() {
    let s = Snapshot::build(
        ".Example.Internal.",
        30,
        1,
        &[cluster_ip("ns", "svc", &["10.0.0.1"], vec![])],
        &[],
    );
    assert_eq!(s.zone(), "example.internal");
    let name = "svc.ns.svc.example.internal";
    assert_eq!(
        answers(s.lookup(name, RecordType::A)),
        vec![Rr {
            name: name.to_string(),
            ttl: 30,
            data: RData::A("10.0.0.1".parse().unwrap()),
        }]
    );
    assert_eq!(
        s.lookup("svc.ns.svc.cluster.local", RecordType::A),
        Answer::Forward
    );
}
