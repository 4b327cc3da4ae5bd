//! The resource plugins, as upstream's `pkg/scheduler/framework/plugins/noderesources`.
//!
//! `NodeResourcesFit` rejects nodes whose allocatable cannot hold the pod's effective
//! requests on top of what the node's pods already request (every insufficient resource is
//! reported, `Too many pods` included) and scores nodes with one of three strategies:
//! `LeastAllocated` (spread, the default), `MostAllocated` (bin-pack) or
//! `RequestedToCapacityRatio` (a user-defined utilization → score curve). Scoring counts CPU
//! and memory with the non-zero defaults standing in for unset requests, so that pods without
//! requests still spread. `NodeResourcesBalancedAllocation` favours nodes whose resources end
//! up equally used (low standard deviation of the used fractions), counting actual requests.
//!
//! Everything that depends on the pod only is computed once per cycle (PreFilter, PreScore)
//! so that Filter and Score, which run for every node, do integer arithmetic and map lookups
//! by borrowed name and allocate nothing unless they reject.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreScorePlugin,
    ScorePlugin, Status,
};
use crate::node_info::{NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// The plugin's name in configuration.
pub const NAME: &str = "NodeResourcesFit";

/// The name of the balanced-allocation score plugin.
pub const BALANCED_NAME: &str = "NodeResourcesBalancedAllocation";

/// CycleState key of the Fit plugin's PreFilter state.
const PRE_FILTER_KEY: &str = "PreFilterNodeResourcesFit";
/// CycleState key of the Fit plugin's PreScore state.
const PRE_SCORE_KEY: &str = "PreScoreNodeResourcesFit";
/// CycleState key of the balanced-allocation PreScore state.
const BALANCED_PRE_SCORE_KEY: &str = "PreScoreNodeResourcesBalancedAllocation";

/// The top of a `RequestedToCapacityRatio` shape's score scale (upstream's
/// `MaxCustomPriorityScore`); shape scores are scaled to [`MAX_NODE_SCORE`].
pub const MAX_CUSTOM_PRIORITY_SCORE: i64 = 10;
/// The top of a shape's utilization scale, in percent.
const MAX_UTILIZATION: i64 = 100;

/// `LeastAllocated`: favour nodes with the most room left.
pub const LEAST_ALLOCATED: &str = "LeastAllocated";
/// `MostAllocated`: favour the fullest nodes (bin-packing).
pub const MOST_ALLOCATED: &str = "MostAllocated";
/// `RequestedToCapacityRatio`: score by a piecewise-linear function of utilization.
pub const REQUESTED_TO_CAPACITY_RATIO: &str = "RequestedToCapacityRatio";

// ---------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------

/// `NodeResourcesFitArgs` of `kubescheduler.config.k8s.io/v1`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourcesFitArgs {
    /// `apiVersion`, accepted and ignored (args may carry their type meta).
    #[serde(default)]
    pub api_version: Option<String>,
    /// `kind`; when set it must be `NodeResourcesFitArgs`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Extended resources the filter does not check (e.g. `example.com/foo`).
    #[serde(default)]
    pub ignored_resources: Option<Vec<String>>,
    /// Extended-resource groups (the part before `/`) the filter does not check.
    #[serde(default)]
    pub ignored_resource_groups: Option<Vec<String>>,
    /// How nodes are scored; `LeastAllocated` over cpu and memory when unset.
    #[serde(default)]
    pub scoring_strategy: Option<ScoringStrategy>,
}

/// `ScoringStrategy` of `NodeResourcesFitArgs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringStrategy {
    /// `LeastAllocated`, `MostAllocated` or `RequestedToCapacityRatio`.
    #[serde(rename = "type", default)]
    pub strategy_type: Option<String>,
    /// The resources scored and their weights; cpu and memory with weight 1 when empty.
    #[serde(default)]
    pub resources: Option<Vec<ResourceSpec>>,
    /// The shape, for `RequestedToCapacityRatio`.
    #[serde(default)]
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatioParam>,
}

/// A resource and its weight in scoring.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource name (`cpu`, `memory`, `example.com/gpu`).
    #[serde(default)]
    pub name: String,
    /// The weight, 1–100; 0 or unset means 1.
    #[serde(default)]
    pub weight: i64,
}

/// `RequestedToCapacityRatioParam`: the utilization → score curve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestedToCapacityRatioParam {
    /// Points of the curve, utilization strictly increasing.
    #[serde(default)]
    pub shape: Option<Vec<UtilizationShapePoint>>,
}

