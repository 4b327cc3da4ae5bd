//! The daemon end to end: an in-process apiserver, the proxy's watches and sync loop, and
//! the rules in a scratch network namespace following Service and EndpointSlice changes.
//!
//! Needs root, `ip` and `nft`; without them it fails, unless `RKUBE_SKIP_ROOT_TESTS` is
//! set, in which case it says why and passes.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::Api;
use rkube_proxy::daemon::{self, Health, Settings};
use rkube_proxy::metrics::Metrics;
use rkube_proxy::netns::ScratchNetns;
use rkube_proxy::nft::Nft;
use rkube_proxy::ruleset::Config;
use rkube_testing::{TestApiserver, eventually};
use serde_json::json;
use tokio::sync::watch;

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let nft = Command::new("nft").arg("-V").output().is_ok();
    let why = match (root, nft) {
        (true, true) => return true,
        (false, _) => "not running as root",
        (_, false) => "nft is not installed",
    };
    if std::env::var_os("RKUBE_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipping: {why} (RKUBE_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!("this test needs root, ip and nft: {why}; set RKUBE_SKIP_ROOT_TESTS=1 to skip it");
}

fn slice(eps: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node-1", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("a valid EndpointSlice")
}

async fn table(ns: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "ip",
            "rkube-proxy",
        ])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn table_containing(ns: &str, needle: &str) -> Result<String, String> {
    let t = table(ns).await?;
    if t.contains(needle) {
        Ok(t)
    } else {
        Err(format!("no {needle:?} in:\n{t}"))
    }
}

#[tokio::test]
async fn rules_follow_services_and_endpointslices() {
    if !can_run() {
        return;
    }
    let netns = ScratchNetns::create(&format!("rkube-proxy-daemon-{}", std::process::id()))
        .expect("creating a network namespace");
    let ns_name = netns.name().to_string();
    let api = TestApiserver::start().await;
    let client = api.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}),
            )
            .unwrap(),
        )
        .await
        .expect("namespace created");
    let services: Api<Service> = Api::namespaced(client.clone(), "ns");
    let svc = services
        .create(
            &serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }))
            .unwrap(),
        )
        .await
        .expect("service created");
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("the apiserver allocates a cluster IP");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "ns");
    slices
        .create(&slice(&["10.244.1.2"]))
        .await
        .expect("slice created");

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(Duration::from_secs(60)));
    let (stop_tx, stop) = watch::channel(false);
    let settings = Settings {
        node: "node-1".into(),
        config: Config {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
        },
        min_sync_period: Duration::from_millis(100),
        sync_period: Duration::from_secs(60),
        nft: Nft::in_netns(&ns_name),
    };
    let proxy = tokio::spawn(daemon::run(
        client.clone(),
        settings,
        metrics.clone(),
        health.clone(),
        stop,
    ));

    let wait = Duration::from_secs(15);
    let element = format!("{cluster_ip} . tcp . 80 : goto service-");
    eventually("the service's rules", wait, || {
        table_containing(&ns_name, &element)
    })
    .await;
    assert!(health.ready());
    let t = table(&ns_name).await.unwrap();
    assert!(t.contains("dnat to 10.244.1.2:8080"), "{t}");

    // An endpoint change is applied by a partial sync.
    let mut current = slices.get("web-abc").await.expect("slice read");
    current.endpoints = slice(&["10.244.1.2", "10.244.2.2"]).endpoints;
    slices
        .replace("web-abc", &current)
        .await
        .expect("slice replaced");
    eventually("the new endpoint", wait, || {
        table_containing(&ns_name, "dnat to 10.244.2.2:8080")
    })
    .await;
    let text = metrics.render();
    // Usually a partial sync; a full one if a watch happened to re-list meanwhile.
    let syncs: f64 = text
        .lines()
        .filter(|l| l.starts_with("rkube_proxy_sync_proxy_rules_syncs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(syncs >= 2.0, "a second sync applied the change:\n{text}");
    let programmed = rkube_testing::metric_value(
        &text,
        "rkube_proxy_network_programming_duration_seconds_count",
    )
    .unwrap_or(0.0);
    assert!(
        programmed >= 1.0,
        "network programming latency observed:\n{text}"
    );

    // No endpoints left: rejected.
    slices
        .delete("web-abc", &Default::default())
        .await
        .expect("slice deleted");
    let reject = format!("{cluster_ip} . tcp . 80 : goto reject-chain");
    eventually("the reject element", wait, || {
        table_containing(&ns_name, &reject)
    })
    .await;

    // The Service goes: its element goes.
    services
        .delete("web", &Default::default())
        .await
        .expect("service deleted");
    eventually("the service's elements gone", wait, || async {
        let t = table(&ns_name).await?;
        if t.contains(&cluster_ip) {
            Err(format!("{cluster_ip} still in:\n{t}"))
        } else {
            Ok(())
        }
    })
    .await;

    // Shutdown leaves the rules in place.
    let _ = stop_tx.send(true);
    tokio::time::timeout(wait, proxy)
        .await
        .expect("the daemon stops on the signal")
        .expect("the daemon task ends cleanly");
    assert!(table(&ns_name).await.is_ok(), "the table survives shutdown");
    api.shutdown().await;
}
