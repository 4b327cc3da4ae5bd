//! What the scheduler knows about one node and the pods on it, precomputed once per object
//! so that filters and scores in the hot loop read plain integers and parsed selectors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, Node, Pod, PodAffinityTerm, Taint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use rkube_types::quantity::Quantity;
use rkube_types::selector::LabelSelector;

/// The CPU request counted for scoring when a container sets none (upstream's
/// `DefaultMilliCPURequest`), so that many request-less pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory request counted for scoring when a container sets none (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Labels of a node, pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// Amounts of resources: what a pod requests or what a node can hold. CPU in millicores,
/// memory and ephemeral storage in bytes, extended resources (`example.com/gpu`,
/// `hugepages-2Mi`) by name in their integer unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods (a node's `pods` allocatable; unused in requests).
    pub pods: i64,
    /// Every other resource by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a Kubernetes resource list; unparseable quantities count as zero (the
    /// apiserver validated them).
    pub fn from_list(list: Option<&BTreeMap<String, ApiQuantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = q.milli_value(),
                "memory" => r.memory = q.value(),
                "ephemeral-storage" => r.ephemeral_storage = q.value(),
                "pods" => r.pods = q.value(),
                other => {
                    r.scalar.insert(other.to_string(), q.value());
                }
            }
        }
        r
    }

    /// The amount of the resource `name` (`cpu` in millicores).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.pods,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    /// Adds `other` to these amounts.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Subtracts `other` from these amounts.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Raises each amount to at least the one in `other`.
    pub fn set_max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

/// One host port a pod asks for: `(hostIP, protocol, hostPort)`; an empty or `0.0.0.0` IP
/// means every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host IP, `0.0.0.0` when unset.
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: i32,
}

/// A pod (anti-)affinity term with its selectors parsed.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// The namespaces the term looks in (its `namespaces`, or the pod's own namespace when
    /// neither `namespaces` nor `namespaceSelector` is set).
    pub namespaces: HashSet<String>,
    /// `namespaceSelector`, when set; an empty selector matches every namespace.
    pub namespace_selector: Option<LabelSelector>,
    /// The label selector the other pods must match; `None` (a nil selector) matches none.
    pub selector: Option<LabelSelector>,
    /// The node label that defines the topology domain.
    pub topology_key: String,
    /// A hash of all of the above: equal terms (the same term of many pods of one
    /// workload) have equal ids, so a cycle matches each distinct term once.
    pub id: u64,
}

impl AffinityTerm {
    /// Parses a term of a pod in `namespace`; `None` with the reason when a selector is
    /// invalid. `matchLabelKeys`/`mismatchLabelKeys` are merged into the selector with the
    /// values from `labels` (the owning pod's labels), as upstream does.
    fn parse(term: &PodAffinityTerm, namespace: &str, labels: &Labels) -> Result<Self, String> {
        let mut selector = match &term.label_selector {
            Some(s) => Some(LabelSelector::from_api(s).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut extra = Vec::new();
        for key in term.match_label_keys.iter().flatten() {
            if let Some(v) = labels.get(key) {
                extra.push(format!("{key}={v}"));
            }
        }
        for key in term.mismatch_label_keys.iter().flatten() {
            if let Some(v) = labels.get(key) {
                extra.push(format!("{key}!={v}"));
            }
        }
        if let Some(sel) = selector.as_ref().filter(|_| !extra.is_empty()) {
            let joined = if sel.is_everything() {
                extra.join(",")
            } else {
                format!("{sel},{}", extra.join(","))
            };
            selector = Some(LabelSelector::parse(&joined).map_err(|e| e.to_string())?);
        }
        let namespace_selector = match &term.namespace_selector {
            Some(s) => Some(LabelSelector::from_api(s).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(namespace.to_string());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut sorted: Vec<&String> = namespaces.iter().collect();
        sorted.sort();
        sorted.hash(&mut h);
        namespace_selector.hash(&mut h);
        selector.hash(&mut h);
        term.topology_key.hash(&mut h);
        Ok(AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: term.topology_key.clone(),
            id: h.finish(),
        })
    }

    /// Whether `pod` is one this term selects: in one of its namespaces (or a namespace
    /// whose labels, looked up in `namespace_labels`, match the namespace selector) and
    /// matching the label selector.
    pub fn matches(&self, pod: &PodInfo, namespace_labels: &HashMap<String, Labels>) -> bool {
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|sel| {
                sel.is_everything()
                    || namespace_labels
                        .get(&pod.namespace)
                        .is_some_and(|labels| sel.matches(labels))
            });
        in_namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
    }
}

/// A preferred (anti-)affinity term with its weight.
#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight, 1–100.
    pub weight: i32,
}

/// A pod as the scheduler sees it, precomputed once when the pod is seen.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod object.
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// A hash of the namespace and the labels: what every selector and affinity term
    /// decides by, so a cycle matches each distinct label set once (see [`MatchMemo`]).
    pub label_hash: u64,
    /// The effective requests: the larger of the app containers' sum (plus restartable init
    /// containers) and the largest init container, plus the pod overhead.
    pub requests: Resources,
    /// CPU and memory requests for scoring, with the defaults standing in for unset ones.
    pub non_zero_milli_cpu: i64,
    /// See [`PodInfo::non_zero_milli_cpu`].
    pub non_zero_memory: i64,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Host ports the containers ask for.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    /// Why an affinity term could not be parsed; such a pod is unschedulable.
    pub parse_error: Option<String>,
}

