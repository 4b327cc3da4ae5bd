use super::*;

fn allocator(cidr: &str, ports: &str) -> ServiceAllocator {
    ServiceAllocator::new(
        ServiceCidr::parse(cidr).unwrap(),
        parse_port_range(ports).unwrap(),
    )
}

fn svc(uid: &str, spec: Value) -> Value {
    json!({"metadata": {"name": uid, "namespace": "default", "uid": uid}, "spec": spec})
}

fn cluster_ip(v: &Value) -> Ipv4Addr {
    v["spec"]["clusterIP"].as_str().unwrap().parse().unwrap()
}

/// Admits a create and commits it, as a stored write does.
fn create(a: &ServiceAllocator, obj: &mut Value) -> Result<(), Refusal> {
    a.admit(None, obj).map(Reservation::commit)
}

fn messages(r: Refusal) -> Vec<String> {
    match r {
        Refusal::Invalid(causes) => causes.iter().map(ToString::to_string).collect(),
        Refusal::Exhausted(m) => vec![m],
    }
}

#[test]
fn ranges_parse_and_bad_ones_say_why() {
    let cidr = ServiceCidr::parse("10.96.3.4/12").unwrap();
    assert_eq!(cidr.to_string(), "10.96.0.0/12");
    assert_eq!(cidr.first(), Ipv4Addr::new(10, 96, 0, 1));
    assert_eq!(cidr.nth(9), Ipv4Addr::new(10, 96, 0, 10));
    assert_eq!(cidr.size(), (1 << 20) - 2);
    assert!(matches!(
        ServiceCidr::parse("10.96.0.0"),
        Err(RangeError::Cidr(_))
    ));
    assert!(matches!(
        ServiceCidr::parse("fd00::/108"),
        Err(RangeError::Cidr(_))
    ));
    assert!(matches!(
        ServiceCidr::parse("10.0.0.0/8"),
        Err(RangeError::CidrSize(_))
    ));
    assert_eq!(parse_port_range("30000-32767").unwrap(), 30000..=32767);
    assert_eq!(parse_port_range("31000").unwrap(), 31000..=31000);
    assert!(parse_port_range("32767-30000").is_err());
    assert!(parse_port_range("0-10").is_err());
    assert!(parse_port_range("a-b").is_err());
}

#[test]
fn automatic_addresses_come_from_the_upper_band_and_explicit_ones_are_honoured() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    // A /24 has 254 addresses; the lowest 16 are kept for explicit requests.
    for i in 0..50 {
        let mut s = svc(&format!("u{i}"), json!({"type": "ClusterIP"}));
        create(&a, &mut s).unwrap();
        let ip = cluster_ip(&s);
        assert!(
            u32::from(ip) >= u32::from(Ipv4Addr::new(10, 96, 0, 17)),
            "{ip} in the static band"
        );
        assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
    }
    let mut dns = svc("dns", json!({"clusterIP": "10.96.0.10"}));
    create(&a, &mut dns).unwrap();
    assert_eq!(dns["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    assert_eq!(a.in_use(), (51, 0));
}

#[test]
fn a_taken_or_foreign_address_is_refused_with_a_field_cause_and_takes_nothing() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    create(&a, &mut svc("first", json!({"clusterIP": "10.96.0.10"}))).unwrap();
    let taken = a
        .admit(None, &mut svc("second", json!({"clusterIP": "10.96.0.10"})))
        .unwrap_err();
    assert_eq!(
        messages(taken),
        [
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.10\": failed to allocate IP 10.96.0.10: provided IP is already allocated"
        ]
    );
    let outside = a
        .admit(None, &mut svc("third", json!({"clusterIP": "10.0.0.1"})))
        .unwrap_err();
    assert_eq!(
        messages(outside),
        [
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.1\": failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/24"
        ]
    );
    let junk = a
        .admit(None, &mut svc("fourth", json!({"clusterIP": "ten"})))
        .unwrap_err();
    assert!(messages(junk)[0].contains("must be a valid IP address"));
    let dual = a
        .admit(
            None,
            &mut svc("fifth", json!({"clusterIPs": ["10.96.0.20", "fd00::1"]})),
        )
        .unwrap_err();
    assert!(messages(dual)[0].contains("single-stack IPv4"));
    let mismatch = a
        .admit(
            None,
            &mut svc(
                "sixth",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.21"]}),
            ),
        )
        .unwrap_err();
    assert!(messages(mismatch)[0].contains("must match `clusterIP`"));
    assert_eq!(a.in_use(), (1, 0));
}

