//! Tests of NodeResourcesFit and NodeResourcesBalancedAllocation, with upstream's table-test
//! cases (`fit_test.go`, `least_allocated_test.go`, `most_allocated_test.go`,
//! `requested_to_capacity_ratio_test.go`, `balanced_allocation_test.go`) reproduced with
//! their expected scores, and tests of the effective requests `PodInfo` computes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;
use crate::framework::Code;
use crate::testing::{node, pod};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn container(name: String, pairs: &[(&str, &str)]) -> Container {
    let requests: BTreeMap<String, Quantity> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    Container {
        name,
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod with one app container per entry, like upstream's `st.MakePod().Req(..).Req(..)`;
/// no containers at all when `containers` is empty (upstream's `st.MakePod().Obj()`).
fn pod_with(name: &str, containers: &[&[(&str, &str)]]) -> PodInfo {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, c)| container(format!("c{i}"), c))
                .collect(),
            ..Default::default()
        }),
        status: None,
    };
    PodInfo::new(Arc::new(pod))
}

fn info(p: Pod) -> PodInfo {
    PodInfo::new(Arc::new(p))
}

/// A node with `allocatable` (plus 110 pods unless set) and `pods` on it.
fn node_with(name: &str, allocatable: &[(&str, &str)], pods: Vec<PodInfo>) -> NodeInfo {
    let mut b = node(name);
    for (r, q) in allocatable {
        b = b.allocatable(r, q);
    }
    let mut n = NodeInfo::new(Arc::new(b.build()));
    for p in pods {
        n.add_pod(Arc::new(p));
    }
    n
}

fn fit(args: serde_json::Value) -> Fit {
    let args: NodeResourcesFitArgs = serde_json::from_value(args).expect("args parse");
    Fit::from_args(&args).expect("args valid")
}

fn default_fit() -> Fit {
    fit(json!({}))
}

fn run_filter(fit: &Fit, pod: &PodInfo, node: &NodeInfo) -> Status {
    let mut state = CycleState::new();
    let pre = fit.pre_filter(&mut state, pod, &Snapshot::new());
    assert!(pre.is_success(), "prefilter: {pre:?}");
    fit.filter(&state, pod, node)
}

fn fit_scores(fit: &Fit, pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
    let mut state = CycleState::new();
    let refs: Vec<&NodeInfo> = nodes.iter().collect();
    let pre = fit.pre_score(&mut state, pod, &refs, &Snapshot::new());
    assert!(pre.is_success(), "prescore: {pre:?}");
    nodes
        .iter()
        .map(|n| fit.score(&state, pod, n).expect("score"))
        .collect()
}

fn strategy(kind: &str, resources: serde_json::Value) -> Fit {
    fit(json!({"scoringStrategy": {"type": kind, "resources": resources}}))
}

fn default_resources_json() -> serde_json::Value {
    json!([{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}])
}

fn reasons(s: &Status) -> Vec<&str> {
    s.reasons.iter().map(String::as_str).collect()
}

/// Upstream's `TestEnoughRequests` node: 10m cpu, 20 bytes memory, 32 pods, 5
/// `example.com/aaa`, 20 bytes ephemeral storage, 5 bytes of `hugepages-2Mi`, with one pod
/// already using `used` (cpu millis, memory bytes).
fn enough_requests_node(used: &[(&str, &str)]) -> NodeInfo {
    node_with(
        "n",
        &[
            ("cpu", "10m"),
            ("memory", "20"),
            ("pods", "32"),
            ("example.com/aaa", "5"),
            ("ephemeral-storage", "20"),
            ("hugepages-2Mi", "5"),
        ],
        vec![pod_with("existing", &[used])],
    )
}

// ---------------------------------------------------------------------------------------
// Effective requests (node_info::pod_requests through PodInfo)
// ---------------------------------------------------------------------------------------

#[test]
fn requests_sum_app_containers() {
    let p = pod_with(
        "p",
        &[
            &[("cpu", "1"), ("memory", "2Gi")],
            &[("cpu", "500m"), ("memory", "1Gi"), ("example.com/gpu", "1")],
        ],
    );
    assert_eq!(p.requests.milli_cpu, 1500);
    assert_eq!(p.requests.memory, 3 << 30);
    assert_eq!(p.requests.scalar.get("example.com/gpu"), Some(&1));
    assert_eq!((p.non_zero_milli_cpu, p.non_zero_memory), (1500, 3 << 30));
}

#[test]
fn requests_take_init_container_larger_than_app_sum() {
    // Upstream's computePodResourceRequest example: containers 2+1 cpu, 1G+1G memory; init
    // containers 2 cpu/1G and 2 cpu/3G → 3 cpu (app sum), 3G (largest init).
    let p = info(
        pod("p")
            .cpu("2")
            .memory("1G")
            .container("1", "1G")
            .init_container("2", "1G")
            .init_container("2", "3G")
            .build(),
    );
    assert_eq!(p.requests.milli_cpu, 3000);
    assert_eq!(p.requests.memory, 3_000_000_000);
}

#[test]
fn requests_take_max_not_sum_of_init_containers() {
    let p = info(
        pod("p")
            .cpu("1")
            .init_container("3", "")
            .init_container("2", "")
            .build(),
    );
    assert_eq!(p.requests.milli_cpu, 3000);
}

#[test]
fn requests_add_sidecars_to_app_sum() {
    let p = info(
        pod("p")
            .cpu("2")
            .memory("1Gi")
            .sidecar("1", "512Mi")
            .build(),
    );
    assert_eq!(p.requests.milli_cpu, 3000);
    assert_eq!(p.requests.memory, (1 << 30) + (512 << 20));
}

#[test]
fn requests_count_sidecars_started_before_an_init_container() {
    // The regular init container runs beside the sidecar started before it: 1 + 3 = 4 cpu,
    // more than the app (1) plus the sidecar (1).
    let before = info(
        pod("p")
            .cpu("1")
            .sidecar("1", "")
            .init_container("3", "")
            .build(),
    );
    assert_eq!(before.requests.milli_cpu, 4000);
    // A sidecar started after the init container does not run beside it: max(3, 1 + 1).
    let after = info(
        pod("p")
            .cpu("1")
            .init_container("3", "")
            .sidecar("1", "")
            .build(),
    );
    assert_eq!(after.requests.milli_cpu, 3000);
}

