//! End-to-end tests of the endpoints and endpointslice controllers: a control plane with
//! fake nodes and the controller manager, pods created directly on nodes (the fake kubelets
//! give them IPs and mark them Ready), Services over them, and the Endpoints and
//! EndpointSlices the controllers write, read back through the API and `kubectl`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::{Api, Client, DeleteParams, ListParams, Patch};
use rkube_testing::cluster::{Cluster, ClusterOptions};
use rkube_testing::eventually;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn start() -> Cluster {
    Cluster::start(ClusterOptions {
        nodes: 3,
        scheduler: false,
        ..Default::default()
    })
    .await
}

/// A pod labelled `app` on `node`, with a container port `name`/`number` when given.
fn pod_manifest(name: &str, node: &str, app: &str, port: Option<(&str, i32)>) -> String {
    let ports = match port {
        Some((port_name, number)) => {
            format!("\n    ports:\n    - name: {port_name}\n      containerPort: {number}")
        }
        None => String::new(),
    };
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {app}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: registry.local/app:v1{ports}
"#
    )
}

/// Waits until the fake kubelet has given pod `name` an IP, and returns it.
async fn pod_ip(client: &Client, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(&format!("pod {name} running with an IP"), WAIT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        pod.status
            .and_then(|s| s.pod_ip)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| format!("pod {name} has no IP yet"))
    })
    .await
}

/// Sets the pod's Ready and ContainersReady conditions through the status subresource.
async fn set_ready(client: &Client, name: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = pods.get(name).await.expect("get pod");
    let mut conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
    for c in &mut conditions {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            c.status = if ready { "True" } else { "False" }.into();
        }
    }
    let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
    pods.patch_status(name, &patch)
        .await
        .expect("patch pod status");
}

/// The Endpoints of a Service as `(ready, not ready)` lists of `ip:port` (or `ip` for a
/// subset without ports), sorted.
async fn endpoints(client: &Client, name: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let ep = api
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no endpoints {name}"))?;
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<i32> = subset.ports.iter().flatten().map(|p| p.port).collect();
        for (list, out) in [
            (&subset.addresses, &mut ready),
            (&subset.not_ready_addresses, &mut not_ready),
        ] {
            for a in list.iter().flatten() {
                if ports.is_empty() {
                    out.push(a.ip.clone());
                }
                for p in &ports {
                    out.push(format!("{}:{p}", a.ip));
                }
            }
        }
    }
    ready.sort();
    not_ready.sort();
    Ok((ready, not_ready))
}

/// The slices the endpointslice controller wrote for a Service.
async fn slices(client: &Client, service: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let selector = format!(
        "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("list endpointslices")
        .items
}

/// One endpoint of a slice as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    ready: bool,
    serving: bool,
    terminating: bool,
    ports: Vec<i32>,
    zone: Option<String>,
}

/// Every endpoint of a Service's slices, by address.
async fn slice_endpoints(client: &Client, service: &str) -> BTreeMap<String, Seen> {
    let mut seen = BTreeMap::new();
    for slice in slices(client, service).await {
        let ports: Vec<i32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port)
            .collect();
        for ep in &slice.endpoints {
            let c = ep.conditions.clone().unwrap_or_default();
            for address in &ep.addresses {
                seen.insert(
                    address.clone(),
                    Seen {
                        ready: c.ready == Some(true),
                        serving: c.serving == Some(true),
                        terminating: c.terminating == Some(true),
                        ports: ports.clone(),
                        zone: ep.zone.clone(),
                    },
                );
            }
        }
    }
    seen
}

