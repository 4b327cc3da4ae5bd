//! A container's environment as CRI key/values, as upstream's `makeEnvironmentVariables`
//! builds it: `envFrom` first (ConfigMaps and Secrets, with an optional prefix), then `env`
//! in order, later entries overriding earlier ones. Literal values expand `$(VAR)`
//! references against the variables defined so far; `valueFrom` reads ConfigMap and Secret
//! keys, the pod's own fields (downward API) and the container's resources.
//!
//! The downward API helpers here (`pod_field_value`, `metadata_field_value`,
//! `resource_field_value`) and the API object cache (`ApiObjects`) are shared with the
//! `downwardAPI` and `projected` volumes of [`crate::volumes`].
//!
//! Not covered: service link variables (`enableServiceLinks`, `FOO_SERVICE_HOST`, ...).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};
use rkube_client::{Api, Client};
use rkube_types::quantity::{Quantity, QuantityError};
use rkube_types::validation::is_qualified_name;

use crate::runtime::cri;

/// Why a container's environment could not be built. The message is what users see in the
/// container status (reason `CreateContainerConfigError`), worded as upstream's kubelet does.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A ConfigMap the container needs does not exist and is not optional.
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
    },
    /// A Secret the container needs does not exist and is not optional.
    #[error("secret \"{name}\" not found")]
    SecretNotFound {
        /// The Secret's name.
        name: String,
    },
    /// A `configMapKeyRef` names a key the ConfigMap does not have.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// A `secretKeyRef` names a key the Secret does not have.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// Reading a ConfigMap or Secret from the apiserver failed.
    #[error("couldn't get {kind} {namespace}/{name}: {source}")]
    Api {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// The pod's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The client's error.
        #[source]
        source: rkube_client::Error,
    },
    /// A `fieldRef` has an `apiVersion` other than `v1`.
    #[error("unsupported pod version: {0}")]
    UnsupportedApiVersion(String),
    /// A `fieldRef` names a field the downward API does not offer.
    #[error("field label not supported: {0}")]
    UnsupportedFieldLabel(String),
    /// A `fieldRef` subscripts a field other than labels or annotations.
    #[error("field label does not support subscript: {0}")]
    SubscriptNotSupported(String),
    /// A `fieldRef` the kubelet cannot resolve (`spec.restartPolicy`, ...).
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// A label or annotation subscript is not a valid key.
    #[error("invalid key subscript in {path}: {reason}")]
    InvalidSubscript {
        /// The whole field path.
        path: String,
        /// What is wrong with the key.
        reason: String,
    },
    /// A `resourceFieldRef` names a resource other than cpu, memory, ephemeral-storage and
    /// hugepages.
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// A `resourceFieldRef` names a container the pod does not have.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A `resourceFieldRef` in a volume does not name its container.
    #[error("resourceFieldRef {0} does not name a container")]
    ContainerNameRequired(String),
    /// A resource quantity or divisor does not parse.
    #[error("invalid quantity {value:?} for {what}: {source}")]
    InvalidQuantity {
        /// The resource or `divisor`.
        what: String,
        /// The text that does not parse.
        value: String,
        /// Why it does not parse.
        #[source]
        source: QuantityError,
    },
}

/// The environment of `container` in `pod`, in the order variables first appear (upstream's
/// order is a Go map's, i.e. random). `node_allocatable` stands in for limits the container
/// does not set in `resourceFieldRef`s, as upstream does.
///
/// `status.podIP(s)` and `status.hostIP(s)` are read from `pod.status`: the caller fills them
/// in (sandbox IP, node IP) before building the environment.
pub async fn container_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Vec<cri::KeyValue>, EnvError> {
    let mut objects = ApiObjects::new(client.clone(), pod_namespace(pod));
    build_env(&mut objects, pod, container, node_allocatable).await
}