#[test]
fn requests_add_overhead() {
    let p = info(
        pod("p")
            .cpu("1")
            .memory("1Gi")
            .overhead("cpu", "250m")
            .overhead("memory", "100Mi")
            .build(),
    );
    assert_eq!(p.requests.milli_cpu, 1250);
    assert_eq!(p.requests.memory, (1 << 30) + (100 << 20));
    assert_eq!(p.non_zero_milli_cpu, 1250);
    assert_eq!(p.non_zero_memory, (1 << 30) + (100 << 20));
}

#[test]
fn non_zero_requests_default_unset_cpu_and_memory_only() {
    let unset = info(pod("p").build());
    assert_eq!(unset.requests.milli_cpu, 0);
    assert_eq!(unset.non_zero_milli_cpu, 100);
    assert_eq!(unset.non_zero_memory, 200 << 20);
    // An explicit zero is a request of zero, not a missing one.
    let zero = pod_with("p", &[&[("cpu", "0"), ("memory", "0")]]);
    assert_eq!((zero.non_zero_milli_cpu, zero.non_zero_memory), (0, 0));
    // No containers at all: nothing to default.
    let none = pod_with("p", &[]);
    assert_eq!((none.non_zero_milli_cpu, none.non_zero_memory), (0, 0));
}

#[test]
fn non_zero_requests_default_init_containers_and_sidecars_too() {
    // The init container's unset cpu counts as 100m, more than the app's 50m.
    let init = info(
        pod("p")
            .cpu("50m")
            .memory("1Gi")
            .init_container("", "1Gi")
            .build(),
    );
    assert_eq!(init.requests.milli_cpu, 50);
    assert_eq!(init.non_zero_milli_cpu, 100);
    // A request-less sidecar adds the defaults to the request-less app container's.
    let sidecar = info(pod("p").sidecar("", "").build());
    assert_eq!(sidecar.non_zero_milli_cpu, 200);
    assert_eq!(sidecar.non_zero_memory, 400 << 20);
}

#[test]
fn requests_of_extended_resources_in_init_containers_take_the_max() {
    let mut p = pod("p").build();
    let spec = p.spec.as_mut().expect("spec");
    spec.init_containers = Some(vec![
        container("i0".to_string(), &[("example.com/aaa", "3")]),
        container("i1".to_string(), &[("example.com/aaa", "3")]),
    ]);
    let p = info(p);
    assert_eq!(p.requests.scalar.get("example.com/aaa"), Some(&3));
}

// ---------------------------------------------------------------------------------------
// Filter
// ---------------------------------------------------------------------------------------

#[test]
fn pod_without_requests_always_fits() {
    let n = enough_requests_node(&[("cpu", "10m"), ("memory", "20")]);
    assert!(run_filter(&default_fit(), &pod_with("p", &[]), &n).is_success());
}

#[test]
fn rejects_with_every_insufficient_resource() {
    let n = enough_requests_node(&[("cpu", "10m"), ("memory", "20")]);
    let p = pod_with("p", &[&[("cpu", "1m"), ("memory", "1")]]);
    let s = run_filter(&default_fit(), &p, &n);
    assert_eq!(s.code, Code::Unschedulable);
    assert_eq!(reasons(&s), ["Insufficient cpu", "Insufficient memory"]);
}

#[test]
fn rejects_on_init_container_cpu() {
    // Upstream: "too many resources fails due to init container cpu".
    let n = enough_requests_node(&[("cpu", "8m"), ("memory", "19")]);
    let mut p = pod_with("p", &[&[("cpu", "1m"), ("memory", "1")]])
        .pod
        .as_ref()
        .clone();
    p.spec.as_mut().expect("spec").init_containers = Some(vec![container(
        "i0".to_string(),
        &[("cpu", "3m"), ("memory", "1")],
    )]);
    let s = run_filter(&default_fit(), &info(p), &n);
    assert_eq!(reasons(&s), ["Insufficient cpu"]);
    assert_eq!(s.code, Code::Unschedulable);
}

#[test]
fn init_container_fits_because_it_is_the_max_not_the_sum() {
    let n = enough_requests_node(&[("cpu", "9m"), ("memory", "19")]);
    let p = info(
        pod("p")
            .cpu("1m")
            .memory("1")
            .init_container("1m", "1")
            .init_container("1m", "1")
            .build(),
    );
    assert!(run_filter(&default_fit(), &p, &n).is_success());
}

#[test]
fn equal_edge_case_fits() {
    let n = enough_requests_node(&[("cpu", "5m"), ("memory", "19")]);
    let p = info(
        pod("p")
            .cpu("4m")
            .memory("1")
            .init_container("5m", "1")
            .build(),
    );
    assert!(run_filter(&default_fit(), &p, &n).is_success());
}

#[test]
fn sidecar_adds_to_the_app_containers() {
    let n = node_with(
        "n",
        &[("cpu", "4")],
        vec![pod_with("e", &[&[("cpu", "1")]])],
    );
    // 2 + 1 = 3 free exactly: fits.
    let fits = info(pod("p").cpu("2").sidecar("1", "").build());
    assert!(run_filter(&default_fit(), &fits, &n).is_success());
    // 2 + 2 = 4 > 3 free, although each container alone would fit.
    let over = info(pod("p").cpu("2").sidecar("2", "").build());
    let s = run_filter(&default_fit(), &over, &n);
    assert_eq!(reasons(&s), ["Insufficient cpu"]);
    assert_eq!(s.code, Code::Unschedulable);
}