/// One point of the curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UtilizationShapePoint {
    /// Utilization in percent, 0–100.
    #[serde(default)]
    pub utilization: i32,
    /// Score at that utilization, 0–10.
    #[serde(default)]
    pub score: i32,
}

/// `NodeResourcesBalancedAllocationArgs` of `kubescheduler.config.k8s.io/v1`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourcesBalancedAllocationArgs {
    /// `apiVersion`, accepted and ignored.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `kind`; when set it must be `NodeResourcesBalancedAllocationArgs`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The resources balanced (weights must be 1); cpu and memory when empty.
    #[serde(default)]
    pub resources: Option<Vec<ResourceSpec>>,
}

fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: "cpu".to_string(),
            weight: 1,
        },
        ResourceSpec {
            name: "memory".to_string(),
            weight: 1,
        },
    ]
}

/// Applies upstream's v1 defaulting: no resources means cpu and memory, weight 0 means 1.
fn defaulted_resources(resources: Option<&Vec<ResourceSpec>>) -> Vec<ResourceSpec> {
    match resources.filter(|r| !r.is_empty()) {
        None => default_resources(),
        Some(r) => r
            .iter()
            .map(|s| ResourceSpec {
                name: s.name.clone(),
                weight: if s.weight == 0 { 1 } else { s.weight },
            })
            .collect(),
    }
}

fn validate_label_name(value: &str, path: &str, errors: &mut Vec<String>) {
    for msg in rkube_types::validation::is_qualified_name(value) {
        errors.push(format!("{path}: Invalid value: {value:?}: {msg}"));
    }
}

fn validate_shape(shape: &[UtilizationShapePoint], path: &str, errors: &mut Vec<String>) {
    if shape.is_empty() {
        errors.push(format!(
            "{path}: Required value: at least one point must be specified"
        ));
        return;
    }
    if let Some(i) = (1..shape.len()).find(|i| shape[i - 1].utilization >= shape[*i].utilization) {
        errors.push(format!(
            "{path}[{i}].utilization: Invalid value: {}: utilization values must be sorted in increasing order",
            shape[i].utilization
        ));
    }
    for (i, p) in shape.iter().enumerate() {
        if !(0..=MAX_UTILIZATION).contains(&i64::from(p.utilization)) {
            errors.push(format!(
                "{path}[{i}].utilization: Invalid value: {}: not in valid range [0, {MAX_UTILIZATION}]",
                p.utilization
            ));
        }
        if !(0..=MAX_CUSTOM_PRIORITY_SCORE).contains(&i64::from(p.score)) {
            errors.push(format!(
                "{path}[{i}].score: Invalid value: {}: not in valid range [0, {MAX_CUSTOM_PRIORITY_SCORE}]",
                p.score
            ));
        }
    }
}