/// [`container_env`] over any source of ConfigMaps and Secrets.
async fn build_env(
    objects: &mut ApiObjects,
    pod: &Pod,
    container: &Container,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Vec<cri::KeyValue>, EnvError> {
    let namespace = pod_namespace(pod).to_string();
    let mut env = OrderedEnv::default();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        let (kind, name) = if let Some(source) = &from.config_map_ref {
            let optional = source.optional.unwrap_or(false);
            let Some(config_map) = objects
                .config_map(&source.name)
                .await
                .map_err(|e| api_error("configmap", &namespace, &source.name, e))?
            else {
                if optional {
                    continue;
                }
                return Err(EnvError::ConfigMapNotFound {
                    name: source.name.clone(),
                });
            };
            for (key, value) in config_map.data.iter().flatten() {
                let key = format!("{prefix}{key}");
                if is_env_var_name(&key) {
                    env.set(key, value.clone());
                } else {
                    invalid.push(key);
                }
            }
            ("configMap", &source.name)
        } else if let Some(source) = &from.secret_ref {
            let optional = source.optional.unwrap_or(false);
            let Some(secret) = objects
                .secret(&source.name)
                .await
                .map_err(|e| api_error("secret", &namespace, &source.name, e))?
            else {
                if optional {
                    continue;
                }
                return Err(EnvError::SecretNotFound {
                    name: source.name.clone(),
                });
            };
            for (key, value) in secret.data.iter().flatten() {
                let key = format!("{prefix}{key}");
                if is_env_var_name(&key) {
                    env.set(key, String::from_utf8_lossy(&value.0).into_owned());
                } else {
                    invalid.push(key);
                }
            }
            ("secret", &source.name)
        } else {
            continue;
        };
        if !invalid.is_empty() {
            invalid.sort();
            tracing::warn!(
                pod = %pod_key(pod),
                container = %container.name,
                keys = %invalid.join(", "),
                "keys from the envFrom {kind} {namespace}/{name} were skipped since they are \
                 considered invalid environment variable names"
            );
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (var.value.as_deref(), &var.value_from) {
            (Some(value), _) if !value.is_empty() => expand(value, |name| {
                env.get(name)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("$({name})"))
            }),
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    pod_field_value(field, pod)?
                } else if let Some(field) = &from.resource_field_ref {
                    resource_field_value(field, pod, Some(container), node_allocatable)?
                } else if let Some(selector) = &from.config_map_key_ref {
                    let optional = selector.optional.unwrap_or(false);
                    let config_map = objects
                        .config_map(&selector.name)
                        .await
                        .map_err(|e| api_error("configmap", &namespace, &selector.name, e))?;
                    let Some(config_map) = config_map else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::ConfigMapNotFound {
                            name: selector.name.clone(),
                        });
                    };
                    match config_map.data.as_ref().and_then(|d| d.get(&selector.key)) {
                        Some(value) => value.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKeyNotFound {
                                key: selector.key.clone(),
                                namespace,
                                name: selector.name.clone(),
                            });
                        }
                    }
                } else if let Some(selector) = &from.secret_key_ref {
                    let optional = selector.optional.unwrap_or(false);
                    let secret = objects
                        .secret(&selector.name)
                        .await
                        .map_err(|e| api_error("secret", &namespace, &selector.name, e))?;
                    let Some(secret) = secret else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::SecretNotFound {
                            name: selector.name.clone(),
                        });
                    };
                    match secret.data.as_ref().and_then(|d| d.get(&selector.key)) {
                        Some(value) => String::from_utf8_lossy(&value.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKeyNotFound {
                                key: selector.key.clone(),
                                namespace,
                                name: selector.name.clone(),
                            });
                        }
                    }
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        env.set(var.name.clone(), value);
    }

    Ok(env.into_key_values())
}

/// The variables of `container` that need no API object and no node: literal values
/// (expanded) and `fieldRef`s. What `subPathExpr` in a volume mount expands against.
pub(crate) fn literal_env(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    for var in container.env.iter().flatten() {
        let value = match (var.value.as_deref(), &var.value_from) {
            (Some(value), _) if !value.is_empty() => expand(value, |name| {
                env.get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("$({name})"))
            }),
            (_, Some(from)) => match from.field_ref.as_ref().map(|f| pod_field_value(f, pod)) {
                Some(Ok(value)) => value,
                _ => continue,
            },
            _ => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// Variables in the order they first appear; setting one again replaces its value in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }

    fn into_key_values(self) -> Vec<cri::KeyValue> {
        self.vars
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect()
    }
}

/// Upstream's `expansion.Expand`: `$(NAME)` becomes `mapping(NAME)`, `$$` an escaped `$`;
/// an unterminated `$(` and a `$` before anything else stay as they are.
pub(crate) fn expand(input: &str, mut mapping: impl FnMut(&str) -> String) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            // `$`, `(` and `)` are ASCII, so every slice below is on a char boundary.
            out.push_str(&input[checkpoint..cursor]);
            match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    cursor += 1;
                    checkpoint = cursor + 1;
                }
                b'(' => match input[cursor + 2..].find(')') {
                    Some(len) => {
                        let name = &input[cursor + 2..cursor + 2 + len];
                        out.push_str(&mapping(name));
                        cursor += 2 + len;
                        checkpoint = cursor + 1;
                    }
                    None => {
                        out.push_str("$(");
                        cursor += 1;
                        checkpoint = cursor + 1;
                    }
                },
                _ => {
                    // Not an expression: keep the `$`; the next character is copied as text.
                    out.push('$');
                    checkpoint = cursor + 1;
                }
            }
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// Upstream's `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    let ok = |c: u8| c.is_ascii_alphabetic() || matches!(c, b'-' | b'.' | b'_');
    ok(first) && bytes.all(|c| ok(c) || c.is_ascii_digit())
}

