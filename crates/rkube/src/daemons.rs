//! The daemons of a local cluster: their command lines and how to tell they are ready.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use rkube_client::{Api, Client, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::layout::{CLUSTER_DNS, Layout, Settings};

/// One daemon of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// rkube-apiserver.
    Apiserver,
    /// rkube-scheduler.
    Scheduler,
    /// rkube-controller-manager.
    ControllerManager,
    /// rkube-kubelet for this machine's node.
    Kubelet,
    /// rkube-kubelet running the hollow nodes.
    HollowKubelet,
    /// rkube-proxy for this machine's node.
    Proxy,
    /// rkube-dns, published as the `kube-dns` Service.
    Dns,
}

impl Daemon {
    /// The daemons `settings` call for, in start order (the apiserver first: the others
    /// need its kubeconfig).
    pub fn wanted(settings: &Settings) -> Vec<Daemon> {
        let mut d = vec![
            Daemon::Apiserver,
            Daemon::Scheduler,
            Daemon::ControllerManager,
        ];
        if settings.real_node {
            d.extend([Daemon::Proxy, Daemon::Dns, Daemon::Kubelet]);
        }
        if settings.hollow_nodes > 0 {
            d.push(Daemon::HollowKubelet);
        }
        d
    }

    /// Every daemon, in stop order: nodes first, so no pod is started while the control
    /// plane stops, and the apiserver last.
    pub const STOP_ORDER: [Daemon; 7] = [
        Daemon::HollowKubelet,
        Daemon::Kubelet,
        Daemon::Proxy,
        Daemon::Dns,
        Daemon::Scheduler,
        Daemon::ControllerManager,
        Daemon::Apiserver,
    ];

