//! Tests of the generated nftables text: representative Services, and differences that
//! touch only what changed.

use std::net::Ipv4Addr;

use super::*;
use crate::model::{Protocol, ServiceKey};

fn config() -> Config {
    Config {
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
    }
}

fn name(ns: &str, svc: &str, port: &str) -> ServicePortName {
    ServicePortName {
        service: ServiceKey::new(ns, svc),
        port: port.into(),
        protocol: Protocol::Tcp,
    }
}

fn ep(ip: &str, ready: bool, terminating: bool, local: bool) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port: 8080,
        ready,
        serving: ready || terminating,
        terminating,
        local,
        unplaced: false,
    }
}

fn port(svc: &str, eps: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        name: name("ns", svc, "http"),
        cluster_ip: "10.96.0.10".parse().unwrap(),
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        endpoints: eps,
    }
}

/// The rules with chain and set names reduced to their kind (and endpoint IP), for
/// readable expectations: `service`, `affinity/10.244.1.2`.
fn short(rules: &PortRules) -> BTreeMap<String, Vec<String>> {
    fn shorten(s: &str) -> String {
        let mut out = Vec::new();
        for word in s.split(' ') {
            let comma = if word.ends_with(',') { "," } else { "" };
            let w = word.trim_start_matches('@').trim_end_matches(',');
            let at = if word.starts_with('@') { "@" } else { "" };
            if is_service_chain(w) || is_affinity_set(w) {
                let kind = w.split('-').next().unwrap_or_default();
                match w.split_once("__") {
                    Some((_, ep)) => {
                        let ip = ep.split('/').next().unwrap_or_default();
                        out.push(format!("{at}{kind}/{ip}{comma}"));
                    }
                    None => out.push(format!("{at}{kind}{comma}")),
                }
            } else {
                out.push(word.to_string());
            }
        }
        out.join(" ")
    }
    rules
        .chains
        .iter()
        .map(|(c, r)| (shorten(c), r.iter().map(|r| shorten(r)).collect()))
        .chain(std::iter::once((
            "elements".to_string(),
            rules
                .elements
                .iter()
                .map(|((m, k), v)| {
                    if m.is_map() {
                        format!("{} {k} : {}", m.name(), shorten(v))
                    } else {
                        format!("{} {k}", m.name())
                    }
                })
                .collect(),
        )))
        .collect()
}

fn expect(rules: &PortRules, expected: &[(&str, &[&str])]) {
    let got = short(rules);
    let want: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(c, r)| (c.to_string(), r.iter().map(|r| r.to_string()).collect()))
        .collect();
    assert_eq!(got, want, "generated rules differ");
}

#[test]
fn cluster_ip_service_picks_an_endpoint_with_a_cascade() {
    let p = port(
        "web",
        vec![
            ep("10.244.1.2", true, false, true),
            ep("10.244.2.2", true, false, false),
            ep("10.244.3.2", true, false, false),
        ],
    );
    let rules = PortRules::generate(&p, &config());
    expect(
        &rules,
        &[
            (
                "service",
                &[
                    "numgen random mod 3 0 meta l4proto tcp dnat to 10.244.1.2:8080",
                    "numgen random mod 2 0 meta l4proto tcp dnat to 10.244.2.2:8080",
                    "meta l4proto tcp dnat to 10.244.3.2:8080",
                ],
            ),
            (
                "elements",
                &[
                    "service-ips 10.96.0.10 . tcp . 80 : goto service",
                    // Only the local endpoint can be its own client here.
                    "hairpin 10.244.1.2 . 10.244.1.2",
                ],
            ),
        ],
    );
    // Names are stable and readable.
    let chain = rules
        .chains
        .keys()
        .find(|c| c.starts_with("service-"))
        .unwrap();
    assert!(chain.ends_with("-ns/web/tcp/http"), "{chain}");
    assert_eq!(chain.len(), "service-".len() + 9 + "ns/web/tcp/http".len());
    assert_eq!(PortRules::generate(&p, &config()), rules, "deterministic");
}

#[test]
fn no_endpoints_rejects_in_the_filter_hooks() {
    let mut p = port("web", vec![ep("10.244.1.2", false, false, true)]);
    p.node_port = Some(30080);
    p.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    let rules = PortRules::generate(&p, &config());
    expect(
        &rules,
        &[(
            "elements",
            &[
                "no-endpoint-services 10.96.0.10 . tcp . 80 : goto reject-chain",
                "no-endpoint-services 192.0.2.7 . tcp . 80 : goto reject-chain",
                "no-endpoint-nodeports tcp . 30080 : goto reject-chain",
            ],
        )],
    );
}

