//! The scheduling framework, in the shape of upstream's
//! `k8s.io/kube-scheduler/framework/interface.go`: a status code enum, per-cycle state, one
//! trait per extension point, and [`Plugin`], which says which extension points a plugin
//! implements. Plugins are pure: they read the [`Snapshot`] and the pod and answer; every
//! API call (binding, preemption's evictions) is made by the scheduler around them.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::node_info::{NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

/// The highest score a Score plugin gives a node after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
/// The lowest score.
pub const MIN_NODE_SCORE: i64 = 0;

/// What a plugin says about a pod, as upstream's `framework.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The plugin ran and the pod may proceed.
    Success,
    /// An internal error; the pod is retried with backoff.
    Error,
    /// The pod does not fit here, but preemption might help.
    Unschedulable,
    /// The pod does not fit here and preemption cannot help.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod (from PreFilter or PreScore): its Filter
    /// or Score is skipped in this cycle.
    Skip,
}

/// A plugin's answer: a code and the reasons shown to users (`FailedScheduling` events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: Code,
    /// Reasons, e.g. `Insufficient cpu`.
    pub reasons: Vec<String>,
    /// The plugin that answered, filled in by the framework.
    pub plugin: &'static str,
}

impl Status {
    /// Success.
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// A status with `code` and one reason.
    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    /// Unschedulable, resolvable by preemption.
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    /// Unschedulable, and preemption cannot help.
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// An internal error.
    pub fn error(reason: impl Into<String>) -> Status {
        Status::new(Code::Error, reason)
    }

    /// Skip this plugin's later extension points for this pod.
    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    /// Whether the code is `Success`.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether the code is `Skip`.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Whether the code is one of the two unschedulable codes.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    /// Names the plugin that answered.
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reasons.join(", "))
    }
}

/// Data a plugin keeps for one scheduling cycle (computed in PreFilter or PreScore, read in
/// Filter or Score). Cloneable so preemption can try removing pods on a copy.
pub trait StateData: Any + Send + Sync {
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn StateData>;
    /// For downcasting.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A few plugin names. A cycle holds a handful, and they are looked up once per node per
/// plugin, so a short list compared by name beats hashing the name every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet(Vec<&'static str>);

impl NameSet {
    /// Adds `name`.
    pub fn insert(&mut self, name: &'static str) {
        if !self.contains(name) {
            self.0.push(name);
        }
    }

    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(&name)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Per-cycle state shared by the plugins, keyed by a name each plugin picks. A list, not a
/// map: it holds one entry per plugin and is read once per node per plugin.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn StateData>)>,
    /// Plugins whose Filter is skipped this cycle (their PreFilter said Skip).
    pub skip_filter: NameSet,
    /// Plugins whose Score is skipped this cycle (their PreScore said Skip).
    pub skip_score: NameSet,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, v.as_ref().clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
        }
    }
}

impl fmt::Debug for CycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CycleState")
            .field(
                "keys",
                &self.data.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> CycleState {
        CycleState::default()
    }

    /// Stores `value` under `key`.
    pub fn write<T: Any + Clone + Send + Sync>(&mut self, key: &'static str, value: T) {
        match self.data.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = Box::new(value),
            None => self.data.push((key, Box::new(value))),
        }
    }

    /// The value under `key`, if it is a `T`.
    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        let (_, v) = self.data.iter().find(|(k, _)| *k == key)?;
        v.as_ref().as_any().downcast_ref()
    }

    /// The value under `key`, if it is a `T`, to change it.
    pub fn read_mut<T: Any>(&mut self, key: &'static str) -> Option<&mut T> {
        let (_, v) = self.data.iter_mut().find(|(k, _)| *k == key)?;
        v.as_mut().as_any_mut().downcast_mut()
    }
}

/// A plugin: its name and the extension points it implements. Each `as_*` returns the
/// plugin as that extension point's trait, or `None` when it does not implement it.
pub trait Plugin: Send + Sync {
    /// The name used in configuration, e.g. `NodeResourcesFit`.
    fn name(&self) -> &'static str;
    /// QueueSort.
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    /// PreFilter.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// Filter.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// PostFilter.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// PreScore.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// Score (and NormalizeScore).
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// Reserve.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// Permit.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// PreBind.
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    /// Bind. Binding itself is an API call, made by the scheduler for the plugin that
    /// claims it.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
    /// PostBind.
    fn as_post_bind(&self) -> Option<&dyn PostBindPlugin> {
        None
    }
}

/// Orders the active queue.
pub trait QueueSortPlugin: Plugin {
    /// Whether `a` should be scheduled before `b`; `a_added` and `b_added` are when each
    /// entered the queue (a monotonic sequence number).
    fn less(&self, a: &PodInfo, a_added: u64, b: &PodInfo, b_added: u64) -> bool;
}

/// Checks the pod once per cycle and precomputes state for Filter.
pub trait PreFilterPlugin: Plugin {
    /// Runs once per cycle before the filters. `Skip` skips this plugin's Filter; a
    /// rejection makes the pod unschedulable on every node.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status;

    /// Updates the plugin's state as if `other` were added to `node` (for preemption, which
    /// evaluates nodes with nominated pods added and victims removed).
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        Status::success()
    }

    /// Updates the plugin's state as if `other` were removed from `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        Status::success()
    }
}

/// Says whether the pod can run on one node.
pub trait FilterPlugin: Plugin {
    /// Success, or a rejection with the reasons (`Insufficient cpu`, ...).
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// What a PostFilter plugin proposes when no node fits: a node to nominate and the pods to
/// evict from it.
#[derive(Debug, Clone, Default)]
pub struct PostFilterResult {
    /// The node the pod should go to once the victims are gone.
    pub nominated_node: Option<String>,
    /// The pods to delete (keys `namespace/name`).
    pub victims: Vec<Arc<PodInfo>>,
}

/// Why the pod failed on each node, from the filters.
pub type NodeStatuses = HashMap<String, Status>;

/// Runs when no node passed the filters (preemption).
pub trait PostFilterPlugin: Plugin {
    /// Proposes a node and victims, or says why none works.
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        statuses: &NodeStatuses,
        profile: &crate::profile::Profile,
    ) -> (Option<PostFilterResult>, Status);
}

/// Precomputes state for Score over the nodes that passed the filters.
pub trait PreScorePlugin: Plugin {
    /// `Skip` skips this plugin's Score for this pod.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot,
    ) -> Status;
}

/// Ranks the nodes that passed the filters.
pub trait ScorePlugin: Plugin {
    /// The node's raw score.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;

    /// Maps raw scores (one per node, in the order scored) into `0..=MAX_NODE_SCORE`.
    /// The default keeps them.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) -> Status {
        Status::success()
    }
}

/// Reserves what the pod will use on its node before binding.
pub trait ReservePlugin: Plugin {
    /// Reserves; a failure unreserves every plugin and requeues the pod.
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    /// Undoes `reserve`.
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Approves or rejects the placement before binding (waiting is not supported).
pub trait PermitPlugin: Plugin {
    /// Success or a rejection.
    fn permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Runs before the binding (volume provisioning upstream).
pub trait PreBindPlugin: Plugin {
    /// Success or an error, which undoes the placement.
    fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Claims the binding of a pod; the scheduler then posts the `binding` subresource.
pub trait BindPlugin: Plugin {
    /// Whether this plugin binds `pod` (`Skip` passes it to the next bind plugin).
    fn claims(&self, pod: &PodInfo) -> Status;
}

/// Runs after a successful binding.
pub trait PostBindPlugin: Plugin {
    /// Informational.
    fn post_bind(&self, pod: &PodInfo, node: &str);
}