    /// The name of its log and pid files.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Apiserver => "apiserver",
            Daemon::Scheduler => "scheduler",
            Daemon::ControllerManager => "controller-manager",
            Daemon::Kubelet => "kubelet",
            Daemon::HollowKubelet => "hollow-kubelet",
            Daemon::Proxy => "proxy",
            Daemon::Dns => "dns",
        }
    }

    /// Its binary.
    pub fn binary(self) -> &'static str {
        match self {
            Daemon::Apiserver => "rkube-apiserver",
            Daemon::Scheduler => "rkube-scheduler",
            Daemon::ControllerManager => "rkube-controller-manager",
            Daemon::Kubelet | Daemon::HollowKubelet => "rkube-kubelet",
            Daemon::Proxy => "rkube-proxy",
            Daemon::Dns => "rkube-dns",
        }
    }

    /// Its command line.
    /// `node_ip` is the address pods reach this machine at (rkube-dns publishes it).
    pub fn args(self, layout: &Layout, s: &Settings, node_ip: Option<IpAddr>) -> Vec<OsString> {
        let kubeconfig = layout.kubeconfig().into_os_string();
        let mut a: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            a.push(format!("--{name}").into());
            a.push(value);
        };
        match self {
            Daemon::Apiserver => {
                flag("data-dir", layout.apiserver().into());
                flag("port", s.apiserver_port.to_string().into());
            }
            Daemon::Scheduler => {
                flag("kubeconfig", kubeconfig);
                flag("bind-address", s.scheduler_health.to_string().into());
                // One replica: no Lease to wait for after a restart.
                flag("leader-elect", "false".into());
            }
            Daemon::ControllerManager => {
                flag("kubeconfig", kubeconfig);
                flag(
                    "bind-address",
                    s.controller_manager_health.to_string().into(),
                );
                flag("leader-elect", "false".into());
            }
            Daemon::Kubelet => {
                flag("kubeconfig", kubeconfig);
                let endpoint = format!("unix://{}", layout.containerd_socket().display());
                flag("container-runtime-endpoint", endpoint.into());
                flag("hostname-override", s.node_name.clone().into());
                flag("root-dir", layout.kubelet().into());
                flag("cni-conf-dir", layout.containerd().join("cni/net.d").into());
                flag("pod-cidr", s.pod_cidr.clone().into());
                flag("cni-bridge", s.cni_bridge.clone().into());
                flag("bind-address", s.kubelet_health.to_string().into());
                flag("port", s.kubelet_port.to_string().into());
                // One node: its pod CIDR is the whole pod network.
                flag("cluster-cidr", s.pod_cidr.clone().into());
                flag("cluster-dns", CLUSTER_DNS.into());
            }
            Daemon::Proxy => {
                flag("kubeconfig", kubeconfig);
                flag("hostname-override", s.node_name.clone().into());
                flag("cluster-cidr", s.pod_cidr.clone().into());
                flag("metrics-bind-address", s.proxy_health.to_string().into());
            }
            Daemon::Dns => {
                flag("kubeconfig", kubeconfig);
                // On the published address, not 0.0.0.0: a UDP answer goes out from the
                // address the route to the pod picks (the bridge's), which a client that
                // asked the node's address (after the kube-dns DNAT) would not take.
                let ip = node_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                flag("listen", SocketAddr::new(ip, s.dns_port).to_string().into());
                flag("health-bind-address", s.dns_health.to_string().into());
                flag("service-ip", CLUSTER_DNS.into());
                if let Some(ip) = node_ip {
                    flag("publish-address", ip.to_string().into());
                }
                // It listens on the machine's address: other hosts of the network must not
                // get a free recursive resolver. Pods, this machine and loopback only.
                let mut allow = vec![s.pod_cidr.clone(), "127.0.0.0/8".to_string()];
                if let Some(ip) = node_ip {
                    allow.push(ip.to_string());
                }
                flag("forward-allow", allow.join(",").into());
            }
            Daemon::HollowKubelet => {
                flag("kubeconfig", kubeconfig);
                flag("hollow-nodes", s.hollow_nodes.to_string().into());
                flag("root-dir", layout.hollow_kubelet().into());
                flag("bind-address", s.hollow_health.to_string().into());
            }
        }
        a
    }

    /// Whether it answers as ready; the error says what it answered instead.
    pub async fn ready(self, layout: &Layout, s: &Settings) -> Result<(), String> {
        match self {
            Daemon::Apiserver => {
                let client = client(layout).await?;
                Api::<Namespace>::all(client)
                    .list(&Default::default())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Daemon::Scheduler => http_ready(s.scheduler_health).await,
            Daemon::ControllerManager => http_ready(s.controller_manager_health).await,
            Daemon::Kubelet => http_ready(s.kubelet_health).await,
            Daemon::HollowKubelet => http_ready(s.hollow_health).await,
            Daemon::Proxy => http_ready(s.proxy_health).await,
            Daemon::Dns => http_ready(s.dns_health).await,
        }
    }
}

/// The address pods reach this machine at: the source address of the default route, as
/// the kubelet picks its node's InternalIP.
pub fn node_ip() -> Option<IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "get", "1.1.1.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "src")?;
    words.next()?.parse().ok()
}

/// A client of the cluster, from the admin kubeconfig.
pub async fn client(layout: &Layout) -> Result<Client, String> {
    let config = ClientConfig::from_kubeconfig(&layout.kubeconfig()).map_err(|e| e.to_string())?;
    Client::connect_with(&config)
        .await
        .map_err(|e| e.to_string())
}

/// `GET /readyz` over plain HTTP: Ok on 200.
pub async fn http_ready(addr: SocketAddr) -> Result<(), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let reply = match tokio::time::timeout(Duration::from_secs(3), exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return Err(format!("{addr}: {e}")),
        Err(_) => return Err(format!("{addr}: no answer within 3 s")),
    };
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b.trim());
        Err(format!("{addr}/readyz: {status} {body}"))
    }
}