fn seen(ready: bool, serving: bool, terminating: bool, ports: &[i32]) -> Seen {
    Seen {
        ready,
        serving,
        terminating,
        ports: ports.to_vec(),
        zone: None,
    }
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    tier: front
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: manual
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: manual
subsets:
- addresses:
  - ip: 192.0.2.10
  ports:
  - port: 80
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pods_their_readiness_and_the_service() {
    let cluster = start().await;
    let client = cluster.client();
    for i in 1..=3 {
        cluster
            .kubectl
            .apply(&pod_manifest(
                &format!("web-{i}"),
                &format!("node-{i}"),
                "web",
                Some(("http", 8080)),
            ))
            .await;
    }
    cluster.kubectl.apply(WEB).await;
    let mut ips = Vec::new();
    for i in 1..=3 {
        ips.push(pod_ip(&client, &format!("web-{i}")).await);
    }
    let at = |ip: &String| format!("{ip}:8080");
    let mut all: Vec<String> = ips.iter().map(at).collect();
    all.sort();

    // Every pod is listed, ready, on its named port.
    eventually("endpoints web list the three pods", WAIT, || async {
        let (ready, not_ready) = endpoints(&client, "web").await?;
        if ready == all && not_ready.is_empty() {
            Ok(())
        } else {
            Err(format!("ready {ready:?}, not ready {not_ready:?}"))
        }
    })
    .await;
    let ep: Endpoints = Api::namespaced(client.clone(), "default")
        .get("web")
        .await
        .expect("endpoints web");
    assert_eq!(
        ep.metadata
            .labels
            .unwrap_or_default()
            .get("tier")
            .map(String::as_str),
        Some("front"),
        "the Endpoints carry the Service's labels"
    );
    let address = ep.subsets.unwrap()[0].addresses.clone().unwrap();
    let first = address
        .iter()
        .find(|a| a.ip == ips[0])
        .expect("web-1's address");
    assert_eq!(first.node_name.as_deref(), Some("node-1"));
    let target = first.target_ref.clone().expect("a target reference");
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("web-1"))
    );

    let ready_all: BTreeMap<String, Seen> = ips
        .iter()
        .map(|ip| (ip.clone(), seen(true, true, false, &[8080])))
        .collect();
    eventually("the slices of web list the three pods", WAIT, || async {
        let got = slice_endpoints(&client, "web").await;
        if got == ready_all {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let slice = slices(&client, "web").await.remove(0);
    assert_eq!(slice.address_type, "IPv4");
    assert!(
        slice
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("web-")
    );
    let owner = &slice.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );
    assert_eq!(slice.metadata.labels.unwrap_or_default()["tier"], "front");

    // web-1 turns not ready, then ready again.
    set_ready(&client, "web-1", false).await;
    eventually("web-1 listed as not ready", WAIT, || async {
        let (ready, not_ready) = endpoints(&client, "web").await?;
        let got = slice_endpoints(&client, "web").await;
        let in_slice = got.get(&ips[0]).cloned();
        if not_ready == [at(&ips[0])]
            && ready.len() == 2
            && in_slice == Some(seen(false, false, false, &[8080]))
        {
            Ok(())
        } else {
            Err(format!(
                "endpoints ready {ready:?} not ready {not_ready:?}; slice {in_slice:?}"
            ))
        }
    })
    .await;
    set_ready(&client, "web-1", true).await;
    eventually("web-1 listed as ready again", WAIT, || async {
        let (ready, not_ready) = endpoints(&client, "web").await?;
        let got = slice_endpoints(&client, "web").await;
        if ready == all && not_ready.is_empty() && got == ready_all {
            Ok(())
        } else {
            Err(format!(
                "endpoints ready {ready:?} not ready {not_ready:?}; slices {got:?}"
            ))
        }
    })
    .await;

    // A zone label on node-2 reaches web-2's endpoint.
    cluster
        .kubectl
        .run(&[
            "label",
            "node",
            "node-2",
            "topology.kubernetes.io/zone=zone-b",
        ])
        .await
        .expect("label node-2");
    eventually("web-2's endpoint in zone-b", WAIT, || async {
        let got = slice_endpoints(&client, "web").await;
        match got.get(&ips[1]) {
            Some(s) if s.zone.as_deref() == Some("zone-b") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // kubectl prints both.
    let out = cluster
        .kubectl
        .run(&["get", "endpoints", "web"])
        .await
        .expect("get endpoints");
    for ip in &ips {
        assert!(out.contains(&at(ip)), "{out}");
    }
    let out = cluster
        .kubectl
        .run(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ])
        .await
        .expect("get endpointslices");
    assert!(
        out.contains("IPv4") && out.contains("8080") && out.contains("web-"),
        "{out}"
    );
    for ip in &ips {
        assert!(out.contains(ip.as_str()), "{out}");
    }

    // A terminating pod (its kubelet gone, so it stays terminating) leaves the Endpoints
    // but stays in the slice as terminating and not ready.
    cluster.nodes.stop_node("node-3");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("web-3", &DeleteParams::default())
        .await
        .expect("delete web-3");
    eventually("web-3 terminating", WAIT, || async {
        let (ready, _) = endpoints(&client, "web").await?;
        let got = slice_endpoints(&client, "web").await;
        let in_slice = got.get(&ips[2]).cloned();
        if !ready.contains(&at(&ips[2])) && in_slice == Some(seen(false, true, true, &[8080])) {
            Ok(())
        } else {
            Err(format!("endpoints ready {ready:?}; slice {in_slice:?}"))
        }
    })
    .await;
    pods.delete("web-3", &DeleteParams::immediate())
        .await
        .expect("force delete web-3");
    eventually("web-3 gone from endpoints and slices", WAIT, || async {
        let (ready, not_ready) = endpoints(&client, "web").await?;
        let got = slice_endpoints(&client, "web").await;
        if ready.len() == 2 && not_ready.is_empty() && got.len() == 2 && !got.contains_key(&ips[2])
        {
            Ok(())
        } else {
            Err(format!(
                "endpoints ready {ready:?} not ready {not_ready:?}; slices {got:?}"
            ))
        }
    })
    .await;

    // The Endpoints of a Service without a selector are the user's: untouched, no slices.
    let (manual, _) = endpoints(&client, "manual")
        .await
        .expect("manual endpoints");
    assert_eq!(manual, ["192.0.2.10:80"]);
    assert!(slices(&client, "manual").await.is_empty());

    // Deleting the Service removes its Endpoints and slices.
    cluster
        .kubectl
        .run(&["delete", "service", "web"])
        .await
        .expect("delete service");
    eventually("endpoints and slices of web gone", WAIT, || async {
        let ep = endpoints(&client, "web").await;
        let left = slices(&client, "web").await.len();
        if ep.is_err() && left == 0 {
            Ok(())
        } else {
            Err(format!("endpoints {ep:?}, {left} slices"))
        }
    })
    .await;
}

const MIXED: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: named
spec:
  selector:
    app: mix
  ports:
  - name: web
    port: 80
    targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: all
spec:
  publishNotReadyAddresses: true
  selector:
    app: mix
  ports:
  - port: 80
    targetPort: 7000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_target_ports_and_published_not_ready_addresses() {
    let cluster = start().await;
    let client = cluster.client();
    cluster
        .kubectl
        .apply(&pod_manifest("a", "node-1", "mix", Some(("http", 8080))))
        .await;
    cluster
        .kubectl
        .apply(&pod_manifest("b", "node-2", "mix", Some(("http", 9090))))
        .await;
    cluster
        .kubectl
        .apply(&pod_manifest("c", "node-3", "mix", None))
        .await;
    cluster.kubectl.apply(MIXED).await;
    let a = pod_ip(&client, "a").await;
    let b = pod_ip(&client, "b").await;
    let c = pod_ip(&client, "c").await;

    // Each pod's own number for the named port; c has none and is left out.
    let mut want = vec![format!("{a}:8080"), format!("{b}:9090")];
    want.sort();
    eventually("endpoints named resolve the port per pod", WAIT, || async {
        let (ready, not_ready) = endpoints(&client, "named").await?;
        if ready == want && not_ready.is_empty() {
            Ok(())
        } else {
            Err(format!("ready {ready:?}, not ready {not_ready:?}"))
        }
    })
    .await;
    // Slices group endpoints by their ports: c lands in a slice without ports, as upstream.
    let want_slices = BTreeMap::from([
        (a.clone(), seen(true, true, false, &[8080])),
        (b.clone(), seen(true, true, false, &[9090])),
        (c.clone(), seen(true, true, false, &[])),
    ]);
    eventually("slices of named, one per port set", WAIT, || async {
        let got = slice_endpoints(&client, "named").await;
        let count = slices(&client, "named").await.len();
        if got == want_slices && count == 3 {
            Ok(())
        } else {
            Err(format!("{count} slices: {got:?}"))
        }
    })
    .await;

    // With publishNotReadyAddresses a pod that is not ready is listed as ready.
    set_ready(&client, "b", false).await;
    eventually("b not ready but published", WAIT, || async {
        let (_, not_ready_named) = endpoints(&client, "named").await?;
        let (ready, not_ready) = endpoints(&client, "all").await?;
        let got = slice_endpoints(&client, "all").await;
        let in_slice = got.get(&b).cloned();
        if not_ready_named == [format!("{b}:9090")]
            && ready.contains(&format!("{b}:7000"))
            && ready.len() == 3
            && not_ready.is_empty()
            && in_slice == Some(seen(true, false, false, &[7000]))
        {
            Ok(())
        } else {
            Err(format!(
                "named not ready {not_ready_named:?}; all ready {ready:?} not ready {not_ready:?}; slice {in_slice:?}"
            ))
        }
    })
    .await;
}