fn check_kind(kind: Option<&str>, want: &str, plugin: &str) -> Result<(), String> {
    match kind.filter(|k| *k != want) {
        Some(k) => Err(format!("invalid {plugin} args: kind {k:?} is not {want}")),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Resource lookups shared by the scorers
// ---------------------------------------------------------------------------------------

/// Which field of [`crate::node_info::Resources`] a configured resource reads, decided once
/// at construction so Score does not compare strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Memory,
    EphemeralStorage,
    Pods,
    /// Extended resources, hugepages and other named resources.
    Scalar,
}

/// A validated scored resource.
#[derive(Debug, Clone)]
struct Scored {
    name: String,
    kind: Kind,
    weight: i64,
}

impl Scored {
    fn new(spec: &ResourceSpec) -> Scored {
        let kind = match spec.name.as_str() {
            "cpu" => Kind::Cpu,
            "memory" => Kind::Memory,
            "ephemeral-storage" => Kind::EphemeralStorage,
            "pods" => Kind::Pods,
            _ => Kind::Scalar,
        };
        Scored {
            name: spec.name.clone(),
            kind,
            weight: spec.weight,
        }
    }
}

/// The pod's request of `spec` for scoring (upstream's `calculatePodResourceRequest`): with
/// `use_requested` false, unset CPU and memory requests count as the non-zero defaults.
fn pod_request(pod: &PodInfo, spec: &Scored, use_requested: bool) -> i64 {
    match spec.kind {
        Kind::Cpu if use_requested => pod.requests.milli_cpu,
        Kind::Cpu => pod.non_zero_milli_cpu,
        Kind::Memory if use_requested => pod.requests.memory,
        Kind::Memory => pod.non_zero_memory,
        Kind::EphemeralStorage => pod.requests.ephemeral_storage,
        // No container can request `pods`.
        Kind::Pods => 0,
        Kind::Scalar => pod.requests.scalar.get(&spec.name).copied().unwrap_or(0),
    }
}

fn pod_requests(pod: &PodInfo, specs: &[Scored], use_requested: bool) -> Vec<i64> {
    specs
        .iter()
        .map(|s| pod_request(pod, s, use_requested))
        .collect()
}

/// The node's allocatable amount of `spec` and what would be requested with the pod on it
/// (upstream's `calculateResourceAllocatableRequest`). `(0, 0)` tells the scorers to leave
/// the resource out: an extended resource the pod does not request, or one the node lacks.
fn allocatable_and_requested(
    node: &NodeInfo,
    spec: &Scored,
    pod_request: i64,
    use_requested: bool,
) -> (i64, i64) {
    let (alloc, used) = (&node.allocatable, &node.requested);
    match spec.kind {
        Kind::Scalar if pod_request == 0 => (0, 0),
        Kind::Cpu => {
            let on_node = if use_requested {
                used.milli_cpu
            } else {
                node.non_zero_milli_cpu
            };
            (alloc.milli_cpu, on_node + pod_request)
        }
        Kind::Memory => {
            let on_node = if use_requested {
                used.memory
            } else {
                node.non_zero_memory
            };
            (alloc.memory, on_node + pod_request)
        }
        Kind::EphemeralStorage => (
            alloc.ephemeral_storage,
            used.ephemeral_storage + pod_request,
        ),
        // Upstream looks `pods` up among the scalar resources, where it never is.
        Kind::Pods => (0, 0),
        Kind::Scalar => match alloc.scalar.get(&spec.name) {
            Some(a) => (
                *a,
                used.scalar.get(&spec.name).copied().unwrap_or(0) + pod_request,
            ),
            None => (0, 0),
        },
    }
}

/// Upstream's `leastRequestedScore`: the unused share of capacity on a 0–100 scale.
fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// Upstream's `mostRequestedScore`: the used share of capacity on a 0–100 scale, capped at
/// 100 because non-zero defaults can push the requested sum over capacity.
fn most_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// A shape point with the score already scaled to [`MAX_NODE_SCORE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShapePoint {
    utilization: i64,
    score: i64,
}

/// Upstream's `BuildBrokenLinearFunction`: the first point's score below it, the last
/// point's above it, linear (integer division) in between.
fn broken_linear(shape: &[ShapePoint], p: i64) -> i64 {
    for (i, point) in shape.iter().enumerate() {
        if p <= point.utilization {
            if i == 0 {
                return point.score;
            }
            let prev = shape[i - 1];
            return prev.score
                + (point.score - prev.score) * (p - prev.utilization)
                    / (point.utilization - prev.utilization);
        }
    }
    shape.last().map_or(0, |p| p.score)
}

fn requested_to_capacity_score(shape: &[ShapePoint], requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return broken_linear(shape, MAX_UTILIZATION);
    }
    broken_linear(shape, requested * MAX_UTILIZATION / capacity)
}

/// The scoring strategy with its shape resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
    RequestedToCapacityRatio(Vec<ShapePoint>),
}

// ---------------------------------------------------------------------------------------
// NodeResourcesFit
// ---------------------------------------------------------------------------------------

/// What Filter checks for one pod, computed in PreFilter: the effective requests (init
/// containers, sidecars and overhead folded in), with the extended resources the pod does
/// not really ask for (zero) or that are ignored already left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FitState {
    milli_cpu: i64,
    memory: i64,
    ephemeral_storage: i64,
    scalars: Vec<(String, i64)>,
}

/// The pod's requests as PreScore computed them, in the order of the configured resources.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScoreState {
    requests: Vec<i64>,
}

/// Upstream's `IsExtendedResourceName`: a domain-prefixed name outside `kubernetes.io/` that
/// is a valid quota name once prefixed with `requests.`. Only these can be ignored.
fn is_extended_resource_name(name: &str) -> bool {
    if !name.contains('/') || name.contains("kubernetes.io/") || name.starts_with("requests.") {
        return false;
    }
    rkube_types::validation::is_qualified_name(&format!("requests.{name}")).is_empty()
}

