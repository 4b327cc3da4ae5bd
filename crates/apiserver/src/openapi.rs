//! OpenAPI v3 for kubectl: `/openapi/v3` lists one document per group version, and each
//! document carries the schemas of its kinds (from `k8s-openapi`, descriptions included, for
//! `kubectl explain` and client-side validation) and, per resource, the operations kubectl
//! probes to learn that the server validates fields itself (`fieldValidation`).
//!
//! The documents are built once, on first use, and served as the same bytes afterwards.

use bytes::Bytes;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use rkube_types::{ResourceInfo, registry};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The schema of `info`'s kind, added to `generator`; its name, if rkube knows the type.
fn add_kind(info: &ResourceInfo, generator: &mut SchemaGenerator) -> Option<String> {
    macro_rules! kinds {
        ($($ty:ty),* $(,)?) => {
            $(
                if info.group == <$ty as k8s_openapi::Resource>::GROUP
                    && info.kind == <$ty as k8s_openapi::Resource>::KIND
                {
                    generator.subschema_for::<$ty>();
                    return Some(<$ty as JsonSchema>::schema_name().into_owned());
                }
            )*
        };
    }
    rkube_types::for_each_kind!(kinds);
    None
}

/// `api/v1` or `apis/{group}/{version}`.
fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// The path items of one resource: get and patch, tagged with the kind, with the write
/// parameters kubectl looks for.
fn paths_of(info: &ResourceInfo, schema: &str) -> Vec<(String, Value)> {
    let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let base = format!("/{}", doc_path(info.group, info.version));
    let collection = if info.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", info.plural)
    } else {
        format!("{base}/{}", info.plural)
    };
    let reference = json!({"$ref": format!("#/components/schemas/{schema}")});
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
    let write_params = vec![
        query_param("dryRun"),
        query_param("fieldManager"),
        query_param("fieldValidation"),
    ];
    let mut patch_params = write_params.clone();
    patch_params.push(query_param("force"));
    let item = json!({
        "get": {"operationId": format!("read{}", info.kind), "responses": ok,
                "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
        "put": {"operationId": format!("replace{}", info.kind), "parameters": write_params,
                "responses": ok, "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk},
        "patch": {"operationId": format!("patch{}", info.kind), "parameters": patch_params,
                  "responses": ok, "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
        "delete": {"operationId": format!("delete{}", info.kind), "responses": ok,
                   "x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk},
    });
    let list = json!({
        "post": {"operationId": format!("create{}", info.kind), "parameters": write_params,
                 "responses": ok, "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk},
    });
    vec![
        (collection.clone(), list),
        (format!("{collection}/{{name}}"), item),
    ]
}

/// Builds the document of one group version.
fn build_doc(group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    let mut paths = Map::new();
    for info in registry::all()
        .iter()
        .filter(|i| i.group == group && i.version == version)
    {
        if let Some(schema) = add_kind(info, &mut generator) {
            for (path, item) in paths_of(info, &schema) {
                paths.insert(path, item);
            }
            kinds.push((schema, info));
        }
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (schema, info) in kinds {
        if let Some(Value::Object(s)) = schemas.get_mut(&schema) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": info.group, "version": info.version, "kind": info.kind}]),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::rest::KUBERNETES_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

struct Docs {
    root: Bytes,
    by_path: BTreeMap<String, Bytes>,
}

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_path = BTreeMap::new();
        let mut root_paths = Map::new();
        let mut seen = Vec::new();
        for info in registry::all() {
            let key = (info.group, info.version);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let path = doc_path(info.group, info.version);
            let bytes = Bytes::from(
                serde_json::to_vec(&build_doc(info.group, info.version)).unwrap_or_default(),
            );
            // The hash lets clients cache a document until it changes.
            let hash = format!("{:016X}", fnv1a(&bytes));
            root_paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            by_path.insert(path, bytes);
        }
        let root =
            Bytes::from(serde_json::to_vec(&json!({"paths": root_paths})).unwrap_or_default());
        Docs { root, by_path }
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `/openapi/v3`.
pub fn root() -> Bytes {
    docs().root.clone()
}

/// `/openapi/v3/{path}`, e.g. `api/v1` or `apis/apps/v1`.
pub fn document(path: &str) -> Option<Bytes> {
    docs().by_path.get(path.trim_matches('/')).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_document_has_pod_schema_with_gvk_and_field_validation() {
        let doc: Value =
            serde_json::from_slice(&document("api/v1").expect("api/v1")).expect("json");
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod["properties"]["spec"].is_object());
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .expect("params")
                .iter()
                .any(|p| p["name"] == "fieldValidation"),
            "{patch}"
        );
        let root: Value = serde_json::from_slice(&root()).expect("json");
        assert!(
            root["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .expect("url")
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }
}