#[test]
fn node_ports_and_external_ips_masquerade_with_cluster_policy() {
    let mut p = port("web", vec![ep("10.244.2.2", true, false, false)]);
    p.node_port = Some(30080);
    p.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    let rules = PortRules::generate(&p, &config());
    let s = short(&rules);
    assert_eq!(s["external"], ["jump mark-for-masquerade", "goto service"]);
    assert_eq!(
        s["elements"],
        [
            "service-ips 10.96.0.10 . tcp . 80 : goto service",
            "service-ips 192.0.2.7 . tcp . 80 : goto external",
            "service-nodeports tcp . 30080 : goto external",
        ]
    );
}

#[test]
fn external_local_policy_uses_local_endpoints_and_short_circuits_pods() {
    let mut p = port(
        "web",
        vec![
            ep("10.244.1.2", true, false, true),
            ep("10.244.2.2", true, false, false),
        ],
    );
    p.node_port = Some(30080);
    p.external_local = true;
    let rules = PortRules::generate(&p, &config());
    let s = short(&rules);
    assert_eq!(
        s["external"],
        [
            "ip saddr 10.244.0.0/16 goto service",
            "fib saddr type local jump mark-for-masquerade",
            "fib saddr type local goto service",
            "goto local",
        ]
    );
    assert_eq!(s["local"], ["meta l4proto tcp dnat to 10.244.1.2:8080"]);
    assert_eq!(
        s["elements"],
        [
            "service-ips 10.96.0.10 . tcp . 80 : goto service",
            "service-nodeports tcp . 30080 : goto external",
            // A pod on another node reaching this node's node port may be sent back to
            // itself, unmasqueraded: every endpoint is a hairpin candidate.
            "hairpin 10.244.1.2 . 10.244.1.2",
            "hairpin 10.244.2.2 . 10.244.2.2",
        ]
    );

    // No local endpoint: outside traffic is dropped (not rejected), pods still reach
    // the cluster endpoints.
    p.endpoints = vec![ep("10.244.2.2", true, false, false)];
    let s = short(&PortRules::generate(&p, &config()));
    assert!(!s.contains_key("local"));
    assert_eq!(
        s["external"],
        [
            "ip saddr 10.244.0.0/16 goto service",
            "fib saddr type local jump mark-for-masquerade",
            "fib saddr type local goto service",
        ]
    );
    assert_eq!(
        s["elements"],
        [
            "service-ips 10.96.0.10 . tcp . 80 : goto service",
            "service-nodeports tcp . 30080 : goto external",
            "no-endpoint-nodeports tcp . 30080 : drop",
            "hairpin 10.244.2.2 . 10.244.2.2",
        ]
    );
}

#[test]
fn internal_local_policy_sends_cluster_ip_traffic_to_this_node_only() {
    let mut p = port(
        "web",
        vec![
            ep("10.244.1.2", true, false, true),
            ep("10.244.2.2", true, false, false),
        ],
    );
    p.internal_local = true;
    let s = short(&PortRules::generate(&p, &config()));
    assert!(!s.contains_key("service"), "no cluster chain: {s:?}");
    assert_eq!(s["local"], ["meta l4proto tcp dnat to 10.244.1.2:8080"]);
    assert_eq!(
        s["elements"],
        [
            "service-ips 10.96.0.10 . tcp . 80 : goto local",
            "hairpin 10.244.1.2 . 10.244.1.2",
        ]
    );

    p.endpoints = vec![ep("10.244.2.2", true, false, false)];
    let s = short(&PortRules::generate(&p, &config()));
    assert_eq!(
        s,
        BTreeMap::from([(
            "elements".to_string(),
            vec!["no-endpoint-services 10.96.0.10 . tcp . 80 : drop".to_string()]
        )])
    );
}