/// NodeResourcesFit: PreFilter, Filter, PreScore and Score.
#[derive(Debug, Clone)]
pub struct Fit {
    ignored_resources: HashSet<String>,
    ignored_resource_groups: HashSet<String>,
    strategy: Strategy,
    resources: Vec<Scored>,
}

impl Fit {
    /// Builds the plugin from parsed args, applying upstream's defaulting and validation.
    pub fn from_args(args: &NodeResourcesFitArgs) -> Result<Fit, String> {
        check_kind(args.kind.as_deref(), "NodeResourcesFitArgs", NAME)?;
        let mut errors = Vec::new();
        let ignored_resources = args.ignored_resources.clone().unwrap_or_default();
        for (i, r) in ignored_resources.iter().enumerate() {
            validate_label_name(r, &format!("ignoredResources[{i}]"), &mut errors);
        }
        let ignored_groups = args.ignored_resource_groups.clone().unwrap_or_default();
        for (i, g) in ignored_groups.iter().enumerate() {
            let path = format!("ignoredResourceGroups[{i}]");
            if g.contains('/') {
                errors.push(format!(
                    "{path}: Invalid value: {g:?}: resource group name can't contain '/'"
                ));
            }
            validate_label_name(g, &path, &mut errors);
        }
        let strategy_args = args
            .scoring_strategy
            .clone()
            .unwrap_or_else(|| ScoringStrategy {
                strategy_type: Some(LEAST_ALLOCATED.to_string()),
                ..ScoringStrategy::default()
            });
        let resources = defaulted_resources(strategy_args.resources.as_ref());
        for (i, r) in resources.iter().enumerate() {
            if !(1..=MAX_NODE_SCORE).contains(&r.weight) {
                errors.push(format!(
                    "scoringStrategy.resources[{i}].weight: Invalid value: {}: resource weight of {} not in valid range (0, 100]",
                    r.weight, r.name
                ));
            }
        }
        let shape = strategy_args
            .requested_to_capacity_ratio
            .as_ref()
            .map(|p| p.shape.clone().unwrap_or_default());
        if let Some(shape) = &shape {
            validate_shape(shape, "scoringStrategy.shape", &mut errors);
        }
        let strategy_type = strategy_args.strategy_type.as_deref().unwrap_or_default();
        let strategy = match strategy_type {
            LEAST_ALLOCATED => Some(Strategy::LeastAllocated),
            MOST_ALLOCATED => Some(Strategy::MostAllocated),
            REQUESTED_TO_CAPACITY_RATIO => match &shape {
                Some(shape) => Some(Strategy::RequestedToCapacityRatio(
                    shape
                        .iter()
                        .map(|p| ShapePoint {
                            utilization: i64::from(p.utilization),
                            score: i64::from(p.score)
                                * (MAX_NODE_SCORE / MAX_CUSTOM_PRIORITY_SCORE),
                        })
                        .collect(),
                )),
                None => {
                    errors.push(
                        "scoringStrategy.requestedToCapacityRatio: Required value: the shape is required for RequestedToCapacityRatio"
                            .to_string(),
                    );
                    None
                }
            },
            other => {
                errors.push(format!(
                    "scoringStrategy.type: Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""
                ));
                None
            }
        };
        match strategy {
            Some(strategy) if errors.is_empty() => Ok(Fit {
                ignored_resources: ignored_resources.into_iter().collect(),
                ignored_resource_groups: ignored_groups.into_iter().collect(),
                strategy,
                resources: resources.iter().map(Scored::new).collect(),
            }),
            _ => Err(format!("invalid {NAME} args: {}", errors.join(", "))),
        }
    }

    /// Whether the filter skips the extended resource `name` (in `ignoredResources` or in
    /// an `ignoredResourceGroups` domain).
    fn is_ignored(&self, name: &str) -> bool {
        if self.ignored_resources.is_empty() && self.ignored_resource_groups.is_empty() {
            return false;
        }
        if !is_extended_resource_name(name) {
            return false;
        }
        let group = name.split('/').next().unwrap_or_default();
        self.ignored_resources.contains(name) || self.ignored_resource_groups.contains(group)
    }