#[test]
fn overhead_is_counted() {
    // Upstream: "requests + overhead does not fit for memory" (1 + 15 > 20 - 5).
    let n = enough_requests_node(&[("cpu", "5m"), ("memory", "5")]);
    let over = info(
        pod("p")
            .cpu("1m")
            .memory("1")
            .overhead("cpu", "1m")
            .overhead("memory", "15")
            .build(),
    );
    assert_eq!(
        reasons(&run_filter(&default_fit(), &over, &n)),
        ["Insufficient memory"]
    );
    // "resources + pod overhead fits" (1 + 13 <= 15).
    let fits = info(
        pod("p")
            .cpu("1m")
            .memory("1")
            .overhead("cpu", "3m")
            .overhead("memory", "13")
            .build(),
    );
    assert!(run_filter(&default_fit(), &fits, &n).is_success());
}

#[test]
fn extended_resource_missing_on_node_is_insufficient_and_unresolvable() {
    let n = node_with("n", &[("cpu", "4"), ("memory", "8Gi")], vec![]);
    let p = info(pod("p").cpu("1").request("example.com/gpu", "1").build());
    let s = run_filter(&default_fit(), &p, &n);
    assert_eq!(reasons(&s), ["Insufficient example.com/gpu"]);
    // Even an empty node could not hold it, so preemption cannot help.
    assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
}

#[test]
fn extended_resource_in_use_is_insufficient_but_resolvable() {
    // Upstream: "extended resource allocatable enforced" (1 > 5 - 5).
    let n = enough_requests_node(&[("example.com/aaa", "5")]);
    let p = pod_with(
        "p",
        &[&[("cpu", "1m"), ("memory", "1"), ("example.com/aaa", "1")]],
    );
    let s = run_filter(&default_fit(), &p, &n);
    assert_eq!(reasons(&s), ["Insufficient example.com/aaa"]);
    assert_eq!(s.code, Code::Unschedulable);
}

#[test]
fn extended_resource_fits_for_multiple_init_containers() {
    // Upstream: "extended resource allocatable admits multiple init containers" (3 <= 5 - 2).
    let n = enough_requests_node(&[("example.com/aaa", "2")]);
    let mut p = pod_with("p", &[&[]]).pod.as_ref().clone();
    p.spec.as_mut().expect("spec").init_containers = Some(vec![
        container("i0".to_string(), &[("example.com/aaa", "3")]),
        container("i1".to_string(), &[("example.com/aaa", "3")]),
    ]);
    assert!(run_filter(&default_fit(), &info(p), &n).is_success());
}

#[test]
fn hugepages_and_kubernetes_io_resources_are_enforced() {
    let n = enough_requests_node(&[]);
    let huge = pod_with("p", &[&[("hugepages-2Mi", "10")]]);
    let s = run_filter(&default_fit(), &huge, &n);
    assert_eq!(reasons(&s), ["Insufficient hugepages-2Mi"]);
    let kio = pod_with("p", &[&[("kubernetes.io/something", "10")]]);
    assert_eq!(
        reasons(&run_filter(&default_fit(), &kio, &n)),
        ["Insufficient kubernetes.io/something"]
    );
}

#[test]
fn too_many_pods_even_without_requests() {
    let full = node_with(
        "n",
        &[("pods", "1"), ("cpu", "10")],
        vec![pod_with("e", &[])],
    );
    let s = run_filter(&default_fit(), &pod_with("p", &[]), &full);
    assert_eq!(reasons(&s), ["Too many pods"]);
    assert_eq!(s.code, Code::Unschedulable);
    let fitting = pod_with("p", &[&[("cpu", "1")]]);
    assert_eq!(
        reasons(&run_filter(&default_fit(), &fitting, &full)),
        ["Too many pods"]
    );
}

#[test]
fn reports_all_insufficient_resources_in_one_status() {
    let n = node_with(
        "n",
        &[
            ("pods", "1"),
            ("cpu", "2"),
            ("memory", "2Gi"),
            ("ephemeral-storage", "2Gi"),
            ("example.com/gpu", "1"),
        ],
        vec![pod_with(
            "e",
            &[&[
                ("cpu", "1500m"),
                ("memory", "1Gi"),
                ("ephemeral-storage", "1Gi"),
                ("example.com/gpu", "1"),
            ]],
        )],
    );
    let p = pod_with(
        "p",
        &[&[
            ("cpu", "1"),
            ("memory", "1536Mi"),
            ("ephemeral-storage", "1536Mi"),
            ("example.com/gpu", "1"),
        ]],
    );
    let s = run_filter(&default_fit(), &p, &n);
    assert_eq!(
        reasons(&s),
        [
            "Too many pods",
            "Insufficient cpu",
            "Insufficient memory",
            "Insufficient ephemeral-storage",
            "Insufficient example.com/gpu",
        ]
    );
    assert_eq!(s.code, Code::Unschedulable);
}

#[test]
fn one_unresolvable_resource_makes_the_rejection_unresolvable() {
    let n = node_with(
        "n",
        &[("cpu", "2"), ("memory", "1Gi")],
        vec![pod_with("e", &[&[("cpu", "2")]])],
    );
    // cpu is merely in use; memory exceeds the whole node.
    let p = pod_with("p", &[&[("cpu", "1"), ("memory", "2Gi")]]);
    let s = run_filter(&default_fit(), &p, &n);
    assert_eq!(reasons(&s), ["Insufficient cpu", "Insufficient memory"]);
    assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
}

#[test]
fn ephemeral_storage_is_enforced() {
    let n = enough_requests_node(&[("cpu", "2m"), ("memory", "2")]);
    let over = pod_with("p", &[&[("ephemeral-storage", "25")]]);
    assert_eq!(
        reasons(&run_filter(&default_fit(), &over, &n)),
        ["Insufficient ephemeral-storage"]
    );
    let fits = pod_with("p", &[&[("ephemeral-storage", "10")]]);
    assert!(run_filter(&default_fit(), &fits, &n).is_success());
}

#[test]
fn ignored_resources_are_not_checked() {
    let n = enough_requests_node(&[]);
    let p = pod_with(
        "p",
        &[&[("cpu", "1m"), ("memory", "1"), ("example.com/bbb", "1")]],
    );
    assert_eq!(
        reasons(&run_filter(&default_fit(), &p, &n)),
        ["Insufficient example.com/bbb"]
    );
    let ignoring = fit(json!({"ignoredResources": ["example.com/bbb"]}));
    assert!(run_filter(&ignoring, &p, &n).is_success());
}

