//! Applies rkube-proxy's rules with the real `nft` in scratch network namespaces: a full
//! sync, partial syncs, idempotent re-syncs, `--cleanup` leaving other tables alone, and
//! traffic through a ClusterIP, a NodePort, a hairpin and a Service without endpoints.
//!
//! Needs root, `ip` and `nft` (and busybox and curl for the traffic test). Without them the tests
//! fail, unless `RKUBE_SKIP_ROOT_TESTS` is set, in which case they say why and pass.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::watcher::Event;
use rkube_proxy::cache::Inputs;
use rkube_proxy::metrics::Metrics;
use rkube_proxy::netns::ScratchNetns;
use rkube_proxy::nft::Nft;
use rkube_proxy::proxier::Proxier;
use rkube_proxy::ruleset::Config;
use rkube_proxy::testbed::Node;
use serde_json::json;

/// `Some(reason)` when this machine cannot run the tests: then they pass only if
/// `RKUBE_SKIP_ROOT_TESTS` is set, and fail saying what is missing otherwise.
fn missing(tools: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not running as root".into());
    }
    for tool in tools {
        let ok = Command::new(tool)
            .arg(if *tool == "busybox" { "--help" } else { "-V" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Returns `true` when the test should go on.
fn require(tools: &[&str]) -> bool {
    match missing(tools) {
        None => true,
        Some(why) if std::env::var_os("RKUBE_SKIP_ROOT_TESTS").is_some() => {
            eprintln!("skipping: {why} (RKUBE_SKIP_ROOT_TESTS is set)");
            false
        }
        Some(why) => panic!(
            "this test needs root, ip, nft (and busybox and curl for traffic): {why}; set RKUBE_SKIP_ROOT_TESTS=1 to skip it"
        ),
    }
}

fn netns(tag: &str) -> ScratchNetns {
    let name = format!("rkube-proxy-test-{}-{tag}", std::process::id());
    ScratchNetns::create(&name).unwrap_or_else(|e| panic!("creating netns {name}: {e}"))
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_ns(ns: &ScratchNetns, args: &[&str]) -> String {
    let mut all = vec!["ip", "netns", "exec", ns.name()];
    all.extend_from_slice(args);
    sh(&all)
}

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": ip,
        "clusterIPs": [ip],
        "type": "ClusterIP",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "ns", "name": name},
        "spec": spec,
    }))
    .expect("a valid Service")
}

/// A slice with one port `http` (8080 unless `protocol` says otherwise); endpoints are
/// `(ip, node, ready)`.
fn slice(svc: &str, name: &str, protocol: &str, eps: &[(&str, &str, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node, ready)| {
            json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready, "serving": ready, "terminating": false}})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": protocol}],
    }))
    .expect("a valid EndpointSlice")
}