/// The value of a `fieldRef` in an environment variable, as upstream's
/// `podFieldSelectorRuntimeValue`.
pub(crate) fn pod_field_value(
    selector: &ObjectFieldSelector,
    pod: &Pod,
) -> Result<String, EnvError> {
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if !version.is_empty() && version != "v1" {
        return Err(EnvError::UnsupportedApiVersion(version.to_string()));
    }
    let path = selector.field_path.as_str();
    if let Some((base, _)) = split_subscript(path) {
        if base != "metadata.annotations" && base != "metadata.labels" {
            return Err(EnvError::SubscriptNotSupported(path.to_string()));
        }
        return metadata_field_value(pod, path);
    }
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let pod_ips: Vec<&str> = match status.and_then(|s| s.pod_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().map(|ip| ip.ip.as_str()).collect(),
        _ => status
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())
            .into_iter()
            .collect(),
    };
    let host_ips: Vec<&str> = match status.and_then(|s| s.host_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().map(|ip| ip.ip.as_str()).collect(),
        _ => status
            .and_then(|s| s.host_ip.as_deref())
            .filter(|ip| !ip.is_empty())
            .into_iter()
            .collect(),
    };
    let first = |ips: &[&str]| ips.first().map(|ip| ip.to_string()).unwrap_or_default();
    Ok(match path {
        "spec.nodeName" | "spec.host" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => first(&host_ips),
        "status.hostIPs" => host_ips.join(","),
        "status.podIP" => first(&pod_ips),
        "status.podIPs" => pod_ips.join(","),
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid" => metadata_field_value(pod, path)?,
        "spec.restartPolicy" | "spec.schedulerName" | "status.phase" => {
            return Err(EnvError::UnsupportedFieldPath(path.to_string()));
        }
        _ => return Err(EnvError::UnsupportedFieldLabel(path.to_string())),
    })
}

/// Upstream's `fieldpath.ExtractFieldPathAsString` over a pod: its name, namespace and uid,
/// all labels or annotations (`k="v"` lines, sorted), or one of them (`metadata.labels['k']`).
/// This is all a `downwardAPI` volume's `fieldRef` may read.
pub(crate) fn metadata_field_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.annotations" => &meta.annotations,
            "metadata.labels" => &meta.labels,
            _ => return Err(EnvError::SubscriptNotSupported(path.to_string())),
        };
        let errors = is_qualified_name(&key.to_lowercase());
        if !errors.is_empty() {
            return Err(EnvError::InvalidSubscript {
                path: path.to_string(),
                reason: errors.join(";"),
            });
        }
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        _ => return Err(EnvError::UnsupportedFieldPath(path.to_string())),
    })
}

/// `metadata.labels['key']` as `("metadata.labels", "key")`, as upstream's
/// `SplitMaybeSubscriptedPath`.
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// Upstream's `FormatMap`: `key="value"` lines in key order, values quoted as Go's `%q`.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (key, value) in map.into_iter().flatten() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&go_quote(value));
    }
    out
}