#[test]
fn ignored_resource_groups_skip_extended_resources_only() {
    // Upstream: "skip checking ignored extended resource via resource groups":
    // kubernetes.io resources are native, so the group cannot hide them.
    let n = enough_requests_node(&[]);
    let p = pod_with(
        "p",
        &[&[
            ("cpu", "1m"),
            ("memory", "1"),
            ("example.com/bbb", "1"),
            ("kubernetes.io/something", "1"),
        ]],
    );
    let by_group = fit(json!({"ignoredResourceGroups": ["example.com"]}));
    assert_eq!(
        reasons(&run_filter(&by_group, &p, &n)),
        ["Insufficient kubernetes.io/something"]
    );
    let native = fit(json!({"ignoredResources": ["kubernetes.io/something", "hugepages-2Mi"]}));
    let huge = pod_with("p", &[&[("hugepages-2Mi", "10")]]);
    assert_eq!(
        reasons(&run_filter(&native, &huge, &n)),
        ["Insufficient hugepages-2Mi"]
    );
}

#[test]
fn zero_extended_request_is_not_checked() {
    let n = node_with("n", &[("cpu", "1")], vec![]);
    let p = pod_with("p", &[&[("cpu", "1"), ("example.com/aaa", "0")]]);
    assert!(run_filter(&default_fit(), &p, &n).is_success());
}

#[test]
fn filter_without_prefilter_state_gives_the_same_answer() {
    let n = node_with("n", &[("cpu", "1")], vec![]);
    let p = pod_with("p", &[&[("cpu", "2")]]);
    let s = default_fit().filter(&CycleState::new(), &p, &n);
    assert_eq!(reasons(&s), ["Insufficient cpu"]);
}

// ---------------------------------------------------------------------------------------
// LeastAllocated (upstream's least_allocated_test.go)
// ---------------------------------------------------------------------------------------

fn two_container_pod() -> PodInfo {
    pod_with(
        "p",
        &[
            &[("cpu", "1000"), ("memory", "2000")],
            &[("cpu", "2000"), ("memory", "3000")],
        ],
    )
}

fn node_cm(name: &str, cpu: &str, memory: &str, pods: Vec<PodInfo>) -> NodeInfo {
    node_with(name, &[("cpu", cpu), ("memory", memory)], pods)
}

fn on(name: &str, pairs: &[(&str, &str)]) -> PodInfo {
    pod_with(name, &[pairs])
}

#[test]
fn least_allocated_nothing_scheduled_nothing_requested() {
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "4000", "10000", vec![]),
    ];
    assert_eq!(
        fit_scores(&default_fit(), &pod_with("p", &[]), &nodes),
        [100, 100]
    );
}

#[test]
fn least_allocated_differently_sized_nodes() {
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "6000", "10000", vec![]),
    ];
    assert_eq!(
        fit_scores(&default_fit(), &two_container_pod(), &nodes),
        [37, 50]
    );
}

#[test]
fn least_allocated_no_requests_pods_scheduled_with_resources() {
    let nodes = [
        node_cm(
            "n1",
            "10000",
            "20000",
            vec![
                on("a", &[("cpu", "3000"), ("memory", "0")]),
                on("b", &[("cpu", "3000"), ("memory", "0")]),
            ],
        ),
        node_cm(
            "n2",
            "10000",
            "20000",
            vec![
                on("c", &[("cpu", "3000"), ("memory", "0")]),
                on("d", &[("cpu", "3000"), ("memory", "5000")]),
            ],
        ),
    ];
    assert_eq!(
        fit_scores(&default_fit(), &pod_with("p", &[]), &nodes),
        [70, 57]
    );
}

#[test]
fn least_allocated_requests_with_pods_scheduled() {
    let scheduled =
        |name: &str, memory: &str| vec![on(name, &[("cpu", "3000"), ("memory", memory)])];
    let same = [
        node_cm("n1", "10000", "20000", scheduled("a", "0")),
        node_cm("n2", "10000", "20000", scheduled("b", "5000")),
    ];
    assert_eq!(
        fit_scores(&default_fit(), &two_container_pod(), &same),
        [57, 45]
    );
    let sized = [
        node_cm("n1", "10000", "20000", scheduled("a", "0")),
        node_cm("n2", "10000", "50000", scheduled("b", "5000")),
    ];
    assert_eq!(
        fit_scores(&default_fit(), &two_container_pod(), &sized),
        [57, 60]
    );
}

#[test]
fn least_allocated_requests_exceeding_capacity_score_zero_for_that_resource() {
    let nodes = [
        node_cm(
            "n1",
            "4000",
            "10000",
            vec![on("a", &[("cpu", "3000"), ("memory", "0")])],
        ),
        node_cm(
            "n2",
            "4000",
            "10000",
            vec![on("b", &[("cpu", "3000"), ("memory", "5000")])],
        ),
    ];
    let p = on("p", &[("cpu", "3000"), ("memory", "0")]);
    assert_eq!(fit_scores(&default_fit(), &p, &nodes), [50, 25]);
}

#[test]
fn least_allocated_zero_node_resources_score_zero() {
    let nodes = [
        node_with(
            "n1",
            &[],
            vec![on("a", &[("cpu", "3000"), ("memory", "0")])],
        ),
        node_with(
            "n2",
            &[],
            vec![on("b", &[("cpu", "3000"), ("memory", "5000")])],
        ),
    ];
    assert_eq!(
        fit_scores(&default_fit(), &pod_with("p", &[]), &nodes),
        [0, 0]
    );
}

#[test]
fn least_allocated_weights() {
    let f = strategy(
        "LeastAllocated",
        json!([{"name": "memory", "weight": 2}, {"name": "cpu", "weight": 1}]),
    );
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "6000", "10000", vec![]),
    ];
    assert_eq!(fit_scores(&f, &two_container_pod(), &nodes), [41, 50]);
}

fn extended_set() -> serde_json::Value {
    json!([
        {"name": "cpu", "weight": 1},
        {"name": "memory", "weight": 1},
        {"name": "abc.com/xyz", "weight": 1},
    ])
}

