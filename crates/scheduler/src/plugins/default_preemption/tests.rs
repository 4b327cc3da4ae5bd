//! Tests of DefaultPreemption, run against a profile of small test-only plugins (a CPU fit
//! with a node gate, and a conflict filter whose PreFilter state tracks pods) so that they
//! do not depend on the real filters.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use rkube_types::selector::LabelSelector;

use super::*;
use crate::framework::{FilterPlugin, PreFilterPlugin};
use crate::testing::{node, pod};

/// Rejects a node whose free CPU is below the pod's request (resolvable), and a node
/// labelled `gate=closed` (unresolvable).
struct TestFit;

impl Plugin for TestFit {
    fn name(&self) -> &'static str {
        "TestFit"
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for TestFit {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if node.labels.get("gate").map(String::as_str) == Some("closed") {
            return Status::unresolvable("node(s) had a closed gate");
        }
        if node.allocatable.milli_cpu - node.requested.milli_cpu < pod.requests.milli_cpu {
            return Status::unschedulable("Insufficient cpu");
        }
        Status::success()
    }
}

/// A pod labelled `avoid=X` does not fit beside pods labelled `team=X`. PreFilter counts
/// those pods per node into the cycle state; `add_pod`/`remove_pod` keep the counts, so the
/// filter only sees evictions through the state, as with real anti-affinity.
struct Conflict;

const CONFLICT: &str = "Conflict";

type ConflictCounts = HashMap<String, usize>;

fn conflicts(pod: &PodInfo, other: &PodInfo) -> bool {
    pod.labels
        .get("avoid")
        .is_some_and(|v| other.labels.get("team") == Some(v))
}

impl Plugin for Conflict {
    fn name(&self) -> &'static str {
        CONFLICT
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for Conflict {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        if !pod.labels.contains_key("avoid") {
            return Status::skip();
        }
        let mut counts = ConflictCounts::new();
        for n in snapshot.nodes() {
            let c = n.pods.iter().filter(|p| conflicts(pod, p)).count();
            counts.insert(n.name.clone(), c);
        }
        state.write(CONFLICT, counts);
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        let Some(counts) = state.read_mut::<ConflictCounts>(CONFLICT) else {
            return Status::error("conflict state missing");
        };
        if conflicts(pod, other) {
            *counts.entry(node.name.clone()).or_default() += 1;
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &Arc<PodInfo>,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        let Some(counts) = state.read_mut::<ConflictCounts>(CONFLICT) else {
            return Status::error("conflict state missing");
        };
        if conflicts(pod, other) {
            let c = counts.entry(node.name.clone()).or_default();
            *c = c.saturating_sub(1);
        }
        Status::success()
    }
}

impl FilterPlugin for Conflict {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(counts) = state.read::<ConflictCounts>(CONFLICT) else {
            return Status::error("conflict state missing");
        };
        if counts.get(&node.name).copied().unwrap_or(0) > 0 {
            return Status::unschedulable("node(s) had conflicting pods");
        }
        Status::success()
    }
}

fn test_profile() -> Profile {
    let mut p = Profile::empty("default-scheduler");
    let conflict: Arc<dyn Plugin> = Arc::new(Conflict);
    p.pre_filter = vec![conflict.clone()];
    p.filter = vec![Arc::new(TestFit), conflict];
    p
}

fn info(p: Pod) -> Arc<PodInfo> {
    Arc::new(PodInfo::new(Arc::new(p)))
}

fn cluster(nodes: Vec<Node>, pods: Vec<(Pod, &str)>) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(Arc::new(n));
    }
    for (p, on) in pods {
        s.add_pod(info(p), on);
    }
    s
}

/// A running pod on a node: `priority`, `cpu` requested.
fn running(name: &str, priority: i32, cpu: &str) -> Pod {
    pod(name).priority(priority).cpu(cpu).build()
}

fn with_status(mut p: Pod, f: impl FnOnce(&mut PodStatus)) -> Pod {
    f(p.status.get_or_insert_with(PodStatus::default));
    p
}

fn started_at(p: Pod, second: i64) -> Pod {
    with_status(p, |s| {
        s.start_time = Timestamp::from_second(second).ok().map(Time);
    })
}

fn terminating(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    p
}

fn budget(name: &str, key: &str, value: &str, allowed: i32) -> DisruptionBudget {
    DisruptionBudget {
        key: format!("default/{name}"),
        namespace: "default".to_string(),
        selector: LabelSelector::parse(&format!("{key}={value}")).ok(),
        disruptions_allowed: allowed,
    }
}

