//! Tests of the configuration: decoding and validation, and profile building against a fake
//! registry whose plugins implement upstream's extension points (so the merging logic is
//! checked independently of the real plugins), plus a few against the real registry.

use std::cell::RefCell;

use super::*;
use crate::framework::{
    BindPlugin, CycleState, FilterPlugin, NodeStatuses, PermitPlugin, PostBindPlugin,
    PostFilterPlugin, PostFilterResult, PreBindPlugin, PreFilterPlugin, PreScorePlugin,
    QueueSortPlugin, ReservePlugin, ScorePlugin, Status,
};
use crate::node_info::{NodeInfo, PodInfo};
use crate::snapshot::Snapshot;

// ---- fake plugins ----

/// A plugin implementing the extension points listed in `points`.
struct Fake {
    name: &'static str,
    points: &'static [Point],
}

impl Fake {
    fn has(&self, p: Point) -> bool {
        self.points.contains(&p)
    }
}

impl Plugin for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        self.has(Point::QueueSort).then_some(self)
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        self.has(Point::PreFilter).then_some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        self.has(Point::Filter).then_some(self)
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        self.has(Point::PostFilter).then_some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        self.has(Point::PreScore).then_some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        self.has(Point::Score).then_some(self)
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        self.has(Point::Reserve).then_some(self)
    }
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        self.has(Point::Permit).then_some(self)
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        self.has(Point::PreBind).then_some(self)
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        self.has(Point::Bind).then_some(self)
    }
    fn as_post_bind(&self) -> Option<&dyn PostBindPlugin> {
        self.has(Point::PostBind).then_some(self)
    }
}