/// A string quoted as Go's `strconv.Quote` does for valid UTF-8.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef`, as upstream's `ExtractContainerResourceValue`: the
/// named container's (or `container`'s when the selector names none) request or limit,
/// divided by the divisor (default 1) and rounded up; CPU is counted in millicores before
/// dividing, so `limits.cpu` of `250m` is `1`. Unset or zero limits of cpu, memory and
/// ephemeral-storage fall back to `node_allocatable`.
pub(crate) fn resource_field_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container: Option<&Container>,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => find_container(pod, name)?,
        None => {
            container.ok_or_else(|| EnvError::ContainerNameRequired(selector.resource.clone()))?
        }
    };
    let divisor = match &selector.divisor {
        Some(q) => Quantity::try_from(q).map_err(|source| EnvError::InvalidQuantity {
            what: "divisor".to_string(),
            value: q.0.clone(),
            source,
        })?,
        None => Quantity::zero(),
    };
    let divisor = if divisor.is_zero() {
        Quantity::from_value(1)
    } else {
        divisor
    };

    let unsupported = || EnvError::UnsupportedResource(selector.resource.clone());
    let (kind, resource) = selector.resource.split_once('.').ok_or_else(unsupported)?;
    let resources = container.resources.as_ref();
    let list = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(unsupported()),
    };
    let is_standard = matches!(resource, "cpu" | "memory" | "ephemeral-storage");
    if !is_standard && !resource.starts_with("hugepages-") {
        return Err(unsupported());
    }
    let mut quantity = match list.and_then(|l| l.get(resource)) {
        Some(q) => Quantity::try_from(q).map_err(|source| EnvError::InvalidQuantity {
            what: selector.resource.clone(),
            value: q.0.clone(),
            source,
        })?,
        None => Quantity::zero(),
    };
    if kind == "limits"
        && is_standard
        && quantity.is_zero()
        && let Some(allocatable) = node_allocatable.get(resource)
    {
        quantity = *allocatable;
    }
    let value = if resource == "cpu" {
        div_ceil(quantity.milli_value(), divisor.milli_value())
    } else {
        div_ceil(quantity.value(), divisor.value())
    };
    Ok(value.to_string())
}

/// `a / b` rounded towards positive infinity, as Go's `math.Ceil(float64(a) / float64(b))`
/// but exact; `b` is never zero (a non-zero quantity rounds away from zero).
fn div_ceil(a: i64, b: i64) -> i64 {
    let (a, b) = (i128::from(a), i128::from(b.max(1)));
    let q = a / b;
    let q = if a % b != 0 && a > 0 { q + 1 } else { q };
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// The container called `name`, regular or init, as upstream's `findContainerInPod`.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, EnvError> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter())
        .chain(
            spec.into_iter()
                .flat_map(|s| s.init_containers.iter().flatten()),
        )
        .find(|c| c.name == name)
        .ok_or_else(|| EnvError::ContainerNotFound(name.to_string()))
}

fn api_error(
    kind: &'static str,
    namespace: &str,
    name: &str,
    source: rkube_client::Error,
) -> EnvError {
    EnvError::Api {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    }
}

/// The pod's namespace (`default` when unset).
pub(crate) fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// `namespace/name`, for logs.
pub(crate) fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod_namespace(pod),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The ConfigMaps, Secrets and node allocatable one pod sync reads, each fetched once from
/// the apiserver (upstream's kubelet caches them in its configmap and secret managers).
pub(crate) struct ApiObjects {
    /// `None` in tests: what is not preloaded does not exist.
    client: Option<Client>,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
    nodes: HashMap<String, Option<BTreeMap<String, Quantity>>>,
}

impl ApiObjects {
    /// Objects of `namespace`, read through `client`.
    pub(crate) fn new(client: Client, namespace: &str) -> Self {
        ApiObjects {
            client: Some(client),
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    /// Exactly the given objects and nothing else, for tests.
    #[cfg(test)]
    pub(crate) fn fixed(
        namespace: &str,
        config_maps: Vec<ConfigMap>,
        secrets: Vec<Secret>,
        nodes: Vec<Node>,
    ) -> Self {
        let name = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.name.clone().unwrap_or_default()
        };
        ApiObjects {
            client: None,
            namespace: namespace.to_string(),
            config_maps: config_maps
                .into_iter()
                .map(|c| (name(&c.metadata), Some(c)))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| (name(&s.metadata), Some(s)))
                .collect(),
            nodes: nodes
                .iter()
                .map(|n| (name(&n.metadata), Some(allocatable_of(n))))
                .collect(),
        }
    }