#[test]
fn an_uncommitted_reservation_gives_everything_back() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    {
        let mut s = svc(
            "u",
            json!({"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        );
        let _r = a.admit(None, &mut s).unwrap();
        assert_eq!(a.in_use(), (1, 1));
    }
    assert_eq!(
        a.in_use(),
        (0, 0),
        "a failed or dry-run write must not keep anything"
    );
}

#[test]
fn headless_and_external_name_services_take_no_address() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let mut headless = svc("h", json!({"clusterIP": "None"}));
    create(&a, &mut headless).unwrap();
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let mut external = svc(
        "e",
        json!({"type": "ExternalName", "externalName": "example.org"}),
    );
    create(&a, &mut external).unwrap();
    assert!(external["spec"].get("clusterIP").is_none());
    let refused = a
        .admit(
            None,
            &mut svc(
                "x",
                json!({"type": "ExternalName", "clusterIP": "10.96.0.9"}),
            ),
        )
        .unwrap_err();
    assert!(messages(refused)[0].contains("may not be set when `type` is 'ExternalName'"));
    assert_eq!(a.in_use(), (0, 0));
}

#[test]
fn an_update_keeps_the_address_refuses_a_change_and_a_type_change_releases_it() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let mut old = svc("u", json!({"type": "ClusterIP"}));
    create(&a, &mut old).unwrap();
    let ip = cluster_ip(&old);
    // A PUT without the address keeps it.
    let mut put = svc("u", json!({"type": "ClusterIP"}));
    a.admit(Some(&old), &mut put).unwrap().commit();
    assert_eq!(cluster_ip(&put), ip);
    let mut changed = svc("u", json!({"clusterIP": "10.96.0.3"}));
    let refused = a.admit(Some(&old), &mut changed).unwrap_err();
    assert!(messages(refused)[0].ends_with("may not change once set"));
    assert!(a.holds_ip(ip));
    assert!(!a.holds_ip(Ipv4Addr::new(10, 96, 0, 3)));
    // To ExternalName: the address goes back once the write is stored.
    let mut external = old.clone();
    external["spec"]["type"] = json!("ExternalName");
    external["spec"]["externalName"] = json!("example.org");
    let r = a.admit(Some(&old), &mut external).unwrap();
    assert!(external["spec"].get("clusterIP").is_none());
    assert!(a.holds_ip(ip), "released only when the write is stored");
    r.commit();
    assert!(!a.holds_ip(ip));
    // And back: a new address.
    let mut back = svc("u", json!({"type": "ClusterIP"}));
    a.admit(Some(&external), &mut back).unwrap().commit();
    assert!(a.holds_ip(cluster_ip(&back)));
}

#[test]
fn node_ports_are_allocated_shared_across_protocols_and_kept_on_update() {
    let a = allocator("10.96.0.0/24", "30000-30100");
    let mut s = svc(
        "u",
        json!({"type": "NodePort", "ports": [
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "web", "port": 80, "protocol": "TCP", "nodePort": 30007},
        ]}),
    );
    create(&a, &mut s).unwrap();
    let ports = &s["spec"]["ports"];
    let dns = ports[0]["nodePort"].as_u64().unwrap();
    assert_eq!(ports[1]["nodePort"].as_u64(), Some(dns));
    assert!(
        (30016..=30100).contains(&dns),
        "{dns} should come from the upper band"
    );
    assert_eq!(ports[2]["nodePort"], 30007);
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(a.in_use(), (1, 2));
    // A PUT that leaves the node ports out keeps them.
    let mut put = svc(
        "u",
        json!({"type": "NodePort", "ports": [
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "web", "port": 80, "protocol": "TCP"},
        ]}),
    );
    a.admit(Some(&s), &mut put).unwrap().commit();
    assert_eq!(put["spec"]["ports"], s["spec"]["ports"]);
    assert_eq!(a.in_use(), (1, 2));
}