impl QueueSortPlugin for Fake {
    fn less(&self, _: &PodInfo, a: u64, _: &PodInfo, b: u64) -> bool {
        a < b
    }
}
impl PreFilterPlugin for Fake {
    fn pre_filter(&self, _: &mut CycleState, _: &PodInfo, _: &Snapshot) -> Status {
        Status::success()
    }
}
impl FilterPlugin for Fake {
    fn filter(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status {
        Status::success()
    }
}
impl PostFilterPlugin for Fake {
    fn post_filter(
        &self,
        _: &CycleState,
        _: &PodInfo,
        _: &Snapshot,
        _: &NodeStatuses,
        _: &Profile,
    ) -> (Option<PostFilterResult>, Status) {
        (None, Status::unschedulable("fake"))
    }
}
impl PreScorePlugin for Fake {
    fn pre_score(&self, _: &mut CycleState, _: &PodInfo, _: &[&NodeInfo], _: &Snapshot) -> Status {
        Status::success()
    }
}
impl ScorePlugin for Fake {
    fn score(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Result<i64, Status> {
        Ok(0)
    }
}
impl ReservePlugin for Fake {
    fn reserve(&self, _: &mut CycleState, _: &PodInfo, _: &str) -> Status {
        Status::success()
    }
    fn unreserve(&self, _: &mut CycleState, _: &PodInfo, _: &str) {}
}
impl PermitPlugin for Fake {
    fn permit(&self, _: &CycleState, _: &PodInfo, _: &str) -> Status {
        Status::success()
    }
}
impl PreBindPlugin for Fake {
    fn pre_bind(&self, _: &CycleState, _: &PodInfo, _: &str) -> Status {
        Status::success()
    }
}
impl BindPlugin for Fake {
    fn claims(&self, _: &PodInfo) -> Status {
        Status::success()
    }
}
impl PostBindPlugin for Fake {
    fn post_bind(&self, _: &PodInfo, _: &str) {}
}

thread_local! {
    /// The factory calls of the current test (each test runs on its own thread).
    static BUILT: RefCell<Vec<(&'static str, Option<Value>)>> = const { RefCell::new(Vec::new()) };
}

fn reset() {
    BUILT.with(|b| b.borrow_mut().clear());
}

fn built() -> Vec<(&'static str, Option<Value>)> {
    BUILT.with(|b| b.borrow().clone())
}

fn record(name: &'static str, args: Option<&Value>) {
    BUILT.with(|b| b.borrow_mut().push((name, args.cloned())));
}

macro_rules! fake {
    ($f:ident, $name:expr, [$($p:ident),*]) => {
        fn $f(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
            record($name, args);
            Ok(Arc::new(Fake { name: $name, points: &[$(Point::$p),*] }))
        }
    };
}

use Point::*;
fake!(f_sort, "PrioritySort", [QueueSort]);
fake!(f_unsched, "NodeUnschedulable", [Filter]);
fake!(f_name, "NodeName", [Filter]);
fake!(f_taint, "TaintToleration", [Filter, PreScore, Score]);
fake!(
    f_affinity,
    "NodeAffinity",
    [PreFilter, Filter, PreScore, Score]
);
fake!(f_ports, "NodePorts", [PreFilter, Filter]);
fake!(
    f_spread,
    "PodTopologySpread",
    [PreFilter, Filter, PreScore, Score]
);
fake!(
    f_ipa,
    "InterPodAffinity",
    [PreFilter, Filter, PreScore, Score]
);
fake!(f_preempt, "DefaultPreemption", [PostFilter]);
fake!(
    f_balanced,
    "NodeResourcesBalancedAllocation",
    [PreScore, Score]
);
fake!(f_binder, "DefaultBinder", [Bind]);
fake!(f_alt_sort, "AltSort", [QueueSort]);
fake!(f_alt_binder, "AltBinder", [Bind]);
fake!(
    f_custom,
    "Custom",
    [Filter, Score, Reserve, Permit, PreBind, PostBind]
);

/// NodeResourcesFit, with a check of `scoringStrategy.type` like the real one's.
fn f_fit(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    record("NodeResourcesFit", args);
    if let Some(t) = args.and_then(|a| a.pointer("/scoringStrategy/type")) {
        let ok = [
            "LeastAllocated",
            "MostAllocated",
            "RequestedToCapacityRatio",
        ];
        if !t.as_str().is_some_and(|t| ok.contains(&t)) {
            return Err(format!("scoringStrategy.type: unsupported value {t}"));
        }
    }
    Ok(Arc::new(Fake {
        name: "NodeResourcesFit",
        points: &[PreFilter, Filter, PreScore, Score],
    }))
}

fn fake_registry() -> BTreeMap<&'static str, Factory> {
    let mut r: BTreeMap<&'static str, Factory> = BTreeMap::new();
    let all: [(&'static str, Factory); 15] = [
        ("PrioritySort", f_sort),
        ("NodeUnschedulable", f_unsched),
        ("NodeName", f_name),
        ("TaintToleration", f_taint),
        ("NodeAffinity", f_affinity),
        ("NodePorts", f_ports),
        ("NodeResourcesFit", f_fit),
        ("PodTopologySpread", f_spread),
        ("InterPodAffinity", f_ipa),
        ("DefaultPreemption", f_preempt),
        ("NodeResourcesBalancedAllocation", f_balanced),
        ("DefaultBinder", f_binder),
        ("AltSort", f_alt_sort),
        ("AltBinder", f_alt_binder),
        ("Custom", f_custom),
    ];
    r.extend(all);
    r
}

// ---- helpers ----

const HEADER: &str =
    "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";

fn parse(body: &str) -> Result<SchedulerConfig, ConfigError> {
    SchedulerConfig::parse(&format!("{HEADER}{body}"))
}

fn build(body: &str) -> Result<Vec<Profile>, ConfigError> {
    parse(body)?.build_profiles_with(&fake_registry())
}

fn build_one(body: &str) -> Profile {
    match build(body) {
        Ok(mut p) => {
            assert_eq!(p.len(), 1, "expected one profile");
            p.remove(0)
        }
        Err(e) => panic!("config should build, got: {e}"),
    }
}

fn error(body: &str) -> String {
    match build(body) {
        Ok(p) => panic!("config should be rejected, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn names(v: &[Arc<dyn Plugin>]) -> Vec<&'static str> {
    v.iter().map(|p| p.name()).collect()
}

fn scores(p: &Profile) -> Vec<(&'static str, i64)> {
    p.score.iter().map(|(p, w)| (p.name(), *w)).collect()
}

const DEFAULT_FILTERS: [&str; 8] = [
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
];

const DEFAULT_SCORES: [(&str, i64); 6] = [
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodeResourcesFit", 1),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesBalancedAllocation", 1),
];

fn assert_default_profile(p: &Profile) {
    assert_eq!(p.scheduler_name, "default-scheduler");
    assert_eq!(
        p.queue_sort.as_ref().map(|q| q.name()),
        Some("PrioritySort")
    );
    assert_eq!(
        names(&p.pre_filter),
        [
            "NodeAffinity",
            "NodePorts",
            "NodeResourcesFit",
            "PodTopologySpread",
            "InterPodAffinity"
        ]
    );
    assert_eq!(names(&p.filter), DEFAULT_FILTERS);
    assert_eq!(names(&p.post_filter), ["DefaultPreemption"]);
    assert_eq!(
        names(&p.pre_score),
        [
            "TaintToleration",
            "NodeAffinity",
            "NodeResourcesFit",
            "PodTopologySpread",
            "InterPodAffinity",
            "NodeResourcesBalancedAllocation"
        ]
    );
    assert_eq!(scores(p), DEFAULT_SCORES);
    assert!(p.reserve.is_empty() && p.permit.is_empty() && p.pre_bind.is_empty());
    assert_eq!(names(&p.bind), ["DefaultBinder"]);
    assert!(p.post_bind.is_empty());
}

// ---- defaults ----

#[test]
fn default_config_builds_upstream_default_profile() {
    let profiles = SchedulerConfig::default()
        .build_profiles_with(&fake_registry())
        .expect("default config builds");
    assert_eq!(profiles.len(), 1);
    assert_default_profile(&profiles[0]);
    assert_eq!(profiles[0].percentage_of_nodes_to_score, None);
}

#[test]
fn minimal_file_equals_default_config() {
    let c = parse("").expect("header only is a valid configuration");
    assert_eq!(c, SchedulerConfig::default());
    assert_eq!(c.pod_initial_backoff, Duration::from_secs(1));
    assert_eq!(c.pod_max_backoff, Duration::from_secs(10));
    assert_default_profile(&build_one(""));
}

#[test]
fn one_profile_without_name_is_default_scheduler() {
    let p = build_one("profiles:\n- plugins: {}\n");
    assert_default_profile(&p);
}

#[test]
fn each_plugin_is_built_once_per_profile() {
    reset();
    build_one("");
    let mut seen: Vec<_> = built().into_iter().map(|(n, _)| n).collect();
    let before = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        before,
        "a plugin was built twice: {:?}",
        built()
    );
    assert_eq!(before, 12);
}

// ---- multiPoint ----

#[test]
fn multi_point_enable_adds_plugin_to_every_point_it_implements() {
    let p = build_one(
        "profiles:\n- plugins:\n    multiPoint:\n      enabled:\n      - name: Custom\n        weight: 5\n",
    );
    let mut filters = DEFAULT_FILTERS.to_vec();
    filters.push("Custom");
    assert_eq!(names(&p.filter), filters);
    assert_eq!(scores(&p).last(), Some(&("Custom", 5)));
    assert_eq!(names(&p.reserve), ["Custom"]);
    assert_eq!(names(&p.permit), ["Custom"]);
    assert_eq!(names(&p.pre_bind), ["Custom"]);
    assert_eq!(names(&p.post_bind), ["Custom"]);
    assert!(
        !names(&p.pre_filter).contains(&"Custom"),
        "Custom has no PreFilter"
    );
}

#[test]
fn multi_point_disable_all_then_enable_subset() {
    let p = build_one(
        r#"profiles:
- plugins:
    multiPoint:
      disabled: [{name: "*"}]
      enabled:
      - name: PrioritySort
      - name: NodeResourcesFit
        weight: 4
      - name: DefaultBinder
"#,
    );
    assert_eq!(
        p.queue_sort.as_ref().map(|q| q.name()),
        Some("PrioritySort")
    );
    assert_eq!(names(&p.pre_filter), ["NodeResourcesFit"]);
    assert_eq!(names(&p.filter), ["NodeResourcesFit"]);
    assert!(p.post_filter.is_empty());
    assert_eq!(scores(&p), [("NodeResourcesFit", 4)]);
    assert_eq!(names(&p.bind), ["DefaultBinder"]);
}

#[test]
fn multi_point_reconfigured_default_keeps_position_and_takes_weight() {
    let p = build_one(
        "profiles:\n- plugins:\n    multiPoint:\n      enabled:\n      - name: NodeAffinity\n        weight: 7\n",
    );
    let mut want = DEFAULT_SCORES.to_vec();
    want[1] = ("NodeAffinity", 7);
    assert_eq!(scores(&p), want);
    assert_eq!(names(&p.filter), DEFAULT_FILTERS);
}

#[test]
fn multi_point_disabled_default_is_gone_everywhere() {
    let p = build_one(
        "profiles:\n- plugins:\n    multiPoint:\n      disabled: [{name: TaintToleration}]\n",
    );
    assert!(!names(&p.filter).contains(&"TaintToleration"));
    assert!(!names(&p.pre_score).contains(&"TaintToleration"));
    assert!(!scores(&p).iter().any(|(n, _)| *n == "TaintToleration"));
}

#[test]
fn multi_point_enabled_wins_over_multi_point_disabled() {
    // Upstream: "an Enabled setting takes precedence over Disabled".
    let p = build_one(
        "profiles:\n- plugins:\n    multiPoint:\n      disabled: [{name: Custom}]\n      enabled: [{name: Custom}]\n",
    );
    assert!(names(&p.filter).contains(&"Custom"));
}

// ---- per extension point ----

#[test]
fn disabling_default_score_plugin_keeps_its_other_points() {
    let p =
        build_one("profiles:\n- plugins:\n    score:\n      disabled: [{name: TaintToleration}]\n");
    assert_eq!(scores(&p), DEFAULT_SCORES[1..]);
    assert!(names(&p.filter).contains(&"TaintToleration"));
    assert!(names(&p.pre_score).contains(&"TaintToleration"));
}

#[test]
fn score_disable_all_then_enable_subset_with_weights() {
    let p = build_one(
        r#"profiles:
- plugins:
    score:
      disabled: [{name: "*"}]
      enabled:
      - {name: NodeResourcesBalancedAllocation, weight: 5}
      - {name: TaintToleration}
"#,
    );
    // No weight on a score entry means 1, not the default's 3 (upstream).
    assert_eq!(
        scores(&p),
        [
            ("NodeResourcesBalancedAllocation", 5),
            ("TaintToleration", 1)
        ]
    );
    assert_eq!(
        names(&p.filter),
        DEFAULT_FILTERS,
        "other points keep the defaults"
    );
}

#[test]
fn default_enabled_at_its_point_moves_first_and_takes_weight() {
    // Upstream's expandMultiPointPlugins puts plugins enabled both at the point and in
    // multiPoint first, in the point's order.
    let p = build_one(
        "profiles:\n- plugins:\n    score:\n      enabled:\n      - {name: InterPodAffinity, weight: 9}\n",
    );
    assert_eq!(
        scores(&p),
        [
            ("InterPodAffinity", 9),
            ("TaintToleration", 3),
            ("NodeAffinity", 2),
            ("NodeResourcesFit", 1),
            ("PodTopologySpread", 2),
            ("NodeResourcesBalancedAllocation", 1),
        ]
    );
}

#[test]
fn point_enabled_plugin_comes_after_multi_point_ones() {
    let p = build_one("profiles:\n- plugins:\n    filter:\n      enabled: [{name: Custom}]\n");
    let mut filters = DEFAULT_FILTERS.to_vec();
    filters.push("Custom");
    assert_eq!(names(&p.filter), filters);
    assert!(p.reserve.is_empty(), "enabled at filter only");
    assert!(scores(&p).iter().all(|(n, _)| *n != "Custom"));
}

#[test]
fn point_disable_all_keeps_point_enabled_plugins_only() {
    let p = build_one(
        "profiles:\n- plugins:\n    filter:\n      disabled: [{name: '*'}]\n      enabled: [{name: NodeName}, {name: NodePorts}]\n",
    );
    assert_eq!(names(&p.filter), ["NodeName", "NodePorts"]);
    assert_eq!(
        names(&p.pre_filter).len(),
        5,
        "PreFilter keeps the defaults"
    );
}

#[test]
fn replacing_queue_sort_and_binder() {
    let p = build_one(
        r#"profiles:
- plugins:
    queueSort:
      enabled: [{name: AltSort}]
      disabled: [{name: "*"}]
    bind:
      enabled: [{name: AltBinder}]
      disabled: [{name: DefaultBinder}]
"#,
    );
    assert_eq!(p.queue_sort.as_ref().map(|q| q.name()), Some("AltSort"));
    assert_eq!(names(&p.bind), ["AltBinder"]);
}

#[test]
fn weight_zero_means_one() {
    let p = build_one(
        "profiles:\n- plugins:\n    multiPoint:\n      enabled: [{name: TaintToleration, weight: 0}]\n",
    );
    assert_eq!(scores(&p)[0], ("TaintToleration", 1));
}

// ---- profiles ----

#[test]
fn two_profiles_build_independently() {
    reset();
    let profiles = build(
        r#"percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packing
  percentageOfNodesToScore: 70
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
"#,
    )
    .expect("two profiles build");
    assert_eq!(profiles.len(), 2);
    assert_default_profile(&profiles[0]);
    assert_eq!(profiles[0].percentage_of_nodes_to_score, Some(30));
    assert_eq!(profiles[1].scheduler_name, "bin-packing");
    assert_eq!(profiles[1].percentage_of_nodes_to_score, Some(70));
    assert_eq!(scores(&profiles[1]), DEFAULT_SCORES[..5]);
    let fits: Vec<_> = built()
        .into_iter()
        .filter(|(n, _)| *n == "NodeResourcesFit")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        fits,
        [
            None,
            Some(serde_json::json!({"scoringStrategy": {"type": "MostAllocated"}}))
        ],
        "each profile builds its own instance with its own args"
    );
}

#[test]
fn plugin_config_args_go_to_their_plugin_only() {
    reset();
    build_one(
        r#"profiles:
- pluginConfig:
  - name: NodeResourcesFit
    args:
      apiVersion: kubescheduler.config.k8s.io/v1
      kind: NodeResourcesFitArgs
      scoringStrategy: {type: MostAllocated}
"#,
    );
    for (name, args) in built() {
        if name == "NodeResourcesFit" {
            assert_eq!(
                args,
                Some(serde_json::json!({"scoringStrategy": {"type": "MostAllocated"}})),
                "apiVersion and kind are removed"
            );
        } else {
            assert_eq!(args, None, "{name} got args");
        }
    }
}

#[test]
fn bad_plugin_args_are_reported_at_their_entry() {
    let e = error(
        "profiles:\n- pluginConfig:\n  - name: NodeName\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: Bogus}}\n",
    );
    assert_eq!(
        e,
        r#"profiles[0].pluginConfig[1].args: invalid args for plugin "NodeResourcesFit": scoringStrategy.type: unsupported value "Bogus""#
    );
}

#[test]
fn args_of_a_plugin_not_enabled_are_accepted_and_validated() {
    let ok = "profiles:\n- plugins:\n    multiPoint:\n      disabled: [{name: NodeResourcesFit}]\n  pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: MostAllocated}}\n  - name: VolumeBinding\n    args: {bindTimeoutSeconds: 600}\n";
    let p = build_one(ok);
    assert!(!names(&p.filter).contains(&"NodeResourcesFit"));
    let e = error(&ok.replace("MostAllocated", "Bogus"));
    assert!(
        e.starts_with("profiles[0].pluginConfig[0].args: invalid args"),
        "{e}"
    );
}

// ---- plugin errors ----

#[test]
fn unknown_plugin_is_rejected_with_its_path() {
    let e = error(
        "profiles:\n- plugins:\n    score:\n      enabled: [{name: NodeAffinity}, {name: Foo}]\n",
    );
    assert_eq!(
        e,
        r#"profiles[0].plugins.score.enabled[1]: unknown plugin "Foo""#
    );
    let e = error("profiles:\n- plugins:\n    multiPoint:\n      enabled: [{name: Foo}]\n");
    assert_eq!(
        e,
        r#"profiles[0].plugins.multiPoint.enabled[0]: unknown plugin "Foo""#
    );
}

#[test]
fn unimplemented_upstream_plugins_may_be_disabled_not_enabled() {
    let p = build_one(
        r#"profiles:
- plugins:
    multiPoint:
      disabled: [{name: VolumeBinding}, {name: ImageLocality}, {name: SchedulingGates}]
    filter:
      disabled: [{name: VolumeZone}, {name: NodeVolumeLimits}, {name: VolumeRestrictions}]
    score:
      disabled: [{name: ImageLocality}]
"#,
    );
    assert_default_profile(&p);
    let e = error(
        "profiles:\n- plugins:\n    score:\n      enabled: [{name: ImageLocality, weight: 1}]\n",
    );
    assert_eq!(
        e,
        r#"profiles[0].plugins.score.enabled[0]: rkube does not implement plugin "ImageLocality""#
    );
}

#[test]
fn plugins_removed_before_v1_are_rejected() {
    let e = error("profiles:\n- plugins:\n    filter:\n      enabled: [{name: EBSLimits}]\n");
    assert_eq!(
        e,
        r#"profiles[0].plugins.filter.enabled[0]: plugin "EBSLimits" was removed in kubescheduler.config.k8s.io/v1"#
    );
}

#[test]
fn plugin_enabled_at_a_point_it_does_not_implement_is_rejected() {
    let e = error("profiles:\n- plugins:\n    score:\n      enabled: [{name: NodePorts}]\n");
    assert_eq!(
        e,
        r#"profiles[0].plugins.score.enabled[0]: plugin "NodePorts" does not implement Score"#
    );
    let e = error("profiles:\n- plugins:\n    preEnqueue:\n      enabled: [{name: NodePorts}]\n");
    assert!(e.contains("does not implement PreEnqueue"), "{e}");
}

#[test]
fn double_registration_is_rejected() {
    let e = error(
        "profiles:\n- plugins:\n    filter:\n      enabled: [{name: Custom}, {name: Custom}]\n",
    );
    assert_eq!(
        e,
        r#"profiles[0].plugins.filter.enabled[1]: plugin "Custom" is already enabled at Filter"#
    );
    let e = error(
        "profiles:\n- plugins:\n    multiPoint:\n      enabled: [{name: Custom}, {name: Custom}]\n",
    );
    assert!(e.contains("is already enabled at Filter"), "{e}");
}

#[test]
fn profile_needs_exactly_one_queue_sort() {
    let e = error("profiles:\n- plugins:\n    queueSort:\n      enabled: [{name: AltSort}]\n");
    assert_eq!(
        e,
        "profiles[0].plugins.queueSort: exactly one queue sort plugin is required, got 2 (PrioritySort, AltSort)"
    );
    let e =
        error("profiles:\n- plugins:\n    multiPoint:\n      disabled: [{name: PrioritySort}]\n");
    assert_eq!(
        e,
        "profiles[0].plugins.queueSort: exactly one queue sort plugin is required, got 0"
    );
}

#[test]
fn profile_needs_a_bind_plugin() {
    let e = error("profiles:\n- plugins:\n    bind:\n      disabled: [{name: DefaultBinder}]\n");
    assert_eq!(
        e,
        "profiles[0].plugins.bind: at least one bind plugin is required"
    );
}

#[test]
fn profiles_must_share_the_queue_sort() {
    let e = error(
        r#"profiles:
- schedulerName: a
- schedulerName: b
  plugins:
    queueSort:
      enabled: [{name: AltSort}]
      disabled: [{name: "*"}]
"#,
    );
    assert_eq!(
        e,
        r#"profiles[1].plugins.queueSort: must be the same for all profiles: "AltSort" differs from "PrioritySort" in profiles[0]"#
    );
    let e = error(
        "profiles:\n- schedulerName: a\n- schedulerName: b\n  pluginConfig:\n  - name: PrioritySort\n    args: {x: 1}\n",
    );
    assert!(
        e.starts_with("profiles[1].pluginConfig: args of queue sort plugin"),
        "{e}"
    );
}

// ---- decoding and validation ----

#[test]
fn duplicate_scheduler_name_is_rejected() {
    let e = parse("profiles:\n- schedulerName: a\n- schedulerName: b\n- schedulerName: a\n")
        .expect_err("duplicate names");
    assert_eq!(
        e.to_string(),
        r#"profiles[2].schedulerName: duplicate value "a" (also in profiles[0])"#
    );
}

#[test]
fn scheduler_name_is_required_with_several_profiles() {
    let e = parse("profiles:\n- schedulerName: a\n- plugins: {}\n").expect_err("missing name");
    assert_eq!(e.to_string(), "profiles[1].schedulerName: required");
}

#[test]
fn bad_yaml_is_a_decode_error() {
    let e = parse("profiles: [\n").expect_err("bad yaml");
    assert!(matches!(e, ConfigError::Decode(_)), "{e:?}");
    let e = SchedulerConfig::parse("{\"apiVersion\": ").expect_err("bad json");
    assert!(matches!(e, ConfigError::Decode(_)), "{e:?}");
}

#[test]
fn unknown_fields_are_rejected() {
    let e = parse("percentageOfNodeToScore: 50\n").expect_err("typo at top level");
    assert!(matches!(e, ConfigError::Decode(_)), "{e:?}");
    assert!(e.to_string().contains("percentageOfNodeToScore"), "{e}");
    let e =
        parse("profiles:\n- plugins:\n    scores:\n      enabled: []\n").expect_err("nested typo");
    let msg = e.to_string();
    assert!(
        msg.contains("scores") && msg.contains("profiles[0].plugins"),
        "{msg}"
    );
    let e = parse("profiles:\n- plugins:\n    score:\n      enabled: [{name: A, wieght: 1}]\n")
        .expect_err("typo in a plugin entry");
    assert!(e.to_string().contains("wieght"), "{e}");
}

#[test]
fn wrong_types_are_rejected() {
    let e = parse("percentageOfNodesToScore: half\n").expect_err("string for int");
    assert!(matches!(e, ConfigError::Decode(_)), "{e:?}");
}

#[test]
fn api_version_and_kind_are_checked_first() {
    let e = SchedulerConfig::parse(
        "apiVersion: kubescheduler.config.k8s.io/v1beta3\nkind: KubeSchedulerConfiguration\n",
    )
    .expect_err("old version");
    assert_eq!(
        e.to_string(),
        r#"apiVersion: must be "kubescheduler.config.k8s.io/v1", got "kubescheduler.config.k8s.io/v1beta3""#
    );
    let e = SchedulerConfig::parse(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
    )
    .expect_err("other kind");
    assert_eq!(
        e.to_string(),
        r#"kind: must be "KubeSchedulerConfiguration", got "KubeProxyConfiguration""#
    );
    let e = SchedulerConfig::parse("kind: KubeSchedulerConfiguration\n").expect_err("no version");
    assert_eq!(
        e.to_string(),
        r#"apiVersion: required ("kubescheduler.config.k8s.io/v1")"#
    );
    let e = SchedulerConfig::parse("").expect_err("empty file");
    assert!(
        e.to_string().starts_with("apiVersion") || matches!(e, ConfigError::Decode(_)),
        "{e}"
    );
}

#[test]
fn percentage_out_of_range_is_rejected() {
    let e = parse("percentageOfNodesToScore: 101\n").expect_err("global");
    assert_eq!(
        e.to_string(),
        "percentageOfNodesToScore: 101 is not in the valid range 0-100"
    );
    let e = parse("profiles:\n- percentageOfNodesToScore: -1\n").expect_err("profile");
    assert_eq!(
        e.to_string(),
        "profiles[0].percentageOfNodesToScore: -1 is not in the valid range 0-100"
    );
    let c = parse("percentageOfNodesToScore: 0\n").expect("0 is adaptive");
    assert_eq!(c.percentage_of_nodes_to_score, Some(0));
}

#[test]
fn backoff_is_read_and_validated() {
    let c = parse("podInitialBackoffSeconds: 2\npodMaxBackoffSeconds: 60\n").expect("valid");
    assert_eq!(c.pod_initial_backoff, Duration::from_secs(2));
    assert_eq!(c.pod_max_backoff, Duration::from_secs(60));
    let e = parse("podInitialBackoffSeconds: 0\n").expect_err("zero");
    assert_eq!(
        e.to_string(),
        "podInitialBackoffSeconds: 0 must be greater than 0"
    );
    let e = parse("podInitialBackoffSeconds: 20\n").expect_err("above the default max");
    assert!(e.to_string().starts_with("podMaxBackoffSeconds:"), "{e}");
}

#[test]
fn parallelism_is_accepted_and_validated() {
    assert_eq!(
        parse("parallelism: 8\n").expect("valid").parallelism,
        Some(8)
    );
    let e = parse("parallelism: 0\n").expect_err("zero");
    assert_eq!(e.to_string(), "parallelism: 0 must be greater than 0");
}

#[test]
fn duplicate_plugin_config_is_rejected() {
    let e = parse("profiles:\n- pluginConfig:\n  - name: NodeAffinity\n  - name: NodeAffinity\n")
        .expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        r#"profiles[0].pluginConfig[1]: duplicate config for plugin "NodeAffinity""#
    );
}

#[test]
fn plugin_args_of_another_kind_are_rejected() {
    let e = parse(
        "profiles:\n- pluginConfig:\n  - name: NodeAffinity\n    args: {kind: InterPodAffinityArgs}\n",
    )
    .expect_err("wrong kind");
    assert!(
        e.to_string()
            .starts_with("profiles[0].pluginConfig[0].args.kind:"),
        "{e}"
    );
    let e = parse("profiles:\n- pluginConfig:\n  - name: NodeAffinity\n    args: [1]\n")
        .expect_err("not an object");
    assert_eq!(
        e.to_string(),
        "profiles[0].pluginConfig[0].args: must be an object"
    );
}

#[test]
fn negative_weight_is_rejected() {
    let e = parse(
        "profiles:\n- plugins:\n    score:\n      enabled: [{name: NodeAffinity, weight: -2}]\n",
    )
    .expect_err("negative weight");
    assert_eq!(
        e.to_string(),
        "profiles[0].plugins.score.enabled[0].weight: -2 must not be negative"
    );
}

#[test]
fn extenders_are_rejected() {
    let e = parse("extenders:\n- urlPrefix: http://x\n").expect_err("extenders");
    assert_eq!(
        e.to_string(),
        "extenders: rkube does not support scheduler extenders"
    );
    parse("extenders: []\n").expect("an empty list is fine");
}

#[test]
fn json_config_is_accepted() {
    let c = SchedulerConfig::parse(
        r#"{
  "apiVersion": "kubescheduler.config.k8s.io/v1",
  "kind": "KubeSchedulerConfiguration",
  "profiles": [{"schedulerName": "json", "plugins": {"score": {"disabled": [{"name": "*"}]}}}]
}"#,
    )
    .expect("json parses");
    let p = c.build_profiles_with(&fake_registry()).expect("builds");
    assert_eq!(p[0].scheduler_name, "json");
    assert!(p[0].score.is_empty());
    let e = SchedulerConfig::parse(
        r#"{"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration", "bogus": 1}"#,
    )
    .expect_err("unknown field");
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn nulls_are_like_absent_fields() {
    let p = build_one(
        "profiles:\n- plugins:\n    score:\n      enabled:\n      disabled: ~\n  pluginConfig:\n",
    );
    assert_default_profile(&p);
}

#[test]
fn upstream_style_full_file_is_accepted() {
    let c = parse(
        r#"clientConnection:
  kubeconfig: /etc/kubernetes/scheduler.conf
  qps: 50
  burst: 100
enableProfiling: true
enableContentionProfiling: true
leaderElection:
  leaderElect: true
  leaseDuration: 1m
  renewDeadline: 30s
  retryPeriod: 1.5s
  resourceLock: leases
  resourceName: my-scheduler
  resourceNamespace: kube-system
"#,
    )
    .expect("valid");
    assert_eq!(
        c.kubeconfig,
        Some(PathBuf::from("/etc/kubernetes/scheduler.conf"))
    );
    let le = c.leader_election.expect("leader election section");
    assert!(le.leader_elect);
    assert_eq!(le.lease_duration, Duration::from_secs(60));
    assert_eq!(le.renew_deadline, Duration::from_secs(30));
    assert_eq!(le.retry_period, Duration::from_millis(1500));
    assert_eq!(le.resource_name, "my-scheduler");
}

#[test]
fn leader_election_defaults_and_validation() {
    let c = parse("leaderElection:\n  resourceName: x\n").expect("valid");
    let le = c.leader_election.expect("section");
    assert_eq!(
        le,
        LeaderElectionConfiguration {
            resource_name: "x".to_string(),
            ..LeaderElectionConfiguration::default()
        }
    );
    assert_eq!(parse("").expect("valid").leader_election, None);
    let e = parse("leaderElection:\n  leaseDuration: 10s\n").expect_err("lease <= renew");
    assert_eq!(
        e.to_string(),
        "leaderElection.leaseDuration: must be greater than renewDeadline"
    );
    let e = parse("leaderElection:\n  retryPeriod: 2x\n").expect_err("bad unit");
    assert_eq!(
        e.to_string(),
        r#"leaderElection.retryPeriod: invalid duration "2x": unknown unit "x""#
    );
    let e = parse("leaderElection:\n  resourceLock: endpoints\n").expect_err("not leases");
    assert!(
        e.to_string().starts_with("leaderElection.resourceLock:"),
        "{e}"
    );
    parse("leaderElection:\n  leaderElect: false\n  leaseDuration: 0s\n")
        .expect("not checked when not electing");
}

#[test]
fn go_durations_parse_like_time_parse_duration() {
    let ok = [
        ("0", Duration::ZERO),
        ("15s", Duration::from_secs(15)),
        ("+15s", Duration::from_secs(15)),
        ("1m30s", Duration::from_secs(90)),
        ("1.5h", Duration::from_secs(5400)),
        (".5s", Duration::from_millis(500)),
        ("300ms", Duration::from_millis(300)),
        ("2us", Duration::from_micros(2)),
        ("2µs", Duration::from_micros(2)),
        ("7ns", Duration::from_nanos(7)),
        ("1h1m1s1ms", Duration::from_millis(3_661_001)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_go_duration(text), Ok(want), "{text}");
    }
    for bad in ["", "15", "s", "1d", "-1s", ".s", "1.2.3s", "3000000h"] {
        assert!(
            parse_go_duration(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn load_reads_the_file() {
    let path = std::env::temp_dir().join(format!(
        "rkube-scheduler-config-{}.yaml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!("{HEADER}profiles:\n- schedulerName: from-file\n"),
    )
    .expect("write");
    let c = SchedulerConfig::load(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(c.expect("loads").profiles[0].scheduler_name, "from-file");
    let e = SchedulerConfig::load(Path::new("/nonexistent/rkube.yaml")).expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
}

// ---- the real plugins ----

#[test]
fn default_config_builds_with_the_real_plugins() {
    let profiles = SchedulerConfig::default()
        .build_profiles()
        .expect("default config builds with the in-tree plugins");
    assert_default_profile(&profiles[0]);
}

#[test]
fn real_node_resources_fit_accepts_most_allocated() {
    let c = parse(
        "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n        resources: [{name: cpu, weight: 1}]\n",
    )
    .expect("valid");
    c.build_profiles()
        .expect("MostAllocated is a valid strategy");
}
