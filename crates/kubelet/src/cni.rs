//! The node's CNI configuration: a bridge with host-local IPAM on the node's pod CIDR and
//! portmap for hostPorts, written where containerd's CRI plugin reads it. Written
//! atomically (temp file, rename) and only when it changes.
//!
//! The bridge does not masquerade (`ipMasq: false`): its rule would NAT everything leaving
//! the node's pod CIDR, other nodes' pods included. Masquerade of traffic leaving the pod
//! network is the kubelet's own nftables table (see [`crate::network`]).

use std::path::{Path, PathBuf};

use serde_json::json;

/// The file the kubelet owns in the CNI configuration directory.
pub const CONFLIST: &str = "10-rkube.conflist";

/// The conflist for `pod_cidr`; host-local keeps its leases under `ipam_dir`.
pub fn conflist(pod_cidr: &str, bridge: &str, ipam_dir: &Path) -> String {
    let v = json!({
        "cniVersion": "0.4.0",
        "name": "rkube",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Writes the conflist into `conf_dir` if it differs; true when written.
pub async fn write(
    conf_dir: &Path,
    pod_cidr: &str,
    bridge: &str,
    ipam_dir: &Path,
) -> std::io::Result<bool> {
    let text = conflist(pod_cidr, bridge, ipam_dir);
    let path: PathBuf = conf_dir.join(CONFLIST);
    if tokio::fs::read_to_string(&path).await.ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    tokio::fs::create_dir_all(conf_dir).await?;
    let tmp = conf_dir.join(format!(".{CONFLIST}.tmp"));
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_once_and_rewrites_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = dir.path().join("ipam");
        assert!(
            write(dir.path(), "10.244.1.0/24", "rkube0", &ipam)
                .await
                .unwrap()
        );
        assert!(
            !write(dir.path(), "10.244.1.0/24", "rkube0", &ipam)
                .await
                .unwrap()
        );
        assert!(
            write(dir.path(), "10.244.2.0/24", "rkube0", &ipam)
                .await
                .unwrap()
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFLIST)).unwrap())
                .unwrap();
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.2.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
        // Pod-to-pod traffic between nodes keeps its source: no bridge masquerade.
        assert_eq!(v["plugins"][0]["ipMasq"], false);
    }
}