impl PodInfo {
    /// Precomputes what the plugins need from `pod`.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let (requests, non_zero_milli_cpu, non_zero_memory) = match spec {
            Some(spec) => pod_requests(spec),
            None => (Resources::default(), 0, 0),
        };
        let mut host_ports = Vec::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for p in c.ports.iter().flatten() {
                if let Some(port) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        ip: p
                            .host_ip
                            .clone()
                            .filter(|ip| !ip.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".to_string()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                        port,
                    });
                }
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        namespace.hash(&mut h);
        labels.hash(&mut h);
        let mut info = PodInfo {
            label_hash: h.finish(),
            key: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            namespace,
            name,
            labels,
            requests,
            non_zero_milli_cpu,
            non_zero_memory,
            host_ports,
            required_affinity: Vec::new(),
            required_anti_affinity: Vec::new(),
            preferred_affinity: Vec::new(),
            preferred_anti_affinity: Vec::new(),
            parse_error: None,
            pod: pod.clone(),
        };
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>, info: &mut PodInfo| {
            let mut out = Vec::new();
            for t in terms.into_iter().flatten() {
                match AffinityTerm::parse(t, &info.namespace, &info.labels) {
                    Ok(t) => out.push(t),
                    Err(e) => info.parse_error = Some(e),
                }
            }
            out
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>, info: &mut PodInfo| {
            let mut out = Vec::new();
            for t in terms.into_iter().flatten() {
                match AffinityTerm::parse(&t.pod_affinity_term, &info.namespace, &info.labels) {
                    Ok(term) => out.push(WeightedAffinityTerm {
                        term,
                        weight: t.weight,
                    }),
                    Err(e) => info.parse_error = Some(e),
                }
            }
            out
        };
        if let Some(a) = affinity.and_then(|a| a.pod_affinity.as_ref()) {
            info.required_affinity = required(
                a.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut info,
            );
            info.preferred_affinity = preferred(
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut info,
            );
        }
        if let Some(a) = affinity.and_then(|a| a.pod_anti_affinity.as_ref()) {
            info.required_anti_affinity = required(
                a.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut info,
            );
            info.preferred_anti_affinity = preferred(
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut info,
            );
        }
        info
    }

    /// Whether the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }

    /// `spec.nodeName`, empty when unbound.
    pub fn node_name(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default()
    }
}

fn container_requests(c: &Container) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// The requests of a container for scoring: unset CPU and memory count as the defaults.
fn non_zero(c: &Container) -> (i64, i64) {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let set = |name: &str| requests.is_some_and(|r| r.contains_key(name));
    let r = container_requests(c);
    (
        if set("cpu") {
            r.milli_cpu
        } else {
            DEFAULT_MILLI_CPU_REQUEST
        },
        if set("memory") {
            r.memory
        } else {
            DEFAULT_MEMORY_REQUEST
        },
    )
}

/// The effective requests of a pod as upstream's `resource.PodRequests` computes them:
/// app containers and restartable (sidecar) init containers add up; each regular init
/// container runs alone beside the sidecars started before it, so the pod needs the larger
/// of the two; the pod overhead is added on top. Returns the requests and the non-zero CPU
/// and memory used for scoring.
pub fn pod_requests(spec: &k8s_openapi::api::core::v1::PodSpec) -> (Resources, i64, i64) {
    let mut sum = Resources::default();
    let (mut nz_cpu, mut nz_mem) = (0, 0);
    for c in &spec.containers {
        sum.add(&container_requests(c));
        let (cpu, mem) = non_zero(c);
        nz_cpu += cpu;
        nz_mem += mem;
    }
    let mut init_max = Resources::default();
    let mut sidecars = Resources::default();
    let (mut nz_init_cpu, mut nz_init_mem) = (0, 0);
    let (mut nz_side_cpu, mut nz_side_mem) = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        let (cpu, mem) = non_zero(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sum.add(&r);
            sidecars.add(&r);
            nz_cpu += cpu;
            nz_mem += mem;
            nz_side_cpu += cpu;
            nz_side_mem += mem;
        } else {
            let mut with_sidecars = sidecars.clone();
            with_sidecars.add(&r);
            init_max.set_max(&with_sidecars);
            nz_init_cpu = nz_init_cpu.max(nz_side_cpu + cpu);
            nz_init_mem = nz_init_mem.max(nz_side_mem + mem);
        }
    }
    sum.set_max(&init_max);
    nz_cpu = nz_cpu.max(nz_init_cpu);
    nz_mem = nz_mem.max(nz_init_mem);
    let overhead = Resources::from_list(spec.overhead.as_ref());
    sum.add(&overhead);
    nz_cpu += overhead.milli_cpu;
    nz_mem += overhead.memory;
    (sum, nz_cpu, nz_mem)
}

