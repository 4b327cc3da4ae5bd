//! Pod spec validation: the subset of Kubernetes' `ValidatePodSpec` that catches the mistakes
//! people make in manifests (missing containers or images, bad names, ports, quantities,
//! volume mounts and restart policies).

use super::{invalid_raw, is_dns1123_label, is_valid_port_name, is_valid_port_num, not_found};
use crate::quantity::Quantity;
use crate::status::StatusCause;
use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use std::collections::{BTreeMap, BTreeSet};

/// The restart policies a pod may have.
pub(super) const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];

/// Validates a pod spec at `path` (`spec` for pods, `spec.template.spec` for workloads).
/// `is_pod` adds the checks Kubernetes applies only to pods, not to templates.
pub(super) fn validate_pod_spec(spec: &PodSpec, path: &str, is_pod: bool) -> Vec<StatusCause> {
    let mut causes = Vec::new();

    let mut volumes = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        if volume.name.is_empty() {
            causes.push(StatusCause::required(field));
            continue;
        }
        for msg in is_dns1123_label(&volume.name) {
            causes.push(StatusCause::invalid(&field, &volume.name, msg));
        }
        if !volumes.insert(volume.name.as_str()) {
            causes.push(StatusCause::duplicate(field, &volume.name));
        }
    }

    if spec.containers.is_empty() {
        causes.push(StatusCause::required(format!("{path}.containers")));
    }
    // Container names are unique across init and regular containers.
    let mut names = BTreeSet::new();
    let groups = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ];
    for (group, containers) in groups {
        for (i, container) in containers.iter().enumerate() {
            let at = format!("{path}.{group}[{i}]");
            causes.extend(validate_container(container, &at, &volumes, is_pod));
            if !container.name.is_empty() && !names.insert(container.name.as_str()) {
                causes.push(StatusCause::duplicate(
                    format!("{at}.name"),
                    &container.name,
                ));
            }
        }
    }

    if let Some(policy) = spec.restart_policy.as_deref().filter(|p| !p.is_empty())
        && !RESTART_POLICIES.contains(&policy)
    {
        causes.push(StatusCause::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            &RESTART_POLICIES,
        ));
    }
    causes
}

/// The restart policy as Kubernetes sees it after defaulting (unset means `Always`).
pub(super) fn effective_restart_policy(spec: Option<&PodSpec>) -> &str {
    spec.and_then(|s| s.restart_policy.as_deref())
        .filter(|p| !p.is_empty())
        .unwrap_or("Always")
}