    /// The ConfigMap called `name` in the pod's namespace, if it exists.
    pub(crate) async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<&ConfigMap>, rkube_client::Error> {
        if !self.config_maps.contains_key(name) {
            let found = match &self.client {
                Some(client) => {
                    Api::<ConfigMap>::namespaced(client.clone(), &self.namespace)
                        .get_opt(name)
                        .await?
                }
                None => None,
            };
            self.config_maps.insert(name.to_string(), found);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    /// The Secret called `name` in the pod's namespace, if it exists.
    pub(crate) async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<&Secret>, rkube_client::Error> {
        if !self.secrets.contains_key(name) {
            let found = match &self.client {
                Some(client) => {
                    Api::<Secret>::namespaced(client.clone(), &self.namespace)
                        .get_opt(name)
                        .await?
                }
                None => None,
            };
            self.secrets.insert(name.to_string(), found);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    /// The allocatable resources of the node called `name`, if it exists.
    pub(crate) async fn node_allocatable(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, Quantity>>, rkube_client::Error> {
        if !self.nodes.contains_key(name) {
            let found = match &self.client {
                Some(client) => Api::<Node>::all(client.clone())
                    .get_opt(name)
                    .await?
                    .map(|node| allocatable_of(&node)),
                None => None,
            };
            self.nodes.insert(name.to_string(), found);
        }
        Ok(self.nodes.get(name).and_then(Option::as_ref))
    }
}

/// A node's `status.allocatable`, leaving out quantities that do not parse.
fn allocatable_of(node: &Node) -> BTreeMap<String, Quantity> {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(name, q)| Some((name.clone(), Quantity::try_from(q).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, HostIP,
        PodIP, PodSpec, PodStatus, ResourceRequirements, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl FnMut(&str) -> String + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| format!("$({name})"))
        }
    }

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        // Type-checked only: the pod workers spawn this.
        let _ = |client: &Client, pod: &Pod, c: &Container, a: &BTreeMap<String, Quantity>| {
            is_send(container_env(client, pod, c, a));
        };
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let vars = [("VAR_A", "A"), ("VAR_B", "B"), ("EMPTY", "")];
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_A)___", "___A___"),
            ("$(VAR_A)-$(VAR_B)", "A-B"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(EMPTY)x", "x"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(", "$("),
            ("$", "$"),
            ("x$", "x$"),
            ("$VAR_A", "$VAR_A"),
            ("$ü", "$ü"),
            ("ü$(VAR_A)ü", "üAü"),
            ("$()", "$()"),
            ("$(VAR_A)$", "A$"),
            ("$$", "$"),
            ("$$$", "$$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, lookup(&vars)), want, "expanding {input:?}");
        }
    }

    #[test]
    fn env_var_names() {
        for ok in ["A", "a_b", "-x", ".y", "A1", "my.var-name"] {
            assert!(is_env_var_name(ok), "{ok} should be valid");
        }
        for bad in ["", "1A", "A=B", "a b", "ü"] {
            assert!(!is_env_var_name(bad), "{bad} should be invalid");
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "front \"end\"\n".into()),
                ])),
                annotations: Some(BTreeMap::from([("example.com/x".into(), "1".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("builder".into()),
                containers: vec![
                    Container {
                        name: "app".into(),
                        resources: Some(ResourceRequirements {
                            limits: Some(BTreeMap::from([
                                ("cpu".into(), K8sQuantity("250m".into())),
                                ("memory".into(), K8sQuantity("64Mi".into())),
                            ])),
                            requests: Some(BTreeMap::from([(
                                "cpu".into(),
                                K8sQuantity("1500m".into()),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: Some(PodStatus {
                host_ip: Some("10.0.0.1".into()),
                host_ips: Some(vec![
                    HostIP {
                        ip: "10.0.0.1".into(),
                    },
                    HostIP {
                        ip: "fd00::1".into(),
                    },
                ]),
                pod_ip: Some("10.1.0.5".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.1.0.5".into(),
                    },
                    PodIP {
                        ip: "fd01::5".into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn field(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            api_version: Some("v1".into()),
            field_path: path.into(),
        }
    }

    #[test]
    fn field_refs_read_the_pod() {
        let pod = pod();
        let cases = [
            ("metadata.name", "web"),
            ("metadata.namespace", "prod"),
            ("metadata.uid", "uid-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['example.com/x']", "1"),
            (
                "metadata.labels",
                "app=\"web\"\ntier=\"front \\\"end\\\"\\n\"",
            ),
            ("metadata.annotations", "example.com/x=\"1\""),
            ("spec.nodeName", "node-a"),
            ("spec.serviceAccountName", "builder"),
            ("status.hostIP", "10.0.0.1"),
            ("status.hostIPs", "10.0.0.1,fd00::1"),
            ("status.podIP", "10.1.0.5"),
            ("status.podIPs", "10.1.0.5,fd01::5"),
        ];
        for (path, want) in cases {
            assert_eq!(pod_field_value(&field(path), &pod).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn field_refs_reject_what_upstream_rejects() {
        let pod = pod();
        let err = |path: &str| pod_field_value(&field(path), &pod).unwrap_err().to_string();
        assert_eq!(
            err("spec.containers"),
            "field label not supported: spec.containers"
        );
        assert_eq!(err("status.phase"), "unsupported fieldPath: status.phase");
        assert_eq!(
            err("metadata.name['x']"),
            "field label does not support subscript: metadata.name['x']"
        );
        assert!(err("metadata.labels['a/b/c']").starts_with("invalid key subscript in"));
        let v2 = ObjectFieldSelector {
            api_version: Some("v2".into()),
            field_path: "metadata.name".into(),
        };
        assert_eq!(
            pod_field_value(&v2, &pod).unwrap_err().to_string(),
            "unsupported pod version: v2"
        );
    }

    #[test]
    fn pod_ip_falls_back_to_the_single_field() {
        let mut pod = pod();
        let status = pod.status.as_mut().unwrap();
        status.pod_ips = None;
        status.host_ips = None;
        assert_eq!(
            pod_field_value(&field("status.podIPs"), &pod).unwrap(),
            "10.1.0.5"
        );
        assert_eq!(
            pod_field_value(&field("status.hostIPs"), &pod).unwrap(),
            "10.0.0.1"
        );
        pod.status = None;
        assert_eq!(pod_field_value(&field("status.podIP"), &pod).unwrap(), "");
    }

    fn resource(
        name: &str,
        container: Option<&str>,
        divisor: Option<&str>,
    ) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: container.map(Into::into),
            divisor: divisor.map(|d| K8sQuantity(d.into())),
            resource: name.into(),
        }
    }

    #[test]
    fn resource_field_refs_divide_and_round_up() {
        let pod = pod();
        let app = &pod.spec.as_ref().unwrap().containers[0];
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), Quantity::parse("4").unwrap()),
            ("memory".to_string(), Quantity::parse("8Gi").unwrap()),
            (
                "ephemeral-storage".to_string(),
                Quantity::parse("100G").unwrap(),
            ),
        ]);
        let value = |sel: ResourceFieldSelector| {
            resource_field_value(&sel, &pod, Some(app), &allocatable).unwrap()
        };
        // CPU in cores, rounded up: 250m -> 1, 1500m -> 2.
        assert_eq!(value(resource("limits.cpu", None, None)), "1");
        assert_eq!(value(resource("requests.cpu", None, None)), "2");
        assert_eq!(value(resource("limits.cpu", None, Some("1m"))), "250");
        assert_eq!(value(resource("requests.cpu", None, Some("100m"))), "15");
        assert_eq!(value(resource("limits.memory", None, None)), "67108864");
        assert_eq!(value(resource("limits.memory", None, Some("1Mi"))), "64");
        assert_eq!(value(resource("limits.memory", None, Some("1G"))), "1");
        assert_eq!(value(resource("requests.memory", None, None)), "0");
        // Unset limits are the node's allocatable; unset requests stay zero.
        assert_eq!(
            value(resource("limits.ephemeral-storage", None, Some("1G"))),
            "100"
        );
        assert_eq!(
            value(resource("requests.ephemeral-storage", None, None)),
            "0"
        );
        assert_eq!(value(resource("limits.cpu", Some("sidecar"), None)), "4");
        assert_eq!(
            value(resource("limits.memory", Some("sidecar"), Some("1Gi"))),
            "8"
        );
        // A zero divisor means the default of 1.
        assert_eq!(value(resource("limits.cpu", None, Some("0"))), "1");
        assert_eq!(value(resource("limits.hugepages-2Mi", None, None)), "0");
    }

    #[test]
    fn resource_field_ref_errors() {
        let pod = pod();
        let app = &pod.spec.as_ref().unwrap().containers[0];
        let none = BTreeMap::new();
        let err = |sel: ResourceFieldSelector, c: Option<&Container>| {
            resource_field_value(&sel, &pod, c, &none)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(resource("limits.gpu", None, None), Some(app)),
            "unsupported container resource : limits.gpu"
        );
        assert_eq!(
            err(resource("limits.cpu", Some("nope"), None), Some(app)),
            "container nope not found"
        );
        assert!(
            err(resource("limits.cpu", None, None), None).contains("does not name a container")
        );
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("prod".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("prod".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn cm_key(name: &str, key: &str, optional: bool) -> EnvVarSource {
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }
    }

    fn objects() -> ApiObjects {
        ApiObjects::fixed(
            "prod",
            vec![config_map(
                "settings",
                &[("LEVEL", "debug"), ("bad key", "x"), ("MODE", "fast")],
            )],
            vec![secret("creds", &[("PASSWORD", "hunter2")])],
            vec![],
        )
    }

    fn pairs(env: &[cri::KeyValue]) -> Vec<(&str, &str)> {
        env.iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn env_from_then_env_in_order_later_wins() {
        let pod = pod();
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                literal("GREETING", "hello $(CFG_LEVEL) $(LATER) $$(CFG_MODE)"),
                literal("LATER", "x"),
                literal("CFG_MODE", "slow"),
                from(
                    "PASSWORD",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "PASSWORD".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from("OPTIONAL", cm_key("missing", "k", true)),
                from("OPTIONAL_KEY", cm_key("settings", "nope", true)),
                from(
                    "POD",
                    EnvVarSource {
                        field_ref: Some(field("metadata.name")),
                        ..Default::default()
                    },
                ),
                from("LEVEL", cm_key("settings", "LEVEL", false)),
                literal("EMPTY", ""),
            ]),
            ..Default::default()
        };
        let env = build_env(&mut objects(), &pod, &container, &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(
            pairs(&env),
            vec![
                ("CFG_LEVEL", "debug"),
                ("CFG_MODE", "slow"),
                ("GREETING", "hello debug $(LATER) $(CFG_MODE)"),
                ("LATER", "x"),
                ("PASSWORD", "hunter2"),
                ("POD", "web"),
                ("LEVEL", "debug"),
                ("EMPTY", ""),
            ]
        );
    }

    #[tokio::test]
    async fn missing_sources_give_upstream_messages() {
        let pod = pod();
        let with_env = |env: Vec<EnvVar>| Container {
            name: "app".into(),
            env: Some(env),
            ..Default::default()
        };
        let err = build_env(
            &mut objects(),
            &pod,
            &with_env(vec![from("X", cm_key("settings", "nope", false))]),
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key nope in ConfigMap prod/settings"
        );

        let err = build_env(
            &mut objects(),
            &pod,
            &with_env(vec![from("X", cm_key("absent", "k", false))]),
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "configmap \"absent\" not found");

        let secret_ref = EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "creds".into(),
                key: "USER".into(),
                optional: None,
            }),
            ..Default::default()
        };
        let err = build_env(
            &mut objects(),
            &pod,
            &with_env(vec![from("X", secret_ref)]),
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key USER in Secret prod/creds"
        );

        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(k8s_openapi::api::core::v1::SecretEnvSource {
                    name: "absent".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let err = build_env(&mut objects(), &pod, &container, &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "secret \"absent\" not found");
    }

    #[test]
    fn literal_env_has_values_and_field_refs() {
        let pod = pod();
        let container = Container {
            name: "app".into(),
            env: Some(vec![
                from(
                    "POD",
                    EnvVarSource {
                        field_ref: Some(field("metadata.name")),
                        ..Default::default()
                    },
                ),
                literal("DIR", "logs/$(POD)"),
                from("FROM_CM", cm_key("settings", "LEVEL", false)),
            ]),
            ..Default::default()
        };
        let env = literal_env(&pod, &container);
        assert_eq!(env.get("DIR").map(String::as_str), Some("logs/web"));
        assert!(!env.contains_key("FROM_CM"));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(
            go_quote("a\"b\\c\u{1}\u{7f}é\u{85}"),
            "\"a\\\"b\\\\c\\x01\\x7fé\\u0085\""
        );
    }
}