    fn fit_state(&self, pod: &PodInfo) -> FitState {
        let r = &pod.requests;
        FitState {
            milli_cpu: r.milli_cpu,
            memory: r.memory,
            ephemeral_storage: r.ephemeral_storage,
            scalars: r
                .scalar
                .iter()
                .filter(|(name, q)| **q != 0 && !self.is_ignored(name))
                .map(|(name, q)| (name.clone(), *q))
                .collect(),
        }
    }

    fn score_node(&self, requests: &[i64], node: &NodeInfo) -> i64 {
        let (mut node_score, mut weight_sum) = (0i64, 0i64);
        for (spec, &pod_req) in self.resources.iter().zip(requests) {
            let (alloc, req) = allocatable_and_requested(node, spec, pod_req, false);
            if alloc == 0 {
                continue;
            }
            let score = match &self.strategy {
                Strategy::LeastAllocated => least_requested_score(req, alloc),
                Strategy::MostAllocated => most_requested_score(req, alloc),
                Strategy::RequestedToCapacityRatio(shape) => {
                    let s = requested_to_capacity_score(shape, req, alloc);
                    // Upstream leaves zero-scoring resources out of the average.
                    if s <= 0 {
                        continue;
                    }
                    s
                }
            };
            node_score += score * spec.weight;
            weight_sum += spec.weight;
        }
        if weight_sum == 0 {
            return 0;
        }
        match self.strategy {
            Strategy::RequestedToCapacityRatio(_) => {
                (node_score as f64 / weight_sum as f64).round() as i64
            }
            _ => node_score / weight_sum,
        }
    }
}

/// Checks `req` against `node`; allocation-free unless something is insufficient. A
/// resource the pod requests more of than the node's whole allocatable makes the rejection
/// unresolvable, since preempting pods cannot help (upstream since v1.34).
fn fits_request(req: &FitState, node: &NodeInfo) -> Status {
    let (alloc, used) = (&node.allocatable, &node.requested);
    let too_many_pods = node.pods.len() as i64 + 1 > alloc.pods;
    let cpu = req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu;
    let memory = req.memory > 0 && req.memory > alloc.memory - used.memory;
    let storage = req.ephemeral_storage > 0
        && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage;
    let scalar_short = |name: &str, q: i64| {
        let a = alloc.scalar.get(name).copied().unwrap_or(0);
        q > a - used.scalar.get(name).copied().unwrap_or(0)
    };
    let any_scalar = req.scalars.iter().any(|(n, q)| scalar_short(n, *q));
    if !(too_many_pods || cpu || memory || storage || any_scalar) {
        return Status::success();
    }
    let mut reasons = Vec::with_capacity(4);
    let mut unresolvable = false;
    if too_many_pods {
        reasons.push("Too many pods".to_string());
    }
    if cpu {
        reasons.push("Insufficient cpu".to_string());
        unresolvable |= req.milli_cpu > alloc.milli_cpu;
    }
    if memory {
        reasons.push("Insufficient memory".to_string());
        unresolvable |= req.memory > alloc.memory;
    }
    if storage {
        reasons.push("Insufficient ephemeral-storage".to_string());
        unresolvable |= req.ephemeral_storage > alloc.ephemeral_storage;
    }
    for (name, q) in &req.scalars {
        if scalar_short(name, *q) {
            reasons.push(format!("Insufficient {name}"));
            unresolvable |= *q > alloc.scalar.get(name).copied().unwrap_or(0);
        }
    }
    Status {
        code: if unresolvable {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        },
        reasons,
        plugin: "",
    }
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for Fit {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        state.write(PRE_FILTER_KEY, self.fit_state(pod));
        Status::success()
    }
}

impl FilterPlugin for Fit {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match state.read::<FitState>(PRE_FILTER_KEY) {
            Some(req) => fits_request(req, node),
            // Upstream errors without PreFilter state; computing it here gives the same
            // answer.
            None => fits_request(&self.fit_state(pod), node),
        }
    }
}

impl PreScorePlugin for Fit {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[&NodeInfo],
        _snapshot: &Snapshot,
    ) -> Status {
        let requests = pod_requests(pod, &self.resources, false);
        state.write(PRE_SCORE_KEY, ScoreState { requests });
        Status::success()
    }
}

impl ScorePlugin for Fit {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        match state.read::<ScoreState>(PRE_SCORE_KEY) {
            Some(s) => Ok(self.score_node(&s.requests, node)),
            None => Ok(self.score_node(&pod_requests(pod, &self.resources, false), node)),
        }
    }
}

