//! Discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}` and
//! `/apis/{group}/{version}`, built from the resource registry, and aggregated discovery
//! (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) on `/api` and `/apis` for clients that
//! ask for it, as kubectl does: one request instead of one per group version.

use rkube_types::{ResourceInfo, registry};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The Kubernetes version rkube speaks (the API of this minor release).
pub const KUBERNETES_MINOR: &str = "32";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-rkube.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Groups (other than core) and their versions, in registry order.
fn groups() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut groups: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for info in registry::all().iter().filter(|i| !i.group.is_empty()) {
        let versions = groups.entry(info.group).or_default();
        if !versions.contains(&info.version) {
            versions.push(info.version);
        }
    }
    groups
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": list,
        "preferredVersion": list.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn api_groups() -> Value {
    let groups: Vec<Value> = groups()
        .iter()
        .map(|(name, versions)| group_json(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if the group exists.
pub fn api_group(group: &str) -> Option<Value> {
    let groups = groups();
    let versions = groups.get(group)?;
    let mut g = group_json(group, versions);
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Some(g)
}

const ALL_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The discovery entry of a subresource: its kind and verbs.
fn subresource(info: &ResourceInfo, sub: &str) -> Option<Value> {
    let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match sub {
        "status" => ("", "", info.kind, &["get", "patch", "update"]),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "finalize" => ("", "", info.kind, &["update"]),
        // Served once the kubelet exists; not advertised before.
        _ => return None,
    };
    let mut entry = json!({
        "name": format!("{}/{sub}", info.plural),
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if !group.is_empty() {
        entry["group"] = group.into();
        entry["version"] = version.into();
    }
    Some(entry)
}

/// `/api/v1` or `/apis/{group}/{version}`, if that group version exists.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let infos: Vec<&ResourceInfo> = registry::all()
        .iter()
        .filter(|i| i.group == group && i.version == version)
        .collect();
    if infos.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for info in infos {
        let mut entry = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": ALL_VERBS,
        });
        if !info.short_names.is_empty() {
            entry["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            entry["categories"] = json!(info.categories);
        }
        resources.push(entry);
        resources.extend(
            info.subresources
                .iter()
                .filter_map(|s| subresource(info, s)),
        );
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// The media type of aggregated discovery documents.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// The aggregated discovery document of the core group (`core = true`, served on `/api`)
/// or of every other group (served on `/apis`).
pub fn aggregated(core: bool) -> Value {
    let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for info in registry::all()
        .iter()
        .filter(|i| i.group.is_empty() == core)
    {
        let subresources: Vec<Value> = info
            .subresources
            .iter()
            .filter_map(|s| subresource(info, s))
            .map(|entry| {
                let kind = entry["kind"].clone();
                let group = entry
                    .get("group")
                    .cloned()
                    .unwrap_or_else(|| info.group.into());
                let version = entry
                    .get("version")
                    .cloned()
                    .unwrap_or_else(|| info.version.into());
                let name = entry["name"].as_str().unwrap_or_default();
                json!({
                    "subresource": name.split_once('/').map(|(_, s)| s).unwrap_or(name),
                    "responseKind": {"group": group, "version": version, "kind": kind},
                    "verbs": entry["verbs"].clone(),
                })
            })
            .collect();
        let mut resource = json!({
            "resource": info.plural,
            "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
            "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": info.singular,
            "verbs": ALL_VERBS,
        });
        if !info.short_names.is_empty() {
            resource["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            resource["categories"] = json!(info.categories);
        }
        if !subresources.is_empty() {
            resource["subresources"] = Value::Array(subresources);
        }
        groups
            .entry(info.group)
            .or_default()
            .entry(info.version)
            .or_default()
            .push(resource);
    }
    if core && let Some(v1) = groups.get_mut("").and_then(|g| g.get_mut("v1")) {
        v1.push(json!({
            "resource": "bindings",
            "responseKind": {"group": "", "version": "v1", "kind": "Binding"},
            "scope": "Namespaced",
            "singularResource": "binding",
            "verbs": ["create"],
        }));
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|(version, resources)| {
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_lists_groups_and_subresources() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        let core = aggregated(true);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "pods")
            .expect("pods")
            .clone();
        assert_eq!(pods["scope"], "Namespaced");
        assert!(
            pods["subresources"]
                .as_array()
                .expect("subresources")
                .iter()
                .any(|s| s["subresource"] == "status")
        );
        let groups = aggregated(false);
        assert!(
            groups["items"]
                .as_array()
                .expect("items")
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
    }

    #[test]
    fn core_discovery_lists_pods_with_subresources() {
        let list = resource_list("", "v1").expect("core v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        for name in [
            "pods",
            "pods/status",
            "pods/binding",
            "pods/eviction",
            "namespaces",
            "services",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        assert!(resource_list("", "v2").is_none());
    }

    #[test]
    fn groups_have_a_preferred_version() {
        let groups = api_groups();
        let apps = groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["name"] == "apps")
            .expect("apps");
        assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
        assert_eq!(api_group("apps").expect("apps")["kind"], "APIGroup");
        assert!(api_group("nope.example.com").is_none());
    }
}