#[test]
fn least_allocated_bypasses_extended_resource_the_pod_does_not_request() {
    let f = strategy("LeastAllocated", extended_set());
    let nodes = [
        node_cm("n1", "6000", "10000", vec![]),
        node_with(
            "n2",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "4")],
            vec![],
        ),
    ];
    assert_eq!(fit_scores(&f, &two_container_pod(), &nodes), [50, 50]);
}

#[test]
fn least_allocated_honors_extended_resource_the_pod_requests() {
    let f = strategy("LeastAllocated", extended_set());
    let nodes = [
        node_with(
            "n1",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "4")],
            vec![],
        ),
        node_with(
            "n2",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "10")],
            vec![],
        ),
    ];
    let p = on(
        "p",
        &[("cpu", "3000"), ("memory", "5000"), ("abc.com/xyz", "2")],
    );
    assert_eq!(fit_scores(&f, &p, &nodes), [50, 60]);
}

#[test]
fn least_allocated_skips_resource_the_node_lacks() {
    let f = strategy(
        "LeastAllocated",
        json!([
            {"name": "abc.com/xyz", "weight": 2},
            {"name": "cpu", "weight": 1},
            {"name": "memory", "weight": 1},
        ]),
    );
    let nodes = [
        node_cm("n1", "6000", "10000", vec![]),
        node_with(
            "n2",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "4")],
            vec![],
        ),
    ];
    let p = on("p", &[("cpu", "3000"), ("memory", "4000")]);
    assert_eq!(fit_scores(&f, &p, &nodes), [55, 55]);
}

// ---------------------------------------------------------------------------------------
// MostAllocated (upstream's most_allocated_test.go)
// ---------------------------------------------------------------------------------------

fn most() -> Fit {
    strategy("MostAllocated", default_resources_json())
}

#[test]
fn most_allocated_nothing_requested_scores_zero() {
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "4000", "10000", vec![]),
    ];
    assert_eq!(fit_scores(&most(), &pod_with("p", &[]), &nodes), [0, 0]);
}

#[test]
fn most_allocated_differently_sized_nodes() {
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "6000", "10000", vec![]),
    ];
    assert_eq!(fit_scores(&most(), &two_container_pod(), &nodes), [62, 50]);
}

#[test]
fn most_allocated_pods_scheduled_with_resources() {
    let nodes = [
        node_cm(
            "n1",
            "10000",
            "20000",
            vec![
                on("a", &[("cpu", "3000"), ("memory", "0")]),
                on("b", &[("cpu", "3000"), ("memory", "0")]),
            ],
        ),
        node_cm(
            "n2",
            "10000",
            "20000",
            vec![
                on("c", &[("cpu", "3000"), ("memory", "0")]),
                on("d", &[("cpu", "3000"), ("memory", "5000")]),
            ],
        ),
    ];
    assert_eq!(fit_scores(&most(), &pod_with("p", &[]), &nodes), [30, 42]);
    let one_each = [
        node_cm(
            "n1",
            "10000",
            "20000",
            vec![on("a", &[("cpu", "3000"), ("memory", "0")])],
        ),
        node_cm(
            "n2",
            "10000",
            "20000",
            vec![on("b", &[("cpu", "3000"), ("memory", "5000")])],
        ),
    ];
    assert_eq!(
        fit_scores(&most(), &two_container_pod(), &one_each),
        [42, 55]
    );
}

#[test]
fn most_allocated_requests_equal_to_capacity() {
    let nodes = [
        node_cm("n1", "5000", "10000", vec![]),
        node_cm("n2", "10000", "9000", vec![]),
    ];
    let p = pod_with(
        "p",
        &[
            &[("cpu", "2000"), ("memory", "4000")],
            &[("cpu", "3000"), ("memory", "5000")],
        ],
    );
    assert_eq!(fit_scores(&most(), &p, &nodes), [95, 75]);
}

#[test]
fn most_allocated_weights() {
    let f = strategy(
        "MostAllocated",
        json!([{"name": "memory", "weight": 2}, {"name": "cpu", "weight": 1}]),
    );
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "6000", "10000", vec![]),
    ];
    assert_eq!(fit_scores(&f, &two_container_pod(), &nodes), [58, 50]);
}

#[test]
fn most_allocated_counts_non_zero_defaults_capped_at_capacity() {
    // Three request-less pods count 300m (> 250m, capped) and 600Mi on node 1.
    let nodes = [
        node_cm(
            "n1",
            "250m",
            "1000Mi",
            vec![info(pod("a").build()), info(pod("b").build())],
        ),
        node_cm("n2", "250m", "1000Mi", vec![]),
    ];
    assert_eq!(
        fit_scores(&most(), &info(pod("p").build()), &nodes),
        [80, 30]
    );
}

#[test]
fn most_allocated_extended_resources() {
    let f = strategy("MostAllocated", extended_set());
    let bypass = [
        node_cm("n1", "6000", "10000", vec![]),
        node_with(
            "n2",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "4")],
            vec![],
        ),
    ];
    assert_eq!(fit_scores(&f, &two_container_pod(), &bypass), [50, 50]);
    let honor = [
        node_with(
            "n1",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "4")],
            vec![],
        ),
        node_with(
            "n2",
            &[("cpu", "6000"), ("memory", "10000"), ("abc.com/xyz", "10")],
            vec![],
        ),
    ];
    let p = on(
        "p",
        &[("cpu", "3000"), ("memory", "5000"), ("abc.com/xyz", "2")],
    );
    assert_eq!(fit_scores(&f, &p, &honor), [50, 40]);
}

// ---------------------------------------------------------------------------------------
// RequestedToCapacityRatio (upstream's requested_to_capacity_ratio_test.go)
// ---------------------------------------------------------------------------------------

fn rtcr(resources: serde_json::Value, shape: serde_json::Value) -> Fit {
    fit(json!({"scoringStrategy": {
        "type": "RequestedToCapacityRatio",
        "resources": resources,
        "requestedToCapacityRatio": {"shape": shape},
    }}))
}

fn least_like_shape() -> serde_json::Value {
    json!([{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}])
}