/// Builds the plugin from its args.
pub fn new(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args = match args.filter(|a| !a.is_null()) {
        Some(a) => {
            NodeResourcesFitArgs::deserialize(a).map_err(|e| format!("invalid {NAME} args: {e}"))?
        }
        None => NodeResourcesFitArgs::default(),
    };
    Ok(Arc::new(Fit::from_args(&args)?))
}

// ---------------------------------------------------------------------------------------
// NodeResourcesBalancedAllocation
// ---------------------------------------------------------------------------------------

/// NodeResourcesBalancedAllocation: PreScore and Score.
#[derive(Debug, Clone)]
pub struct BalancedAllocation {
    resources: Vec<Scored>,
}

impl BalancedAllocation {
    /// Builds the plugin from parsed args, applying upstream's defaulting and validation
    /// (no duplicate resources, every weight 1).
    pub fn from_args(args: &NodeResourcesBalancedAllocationArgs) -> Result<Self, String> {
        check_kind(
            args.kind.as_deref(),
            "NodeResourcesBalancedAllocationArgs",
            BALANCED_NAME,
        )?;
        let resources = defaulted_resources(args.resources.as_ref());
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in resources.iter().enumerate() {
            if !seen.insert(r.name.as_str()) {
                errors.push(format!(
                    "resources[{i}].name: Duplicate value: {:?}",
                    r.name
                ));
            }
            if r.weight != 1 {
                errors.push(format!(
                    "resources[{i}].weight: Invalid value: {}: must be 1",
                    r.weight
                ));
            }
        }
        if !errors.is_empty() {
            return Err(format!(
                "invalid {BALANCED_NAME} args: {}",
                errors.join(", ")
            ));
        }
        Ok(BalancedAllocation {
            resources: resources.iter().map(Scored::new).collect(),
        })
    }

    /// Upstream's `balancedResourceScorer`: `(1 - std) * MAX_NODE_SCORE` over the used
    /// fractions (capped at 1) of the resources the node has; the standard deviation is
    /// taken in two passes, in the configured order, so the float result matches upstream.
    fn score_node(&self, requests: &[i64], node: &NodeInfo) -> i64 {
        let fractions = || {
            self.resources
                .iter()
                .zip(requests)
                .filter_map(|(spec, &pod_req)| {
                    let (alloc, req) = allocatable_and_requested(node, spec, pod_req, true);
                    (alloc != 0).then(|| (req as f64 / alloc as f64).min(1.0))
                })
        };
        let (mut count, mut total, mut first_two) = (0usize, 0.0f64, [0.0f64; 2]);
        for f in fractions() {
            if count < 2 {
                first_two[count] = f;
            }
            count += 1;
            total += f;
        }
        let std = match count {
            2 => ((first_two[0] - first_two[1]) / 2.0).abs(),
            n if n > 2 => {
                let mean = total / n as f64;
                let sum: f64 = fractions().map(|f| (f - mean) * (f - mean)).sum();
                (sum / n as f64).sqrt()
            }
            _ => 0.0,
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        BALANCED_NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[&NodeInfo],
        _snapshot: &Snapshot,
    ) -> Status {
        let requests = pod_requests(pod, &self.resources, true);
        // A pod requesting none of the resources would score every node by its current
        // balance alone and pile best-effort pods onto one node (kubernetes#129138).
        if requests.iter().all(|r| *r == 0) {
            return Status::skip();
        }
        state.write(BALANCED_PRE_SCORE_KEY, ScoreState { requests });
        Status::success()
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        if let Some(s) = state.read::<ScoreState>(BALANCED_PRE_SCORE_KEY) {
            return Ok(self.score_node(&s.requests, node));
        }
        let requests = pod_requests(pod, &self.resources, true);
        if requests.iter().all(|r| *r == 0) {
            return Ok(0);
        }
        Ok(self.score_node(&requests, node))
    }
}

/// Builds NodeResourcesBalancedAllocation.
pub fn new_balanced(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args = match args.filter(|a| !a.is_null()) {
        Some(a) => NodeResourcesBalancedAllocationArgs::deserialize(a)
            .map_err(|e| format!("invalid {BALANCED_NAME} args: {e}"))?,
        None => NodeResourcesBalancedAllocationArgs::default(),
    };
    Ok(Arc::new(BalancedAllocation::from_args(&args)?))
}

#[cfg(test)]
mod tests;