#[test]
fn client_ip_affinity_checks_sets_before_numgen_and_refreshes_them() {
    let mut p = port(
        "web",
        vec![
            ep("10.244.1.2", true, false, true),
            ep("10.244.2.2", true, false, false),
        ],
    );
    p.affinity_timeout = Some(60);
    let rules = PortRules::generate(&p, &config());
    let s = short(&rules);
    assert_eq!(
        s["service"],
        [
            "ip saddr @affinity/10.244.1.2 meta l4proto tcp update @affinity/10.244.1.2 { ip saddr } dnat to 10.244.1.2:8080",
            "ip saddr @affinity/10.244.2.2 meta l4proto tcp update @affinity/10.244.2.2 { ip saddr } dnat to 10.244.2.2:8080",
            "numgen random mod 2 0 meta l4proto tcp update @affinity/10.244.1.2 { ip saddr } dnat to 10.244.1.2:8080",
            "meta l4proto tcp update @affinity/10.244.2.2 { ip saddr } dnat to 10.244.2.2:8080",
        ]
    );
    assert_eq!(rules.sets.len(), 2);
    assert!(rules.sets.values().all(|t| *t == 60));
    // A new timeout is a new set, never a conflicting redefinition.
    p.affinity_timeout = Some(120);
    let other = PortRules::generate(&p, &config());
    assert!(other.sets.keys().all(|s| !rules.sets.contains_key(s)));
}

#[test]
fn terminating_endpoints_are_used_only_when_none_is_ready() {
    let p = port(
        "web",
        vec![
            ep("10.244.1.2", false, true, true),
            ep("10.244.1.3", false, false, true),
        ],
    );
    let s = short(&PortRules::generate(&p, &config()));
    assert_eq!(s["service"], ["meta l4proto tcp dnat to 10.244.1.2:8080"]);
    assert!(!format!("{s:?}").contains("10.244.1.3"), "{s:?}");
    assert_eq!(
        s["elements"],
        [
            "service-ips 10.96.0.10 . tcp . 80 : goto service",
            "hairpin 10.244.1.2 . 10.244.1.2",
        ],
        "the fallback endpoint can meet itself too"
    );
}

#[test]
fn an_endpoint_without_a_node_is_a_hairpin_candidate() {
    // Hand-written EndpointSlices often leave `nodeName` out; the endpoint may be a pod
    // of this node, which must reach itself through the Service.
    let mut unplaced = ep("10.244.1.7", true, false, false);
    unplaced.unplaced = true;
    let p = port(
        "manual",
        vec![unplaced, ep("10.244.2.2", true, false, false)],
    );
    let s = short(&PortRules::generate(&p, &config()));
    assert_eq!(
        s["elements"],
        [
            "service-ips 10.96.0.10 . tcp . 80 : goto service",
            "hairpin 10.244.1.7 . 10.244.1.7",
        ]
    );
}

#[test]
fn a_cluster_ip_outside_the_service_range_keeps_its_own_masquerade_rule() {
    let mut p = port("web", vec![ep("10.244.1.2", true, false, true)]);
    p.cluster_ip = "172.30.0.5".parse().unwrap();
    let s = short(&PortRules::generate(&p, &config()));
    assert_eq!(
        s["service"],
        [
            "ip daddr 172.30.0.5 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 10.244.1.2:8080",
        ]
    );
    // Inside the range, the skeleton's one rule covers it.
    p.cluster_ip = "10.111.0.5".parse().unwrap();
    let s = short(&PortRules::generate(&p, &config()));
    assert_eq!(s["service"], ["meta l4proto tcp dnat to 10.244.1.2:8080"]);
    let range: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
    assert!(range.contains_addr("10.111.255.255".parse().unwrap()));
    assert!(!range.contains_addr("10.112.0.0".parse().unwrap()));
}

#[test]
fn from_ports_builds_what_updates_one_by_one_build() {
    // `from_ports` skips `update`'s transaction bookkeeping; the result must not differ,
    // shared elements (an external IP, a hairpin pair) and a repeated port included.
    let mut ports = Vec::new();
    for i in 0..20u8 {
        let mut p = port(
            &format!("svc{i}"),
            (0..(i % 4))
                .map(|e| ep(&format!("10.244.{e}.{}", i % 3), e != 2, e == 2, e == 0))
                .collect(),
        );
        p.cluster_ip = Ipv4Addr::new(10, 96, 1, i);
        p.node_port = (i % 5 == 0).then_some(30000 + u16::from(i));
        p.external_ips = if i % 3 == 0 {
            vec![Ipv4Addr::new(192, 0, 2, 7)]
        } else {
            Vec::new()
        };
        p.affinity_timeout = (i % 4 == 1).then_some(60);
        p.external_local = i % 6 == 0;
        p.internal_local = i % 7 == 3;
        ports.push(p);
    }
    ports.push(ports[4].clone());
    let rules = || {
        ports
            .iter()
            .map(|p| (p.name.clone(), PortRules::generate(p, &config())))
    };
    let built = Ruleset::from_ports(rules());
    let mut folded = Ruleset::default();
    for (name, r) in rules() {
        folded.update(name, Some(r), &mut Transaction::default());
    }
    assert_eq!(built.len(), folded.len());
    assert_eq!(built.rule_count(), folded.rule_count());
    assert_eq!(built.element_count(), folded.element_count());
    let existing = Existing::default();
    assert_eq!(
        built.full_sync(&config(), &existing),
        folded.full_sync(&config(), &existing)
    );
    for p in &ports {
        assert_eq!(
            built.has_chain(&format!("service-{}", port_chain_base(&p.name))),
            folded.has_chain(&format!("service-{}", port_chain_base(&p.name)))
        );
    }
}