/// The taints the node lifecycle controller keeps on a node that is not Ready.
const NODE_LIFECYCLE_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// How many of the nodes whose names start with `prefix` are Ready and schedulable, of how
/// many. Schedulable: the node lifecycle controller has lifted the `not-ready` (or
/// `unreachable`) taint it puts on a node before its first Ready, so pods created as soon as
/// `rkube up` returns find a node that takes them.
pub async fn ready_nodes(client: &Client, prefix: &str) -> Result<(usize, usize), String> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let ours: Vec<&Node> = nodes
        .items
        .iter()
        .filter(|n| n.metadata.name.as_deref().unwrap_or("").starts_with(prefix))
        .collect();
    let ready = ours
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                && !n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|t| NODE_LIFECYCLE_TAINTS.contains(&t.key.as_str()))
        })
        .count();
    Ok((ready, ours.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            apiserver_port: 7443,
            scheduler_health: "127.0.0.1:1".parse().unwrap(),
            controller_manager_health: "127.0.0.1:2".parse().unwrap(),
            real_node: true,
            node_name: "box".into(),
            kubelet_health: "127.0.0.1:3".parse().unwrap(),
            kubelet_port: 4,
            pod_cidr: "10.88.0.0/24".into(),
            cni_bridge: "rkube0".into(),
            hollow_nodes: 0,
            hollow_health: "127.0.0.1:5".parse().unwrap(),
            proxy_health: "127.0.0.1:6".parse().unwrap(),
            dns_port: 7,
            dns_health: "127.0.0.1:8".parse().unwrap(),
        }
    }

    fn args(d: Daemon, layout: &Layout, s: &Settings) -> String {
        d.args(layout, s, Some("192.0.2.1".parse().unwrap()))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn daemons_follow_the_settings() {
        let layout = Layout::new(std::path::Path::new("/d")).unwrap();
        let mut s = settings();
        assert_eq!(
            Daemon::wanted(&s),
            [
                Daemon::Apiserver,
                Daemon::Scheduler,
                Daemon::ControllerManager,
                Daemon::Proxy,
                Daemon::Dns,
                Daemon::Kubelet
            ]
        );
        assert_eq!(
            args(Daemon::Apiserver, &layout, &s),
            "--data-dir /d/apiserver --port 7443"
        );
        assert_eq!(
            args(Daemon::Kubelet, &layout, &s),
            "--kubeconfig /d/apiserver/kubeconfig \
             --container-runtime-endpoint unix:///d/containerd/containerd.sock \
             --hostname-override box --root-dir /d/kubelet \
             --cni-conf-dir /d/containerd/cni/net.d --pod-cidr 10.88.0.0/24 \
             --cni-bridge rkube0 --bind-address 127.0.0.1:3 --port 4 \
             --cluster-cidr 10.88.0.0/24 --cluster-dns 10.96.0.10"
        );
        assert_eq!(
            args(Daemon::Proxy, &layout, &s),
            "--kubeconfig /d/apiserver/kubeconfig --hostname-override box \
             --cluster-cidr 10.88.0.0/24 --metrics-bind-address 127.0.0.1:6"
        );
        assert_eq!(
            args(Daemon::Dns, &layout, &s),
            "--kubeconfig /d/apiserver/kubeconfig --listen 192.0.2.1:7 \
             --health-bind-address 127.0.0.1:8 --service-ip 10.96.0.10 \
             --publish-address 192.0.2.1 \
             --forward-allow 10.88.0.0/24,127.0.0.0/8,192.0.2.1"
        );
        s.real_node = false;
        s.hollow_nodes = 7;
        assert_eq!(
            Daemon::wanted(&s),
            [
                Daemon::Apiserver,
                Daemon::Scheduler,
                Daemon::ControllerManager,
                Daemon::HollowKubelet
            ]
        );
        assert!(args(Daemon::HollowKubelet, &layout, &s).contains("--hollow-nodes 7"));
    }

    #[tokio::test]
    async fn readiness_is_a_200_from_readyz() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for reply in [
                "HTTP/1.1 200 OK\r\n\r\nok",
                "HTTP/1.1 503 Service Unavailable\r\n\r\nnot leading",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz "));
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(http_ready(addr).await, Ok(()));
        let err = http_ready(addr).await.unwrap_err();
        assert!(err.contains("503") && err.contains("not leading"), "{err}");
        server.await.unwrap();
        let err = http_ready(addr).await.unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }
}