/// One node and the pods on it (bound, or assumed by this scheduler and being bound).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node object.
    pub node: Arc<Node>,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// The sum of the effective requests of the pods on the node (`pods` counts them).
    pub requested: Resources,
    /// The sum of the non-zero CPU requests, for scoring.
    pub non_zero_milli_cpu: i64,
    /// The sum of the non-zero memory requests, for scoring.
    pub non_zero_memory: i64,
    /// The pods on the node.
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of `pods` have pod affinity or anti-affinity terms.
    pub pods_with_affinity: usize,
    /// How many of `pods` have required anti-affinity terms.
    pub pods_with_required_anti_affinity: usize,
    /// Host ports in use, with how many pods use each.
    pub used_ports: HashMap<HostPort, u32>,
    /// Bumped on every change.
    pub generation: u64,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let spec = node.spec.as_ref();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::from_list(
                node.status.as_ref().and_then(|s| s.allocatable.as_ref()),
            ),
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            used_ports: HashMap::new(),
            generation: 0,
            node,
        }
    }

    /// Replaces the node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let pods = std::mem::take(&mut self.pods);
        let generation = self.generation;
        *self = NodeInfo::new(node);
        for p in pods {
            self.add_pod(p);
        }
        self.generation = generation + 1;
    }

    /// Adds a pod to the node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.requested.pods += 1;
        self.non_zero_milli_cpu += pod.non_zero_milli_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        for p in &pod.host_ports {
            *self.used_ports.entry(p.clone()).or_insert(0) += 1;
        }
        self.pods.push(pod);
        self.generation += 1;
    }

    /// Removes the pod `key` (`namespace/name`) from the node; returns it if it was here.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let at = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(at);
        self.requested.sub(&pod.requests);
        self.requested.pods -= 1;
        self.non_zero_milli_cpu -= pod.non_zero_milli_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        for p in &pod.host_ports {
            if let Some(n) = self.used_ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.used_ports.remove(p);
                }
            }
        }
        self.generation += 1;
        Some(pod)
    }
}

/// Remembers yes/no answers within one scheduling cycle, keyed by a [`PodInfo::label_hash`]
/// or an [`AffinityTerm::id`]. The pods of one workload share their labels and terms, so a
/// PreFilter that walks every placed pod matches each distinct label set or term once
/// instead of once per pod. The keys are 64-bit SipHash values, computed once per pod.
#[derive(Debug, Default, Clone)]
pub struct MatchMemo(HashMap<u64, bool, BuildHasherDefault<IdHasher>>);

impl MatchMemo {
    /// The remembered answer for `key`, or `decide()` (then remembered).
    pub fn get_or(&mut self, key: u64, decide: impl FnOnce() -> bool) -> bool {
        *self.0.entry(key).or_insert_with(decide)
    }
}

/// A hasher for keys that are hashes already.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in FNV-1a style.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    fn info(p: Pod) -> PodInfo {
        PodInfo::new(Arc::new(p))
    }

    #[test]
    fn label_hash_follows_the_namespace_and_the_labels_only() {
        let a = info(pod("a").label("app", "web").cpu("1").build());
        let b = info(pod("b").label("app", "web").build());
        let other_ns = info(pod("c").namespace("other").label("app", "web").build());
        let other_labels = info(pod("d").label("app", "db").build());
        assert_eq!(a.label_hash, b.label_hash, "name and spec do not count");
        assert_ne!(a.label_hash, other_ns.label_hash);
        assert_ne!(a.label_hash, other_labels.label_hash);
    }

    #[test]
    fn equal_terms_share_an_id() {
        let anti = |name: &str, value: &str| {
            info(
                pod(name)
                    .pod_anti_affinity("kubernetes.io/hostname", "group", value)
                    .build(),
            )
        };
        let (a, b, c) = (anti("a", "g1"), anti("b", "g1"), anti("c", "g2"));
        assert_eq!(
            a.required_anti_affinity[0].id,
            b.required_anti_affinity[0].id
        );
        assert_ne!(
            a.required_anti_affinity[0].id,
            c.required_anti_affinity[0].id
        );
    }

    #[test]
    fn match_memo_decides_once_per_key() {
        let mut memo = MatchMemo::default();
        let mut calls = 0;
        for _ in 0..3 {
            assert!(memo.get_or(7, || {
                calls += 1;
                true
            }));
        }
        assert!(!memo.get_or(8, || false));
        assert_eq!(calls, 1);
    }
}
