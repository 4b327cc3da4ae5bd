//! Publishing the DNS server as the cluster's `kube-dns` Service when it runs as a daemon
//! beside the control plane (`rkube up`, the compose cluster, systemd) rather than as pods:
//! a Service without a selector at the agreed cluster IP (upstream's convention is the
//! tenth address of the service range), with ports `dns` (53/UDP) and `dns-tcp` (53/TCP)
//! to this server's port, and one EndpointSlice naming the address other nodes' pods reach
//! this server at. Both are rewritten until they are as wanted, and again after an
//! apiserver outage, so a server that starts before the apiserver still publishes itself.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::{Api, Client, ExponentialBackoff};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

/// The value of `endpointslice.kubernetes.io/managed-by` on the slice this server writes,
/// so the endpointslice controller leaves it alone.
pub const MANAGED_BY: &str = "rkube-dns";

/// How often the published objects are checked once they are right.
const RECHECK: Duration = Duration::from_secs(30);

/// What to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The Service's namespace (upstream: `kube-system`).
    pub namespace: String,
    /// The Service's name (upstream: `kube-dns`).
    pub name: String,
    /// The Service's cluster IP (upstream: the tenth address of the range).
    pub cluster_ip: IpAddr,
    /// Where pods reach this server: an address of this machine and the port it listens on.
    pub endpoint: SocketAddr,
}

impl Publication {
    /// The Service, as JSON.
    pub fn service(&self) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "rkube-dns"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.cluster_ip.to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": self.endpoint.port()},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": self.endpoint.port()},
                ],
            },
        })
    }

    /// The EndpointSlice, as JSON.
    pub fn slice(&self) -> serde_json::Value {
        let family = if self.endpoint.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-{MANAGED_BY}", self.name),
                "namespace": self.namespace,
                "labels": {
                    "kubernetes.io/service-name": self.name,
                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                },
            },
            "addressType": family,
            "endpoints": [{
                "addresses": [self.endpoint.ip().to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
            }],
            "ports": [
                {"name": "dns", "port": self.endpoint.port(), "protocol": "UDP"},
                {"name": "dns-tcp", "port": self.endpoint.port(), "protocol": "TCP"},
            ],
        })
    }

    /// Makes the Service and the slice as wanted; Ok(true) when something was written.
    pub async fn reconcile(&self, client: &Client) -> Result<bool, rkube_client::Error> {
        let services: Api<Service> = Api::namespaced(client.clone(), &self.namespace);
        let want: Service = from_json(self.service())?;
        let mut wrote = false;
        match services.get_opt(&self.name).await? {
            None => {
                services.create(&want).await?;
                wrote = true;
            }
            Some(have) => {
                let spec = have.spec.unwrap_or_default();
                let want_spec = want.spec.clone().unwrap_or_default();
                if spec.cluster_ip != want_spec.cluster_ip {
                    // The address is immutable: the Service must be made again.
                    warn!(
                        service = %self.name,
                        have = ?spec.cluster_ip,
                        want = %self.cluster_ip,
                        "the dns service has another cluster ip; recreating it"
                    );
                    services.delete(&self.name, &Default::default()).await?;
                    services.create(&want).await?;
                    wrote = true;
                } else if spec.ports != want_spec.ports || spec.selector.is_some() {
                    let patch = json!({"spec": {"ports": self.service()["spec"]["ports"], "selector": null}});
                    services
                        .patch(&self.name, &rkube_client::Patch::Merge(patch))
                        .await?;
                    wrote = true;
                }
            }
        }
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &self.namespace);
        let want: EndpointSlice = from_json(self.slice())?;
        let name = want.metadata.name.clone().unwrap_or_default();
        match slices.get_opt(&name).await? {
            None => {
                slices.create(&want).await?;
                wrote = true;
            }
            Some(have) if have.endpoints != want.endpoints || have.ports != want.ports => {
                slices.replace(&name, &want).await?;
                wrote = true;
            }
            Some(_) => {}
        }
        Ok(wrote)
    }

    /// Keeps the publication in place until `stop`: retried with backoff after errors,
    /// checked every 30 s once right.
    pub async fn run(self, client: Client, mut stop: watch::Receiver<bool>) {
        let mut backoff = ExponentialBackoff::new(Duration::from_millis(200), RECHECK);
        loop {
            let wait = match self.reconcile(&client).await {
                Ok(wrote) => {
                    if wrote {
                        info!(
                            service = %format!("{}/{}", self.namespace, self.name),
                            cluster_ip = %self.cluster_ip,
                            endpoint = %self.endpoint,
                            "published the dns service"
                        );
                    }
                    backoff.reset();
                    RECHECK
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, retry_in = ?delay, "cannot publish the dns service");
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::stopped(&mut stop) => return,
            }
        }
    }
}

fn from_json<K: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> Result<K, rkube_client::Error> {
    serde_json::from_value(v).map_err(rkube_client::Error::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication() -> Publication {
        Publication {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            cluster_ip: "10.96.0.10".parse().unwrap(),
            endpoint: "192.168.1.5:10053".parse().unwrap(),
        }
    }

    #[test]
    fn the_service_maps_port_53_to_the_servers_port_and_has_no_selector() {
        let svc: Service = serde_json::from_value(publication().service()).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert!(spec.selector.is_none());
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap(), p.target_port))
            .collect();
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
        assert_eq!(
            ports,
            [
                ("dns".to_string(), 53, "UDP".to_string(), Some(Int(10053))),
                (
                    "dns-tcp".to_string(),
                    53,
                    "TCP".to_string(),
                    Some(Int(10053))
                ),
            ]
        );
    }

    #[test]
    fn the_slice_names_the_endpoint_and_its_owner() {
        let slice: EndpointSlice = serde_json::from_value(publication().slice()).unwrap();
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].addresses, ["192.168.1.5"]);
        assert_eq!(slice.ports.unwrap()[0].port, Some(10053));
    }
}
