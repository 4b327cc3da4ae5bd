//! Service IP and node-port allocation through the stock `kubectl`, against the real
//! `rkube-apiserver` binary: the `kubernetes` Service, explicit and automatic values,
//! conflicts refused with field causes, release on delete, and the tables rebuilt after
//! a SIGKILL.

use rkube_testing::{ApiserverProcess, Kubectl, apiserver_binary};
use serde_json::Value;

fn service(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

const PORT80: &str = "  ports:\n  - port: 80\n    protocol: TCP\n";

async fn start(data: &std::path::Path, extra: &[&str]) -> (ApiserverProcess, Kubectl) {
    let server = ApiserverProcess::spawn(&apiserver_binary(), data, extra)
        .await
        .expect("apiserver starts");
    let kubectl = Kubectl::new(server.kubeconfig());
    (server, kubectl)
}

async fn create(kubectl: &Kubectl, yaml: &str) -> Result<String, String> {
    kubectl.run_stdin(&["create", "-f", "-"], yaml).await
}

#[tokio::test]
async fn cluster_ips_and_node_ports_are_allocated_released_and_rebuilt_after_a_crash() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, kubectl) = start(data.path(), &[]).await;

    // The kubernetes Service: the first address, 443 to the apiserver's port.
    let k8s = kubectl
        .json(&["get", "svc", "kubernetes", "-n", "default"])
        .await;
    assert_eq!(k8s["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(k8s["spec"]["ports"][0]["port"], 443);
    assert_eq!(k8s["spec"]["ports"][0]["targetPort"], server.addr.port());
    let slice = kubectl
        .json(&["get", "endpointslice", "kubernetes", "-n", "default"])
        .await;
    assert_eq!(slice["ports"][0]["port"], server.addr.port());
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");

    // Automatic: from the range, never the kept-back lower band.
    create(
        &kubectl,
        &service("auto", &format!("  type: NodePort\n{PORT80}")),
    )
    .await
    .expect("auto");
    let auto = kubectl.json(&["get", "svc", "auto"]).await;
    let ip: std::net::Ipv4Addr = auto["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    let octets = ip.octets();
    assert!(
        octets[0] == 10
            && (96..112).contains(&octets[1])
            && u32::from(ip) > u32::from(std::net::Ipv4Addr::new(10, 96, 1, 0)),
        "auto cluster IP {ip}"
    );
    let node_port = auto["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    assert_eq!(auto["spec"]["externalTrafficPolicy"], "Cluster");

    // Explicit: honoured, and a second claim is refused with a field cause.
    let dns = service("dns", &format!("  clusterIP: 10.96.0.10\n{PORT80}"));
    create(&kubectl, &dns).await.expect("explicit cluster IP");
    let err = create(
        &kubectl,
        &service("dns2", &format!("  clusterIP: 10.96.0.10\n{PORT80}")),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("The Service \"dns2\" is invalid: spec.clusterIPs[0]: Invalid value: \"10.96.0.10\": failed to allocate IP 10.96.0.10: provided IP is already allocated"),
        "{err}"
    );
    let err = create(
        &kubectl,
        &service("far", &format!("  clusterIP: 192.168.0.1\n{PORT80}")),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("The range of valid IPs is 10.96.0.0/12"),
        "{err}"
    );
    let taken = format!("  type: NodePort\n  ports:\n  - port: 80\n    nodePort: {node_port}\n");
    let err = create(&kubectl, &service("np2", &taken)).await.unwrap_err();
    assert!(
        err.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {node_port}: provided port is already allocated"
        )),
        "{err}"
    );
    let err = create(
        &kubectl,
        &service(
            "np3",
            "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 8080\n",
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("The range of valid ports is 30000-32767"),
        "{err}"
    );
    // A refused create stores nothing.
    let names = kubectl
        .run(&["get", "svc", "-o", "name"])
        .await
        .expect("list");
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["service/auto", "service/dns", "service/kubernetes"]
    );

    // The address is immutable; an update without it keeps it.
    let err = kubectl
        .run(&[
            "patch",
            "svc",
            "dns",
            "-p",
            r#"{"spec":{"clusterIP":"10.96.0.11","clusterIPs":["10.96.0.11"]}}"#,
        ])
        .await
        .unwrap_err();
    assert!(err.contains("may not change once set"), "{err}");
    let mut replaced = kubectl.json(&["get", "svc", "dns"]).await;
    replaced["spec"]
        .as_object_mut()
        .unwrap()
        .remove("clusterIP");
    replaced["spec"]
        .as_object_mut()
        .unwrap()
        .remove("clusterIPs");
    kubectl
        .run_stdin(&["replace", "-f", "-"], &replaced.to_string())
        .await
        .expect("replace without the address");
    assert_eq!(
        kubectl.json(&["get", "svc", "dns"]).await["spec"]["clusterIP"],
        "10.96.0.10"
    );

    // NodePort → ClusterIP gives the port back: another Service can take it.
    kubectl
        .run(&[
            "patch",
            "svc",
            "auto",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ])
        .await
        .expect("type change");
    let auto: Value = kubectl.json(&["get", "svc", "auto"]).await;
    assert!(auto["spec"]["ports"][0].get("nodePort").is_none(), "{auto}");
    create(&kubectl, &service("np2", &taken))
        .await
        .expect("the released node port");

    // Delete releases; a SIGKILL and restart rebuild the tables from what was stored.
    kubectl
        .run(&["delete", "svc", "dns"])
        .await
        .expect("delete");
    server.kill().await.expect("kill");
    let (_server, kubectl) = start(data.path(), &[]).await;
    create(&kubectl, &dns)
        .await
        .expect("10.96.0.10 was released by the delete");
    let err = create(&kubectl, &service("np4", &taken)).await.unwrap_err();
    assert!(err.contains("provided port is already allocated"), "{err}");
    let err = create(
        &kubectl,
        &service("k2", &format!("  clusterIP: 10.96.0.1\n{PORT80}")),
    )
    .await
    .unwrap_err();
    assert!(err.contains("provided IP is already allocated"), "{err}");
}

#[tokio::test]
async fn the_ranges_come_from_the_flags_and_bad_ones_stop_the_apiserver() {
    let data = tempfile::tempdir().expect("tempdir");
    let (_server, kubectl) = start(
        data.path(),
        &[
            "--service-cluster-ip-range=10.100.0.0/24",
            "--service-node-port-range=31000-31001",
        ],
    )
    .await;
    let k8s = kubectl.json(&["get", "svc", "kubernetes"]).await;
    assert_eq!(k8s["spec"]["clusterIP"], "10.100.0.1");
    for name in ["a", "b"] {
        create(
            &kubectl,
            &service(name, &format!("  type: NodePort\n{PORT80}")),
        )
        .await
        .expect("node port");
    }
    let err = create(
        &kubectl,
        &service("c", &format!("  type: NodePort\n{PORT80}")),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("failed to allocate a nodePort: the range 31000-31001 is full"),
        "{err}"
    );
    assert!(
        kubectl.run(&["get", "svc", "c"]).await.is_err(),
        "a refused create stores nothing"
    );

    let out = tokio::process::Command::new(apiserver_binary())
        .args([
            "--in-memory",
            "--port=0",
            "--service-cluster-ip-range=10.0.0.0/8",
        ])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("between /12 and /29"), "{stderr}");
}