#[test]
fn a_taken_or_foreign_node_port_is_refused() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let np = |uid: &str, port: u64| {
        svc(
            uid,
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": port}]}),
        )
    };
    create(&a, &mut np("a", 30080)).unwrap();
    assert_eq!(
        messages(a.admit(None, &mut np("b", 30080)).unwrap_err()),
        ["spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"]
    );
    assert_eq!(
        messages(a.admit(None, &mut np("c", 80)).unwrap_err()),
        [
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );
    let clusterip = svc(
        "d",
        json!({"ports": [{"port": 80, "protocol": "TCP", "nodePort": 30081}]}),
    );
    assert_eq!(
        messages(a.admit(None, &mut clusterip.clone()).unwrap_err()),
        ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
    // The refused writes kept nothing: neither their addresses nor their ports.
    assert_eq!(a.in_use(), (1, 1));
}

#[test]
fn changing_the_type_away_from_node_port_drops_and_releases_the_ports() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let mut old = svc(
        "u",
        json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
    );
    create(&a, &mut old).unwrap();
    assert_eq!(a.in_use(), (1, 1));
    // As `kubectl apply` sends it: the type changes, the live nodePort is still there.
    let mut new = old.clone();
    new["spec"]["type"] = json!("ClusterIP");
    a.admit(Some(&old), &mut new).unwrap().commit();
    assert!(new["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(a.in_use(), (1, 0));
}

#[test]
fn a_full_range_is_an_internal_error_naming_the_range() {
    // A /29 has 6 usable addresses.
    let a = allocator("10.96.0.0/29", "30000-30001");
    for i in 0..6 {
        create(&a, &mut svc(&format!("u{i}"), json!({}))).unwrap();
    }
    let full = a.admit(None, &mut svc("last", json!({}))).unwrap_err();
    assert_eq!(
        full,
        Refusal::Exhausted(
            "failed to allocate a service IP: the range 10.96.0.0/29 is full".into()
        )
    );
    let err = full.into_api_error("last");
    assert_eq!(err.reason, Reason::InternalError);
    let a = allocator("10.96.0.0/24", "30000-30001");
    let np = |uid: &str| {
        svc(
            uid,
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
        )
    };
    create(&a, &mut np("a")).unwrap();
    create(&a, &mut np("b")).unwrap();
    assert!(matches!(
        a.admit(None, &mut np("c")),
        Err(Refusal::Exhausted(_))
    ));
    assert_eq!(a.in_use(), (2, 2));
}

#[test]
fn release_gives_back_only_what_the_service_holds() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let mut s = svc(
        "u",
        json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}),
    );
    create(&a, &mut s).unwrap();
    // Another object claiming the same values (a stale copy under another UID) releases nothing.
    let mut imposter = s.clone();
    imposter["metadata"]["uid"] = json!("other");
    a.release(&imposter);
    assert_eq!(a.in_use(), (1, 1));
    a.release(&s);
    assert_eq!(a.in_use(), (0, 0));
}

#[test]
fn repair_rebuilds_the_tables_and_reports_what_it_cannot_take() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let stored = |name: &str, created: &str, spec: Value| json!({"metadata": {"name": name, "namespace": "default", "uid": name, "creationTimestamp": created}, "spec": spec});
    let services = vec![
        stored(
            "young",
            "2026-01-02T00:00:00Z",
            json!({"clusterIP": "10.96.0.7"}),
        ),
        stored(
            "old",
            "2026-01-01T00:00:00Z",
            json!({"clusterIP": "10.96.0.7", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30500}]}),
        ),
        stored(
            "outside",
            "2026-01-03T00:00:00Z",
            json!({"clusterIP": "10.0.0.7"}),
        ),
        stored(
            "port",
            "2026-01-04T00:00:00Z",
            json!({"clusterIP": "10.96.0.8", "type": "NodePort", "ports": [{"port": 80, "nodePort": 30500}]}),
        ),
        stored(
            "headless",
            "2026-01-05T00:00:00Z",
            json!({"clusterIP": "None"}),
        ),
    ];
    let report = a.repair(&services);
    assert_eq!((report.ips, report.ports), (2, 1));
    assert_eq!(
        report.problems,
        [
            "default/young: cluster IP 10.96.0.7 is already held by an older Service; recreate the Service",
            "default/outside: cluster IP 10.0.0.7 is not within the service CIDR 10.96.0.0/24; recreate the Service to give it a valid one",
            "default/port: node port 30500 is already held by an older Service",
        ]
    );
    assert!(a.holds_ip(Ipv4Addr::new(10, 96, 0, 7)));
    // The older Service's values are its own: deleting the younger one releases nothing.
    a.release(&services[0]);
    assert!(a.holds_ip(Ipv4Addr::new(10, 96, 0, 7)));
    assert_eq!(a.in_use(), (2, 1));
}

#[test]
fn a_headless_node_port_service_is_refused() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let refused = a
        .admit(
            None,
            &mut svc("h", json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "protocol": "TCP"}]})),
        )
        .unwrap_err();
    assert!(messages(refused)[0].contains("may not be set to 'None'"));
    assert_eq!(a.in_use(), (0, 0));
}

#[test]
fn a_load_balancer_without_automatic_node_ports_keeps_explicit_ones_only() {
    let a = allocator("10.96.0.0/24", "30000-32767");
    let mut lb = svc(
        "lb",
        json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [
            {"name": "a", "port": 80, "protocol": "TCP", "nodePort": 30080},
            {"name": "b", "port": 443, "protocol": "TCP"},
        ]}),
    );
    create(&a, &mut lb).unwrap();
    assert_eq!(lb["spec"]["ports"][0]["nodePort"], 30080);
    assert!(lb["spec"]["ports"][1].get("nodePort").is_none());
    assert_eq!(a.in_use(), (1, 1));
}