#[test]
fn udp_and_sctp_ports_use_their_protocol() {
    for (proto, text) in [(Protocol::Udp, "udp"), (Protocol::Sctp, "sctp")] {
        let mut p = port("dns", vec![ep("10.244.1.2", true, false, true)]);
        p.name.protocol = proto;
        let rules = PortRules::generate(&p, &config());
        let s = short(&rules);
        assert_eq!(
            s["elements"],
            [
                format!("service-ips 10.96.0.10 . {text} . 80 : goto service"),
                "hairpin 10.244.1.2 . 10.244.1.2".to_string(),
            ]
        );
        assert_eq!(
            s["service"],
            [format!("meta l4proto {text} dnat to 10.244.1.2:8080")]
        );
    }
}

fn ruleset_of(ports: &[ServicePort]) -> Ruleset {
    Ruleset::from_ports(
        ports
            .iter()
            .map(|p| (p.name.clone(), PortRules::generate(p, &config()))),
    )
}

#[test]
fn full_sync_rewrites_everything_without_deleting_the_table() {
    let a = port("a", vec![ep("10.244.1.2", true, false, true)]);
    let mut b = port("b", vec![]);
    b.cluster_ip = "10.96.0.11".parse().unwrap();
    let ruleset = ruleset_of(&[a, b]);
    let existing = Existing {
        chains: vec![
            "services".into(),
            "service-XXXXXXXX-ns/gone/tcp/http".into(),
        ],
        sets: vec!["affinity-XXXXXXXX-ns/gone/tcp/http__10.0.0.1/80".into()],
    };
    let plan = ruleset.full_sync(&config(), &existing);
    let s = &plan.script;
    assert!(s.starts_with(
        "add table ip rkube-proxy { comment \"rules for rkube-proxy\"; }\nflush table ip rkube-proxy\n"
    ));
    assert!(!s.contains("delete table"));
    assert!(!s.contains("delete chain"), "chains go later");
    assert!(
        s.contains("delete set ip rkube-proxy affinity-XXXXXXXX-ns/gone/tcp/http__10.0.0.1/80\n")
    );
    assert_eq!(plan.stale_chains, ["service-XXXXXXXX-ns/gone/tcp/http"]);
    for c in Collection::ALL {
        let kind = if c.is_map() { "map" } else { "set" };
        assert!(s.contains(&format!("flush {kind} ip rkube-proxy {}\n", c.name())));
    }
    // The two rules that stand for upstream's per-Service and per-endpoint ones.
    assert!(s.contains(
        "add rule ip rkube-proxy services ip daddr 10.96.0.0/12 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n"
    ));
    assert!(s.contains(
        "add rule ip rkube-proxy nat-postrouting ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade\n"
    ));
    assert!(s.contains(
        "add chain ip rkube-proxy nat-prerouting { type nat hook prerouting priority -100; policy accept; }\n"
    ));
    assert!(s.contains("add rule ip rkube-proxy masquerading masquerade fully-random\n"));
    let elements: Vec<&str> = s.lines().filter(|l| l.starts_with("add element")).collect();
    assert_eq!(elements.len(), 3, "{elements:?}");
    assert!(elements[0].starts_with(
        "add element ip rkube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto service-"
    ));
    assert_eq!(
        elements[1..],
        [
            "add element ip rkube-proxy no-endpoint-services { 10.96.0.11 . tcp . 80 : goto reject-chain }",
            "add element ip rkube-proxy hairpin { 10.244.1.2 . 10.244.1.2 }",
        ]
    );
    assert_eq!(ruleset.element_count(), 3);
    assert_eq!(ruleset.rule_count(), 1);
}