#[test]
fn requested_to_capacity_ratio_default_shape_prefers_least_requested() {
    let f = rtcr(default_resources_json(), least_like_shape());
    let empty = [
        node_cm(
            "n1",
            "4000",
            "10000",
            vec![pod_with("a", &[]), pod_with("b", &[])],
        ),
        node_cm("n2", "4000", "10000", vec![]),
    ];
    assert_eq!(fit_scores(&f, &pod_with("p", &[]), &empty), [100, 100]);
    // (25 + 50) / 2 = 37.5 rounds to 38.
    let sized = [
        node_cm(
            "n1",
            "4000",
            "10000",
            vec![pod_with("a", &[]), pod_with("b", &[])],
        ),
        node_cm("n2", "6000", "10000", vec![]),
    ];
    assert_eq!(fit_scores(&f, &two_container_pod(), &sized), [38, 50]);
    let scheduled = [
        node_cm(
            "n1",
            "4000",
            "10000",
            vec![on("a", &[("cpu", "3000"), ("memory", "5000")])],
        ),
        node_cm(
            "n2",
            "6000",
            "10000",
            vec![on("b", &[("cpu", "3000"), ("memory", "5000")])],
        ),
    ];
    assert_eq!(fit_scores(&f, &pod_with("p", &[]), &scheduled), [38, 50]);
}

/// Upstream's `makeNode(name, 4000, 10000Mi, extended)` pair for the bin-packing tests.
fn bin_packing_nodes(n1: &[(&str, &str)], n2: &[(&str, &str)]) -> [NodeInfo; 2] {
    fn with_base<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![("cpu", "4"), ("memory", "10000Mi")];
        v.extend_from_slice(extra);
        v
    }
    [
        node_with("n1", &with_base(n1), vec![]),
        node_with("n2", &with_base(n2), vec![]),
    ]
}

#[test]
fn requested_to_capacity_ratio_bin_packs_single_extended_resource() {
    let f = rtcr(
        json!([{"name": "intel.com/foo", "weight": 1}]),
        json!([{"utilization": 0, "score": 0}, {"utilization": 100, "score": 1}]),
    );
    let nodes = bin_packing_nodes(&[("intel.com/foo", "8")], &[("intel.com/foo", "4")]);
    // The pod does not request the resource: it is left out and nothing remains.
    assert_eq!(fit_scores(&f, &pod_with("p", &[]), &nodes), [0, 0]);
    let two = on("p", &[("intel.com/foo", "2")]);
    assert_eq!(fit_scores(&f, &two, &nodes), [2, 5]);
    let four = on("p", &[("intel.com/foo", "4")]);
    assert_eq!(fit_scores(&f, &four, &nodes), [5, 10]);
    let [n1, mut n2] = bin_packing_nodes(&[("intel.com/foo", "8")], &[("intel.com/foo", "4")]);
    n2.add_pod(Arc::new(on("e", &[("intel.com/foo", "2")])));
    assert_eq!(fit_scores(&f, &two, &[n1, n2]), [2, 10]);
}

const FOO8_BAR4: &[(&str, &str)] = &[("intel.com/foo", "8"), ("intel.com/bar", "4")];
const FOO4_BAR8: &[(&str, &str)] = &[("intel.com/foo", "4"), ("intel.com/bar", "8")];

#[test]
fn requested_to_capacity_ratio_bin_packs_weighted_extended_resources() {
    let f = rtcr(
        json!([{"name": "intel.com/foo", "weight": 3}, {"name": "intel.com/bar", "weight": 5}]),
        json!([{"utilization": 0, "score": 0}, {"utilization": 100, "score": 1}]),
    );
    let nodes = bin_packing_nodes(FOO8_BAR4, FOO4_BAR8);
    assert_eq!(fit_scores(&f, &pod_with("p", &[]), &nodes), [0, 0]);
    let small = on("p", &[("intel.com/foo", "2"), ("intel.com/bar", "2")]);
    // (2*3 + 5*5) / 8 = 3.875 → 4; (5*3 + 2*5) / 8 = 3.125 → 3.
    assert_eq!(fit_scores(&f, &small, &nodes), [4, 3]);
    let large = on("p", &[("intel.com/foo", "4"), ("intel.com/bar", "2")]);
    assert_eq!(fit_scores(&f, &large, &nodes), [5, 5]);
    let [n1, mut n2] = bin_packing_nodes(FOO8_BAR4, FOO4_BAR8);
    n2.add_pod(Arc::new(large.clone()));
    // foo (4+2)/4 is over capacity → full score 10; bar 4/8 → 5: (30 + 25) / 8 → 7.
    assert_eq!(fit_scores(&f, &small, &[n1, n2]), [4, 7]);
}

#[test]
fn broken_linear_function_matches_upstream() {
    let shape = |points: &[(i64, i64)]| -> Vec<ShapePoint> {
        points
            .iter()
            .map(|(u, s)| ShapePoint {
                utilization: *u,
                score: *s,
            })
            .collect()
    };
    let a = shape(&[(10, 1), (90, 9)]);
    for (p, want) in [
        (-10, 1),
        (0, 1),
        (9, 1),
        (10, 1),
        (15, 1),
        (19, 1),
        (20, 2),
        (89, 8),
        (90, 9),
        (99, 9),
        (100, 9),
        (110, 9),
    ] {
        assert_eq!(broken_linear(&a, p), want, "p={p}");
    }
    let b = shape(&[(0, 2), (40, 10), (100, 0)]);
    for (p, want) in [
        (-10, 2),
        (0, 2),
        (20, 6),
        (30, 8),
        (40, 10),
        (70, 5),
        (100, 0),
        (110, 0),
    ] {
        assert_eq!(broken_linear(&b, p), want, "p={p}");
    }
}

// ---------------------------------------------------------------------------------------
// BalancedAllocation (upstream's balanced_allocation_test.go)
// ---------------------------------------------------------------------------------------

fn balanced(args: serde_json::Value) -> BalancedAllocation {
    let args: NodeResourcesBalancedAllocationArgs =
        serde_json::from_value(args).expect("args parse");
    BalancedAllocation::from_args(&args).expect("args valid")
}