fn validate_container(
    container: &Container,
    at: &str,
    volumes: &BTreeSet<&str>,
    is_pod: bool,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    if container.name.is_empty() {
        causes.push(StatusCause::required(format!("{at}.name")));
    } else {
        for msg in is_dns1123_label(&container.name) {
            causes.push(StatusCause::invalid(
                format!("{at}.name"),
                &container.name,
                msg,
            ));
        }
    }

    let image = container.image.as_deref().unwrap_or("");
    if image.is_empty() {
        causes.push(StatusCause::required(format!("{at}.image")));
    } else if is_pod && image.trim() != image {
        causes.push(StatusCause::invalid(
            format!("{at}.image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }

    let mut port_names = BTreeSet::new();
    for (j, port) in container.ports.iter().flatten().enumerate() {
        let at = format!("{at}.ports[{j}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    causes.push(StatusCause::invalid(format!("{at}.name"), name, msg));
                }
            } else if !port_names.insert(name) {
                causes.push(StatusCause::duplicate(format!("{at}.name"), name));
            }
        }
        if port.container_port == 0 {
            causes.push(StatusCause::required(format!("{at}.containerPort")));
        } else {
            for msg in is_valid_port_num(port.container_port.into()) {
                causes.push(invalid_raw(
                    format!("{at}.containerPort"),
                    port.container_port,
                    &msg,
                ));
            }
        }
        if let Some(host_port) = port.host_port.filter(|&p| p != 0) {
            for msg in is_valid_port_num(host_port.into()) {
                causes.push(invalid_raw(format!("{at}.hostPort"), host_port, &msg));
            }
        }
        if let Some(protocol) = port.protocol.as_deref().filter(|p| !p.is_empty()) {
            causes.extend(check_protocol(protocol, &format!("{at}.protocol")));
        }
    }

    let mut mount_paths = BTreeSet::new();
    for (j, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let at = format!("{at}.volumeMounts[{j}]");
        if mount.name.is_empty() {
            causes.push(StatusCause::required(format!("{at}.name")));
        } else if !volumes.contains(mount.name.as_str()) {
            causes.push(not_found(format!("{at}.name"), &mount.name));
        }
        if mount.mount_path.is_empty() {
            causes.push(StatusCause::required(format!("{at}.mountPath")));
        } else if !mount_paths.insert(mount.mount_path.as_str()) {
            causes.push(StatusCause::invalid(
                format!("{at}.mountPath"),
                &mount.mount_path,
                "must be unique",
            ));
        }
    }

    if let Some(resources) = &container.resources {
        causes.extend(validate_resources(resources, &format!("{at}.resources")));
    }
    causes
}

/// Port protocols, sorted as Kubernetes lists them.
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// Checks a port protocol (`TCP`, `UDP`, `SCTP`).
pub(super) fn check_protocol(protocol: &str, field: &str) -> Option<StatusCause> {
    (!PROTOCOLS.contains(&protocol))
        .then(|| StatusCause::not_supported(field, protocol, &PROTOCOLS))
}

/// Resource quantities parse, are not negative, and requests do not exceed limits.
fn validate_resources(resources: &ResourceRequirements, at: &str) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    let limits = parse_quantities(
        resources.limits.as_ref(),
        &format!("{at}.limits"),
        &mut causes,
    );
    let requests = parse_quantities(
        resources.requests.as_ref(),
        &format!("{at}.requests"),
        &mut causes,
    );
    for (name, request) in &requests {
        if let Some(limit) = limits.get(name)
            && request > limit
        {
            causes.push(StatusCause::invalid(
                format!("{at}.requests[{name}]"),
                &request.to_string(),
                format!("must be less than or equal to {name} limit of {limit}"),
            ));
        }
    }
    causes
}

/// Parses a resource list, recording a cause at `at[name]` for each bad or negative quantity.
fn parse_quantities<'a>(
    list: Option<&'a BTreeMap<String, K8sQuantity>>,
    at: &str,
    causes: &mut Vec<StatusCause>,
) -> BTreeMap<&'a str, Quantity> {
    let mut parsed = BTreeMap::new();
    for (name, raw) in list.into_iter().flatten() {
        let field = format!("{at}[{name}]");
        match Quantity::try_from(raw) {
            Ok(q) if q.is_negative() => causes.push(StatusCause::invalid(
                field,
                &raw.0,
                "must be greater than or equal to 0",
            )),
            Ok(q) => {
                parsed.insert(name.as_str(), q);
            }
            Err(e) => causes.push(StatusCause::invalid(field, &raw.0, e.to_string())),
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes(spec: serde_json::Value) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(spec).expect("test spec decodes");
        validate_pod_spec(&spec, "spec", true)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn minimal_pod_is_valid() {
        assert!(causes(json!({"containers": [{"name": "app", "image": "nginx"}]})).is_empty());
    }

    #[test]
    fn containers_required() {
        assert_eq!(
            causes(json!({"containers": []})),
            vec!["spec.containers: Required value"]
        );
    }

    #[test]
    fn container_names_and_images() {
        let got = causes(json!({
            "initContainers": [{"name": "app", "image": "busybox"}],
            "containers": [
                {"name": "app", "image": "nginx"},
                {"name": "Bad_Name", "image": " nginx"},
                {"name": ""},
            ],
        }));
        assert_eq!(got[0], "spec.containers[0].name: Duplicate value: \"app\"");
        assert!(got[1].starts_with(
            "spec.containers[1].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
        ));
        assert_eq!(
            got[2],
            "spec.containers[1].image: Invalid value: \" nginx\": must not have leading or \
             trailing whitespace"
        );
        assert_eq!(got[3], "spec.containers[2].name: Required value");
        assert_eq!(got[4], "spec.containers[2].image: Required value");
        assert_eq!(got.len(), 5, "{got:#?}");
    }

    #[test]
    fn ports() {
        let got = causes(
            json!({"containers": [{"name": "app", "image": "nginx", "ports": [
                {"containerPort": 80, "name": "http"},
                {"containerPort": 65536, "name": "http"},
                {"containerPort": 0, "hostPort": 70000, "protocol": "HTTP"},
            ]}]}),
        );
        assert_eq!(
            got,
            vec![
                "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[1].containerPort: Invalid value: 65536: must be between \
                 1 and 65535, inclusive",
                "spec.containers[0].ports[2].containerPort: Required value",
                "spec.containers[0].ports[2].hostPort: Invalid value: 70000: must be between 1 \
                 and 65535, inclusive",
                "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported \
                 values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
    }

    #[test]
    fn restart_policy() {
        assert_eq!(
            causes(
                json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "b"}]})
            ),
            vec![
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \
                 \"Always\", \"OnFailure\", \"Never\""
            ]
        );
        for ok in ["Always", "OnFailure", "Never"] {
            assert!(
                causes(json!({"restartPolicy": ok, "containers": [{"name": "a", "image": "b"}]}))
                    .is_empty()
            );
        }
    }

    #[test]
    fn volumes_and_mounts() {
        let got = causes(json!({
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            "containers": [{"name": "a", "image": "b", "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "cache", "mountPath": "/data"},
            ]}],
        }));
        assert_eq!(
            got,
            vec![
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.containers[0].volumeMounts[1].name: Not found: \"cache\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be \
                 unique",
            ]
        );
    }

    #[test]
    fn resources() {
        let got = causes(
            json!({"containers": [{"name": "a", "image": "b", "resources": {
                "limits": {"cpu": "500m", "memory": "lots"},
                "requests": {"cpu": "1", "memory": "-1Gi"},
            }}]}),
        );
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].starts_with(
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match"
        ));
        assert_eq!(
            got[1],
            "spec.containers[0].resources.requests[memory]: Invalid value: \"-1Gi\": must be \
             greater than or equal to 0"
        );
        assert_eq!(
            got[2],
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"1\": must be less than \
             or equal to cpu limit of 500m"
        );
    }
}