#[test]
fn one_endpoint_change_touches_only_its_service() {
    let ports: Vec<ServicePort> = (0..100)
        .map(|i| {
            let mut p = port(
                &format!("svc{i}"),
                vec![ep(&format!("10.244.{i}.2"), true, false, true)],
            );
            p.cluster_ip = Ipv4Addr::new(10, 96, 1, i as u8);
            p
        })
        .collect();
    let mut ruleset = ruleset_of(&ports);
    let mut changed = ports[42].clone();
    changed
        .endpoints
        .push(ep("10.244.200.9", true, false, false));

    let mut tx = Transaction::default();
    for p in &ports {
        // Unchanged ports add nothing.
        if p.name != changed.name {
            ruleset.update(
                p.name.clone(),
                Some(PortRules::generate(p, &config())),
                &mut tx,
            );
        }
    }
    assert!(tx.is_empty());
    ruleset.update(
        changed.name.clone(),
        Some(PortRules::generate(&changed, &config())),
        &mut tx,
    );
    let script = tx.script(&ruleset);
    let lines: Vec<&str> = script.lines().collect();
    let service_chain = format!("service-{}", port_chain_base(&changed.name));
    assert_eq!(
        lines,
        [
            format!("flush chain ip rkube-proxy {service_chain}"),
            format!(
                "add rule ip rkube-proxy {service_chain} numgen random mod 2 0 meta l4proto tcp dnat to 10.244.42.2:8080"
            ),
            format!(
                "add rule ip rkube-proxy {service_chain} meta l4proto tcp dnat to 10.244.200.9:8080"
            ),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
    );
    assert!(tx.stale_chains().is_empty());
}

#[test]
fn losing_all_endpoints_swaps_map_elements_and_stales_chains() {
    let p = port("web", vec![ep("10.244.1.2", true, false, true)]);
    let mut ruleset = ruleset_of(std::slice::from_ref(&p));
    let mut gone = p.clone();
    gone.endpoints.clear();
    let mut tx = Transaction::default();
    ruleset.update(
        p.name.clone(),
        Some(PortRules::generate(&gone, &config())),
        &mut tx,
    );
    let script = tx.script(&ruleset);
    let svc_chain = format!("service-{}", port_chain_base(&p.name));
    assert_eq!(
        script,
        format!(
            "flush chain ip rkube-proxy {svc_chain}\n\
             delete element ip rkube-proxy service-ips {{ 10.96.0.10 . tcp . 80 }}\n\
             delete element ip rkube-proxy hairpin {{ 10.244.1.2 . 10.244.1.2 }}\n\
             add element ip rkube-proxy no-endpoint-services {{ 10.96.0.10 . tcp . 80 : goto reject-chain }}\n"
        )
    );
    assert_eq!(tx.stale_chains(), std::slice::from_ref(&svc_chain));
    assert!(!ruleset.has_chain(&svc_chain));
    assert_eq!(ruleset.rule_count(), 0);
    assert_eq!(ruleset.element_count(), 1);

    // And the Service going away removes its element.
    let mut tx = Transaction::default();
    ruleset.update(p.name.clone(), None, &mut tx);
    assert_eq!(
        tx.script(&ruleset),
        "delete element ip rkube-proxy no-endpoint-services { 10.96.0.10 . tcp . 80 }\n"
    );
    assert!(ruleset.is_empty());
    assert_eq!(ruleset.element_count(), 0);
}

#[test]
fn a_changed_verdict_is_deleted_then_added() {
    let mut p = port("web", vec![ep("10.244.1.2", true, false, true)]);
    p.node_port = Some(30080);
    p.external_local = true;
    let mut ruleset = ruleset_of(std::slice::from_ref(&p));
    p.external_local = false;
    let mut tx = Transaction::default();
    ruleset.update(
        p.name.clone(),
        Some(PortRules::generate(&p, &config())),
        &mut tx,
    );
    let script = tx.script(&ruleset);
    // Same verdict (goto external) for the node port: no element change at all; the
    // external chain's rules change and the local chain goes.
    assert!(!script.contains("element"), "{script}");
    assert!(script.contains("flush chain ip rkube-proxy external-"));
    assert_eq!(tx.stale_chains().len(), 1);
    assert!(tx.stale_chains()[0].starts_with("local-"));

    // A verdict that changes (internal Local policy) is replaced within the transaction.
    p.internal_local = true;
    let mut tx = Transaction::default();
    ruleset.update(
        p.name.clone(),
        Some(PortRules::generate(&p, &config())),
        &mut tx,
    );
    let script = tx.script(&ruleset);
    let delete = script
        .find("delete element ip rkube-proxy service-ips { 10.96.0.10 . tcp . 80 }")
        .expect("old verdict deleted");
    let add = script
        .find("add element ip rkube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto local-")
        .expect("new verdict added");
    assert!(delete < add);
}

#[test]
fn a_key_claimed_twice_goes_to_the_first_service_until_it_is_free() {
    let mut a = port("a", vec![ep("10.244.1.2", true, false, true)]);
    a.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    let mut b = port("b", vec![ep("10.244.1.3", true, false, true)]);
    b.cluster_ip = "10.96.0.11".parse().unwrap();
    b.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    let mut ruleset = ruleset_of(&[a.clone(), b.clone()]);
    let plan = ruleset.full_sync(&config(), &Existing::default());
    assert_eq!(
        plan.script.matches("192.0.2.7 . tcp . 80").count(),
        1,
        "one element per key"
    );
    let a_external = format!("external-{}", port_chain_base(&a.name));
    let b_external = format!("external-{}", port_chain_base(&b.name));
    assert!(
        plan.script
            .contains(&format!("192.0.2.7 . tcp . 80 : goto {a_external}"))
    );

    let mut tx = Transaction::default();
    ruleset.update(a.name.clone(), None, &mut tx);
    let script = tx.script(&ruleset);
    assert!(script.contains("delete element ip rkube-proxy service-ips { 10.96.0.10 . tcp . 80, 192.0.2.7 . tcp . 80 }"), "{script}");
    assert!(script.contains(&format!(
        "add element ip rkube-proxy service-ips {{ 192.0.2.7 . tcp . 80 : goto {b_external} }}"
    )));
}

#[test]
fn affinity_sets_come_and_go_with_their_chains() {
    let mut p = port("web", vec![ep("10.244.1.2", true, false, true)]);
    let mut ruleset = ruleset_of(std::slice::from_ref(&p));
    p.affinity_timeout = Some(60);
    let mut tx = Transaction::default();
    ruleset.update(
        p.name.clone(),
        Some(PortRules::generate(&p, &config())),
        &mut tx,
    );
    let script = tx.script(&ruleset);
    let set = affinity_set(&p.name, &p.endpoints[0], 60);
    assert!(script.starts_with(&format!(
        "add set ip rkube-proxy {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}\n"
    )));

    p.affinity_timeout = None;
    let mut tx = Transaction::default();
    ruleset.update(
        p.name.clone(),
        Some(PortRules::generate(&p, &config())),
        &mut tx,
    );
    let script = tx.script(&ruleset);
    let flush = script.find("flush chain").unwrap();
    let delete = script
        .find(&format!("delete set ip rkube-proxy {set}\n"))
        .expect("set deleted");
    let re_add = script.find("add rule").unwrap();
    assert!(flush < delete && delete < re_add, "{script}");
}

#[test]
fn ports_of_lists_one_services_ports() {
    let a = port("a", vec![]);
    let mut a2 = port("a", vec![]);
    a2.name.port = "metrics".into();
    let b = port("b", vec![]);
    let ruleset = ruleset_of(&[a.clone(), a2.clone(), b]);
    let key = ServiceKey::new("ns", "a");
    let got: Vec<_> = ruleset.ports_of(&key).cloned().collect();
    assert_eq!(got, [a.name, a2.name]);
    assert_eq!(ruleset.ports_of(&ServiceKey::new("ns", "zz")).count(), 0);
}

#[test]
fn a_hairpin_element_stays_while_another_port_claims_it() {
    // Two Services share a local endpoint: the hairpin pair is one element, which goes
    // only with the last port that needs it.
    let a = port("a", vec![ep("10.244.1.2", true, false, true)]);
    let mut b = port("b", vec![ep("10.244.1.2", true, false, true)]);
    b.cluster_ip = "10.96.0.11".parse().unwrap();
    let mut ruleset = ruleset_of(&[a.clone(), b.clone()]);
    let plan = ruleset.full_sync(&config(), &Existing::default());
    assert_eq!(plan.script.matches("10.244.1.2 . 10.244.1.2").count(), 1);

    let mut tx = Transaction::default();
    ruleset.update(a.name.clone(), None, &mut tx);
    assert!(!tx.script(&ruleset).contains("hairpin"));
    let mut tx = Transaction::default();
    ruleset.update(b.name.clone(), None, &mut tx);
    assert!(
        tx.script(&ruleset)
            .contains("delete element ip rkube-proxy hairpin { 10.244.1.2 . 10.244.1.2 }\n")
    );
    assert_eq!(ruleset.element_count(), 0);
}