/// Runs PreScore then Score; `None` when PreScore skips.
fn balanced_scores(b: &BalancedAllocation, pod: &PodInfo, nodes: &[NodeInfo]) -> Option<Vec<i64>> {
    let mut state = CycleState::new();
    let refs: Vec<&NodeInfo> = nodes.iter().collect();
    let pre = b.pre_score(&mut state, pod, &refs, &Snapshot::new());
    if pre.is_skip() {
        return None;
    }
    assert!(pre.is_success(), "prescore: {pre:?}");
    Some(
        nodes
            .iter()
            .map(|n| b.score(&state, pod, n).expect("score"))
            .collect(),
    )
}

fn cpu_and_memory(name: &str) -> PodInfo {
    pod_with(
        name,
        &[
            &[("cpu", "1000m"), ("memory", "2000")],
            &[("cpu", "2000m"), ("memory", "3000")],
        ],
    )
}

fn cpu_only(name: &str) -> PodInfo {
    pod_with(
        name,
        &[
            &[("cpu", "1000m"), ("memory", "0")],
            &[("cpu", "2000m"), ("memory", "0")],
        ],
    )
}

#[test]
fn balanced_differently_sized_nodes() {
    let nodes = [
        node_cm("n1", "4000m", "10000", vec![]),
        node_cm("n2", "6000m", "10000", vec![]),
    ];
    // std (0.75 - 0.5) / 2 = 0.125 → 87; equal fractions → 100.
    assert_eq!(
        balanced_scores(&balanced(json!({})), &cpu_and_memory("p"), &nodes),
        Some(vec![87, 100])
    );
}

#[test]
fn balanced_pods_scheduled_with_resources() {
    let b = balanced(json!({}));
    let same = [
        node_cm("n1", "10000m", "20000", vec![cpu_only("a")]),
        node_cm("n2", "10000m", "20000", vec![cpu_and_memory("b")]),
    ];
    assert_eq!(
        balanced_scores(&b, &cpu_and_memory("p"), &same),
        Some(vec![82, 95])
    );
    let sized = [
        node_cm("n1", "10000m", "20000", vec![cpu_only("a")]),
        node_cm("n2", "10000m", "50000", vec![cpu_and_memory("b")]),
    ];
    assert_eq!(
        balanced_scores(&b, &cpu_and_memory("p"), &sized),
        Some(vec![82, 80])
    );
}

#[test]
fn balanced_requested_resources_at_node_capacity() {
    let nodes = [
        node_cm("n1", "6000m", "10000", vec![cpu_only("a")]),
        node_cm("n2", "6000m", "10000", vec![cpu_and_memory("b")]),
    ];
    assert_eq!(
        balanced_scores(&balanced(json!({})), &cpu_only("p"), &nodes),
        Some(vec![50, 75])
    );
}

#[test]
fn balanced_caps_fractions_at_one() {
    // cpu 6000/4000 counts as 1, not 1.5: std (1 - 0.5) / 2 → 75, not 50.
    let nodes = [node_cm("n1", "4000m", "10000", vec![cpu_and_memory("a")])];
    assert_eq!(
        balanced_scores(&balanced(json!({})), &cpu_only("p"), &nodes),
        Some(vec![75])
    );
}

#[test]
fn balanced_with_three_resources_uses_the_standard_deviation() {
    let b = balanced(json!({"resources": [
        {"name": "cpu", "weight": 1},
        {"name": "memory", "weight": 1},
        {"name": "nvidia.com/gpu", "weight": 1},
    ]}));
    let gpu_pod = pod_with(
        "a",
        &[
            &[("cpu", "1000m"), ("memory", "2000")],
            &[
                ("cpu", "2000m"),
                ("memory", "3000"),
                ("nvidia.com/gpu", "3"),
            ],
        ],
    );
    let alloc = [
        ("cpu", "3500m"),
        ("memory", "40000"),
        ("nvidia.com/gpu", "8"),
    ];
    let nodes = [
        node_with("n1", &alloc, vec![gpu_pod]),
        node_with("n2", &alloc, vec![cpu_and_memory("b")]),
    ];
    let p = on("p", &[("memory", "0"), ("nvidia.com/gpu", "1")]);
    assert_eq!(balanced_scores(&b, &p, &nodes), Some(vec![70, 65]));
}

#[test]
fn balanced_leaves_out_extended_resource_the_pod_does_not_request() {
    let b = balanced(json!({"resources": [
        {"name": "cpu", "weight": 1},
        {"name": "memory", "weight": 1},
        {"name": "nvidia.com/gpu", "weight": 1},
    ]}));
    let nodes = [
        node_with(
            "n1",
            &[
                ("cpu", "3500m"),
                ("memory", "40000"),
                ("nvidia.com/gpu", "8"),
            ],
            vec![],
        ),
        node_cm("n2", "3500m", "40000", vec![]),
    ];
    assert_eq!(
        balanced_scores(&b, &cpu_and_memory("p"), &nodes),
        Some(vec![63, 63])
    );
}

#[test]
fn balanced_zero_node_resources_score_max() {
    let nodes = [node_with("n1", &[], vec![cpu_only("a")])];
    assert_eq!(
        balanced_scores(&balanced(json!({})), &cpu_and_memory("p"), &nodes),
        Some(vec![100])
    );
}

#[test]
fn balanced_skips_best_effort_pods() {
    let nodes = [node_cm("n1", "4000m", "10000", vec![])];
    let b = balanced(json!({}));
    // Request-less containers: the non-zero defaults do not apply to balancing.
    assert_eq!(balanced_scores(&b, &info(pod("p").build()), &nodes), None);
    assert_eq!(balanced_scores(&b, &pod_with("p", &[]), &nodes), None);
    // Without PreScore state, Score gives such a pod 0.
    assert_eq!(
        b.score(&CycleState::new(), &pod_with("p", &[]), &nodes[0]),
        Ok(0)
    );
}