fn synced_inputs(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Mutex<Inputs> {
    let mut inputs = Inputs::new();
    inputs.apply_service(Event::Init);
    for s in services {
        inputs.apply_service(Event::InitApply(s));
    }
    inputs.apply_service(Event::InitDone);
    inputs.apply_slice(Event::Init, SystemTime::now());
    for s in slices {
        inputs.apply_slice(Event::InitApply(s), SystemTime::now());
    }
    inputs.apply_slice(Event::InitDone, SystemTime::now());
    Mutex::new(inputs)
}

fn new_proxier(ns: &ScratchNetns) -> Proxier {
    let config = Config {
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
    };
    let mut p = Proxier::new(
        config,
        "node-1",
        Nft::in_netns(ns.name()),
        Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    );
    // The kernels this runs on (6.2+) let go of unreferenced chains at once.
    p.set_stale_chain_delay(Duration::ZERO);
    p
}

fn list(ns: &ScratchNetns) -> String {
    in_ns(ns, &["nft", "list", "table", "ip", "rkube-proxy"])
}

fn lines_with<'a>(listing: &'a str, needle: &str) -> Vec<&'a str> {
    listing.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn rules_apply_update_resync_and_clean_up_in_a_netns() {
    if !require(&["ip", "nft"]) {
        return;
    }
    let ns = netns("rules");
    // Someone else's table, which nothing of ours may touch.
    in_ns(
        &ns,
        &[
            "nft",
            "add table inet other; add chain inet other input { type filter hook input priority 0; }; add rule inet other input tcp dport 22 accept",
        ],
    );
    let other_before = in_ns(&ns, &["nft", "list", "table", "inet", "other"]);

    let inputs = synced_inputs(
        vec![
            service("web", "10.96.0.10", json!({})),
            service(
                "np",
                "10.96.0.11",
                json!({
                    "type": "NodePort",
                    "externalTrafficPolicy": "Local",
                    "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                    "externalIPs": ["192.0.2.7"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                }),
            ),
            service("empty", "10.96.0.12", json!({})),
            service(
                "dns",
                "10.96.0.13",
                json!({"ports": [{"name": "http", "port": 53, "protocol": "UDP"}]}),
            ),
            service(
                "sctp",
                "10.96.0.14",
                json!({"ports": [{"name": "http", "port": 9, "protocol": "SCTP"}]}),
            ),
        ],
        vec![
            slice(
                "web",
                "web-1",
                "TCP",
                &[
                    ("10.244.1.2", "node-1", true),
                    ("10.244.2.2", "node-2", true),
                ],
            ),
            slice(
                "np",
                "np-1",
                "TCP",
                &[
                    ("10.244.1.3", "node-1", true),
                    ("10.244.2.3", "node-2", true),
                ],
            ),
            slice("dns", "dns-1", "UDP", &[("10.244.2.4", "node-2", true)]),
            slice("sctp", "sctp-1", "SCTP", &[("10.244.2.5", "node-2", true)]),
        ],
    );
    let mut proxier = new_proxier(&ns);

    let done = proxier.sync(&inputs).await.expect("full sync applies");
    assert!(done.full);
    let listing = list(&ns);
    for needle in [
        "10.96.0.10 . tcp . 80 : goto service-",
        "10.96.0.11 . tcp . 80 : goto service-",
        "192.0.2.7 . tcp . 80 : goto external-",
        "tcp . 30080 : goto external-",
        "10.96.0.12 . tcp . 80 : goto reject-chain",
        "10.96.0.13 . udp . 53 : goto service-",
        "10.96.0.14 . sctp . 9 : goto service-",
        "meta l4proto udp dnat to 10.244.2.4:8080",
        "meta l4proto sctp dnat to 10.244.2.5:8080",
        "numgen random mod 2 0 meta l4proto tcp dnat to 10.244.1.2:8080",
        "flags dynamic,timeout",
        "ip daddr 10.96.0.0/12 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        "ct status dnat ip saddr . ip daddr @hairpin",
        // Hairpin candidates: web's endpoint on this node, and every endpoint of np,
        // whose Local external policy lets pods of other nodes in unmasqueraded.
        "10.244.1.2 . 10.244.1.2",
        "10.244.1.3 . 10.244.1.3",
        "10.244.2.3 . 10.244.2.3",
        "update @affinity-",
        "masquerade fully-random",
        "fib daddr type local",
    ] {
        assert!(
            listing.contains(needle),
            "expected {needle:?} in the table, got:\n{listing}"
        );
    }
    assert!(
        !listing.contains("10.244.2.2 . 10.244.2.2"),
        "web's endpoint on another node is no hairpin candidate:\n{listing}"
    );
    let service_chains: Vec<&str> = lines_with(&listing, "\tchain ")
        .into_iter()
        .filter(|l| l.contains('/'))
        .collect();
    assert_eq!(
        service_chains.len(),
        6,
        "web, dns and sctp have a service chain each, np a service, a local and an \
         external one, and no endpoint has a chain:\n{listing}"
    );

    // A partial sync: one more endpoint for web.
    inputs.lock().unwrap().apply_slice(
        Event::Apply(slice(
            "web",
            "web-1",
            "TCP",
            &[
                ("10.244.1.2", "node-1", true),
                ("10.244.2.2", "node-2", true),
                ("10.244.3.2", "node-3", true),
            ],
        )),
        SystemTime::now(),
    );
    let done = proxier.sync(&inputs).await.expect("partial sync applies");
    assert!(!done.full);
    assert!(
        done.script_bytes < 2000,
        "a one-endpoint change is a small transaction ({} bytes)",
        done.script_bytes
    );
    let listing = list(&ns);
    assert!(listing.contains("dnat to 10.244.3.2:8080"), "{listing}");
    assert!(listing.contains("numgen random mod 3 0"), "{listing}");

    // web loses every endpoint and `empty` goes away.
    {
        let mut inputs = inputs.lock().unwrap();
        inputs.apply_slice(
            Event::Apply(slice("web", "web-1", "TCP", &[])),
            SystemTime::now(),
        );
        inputs.apply_service(Event::Delete(service("empty", "10.96.0.12", json!({}))));
    }
    proxier.sync(&inputs).await.expect("partial sync applies");
    assert_eq!(proxier.stale_chains().count(), 1, "web's chain went stale");
    let listing = list(&ns);
    assert!(
        listing.contains("10.96.0.10 . tcp . 80 : goto reject-chain"),
        "{listing}"
    );
    assert!(!listing.contains("10.96.0.12"), "{listing}");
    assert!(
        !listing.contains("10.244.1.2 . 10.244.1.2"),
        "web's hairpin pair went with its endpoints:\n{listing}"
    );
    assert!(
        listing.contains("10.244.1.3 . 10.244.1.3"),
        "np's pairs stay:\n{listing}"
    );
    assert!(
        !listing.contains("dnat to 10.244.3.2"),
        "stale chains are flushed"
    );

    // The next sync deletes the stale chains (nothing else changed).
    proxier.sync(&inputs).await.expect("sync applies");
    assert_eq!(proxier.stale_chains().count(), 0);
    let listing = list(&ns);
    assert!(
        !listing.contains("ns/web/"),
        "web's chains are gone:\n{listing}"
    );

    // np drops its session affinity: the sets go in the same partial transaction that
    // flushes the chains whose rules used them.
    inputs.lock().unwrap().apply_service(Event::Apply(service(
        "np",
        "10.96.0.11",
        json!({
            "type": "NodePort",
            "externalTrafficPolicy": "Local",
            "externalIPs": ["192.0.2.7"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
        }),
    )));
    let done = proxier.sync(&inputs).await.expect("deleting sets applies");
    assert!(!done.full);
    let listing = list(&ns);
    assert!(!listing.contains("affinity-"), "{listing}");
    assert!(
        listing.contains("numgen random mod 2 0 meta l4proto tcp dnat to 10.244.1.3:8080"),
        "{listing}"
    );

    // A full sync over an existing table works and changes nothing, set and map elements
    // included.
    let full_listing = || list(&ns);
    let before = full_listing();
    proxier.request_full_sync();
    assert!(
        proxier
            .sync(&inputs)
            .await
            .expect("full resync applies")
            .full
    );
    assert_eq!(
        full_listing(),
        before,
        "a full resync of the same state is a no-op"
    );

    // A restarted proxy (no memory) takes over, and finds leftovers of Services that
    // went away while it was down.
    in_ns(
        &ns,
        &[
            "nft",
            "add chain ip rkube-proxy service-LEFTOVER-ns/gone/tcp/http",
        ],
    );
    let mut restarted = new_proxier(&ns);
    assert!(restarted.sync(&inputs).await.expect("takeover").full);
    assert_eq!(
        restarted.stale_chains().collect::<Vec<_>>(),
        ["service-LEFTOVER-ns/gone/tcp/http"]
    );
    restarted.sync(&inputs).await.expect("stale chain deletion");
    assert_eq!(
        full_listing(),
        before,
        "the leftover chain is deleted, nothing else changed"
    );

    // --cleanup removes our table only, and is happy when there is none.
    let bin = env!("CARGO_BIN_EXE_rkube-proxy");
    for _ in 0..2 {
        in_ns(&ns, &[bin, "--cleanup"]);
    }
    let tables = in_ns(&ns, &["nft", "list", "tables"]);
    assert_eq!(tables.trim(), "table inet other");
    assert_eq!(
        in_ns(&ns, &["nft", "list", "table", "inet", "other"]),
        other_before
    );
}

/// Polls `f` until it returns `Ok`, for at most `deadline`; panics with the last error.
async fn eventually<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= end => {
                panic!("{what}: still failing after {deadline:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn curl(ns: &ScratchNetns, url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "curl",
            "-sS",
            "--max-time",
            "2",
            url,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Kills the child on drop (the pod's web server).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn traffic_reaches_pods_through_cluster_ip_node_port_and_hairpin() {
    if !require(&["ip", "nft", "busybox", "curl"]) {
        return;
    }
    // client (192.168.77.2) ── node (192.168.77.1, 10.244.1.1, the rules) ── pod (10.244.1.2)
    let mut testbed = Node::create(
        &format!("rkube-proxy-test-{}-traffic", std::process::id()),
        Ipv4Addr::new(10, 244, 1, 1),
    )
    .expect("creating the node's netns");
    let pod = testbed
        .add_pod("pod", Ipv4Addr::new(10, 244, 1, 2))
        .expect("creating the pod");
    // The client routes the service range through the node, as a router in front of a
    // cluster may.
    let client = testbed
        .add_outside_host(
            "client",
            Ipv4Addr::new(192, 168, 77, 1),
            Ipv4Addr::new(192, 168, 77, 2),
            24,
            &["10.96.0.0/12"],
        )
        .expect("creating the client");
    let (node, pod, client) = (testbed.netns(), pod.netns(), client.netns());

    let www = tempfile::tempdir().expect("a web root");
    std::fs::write(www.path().join("index.html"), "hello from the pod\n")
        .expect("writing index.html");
    let _server = Child(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                pod.name(),
                "busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
            ])
            .arg(www.path())
            .spawn()
            .expect("starting busybox httpd in the pod"),
    );
    eventually(
        Duration::from_secs(5),
        "the pod's web server answers",
        || curl(pod, "http://10.244.1.2:8080/"),
    )
    .await;

    let node_port = |port: u16, policy: &str| {
        json!({
            "type": "NodePort",
            "externalTrafficPolicy": policy,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": port}],
        })
    };
    let inputs = synced_inputs(
        vec![
            service("web", "10.96.0.10", node_port(30080, "Cluster")),
            service("empty", "10.96.0.12", json!({})),
            service("local", "10.96.0.13", node_port(30081, "Local")),
            service("remote", "10.96.0.14", node_port(30082, "Local")),
            service(
                "sticky",
                "10.96.0.15",
                json!({
                    "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                }),
            ),
        ],
        vec![
            slice("web", "web-1", "TCP", &[("10.244.1.2", "node-1", true)]),
            slice("local", "local-1", "TCP", &[("10.244.1.2", "node-1", true)]),
            slice(
                "sticky",
                "sticky-1",
                "TCP",
                &[("10.244.1.2", "node-1", true)],
            ),
            // On another node that does not exist here: Local policy must not use it.
            slice(
                "remote",
                "remote-1",
                "TCP",
                &[("10.244.2.9", "node-2", true)],
            ),
        ],
    );
    let mut proxier = new_proxier(node);
    proxier.sync(&inputs).await.expect("rules apply");

    let hello = "hello from the pod\n";
    for (from, url, what) in [
        (node, "http://10.96.0.10/", "cluster IP from the node"),
        (
            node,
            "http://192.168.77.1:30080/",
            "node port from the node",
        ),
        (pod, "http://10.96.0.10/", "the pod to itself (hairpin)"),
        // The first request takes the numgen rule and records the client; the second
        // takes the affinity rule: both must be masqueraded back to the pod.
        (
            pod,
            "http://10.96.0.15/",
            "the pod to itself with ClientIP affinity",
        ),
        (
            pod,
            "http://10.96.0.15/",
            "the pod to itself again, now through its affinity entry",
        ),
        (
            client,
            "http://192.168.77.1:30080/",
            "node port from off the node",
        ),
        (
            client,
            "http://10.96.0.10/",
            "cluster IP from off the cluster",
        ),
        (
            client,
            "http://192.168.77.1:30081/",
            "Local node port with a local endpoint",
        ),
    ] {
        let body = curl(from, url).unwrap_or_else(|e| panic!("{what} ({url}): {e}"));
        assert_eq!(body, hello, "{what}");
    }

    let listing = list(node);
    assert!(
        listing.contains("elements = { 10.244.1.2 expires"),
        "the pod is in its affinity set:\n{listing}"
    );

    // curl's 7 is "could not connect" (refused at once); a drop times out (28).
    let err = curl(node, "http://10.96.0.12/").expect_err("no endpoints: rejected");
    assert!(
        err.contains("curl: (7)"),
        "a Service without endpoints is rejected (ICMP port unreachable), not dropped: {err}"
    );
    let err = curl(client, "http://192.168.77.1:30082/").expect_err("no local endpoint");
    assert!(
        err.contains("curl: (28)"),
        "a Local node port without a local endpoint drops outside traffic: {err}"
    );
}

#[test]
fn helpers_build_valid_objects() {
    let s = service("web", "10.96.0.10", json!({"type": "NodePort"}));
    assert_eq!(s.spec.unwrap().type_.as_deref(), Some("NodePort"));
    let sl = slice("web", "web-1", "UDP", &[("10.244.1.2", "n", true)]);
    assert_eq!(sl.endpoints.len(), 1);
    let _: Ipv4Addr = sl.endpoints[0].addresses[0].parse().unwrap();
}
