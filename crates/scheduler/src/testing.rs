//! Builders of nodes and pods for tests and benchmarks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, NodeSpec, NodeStatus, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity,
    PodSpec, PreferredSchedulingTerm, ResourceRequirements, Taint, Toleration,
    TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// Starts a node named `name` (allocatable: 110 pods, nothing else until set).
pub fn node(name: &str) -> NodeBuilder {
    let mut allocatable = BTreeMap::new();
    allocatable.insert("pods".to_string(), Quantity("110".to_string()));
    NodeBuilder {
        node: Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(allocatable),
                ..Default::default()
            }),
        },
    }
}

/// Builds a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    node: Node,
}

impl NodeBuilder {
    /// Sets allocatable `resource` to `quantity`.
    pub fn allocatable(mut self, resource: &str, quantity: &str) -> Self {
        if let Some(a) = self
            .node
            .status
            .as_mut()
            .and_then(|s| s.allocatable.as_mut())
        {
            a.insert(resource.to_string(), Quantity(quantity.to_string()));
        }
        self
    }

    /// Sets allocatable CPU.
    pub fn cpu(self, quantity: &str) -> Self {
        self.allocatable("cpu", quantity)
    }

    /// Sets allocatable memory.
    pub fn memory(self, quantity: &str) -> Self {
        self.allocatable("memory", quantity)
    }

    /// Sets the allocatable pod count.
    pub fn pods(self, count: i64) -> Self {
        self.allocatable("pods", &count.to_string())
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.node
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a taint; `value` may be empty.
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        if let Some(spec) = self.node.spec.as_mut() {
            spec.taints.get_or_insert_with(Vec::new).push(Taint {
                key: key.to_string(),
                value: (!value.is_empty()).then(|| value.to_string()),
                effect: effect.to_string(),
                time_added: None,
            });
        }
        self
    }

    /// Marks the node unschedulable (cordoned).
    pub fn unschedulable(mut self) -> Self {
        if let Some(spec) = self.node.spec.as_mut() {
            spec.unschedulable = Some(true);
        }
        self
    }

    /// The node.
    pub fn build(self) -> Node {
        self.node
    }
}

/// The image of the builders' containers.
pub const IMAGE: &str = "docker.io/library/busybox:latest";

/// Starts a pod named `name` in namespace `default` with one container and no requests.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c0".to_string(),
                    image: Some(IMAGE.to_string()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        },
    }
}

/// Builds a [`Pod`].
#[derive(Debug, Clone)]
pub struct PodBuilder {
    pod: Pod,
}

fn requests(pairs: &[(&str, &str)]) -> Option<ResourceRequirements> {
    let map: BTreeMap<String, Quantity> = pairs
        .iter()
        .filter(|(_, q)| !q.is_empty())
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    Some(ResourceRequirements {
        requests: (!map.is_empty()).then_some(map),
        ..Default::default()
    })
}