#[test]
fn balanced_without_prescore_state_gives_the_same_scores() {
    let b = balanced(json!({}));
    let nodes = [
        node_cm("n1", "10000m", "20000", vec![cpu_only("a")]),
        node_cm("n2", "10000m", "20000", vec![cpu_and_memory("b")]),
    ];
    let state = CycleState::new();
    let p = cpu_and_memory("p");
    let got: Vec<i64> = nodes
        .iter()
        .map(|n| b.score(&state, &p, n).expect("score"))
        .collect();
    assert_eq!(got, [82, 95]);
}

#[test]
fn fit_score_without_prescore_state_gives_the_same_scores() {
    let nodes = [
        node_cm("n1", "4000", "10000", vec![]),
        node_cm("n2", "6000", "10000", vec![]),
    ];
    let state = CycleState::new();
    let p = two_container_pod();
    let got: Vec<i64> = nodes
        .iter()
        .map(|n| default_fit().score(&state, &p, n).expect("score"))
        .collect();
    assert_eq!(got, [37, 50]);
}

// ---------------------------------------------------------------------------------------
// Args
// ---------------------------------------------------------------------------------------

fn fit_err(args: serde_json::Value) -> String {
    match new(Some(&args)) {
        Ok(_) => panic!("args {args} accepted"),
        Err(e) => e,
    }
}

fn balanced_err(args: serde_json::Value) -> String {
    match new_balanced(Some(&args)) {
        Ok(_) => panic!("args {args} accepted"),
        Err(e) => e,
    }
}

#[test]
fn registry_builds_both_plugins_with_default_args() {
    let fit = new(None).expect("fit");
    assert_eq!(fit.name(), NAME);
    assert!(fit.as_pre_filter().is_some() && fit.as_filter().is_some());
    assert!(fit.as_pre_score().is_some() && fit.as_score().is_some());
    let b = new_balanced(Some(&serde_json::Value::Null)).expect("balanced");
    assert_eq!(b.name(), BALANCED_NAME);
    assert!(b.as_score().is_some() && b.as_filter().is_none());
    let registry = crate::plugins::registry();
    assert!(registry.contains_key(NAME) && registry.contains_key(BALANCED_NAME));
}

#[test]
fn default_args_score_least_allocated_over_cpu_and_memory() {
    let f = default_fit();
    assert_eq!(f.strategy, Strategy::LeastAllocated);
    let names: Vec<(&str, i64)> = f
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.weight))
        .collect();
    assert_eq!(names, [("cpu", 1), ("memory", 1)]);
}

#[test]
fn args_accept_type_meta_and_default_zero_weight() {
    let f = fit(json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "NodeResourcesFitArgs",
        "scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu"}]},
    }));
    assert_eq!(f.strategy, Strategy::MostAllocated);
    assert_eq!(f.resources[0].weight, 1);
}

#[test]
fn args_reject_weights_out_of_range() {
    let e = fit_err(
        json!({"scoringStrategy": {"type": "LeastAllocated", "resources": [
        {"name": "memory", "weight": -1}, {"name": "cpu", "weight": 1}]}}),
    );
    assert!(e.contains("scoringStrategy.resources[0].weight"), "{e}");
    let e = fit_err(
        json!({"scoringStrategy": {"type": "MostAllocated", "resources": [
        {"name": "memory", "weight": 1}, {"name": "cpu", "weight": 101}]}}),
    );
    assert!(e.contains("scoringStrategy.resources[1].weight"), "{e}");
}

#[test]
fn args_reject_unknown_or_missing_strategy_type() {
    let e = fit_err(json!({"scoringStrategy": {"type": "Spread"}}));
    assert!(e.contains("scoringStrategy.type"), "{e}");
    let e = fit_err(json!({"scoringStrategy": {"resources": [{"name": "cpu", "weight": 1}]}}));
    assert!(e.contains("scoringStrategy.type"), "{e}");
}

#[test]
fn args_reject_bad_shapes() {
    let e = fit_err(json!({"scoringStrategy": {"type": "RequestedToCapacityRatio"}}));
    assert!(e.contains("requestedToCapacityRatio"), "{e}");
    let e = fit_err(
        json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
        "requestedToCapacityRatio": {"shape": []}}}),
    );
    assert!(e.contains("at least one point"), "{e}");
    let e = fit_err(
        json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
        "requestedToCapacityRatio": {"shape": [
            {"utilization": 50, "score": 1}, {"utilization": 50, "score": 2}]}}}),
    );
    assert!(e.contains("sorted in increasing order"), "{e}");
    let e = fit_err(
        json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
        "requestedToCapacityRatio": {"shape": [
            {"utilization": 0, "score": 11}, {"utilization": 101, "score": 0}]}}}),
    );
    assert!(
        e.contains("shape[0].score") && e.contains("shape[1].utilization"),
        "{e}"
    );
}

#[test]
fn args_reject_invalid_ignored_resources() {
    let e = fit_err(json!({"ignoredResourceGroups": ["example.com/gpu"]}));
    assert!(e.contains("can't contain '/'"), "{e}");
    let e = fit_err(json!({"ignoredResources": ["not a name"]}));
    assert!(e.contains("ignoredResources[0]"), "{e}");
}

#[test]
fn args_reject_unknown_fields_and_wrong_kind() {
    let e = fit_err(json!({"ignoredResource": ["example.com/gpu"]}));
    assert!(e.contains("unknown field"), "{e}");
    let e = fit_err(json!({"kind": "NodeResourcesBalancedAllocationArgs"}));
    assert!(e.contains("is not NodeResourcesFitArgs"), "{e}");
}

#[test]
fn balanced_args_default_and_validate() {
    let b = balanced(json!({"resources": []}));
    let names: Vec<&str> = b.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["cpu", "memory"]);
    // Weight 0 defaults to 1; any other weight is rejected.
    balanced(json!({"resources": [{"name": "cpu", "weight": 0}]}));
    let e = balanced_err(json!({"resources": [{"name": "cpu", "weight": 2}]}));
    assert!(e.contains("must be 1"), "{e}");
    let e = balanced_err(json!({"resources": [{"name": "cpu"}, {"name": "cpu"}]}));
    assert!(e.contains("Duplicate"), "{e}");
}