/// The cycle state after PreFilter.
fn cycle_state(profile: &Profile, pod: &PodInfo, snapshot: &Snapshot) -> CycleState {
    let mut state = CycleState::new();
    let status = profile.run_pre_filter(&mut state, pod, snapshot);
    assert!(status.is_success(), "prefilter: {status:?}");
    state
}

/// Runs a scheduling cycle's PreFilter and Filter, checks that no node fits, then runs
/// the plugin's PostFilter on the filters' statuses.
fn preempt_with(
    plugin: &DefaultPreemption,
    snapshot: &Snapshot,
    preemptor: Pod,
) -> (Option<PostFilterResult>, Status) {
    let profile = test_profile();
    let pod = PodInfo::new(Arc::new(preemptor));
    let mut state = CycleState::new();
    let status = profile.run_pre_filter(&mut state, &pod, snapshot);
    assert!(
        status.is_success() || status.is_skip(),
        "prefilter: {status:?}"
    );
    let feasible = profile.find_feasible(&state, &pod, snapshot, 0);
    assert!(
        feasible.nodes.is_empty(),
        "the preemptor should fit nowhere, but fits on {:?}",
        feasible.nodes
    );
    plugin.post_filter(&state, &pod, snapshot, &feasible.statuses, &profile)
}

fn preempt(snapshot: &Snapshot, preemptor: Pod) -> (Option<PostFilterResult>, Status) {
    preempt_with(
        &DefaultPreemption::with_args(DefaultPreemptionArgs::default()),
        snapshot,
        preemptor,
    )
}

/// The nominated node and the victims' names, most important first.
fn chosen(result: &(Option<PostFilterResult>, Status)) -> (String, Vec<String>) {
    let (r, status) = result;
    assert!(status.is_success(), "preemption failed: {status:?}");
    let r = r.as_ref().expect("a result on success");
    (
        r.nominated_node.clone().unwrap_or_default(),
        r.victims.iter().map(|v| v.name.clone()).collect(),
    )
}

fn message(result: &(Option<PostFilterResult>, Status)) -> String {
    assert_eq!(result.1.code, Code::Unschedulable, "status: {:?}", result.1);
    result.1.to_string()
}