fn container(name: String, pairs: &[(&str, &str)]) -> Container {
    Container {
        name,
        image: Some(IMAGE.to_string()),
        resources: requests(pairs),
        ..Default::default()
    }
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(PodSpec::default)
    }

    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.pod.metadata.namespace = Some(ns.to_string());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Sets a request of the first container.
    pub fn request(mut self, resource: &str, quantity: &str) -> Self {
        let c = &mut self.spec().containers[0];
        c.resources
            .get_or_insert_with(Default::default)
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.to_string(), Quantity(quantity.to_string()));
        self
    }

    /// Sets the first container's CPU request.
    pub fn cpu(self, quantity: &str) -> Self {
        self.request("cpu", quantity)
    }

    /// Sets the first container's memory request.
    pub fn memory(self, quantity: &str) -> Self {
        self.request("memory", quantity)
    }

    /// Adds an app container requesting `cpu` and `memory` (empty: unset).
    pub fn container(mut self, cpu: &str, memory: &str) -> Self {
        let n = self.spec().containers.len();
        self.spec().containers.push(container(
            format!("c{n}"),
            &[("cpu", cpu), ("memory", memory)],
        ));
        self
    }

    /// Adds a regular init container requesting `cpu` and `memory` (empty: unset).
    pub fn init_container(mut self, cpu: &str, memory: &str) -> Self {
        let list = self.spec().init_containers.get_or_insert_with(Vec::new);
        let n = list.len();
        list.push(container(
            format!("init{n}"),
            &[("cpu", cpu), ("memory", memory)],
        ));
        self
    }

    /// Adds a restartable (sidecar) init container requesting `cpu` and `memory`.
    pub fn sidecar(mut self, cpu: &str, memory: &str) -> Self {
        let list = self.spec().init_containers.get_or_insert_with(Vec::new);
        let n = list.len();
        let mut c = container(format!("sidecar{n}"), &[("cpu", cpu), ("memory", memory)]);
        c.restart_policy = Some("Always".to_string());
        list.push(c);
        self
    }

    /// Sets a pod overhead.
    pub fn overhead(mut self, resource: &str, quantity: &str) -> Self {
        self.spec()
            .overhead
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.to_string(), Quantity(quantity.to_string()));
        self
    }

    /// Asks for a host port (TCP, every address) on the first container.
    pub fn host_port(mut self, port: i32) -> Self {
        self.spec().containers[0]
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            });
        self
    }

    /// Sets `spec.priority`.
    pub fn priority(mut self, p: i32) -> Self {
        self.spec().priority = Some(p);
        self
    }

    /// Sets `spec.nodeName`.
    pub fn node_name(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.to_string());
        self
    }

    /// Sets `spec.schedulerName`.
    pub fn scheduler_name(mut self, name: &str) -> Self {
        self.spec().scheduler_name = Some(name.to_string());
        self
    }

    /// Adds a `nodeSelector` entry.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a toleration (`operator` is `Equal` or `Exists`; empty `effect` tolerates all).
    pub fn toleration(mut self, key: &str, operator: &str, value: &str, effect: &str) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.spec()
            .tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                key: opt(key),
                operator: opt(operator),
                value: opt(value),
                effect: opt(effect),
                toleration_seconds: None,
            });
        self
    }

    fn affinity(&mut self) -> &mut Affinity {
        self.spec().affinity.get_or_insert_with(Affinity::default)
    }

    /// Adds a required node affinity term with one expression (terms are ORed).
    pub fn required_node_affinity(mut self, key: &str, operator: &str, values: &[&str]) -> Self {
        let na = self
            .affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution
            .get_or_insert_with(|| NodeSelector {
                node_selector_terms: Vec::new(),
            })
            .node_selector_terms
            .push(NodeSelectorTerm {
                match_expressions: Some(vec![requirement(key, operator, values)]),
                match_fields: None,
            });
        self
    }

    /// Adds a preferred node affinity term with one expression.
    pub fn preferred_node_affinity(
        mut self,
        weight: i32,
        key: &str,
        operator: &str,
        values: &[&str],
    ) -> Self {
        let na = self
            .affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(PreferredSchedulingTerm {
                weight,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![requirement(key, operator, values)]),
                    match_fields: None,
                },
            });
        self
    }

    /// Adds a required pod affinity term: pods labelled `key=value`, in the same
    /// `topology_key` domain.
    pub fn pod_affinity(mut self, topology_key: &str, key: &str, value: &str) -> Self {
        let term = affinity_term(topology_key, key, value);
        self.affinity()
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
        self
    }

    /// Adds a required pod anti-affinity term: no pod labelled `key=value` in the same
    /// `topology_key` domain.
    pub fn pod_anti_affinity(mut self, topology_key: &str, key: &str, value: &str) -> Self {
        let term = affinity_term(topology_key, key, value);
        self.affinity()
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
        self
    }

    /// Adds a preferred pod affinity term.
    pub fn preferred_pod_affinity(
        mut self,
        weight: i32,
        topology_key: &str,
        key: &str,
        value: &str,
    ) -> Self {
        let term = affinity_term(topology_key, key, value);
        self.affinity()
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight,
                pod_affinity_term: term,
            });
        self
    }

    /// Adds a preferred pod anti-affinity term.
    pub fn preferred_pod_anti_affinity(
        mut self,
        weight: i32,
        topology_key: &str,
        key: &str,
        value: &str,
    ) -> Self {
        let term = affinity_term(topology_key, key, value);
        self.affinity()
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight,
                pod_affinity_term: term,
            });
        self
    }

    /// Adds a topology spread constraint over pods labelled `key=value`
    /// (`when_unsatisfiable`: `DoNotSchedule` or `ScheduleAnyway`).
    pub fn spread(
        mut self,
        max_skew: i32,
        topology_key: &str,
        when_unsatisfiable: &str,
        key: &str,
        value: &str,
    ) -> Self {
        self.spec()
            .topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .push(TopologySpreadConstraint {
                max_skew,
                topology_key: topology_key.to_string(),
                when_unsatisfiable: when_unsatisfiable.to_string(),
                label_selector: Some(label_selector(key, value)),
                ..Default::default()
            });
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.pod
    }
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

/// A selector matching `key=value`.
pub fn label_selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        match_expressions: None,
    }
}

fn affinity_term(topology_key: &str, key: &str, value: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(label_selector(key, value)),
        topology_key: topology_key.to_string(),
        ..Default::default()
    }
}