#[test]
fn evicts_the_lowest_priority_pods_and_no_more_than_needed() {
    let s = cluster(
        vec![node("n1").cpu("4").build()],
        vec![
            (running("p1", 1, "1"), "n1"),
            (running("p2", 2, "1"), "n1"),
            (running("p3", 3, "1"), "n1"),
            (running("p4", 4, "1"), "n1"),
        ],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(
        chosen(&r),
        ("n1".to_string(), vec!["p2".to_string(), "p1".to_string()])
    );
}

#[test]
fn reprieves_by_importance_not_by_victim_count() {
    // Upstream reprieves the most important pods first: the two small pods of priority 2
    // and 3 stay, so the big priority-1 pod goes, even though evicting only it is also the
    // smallest set here; and a cheaper pod is never evicted to spare a less important one.
    let s = cluster(
        vec![node("n1").cpu("4").build()],
        vec![
            (running("big-low", 1, "2"), "n1"),
            (running("small-2", 2, "1"), "n1"),
            (running("small-3", 3, "1"), "n1"),
        ],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(chosen(&r), ("n1".to_string(), vec!["big-low".to_string()]));
}

#[test]
fn equal_and_higher_priority_pods_are_never_victims() {
    let s = cluster(
        vec![node("n1").cpu("2").build(), node("n2").cpu("2").build()],
        vec![
            // Only a pod of the preemptor's own priority: nothing to evict.
            (running("equal", 10, "2"), "n1"),
            // Evicting the low pod is not enough, and the high one is off limits.
            (running("higher", 20, "1"), "n2"),
            (running("low", 1, "1"), "n2"),
        ],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(
        message(&r),
        "preemption: 0/2 nodes are available: 1 Insufficient cpu, \
         1 No preemption victims found for incoming pod."
    );
    let cleared = r.0.expect("an empty result clears the nomination");
    assert!(cleared.nominated_node.is_none() && cleared.victims.is_empty());
}

#[test]
fn a_node_where_evicting_everyone_would_not_help_is_not_chosen() {
    let s = cluster(
        vec![node("n1").cpu("2").build(), node("n2").cpu("4").build()],
        vec![
            // Cheapest victim, but the node is too small even when empty.
            (running("tiny", 1, "1"), "n1"),
            (running("a", 5, "2"), "n2"),
            (running("b", 5, "2"), "n2"),
        ],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("3").build());
    assert_eq!(
        chosen(&r),
        ("n2".to_string(), vec!["a".to_string(), "b".to_string()])
    );
}

#[test]
fn a_node_without_budget_violations_is_preferred_over_cheaper_victims() {
    let mut s = cluster(
        vec![node("n1").cpu("2").build(), node("n2").cpu("2").build()],
        vec![
            (
                pod("db").priority(1).cpu("2").label("app", "db").build(),
                "n1",
            ),
            (
                pod("web").priority(5).cpu("2").label("app", "web").build(),
                "n2",
            ),
        ],
    );
    s.set_disruption_budget(budget("db", "app", "db", 0));
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(chosen(&r), ("n2".to_string(), vec!["web".to_string()]));
}

#[test]
fn a_budget_protected_pod_is_evicted_when_no_other_node_works() {
    let mut s = cluster(
        vec![node("n1").cpu("2").build()],
        vec![(
            pod("db").priority(1).cpu("2").label("app", "db").build(),
            "n1",
        )],
    );
    s.set_disruption_budget(budget("db", "app", "db", 0));
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(chosen(&r), ("n1".to_string(), vec!["db".to_string()]));
}

#[test]
fn budget_protected_pods_are_reprieved_before_more_important_unprotected_ones() {
    // Sorted by importance alone, `web` would be reprieved and `db` evicted; the budget
    // makes `db` go back first, so `web` is the victim and no budget is violated.
    let mut s = cluster(
        vec![node("n1").cpu("4").build()],
        vec![
            (
                pod("db").priority(1).cpu("2").label("app", "db").build(),
                "n1",
            ),
            (
                pod("web").priority(2).cpu("2").label("app", "web").build(),
                "n1",
            ),
        ],
    );
    s.set_disruption_budget(budget("db", "app", "db", 0));
    let profile = test_profile();
    let pod = PodInfo::new(Arc::new(pod("hi").priority(10).cpu("2").build()));
    let state = cycle_state(&profile, &pod, &s);
    let budgets: Vec<&DisruptionBudget> = s.disruption_budgets().collect();
    let n1 = s.get("n1").expect("node");
    let (victims, violations) =
        select_victims_on_node(&profile, &state, &pod, n1, &s, &budgets).expect("fits");
    let names: Vec<&str> = victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!((names, violations), (vec!["web"], 0));
    assert_eq!(n1.pods.len(), 2, "the snapshot's node is left alone");
}

#[test]
fn a_budget_is_exhausted_by_earlier_victims() {
    let b = budget("db", "app", "db", 1);
    let mut other_ns = budget("db", "app", "db", 0);
    other_ns.namespace = "other".to_string();
    let pods = vec![
        info(pod("first").label("app", "db").build()),
        info(pod("second").label("app", "db").build()),
        info(pod("unlabelled").build()),
        info(pod("web").label("app", "web").build()),
    ];
    let (violating, non_violating) = split_by_budget_violation(pods, &[&b, &other_ns]);
    let names = |v: &[Arc<PodInfo>]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&violating), vec!["second"]);
    assert_eq!(names(&non_violating), vec!["first", "unlabelled", "web"]);
}

#[test]
fn counts_budget_violations_of_the_final_victims_only() {
    let mut s = cluster(
        vec![node("n1").cpu("3").build()],
        vec![
            (
                pod("db1").priority(1).cpu("1").label("app", "db").build(),
                "n1",
            ),
            (
                pod("db2").priority(1).cpu("1").label("app", "db").build(),
                "n1",
            ),
            (
                pod("db3").priority(1).cpu("1").label("app", "db").build(),
                "n1",
            ),
        ],
    );
    s.set_disruption_budget(budget("db", "app", "db", 1));
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    let (node, victims) = chosen(&r);
    assert_eq!((node.as_str(), victims.len()), ("n1", 2));
    let profile = test_profile();
    let pod = PodInfo::new(Arc::new(pod("hi").priority(10).cpu("2").build()));
    let budgets: Vec<&DisruptionBudget> = s.disruption_budgets().collect();
    let n1 = s.get("n1").expect("node");
    let state = cycle_state(&profile, &pod, &s);
    let (_, violations) =
        select_victims_on_node(&profile, &state, &pod, n1, &s, &budgets).expect("fits");
    assert_eq!(
        violations, 1,
        "one eviction is allowed, the second violates"
    );
}

#[test]
fn preemption_policy_never_does_not_preempt() {
    let s = cluster(
        vec![node("n1").cpu("1").build()],
        vec![(running("low", 1, "1"), "n1")],
    );
    let mut p = pod("hi").priority(10).cpu("1").build();
    if let Some(spec) = p.spec.as_mut() {
        spec.preemption_policy = Some("Never".to_string());
    }
    let r = preempt(&s, p);
    assert!(r.0.is_none(), "the nomination is kept");
    assert_eq!(
        message(&r),
        "preemption: not eligible due to preemptionPolicy=Never."
    );
}

fn nominated(p: Pod, node: &str) -> Pod {
    with_status(p, |s| s.nominated_node_name = Some(node.to_string()))
}

#[test]
fn waits_for_terminating_victims_on_the_nominated_node() {
    let s = cluster(
        vec![node("n1").cpu("2").build()],
        vec![
            (terminating(running("going", 1, "1")), "n1"),
            (running("low", 1, "1"), "n1"),
        ],
    );
    let r = preempt(&s, nominated(pod("hi").priority(10).cpu("2").build(), "n1"));
    assert!(r.0.is_none(), "the nomination is kept");
    assert_eq!(
        message(&r),
        "preemption: not eligible due to a terminating pod on the nominated node."
    );
}

#[test]
fn terminating_pods_that_do_not_block_a_new_preemption() {
    // A terminating pod of higher priority, and one evicted for another reason, are not
    // victims of this pod's earlier preemption: no waiting. A terminating lower-priority pod
    // may still be picked as a victim again (the scheduler skips deleting it twice).
    let evicted = with_status(terminating(running("evicted", 1, "1")), |s| {
        s.conditions = Some(vec![PodCondition {
            type_: "DisruptionTarget".to_string(),
            status: "True".to_string(),
            reason: Some("EvictionByEvictionAPI".to_string()),
            ..Default::default()
        }]);
    });
    let s = cluster(
        vec![node("n1").cpu("3").build()],
        vec![
            (terminating(running("higher", 20, "1")), "n1"),
            (evicted, "n1"),
            (running("low", 1, "1"), "n1"),
        ],
    );
    let r = preempt(&s, nominated(pod("hi").priority(10).cpu("2").build(), "n1"));
    assert_eq!(
        chosen(&r),
        (
            "n1".to_string(),
            vec!["evicted".to_string(), "low".to_string()]
        )
    );
}

#[test]
fn an_unresolvable_nominated_node_frees_the_pod_to_preempt_elsewhere() {
    let s = cluster(
        vec![
            node("n1").cpu("2").label("gate", "closed").build(),
            node("n2").cpu("2").build(),
        ],
        vec![
            (terminating(running("going", 1, "1")), "n1"),
            (running("low", 1, "2"), "n2"),
        ],
    );
    let r = preempt(&s, nominated(pod("hi").priority(10).cpu("2").build(), "n1"));
    assert_eq!(chosen(&r), ("n2".to_string(), vec!["low".to_string()]));
}

#[test]
fn unresolvable_nodes_are_skipped() {
    let s = cluster(
        vec![
            node("n1").cpu("2").label("gate", "closed").build(),
            node("n2").cpu("2").build(),
        ],
        vec![
            (running("cheap", 1, "2"), "n1"),
            (running("dearer", 5, "2"), "n2"),
        ],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(chosen(&r), ("n2".to_string(), vec!["dearer".to_string()]));
}

#[test]
fn only_unresolvable_nodes_means_preemption_is_not_helpful() {
    let s = cluster(
        vec![
            node("n1").cpu("2").label("gate", "closed").build(),
            node("n2").cpu("2").label("gate", "closed").build(),
        ],
        vec![(running("cheap", 1, "2"), "n1")],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("2").build());
    assert_eq!(
        message(&r),
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn evictions_reach_the_filters_through_the_prefilter_state() {
    // The CPU fits; only the conflicting pod, tracked in the Conflict plugin's state, is in
    // the way. The state the cycle passed in must be left as it was.
    let s = cluster(
        vec![node("n1").cpu("4").build()],
        vec![
            (
                pod("red").priority(1).cpu("1").label("team", "red").build(),
                "n1",
            ),
            (
                pod("blue")
                    .priority(1)
                    .cpu("1")
                    .label("team", "blue")
                    .build(),
                "n1",
            ),
        ],
    );
    let profile = test_profile();
    let pod = PodInfo::new(Arc::new(
        pod("hi")
            .priority(10)
            .cpu("1")
            .label("avoid", "red")
            .build(),
    ));
    let mut state = CycleState::new();
    assert!(profile.run_pre_filter(&mut state, &pod, &s).is_success());
    let feasible = profile.find_feasible(&state, &pod, &s, 0);
    assert!(feasible.nodes.is_empty());
    let plugin = DefaultPreemption::with_args(DefaultPreemptionArgs::default());
    let r = plugin.post_filter(&state, &pod, &s, &feasible.statuses, &profile);
    assert_eq!(chosen(&r), ("n1".to_string(), vec!["red".to_string()]));
    let counts = state.read::<ConflictCounts>(CONFLICT).expect("state");
    assert_eq!(counts.get("n1"), Some(&1), "the cycle's state was changed");
}

fn candidate(node: &str, priorities: &[i32], pdb_violations: usize) -> Candidate {
    Candidate {
        node: node.to_string(),
        victims: priorities
            .iter()
            .enumerate()
            .map(|(i, p)| info(pod(&format!("{node}-{i}")).priority(*p).build()))
            .collect(),
        pdb_violations,
    }
}

fn pick(candidates: &[Candidate]) -> &str {
    pick_one_node(candidates).map_or("", |i| candidates[i].node.as_str())
}

#[test]
fn node_choice_prefers_fewer_budget_violations_first() {
    let c = [candidate("a", &[1], 1), candidate("b", &[100, 100], 0)];
    assert_eq!(pick(&c), "b");
}

#[test]
fn node_choice_prefers_the_lowest_highest_priority_victim() {
    let c = [candidate("a", &[5], 0), candidate("b", &[3, 3, 3], 0)];
    assert_eq!(pick(&c), "b");
}

#[test]
fn node_choice_prefers_the_smallest_priority_sum() {
    let c = [candidate("a", &[3, 2], 0), candidate("b", &[3, 1], 0)];
    assert_eq!(pick(&c), "b");
    // Negative priorities: more victims must not look cheaper (upstream shifts each
    // priority by 2^31 before summing).
    let c = [candidate("a", &[-5, -5], 0), candidate("b", &[-5], 0)];
    assert_eq!(pick(&c), "b");
}

#[test]
fn node_choice_prefers_fewer_victims_on_equal_sums() {
    // With the shift, [1e9] and [1e9, i32::MIN] sum the same.
    let c = [
        candidate("a", &[1_000_000_000, i32::MIN], 0),
        candidate("b", &[1_000_000_000], 0),
    ];
    assert_eq!(pick(&c), "b");
}

#[test]
fn node_choice_prefers_the_latest_started_highest_priority_victims() {
    let at = |node: &str, second: i64| Candidate {
        node: node.to_string(),
        victims: vec![
            info(started_at(
                pod(&format!("{node}-hi")).priority(3).build(),
                second,
            )),
            // A lower-priority victim's start time does not count.
            info(started_at(
                pod(&format!("{node}-lo")).priority(1).build(),
                1,
            )),
        ],
        pdb_violations: 0,
    };
    assert_eq!(pick(&[at("a", 100), at("b", 200)]), "b");
    assert_eq!(pick(&[at("a", 300), at("b", 200)]), "a");
    // Not started yet counts as starting now.
    assert_eq!(pick(&[at("a", 300), candidate("b", &[3, 1], 0)]), "b");
}

#[test]
fn node_choice_takes_the_first_on_a_full_tie() {
    let c = [candidate("a", &[2], 0), candidate("b", &[2], 0)];
    assert_eq!(pick(&c), "a");
    assert_eq!(pick(&[]), "");
}

#[test]
fn victims_are_ordered_most_important_first() {
    let s = cluster(
        vec![node("n1").cpu("3").build()],
        vec![
            (started_at(running("old", 2, "1"), 100), "n1"),
            (running("lowest", 1, "1"), "n1"),
            (started_at(running("young", 2, "1"), 200), "n1"),
        ],
    );
    let r = preempt(&s, pod("hi").priority(10).cpu("3").build());
    assert_eq!(
        chosen(&r).1,
        vec!["old".to_string(), "young".to_string(), "lowest".to_string()]
    );
}

#[test]
fn the_dry_run_stops_at_enough_candidates_from_the_uid_offset() {
    let nodes: Vec<Node> = (0..3)
        .map(|i| node(&format!("n{i}")).cpu("1").build())
        .collect();
    let pods = (0..3)
        .map(|i| (running(&format!("low{i}"), 1, "1"), format!("n{i}")))
        .collect::<Vec<_>>();
    let s = cluster(
        nodes,
        pods.iter().map(|(p, n)| (p.clone(), n.as_str())).collect(),
    );
    let preemptor = pod("hi").priority(10).cpu("1").build();
    let offset = (uid_hash("uid-hi") % 3) as usize;
    let one = DefaultPreemption::with_args(DefaultPreemptionArgs {
        min_candidate_nodes_percentage: 0,
        min_candidate_nodes_absolute: 1,
    });
    let r = preempt_with(&one, &s, preemptor);
    assert_eq!(chosen(&r).0, format!("n{offset}"));
}

#[test]
fn the_dry_run_goes_on_past_budget_violating_nodes() {
    let offset = (uid_hash("uid-hi") % 3) as usize;
    let nodes: Vec<Node> = (0..3)
        .map(|i| node(&format!("n{i}")).cpu("1").build())
        .collect();
    // The first node visited only offers a protected pod.
    let pods = (0..3)
        .map(|i| {
            let app = if i == offset { "db" } else { "web" };
            (
                pod(&format!("low{i}"))
                    .priority(1)
                    .cpu("1")
                    .label("app", app)
                    .build(),
                format!("n{i}"),
            )
        })
        .collect::<Vec<_>>();
    let mut s = cluster(
        nodes,
        pods.iter().map(|(p, n)| (p.clone(), n.as_str())).collect(),
    );
    s.set_disruption_budget(budget("db", "app", "db", 0));
    let one = DefaultPreemption::with_args(DefaultPreemptionArgs {
        min_candidate_nodes_percentage: 0,
        min_candidate_nodes_absolute: 1,
    });
    let r = preempt_with(&one, &s, pod("hi").priority(10).cpu("1").build());
    assert_eq!(chosen(&r).0, format!("n{}", (offset + 1) % 3));
}

#[test]
fn args_take_defaults_and_are_validated() {
    use serde_json::json;
    assert_eq!(
        DefaultPreemptionArgs::from_json(None),
        Ok(DefaultPreemptionArgs::default())
    );
    assert_eq!(
        DefaultPreemptionArgs::from_json(Some(&json!({
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "DefaultPreemptionArgs",
            "minCandidateNodesPercentage": 40,
        }))),
        Ok(DefaultPreemptionArgs {
            min_candidate_nodes_percentage: 40,
            min_candidate_nodes_absolute: 100,
        })
    );
    for bad in [
        json!({"minCandidateNodesPercentage": 101}),
        json!({"minCandidateNodesPercentage": -1}),
        json!({"minCandidateNodesAbsolute": -1}),
        json!({"minCandidateNodesPercentage": 0, "minCandidateNodesAbsolute": 0}),
        json!({"minCandidateNodes": 3}),
        json!({"kind": "NodeResourcesFitArgs"}),
        json!({"minCandidateNodesAbsolute": "ten"}),
    ] {
        assert!(
            DefaultPreemptionArgs::from_json(Some(&bad)).is_err(),
            "accepted {bad}"
        );
        assert!(new(Some(&bad)).is_err(), "factory accepted {bad}");
    }
}

#[test]
fn number_of_candidates_follows_upstream() {
    let args = |pct, abs| DefaultPreemptionArgs {
        min_candidate_nodes_percentage: pct,
        min_candidate_nodes_absolute: abs,
    };
    assert_eq!(args(10, 100).num_candidates(0), 0);
    assert_eq!(
        args(10, 100).num_candidates(10),
        10,
        "capped at the node count"
    );
    assert_eq!(
        args(10, 100).num_candidates(1000),
        100,
        "the absolute floor"
    );
    assert_eq!(args(40, 1).num_candidates(1000), 400, "the percentage");
    assert_eq!(args(0, 5).num_candidates(3), 3);
    assert_eq!(args(50, 0).num_candidates(5), 2);
}
