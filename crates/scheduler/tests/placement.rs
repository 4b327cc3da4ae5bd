//! Property test of placement with the default profile: for random nodes and pods, placed
//! one after another as the scheduler does, no node is ever over-committed and every
//! placement satisfies every hard constraint, each checked here by a small independent
//! oracle rather than by the plugins' own code.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rkube_scheduler::config::SchedulerConfig;
use rkube_scheduler::cycle::{Failure, TieBreaker, schedule_pod};
use rkube_scheduler::node_info::PodInfo;
use rkube_scheduler::snapshot::Snapshot;
use rkube_scheduler::testing::{node, pod};

#[derive(Debug, Clone)]
struct NodeSpec {
    milli_cpu: i64,
    mem_gi: i64,
    pods: i64,
    zone: u8,
    ssd: bool,
    tainted: bool,
}

#[derive(Debug, Clone)]
struct PodSpec {
    milli_cpu: i64,
    mem_mi: i64,
    init_milli_cpu: i64,
    wants_ssd: bool,
    tolerates: bool,
    app: u8,
    anti_affinity: bool,
    spread: bool,
    priority: i32,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        1..=8i64,
        1..=16i64,
        2..=8i64,
        0..3u8,
        any::<bool>(),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(cpu, mem_gi, pods, zone, ssd, tainted)| NodeSpec {
            milli_cpu: cpu * 1000,
            mem_gi,
            pods,
            zone,
            ssd,
            tainted,
        })
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        (0..=3000i64, 0..=4096i64, 0..=4000i64),
        (prop::bool::weighted(0.2), prop::bool::weighted(0.3)),
        (0..3u8, prop::bool::weighted(0.3), prop::bool::weighted(0.2)),
        0..3i32,
    )
        .prop_map(
            |((cpu, mem, init), (wants_ssd, tolerates), (app, anti_affinity, spread), priority)| {
                PodSpec {
                    milli_cpu: cpu,
                    mem_mi: mem,
                    init_milli_cpu: init,
                    wants_ssd,
                    tolerates,
                    app,
                    anti_affinity,
                    spread,
                    priority,
                }
            },
        )
}

fn zone(z: u8) -> String {
    format!("z{z}")
}

/// What the oracle knows of a placed pod.
#[derive(Debug, Clone)]
struct Placed {
    spec: PodSpec,
    node: usize,
}

fn selector_ok(n: &NodeSpec, p: &PodSpec) -> bool {
    !p.wants_ssd || n.ssd
}

/// Checks the placement of `p` on node `at`, given the pods already placed.
fn check(nodes: &[NodeSpec], placed: &[Placed], p: &PodSpec, at: usize) -> Result<(), String> {
    let n = &nodes[at];
    let here: Vec<&Placed> = placed.iter().filter(|q| q.node == at).collect();
    // Effective CPU: the larger of the app container and the init container.
    let cpu = |s: &PodSpec| s.milli_cpu.max(s.init_milli_cpu);
    let used_cpu: i64 = here.iter().map(|q| cpu(&q.spec)).sum();
    let used_mem: i64 = here.iter().map(|q| q.spec.mem_mi).sum();
    if used_cpu + cpu(p) > n.milli_cpu {
        return Err(format!(
            "cpu over-committed: {used_cpu} + {} > {}",
            cpu(p),
            n.milli_cpu
        ));
    }
    if used_mem + p.mem_mi > n.mem_gi * 1024 {
        return Err("memory over-committed".into());
    }
    if here.len() as i64 + 1 > n.pods {
        return Err("pod count over-committed".into());
    }
    if !selector_ok(n, p) {
        return Err("nodeSelector disk=ssd not met".into());
    }
    if n.tainted && !p.tolerates {
        return Err("untolerated NoSchedule taint".into());
    }
    // Required anti-affinity per host, both ways.
    for q in &here {
        if p.anti_affinity && q.spec.app == p.app {
            return Err(format!("anti-affinity: app {} already on the node", p.app));
        }
        if q.spec.anti_affinity && q.spec.app == p.app {
            return Err(format!(
                "existing pod's anti-affinity rejects app {}",
                p.app
            ));
        }
    }
    // Spread: zones of the nodes the pod's nodeSelector admits (nodeAffinityPolicy Honor).
    if p.spread {
        let mut counts: BTreeMap<u8, i64> = BTreeMap::new();
        for n in nodes.iter().filter(|n| selector_ok(n, p)) {
            counts.entry(n.zone).or_insert(0);
        }
        for q in placed {
            if q.spec.app == p.app && selector_ok(&nodes[q.node], p) {
                *counts.entry(nodes[q.node].zone).or_insert(0) += 1;
            }
        }
        let min = counts.values().copied().min().unwrap_or(0);
        let mine = counts.get(&n.zone).copied().unwrap_or(0) + 1;
        if mine - min > 1 {
            return Err(format!(
                "spread skew {} > 1 in zone {}: {counts:?}",
                mine - min,
                n.zone
            ));
        }
    }
    Ok(())
}

fn build_pod(i: usize, p: &PodSpec) -> k8s_openapi::api::core::v1::Pod {
    let app = format!("a{}", p.app);
    let mut b = pod(&format!("p{i}"))
        .cpu(&format!("{}m", p.milli_cpu))
        .memory(&format!("{}Mi", p.mem_mi))
        .init_container(&format!("{}m", p.init_milli_cpu), "")
        .label("app", &app)
        .priority(p.priority);
    if p.wants_ssd {
        b = b.node_selector("disk", "ssd");
    }
    if p.tolerates {
        b = b.toleration("dedicated", "Equal", "x", "NoSchedule");
    }
    if p.anti_affinity {
        b = b.pod_anti_affinity("kubernetes.io/hostname", "app", &app);
    }
    if p.spread {
        b = b.spread(
            1,
            "topology.kubernetes.io/zone",
            "DoNotSchedule",
            "app",
            &app,
        );
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn no_node_over_committed_and_every_hard_constraint_holds(
        nodes in prop::collection::vec(node_spec(), 1..10),
        pods in prop::collection::vec(pod_spec(), 1..40),
        seed in any::<u64>(),
    ) {
        let profile = SchedulerConfig::default()
            .build_profiles()
            .expect("default profile")
            .remove(0);
        let mut snapshot = Snapshot::new();
        for (i, n) in nodes.iter().enumerate() {
            let mut b = node(&format!("n{i}"))
                .cpu(&format!("{}m", n.milli_cpu))
                .memory(&format!("{}Gi", n.mem_gi))
                .pods(n.pods)
                .label("kubernetes.io/hostname", &format!("n{i}"))
                .label("topology.kubernetes.io/zone", &zone(n.zone))
                .label("disk", if n.ssd { "ssd" } else { "hdd" });
            if n.tainted {
                b = b.taint("dedicated", "x", "NoSchedule");
            }
            snapshot.upsert_node(Arc::new(b.build()));
        }
        let mut ties = TieBreaker::new(seed);
        let mut placed: Vec<Placed> = Vec::new();
        let mut start = 0;
        for (i, p) in pods.iter().enumerate() {
            let info = Arc::new(PodInfo::new(Arc::new(build_pod(i, p))));
            match schedule_pod(&profile, &snapshot, &info, start, &mut ties) {
                Ok(placement) => {
                    start = placement.next_start;
                    let at: usize = placement.node[1..].parse().expect("node index");
                    if let Err(why) = check(&nodes, &placed, p, at) {
                        prop_assert!(false, "pod {i} {p:?} on n{at} {:?}: {why}", nodes[at]);
                    }
                    snapshot.add_pod(info, &placement.node);
                    placed.push(Placed { spec: p.clone(), node: at });
                }
                Err(Failure::Fit(_)) => {}
                Err(Failure::Error(status)) => prop_assert!(false, "plugin error {status:?}"),
            }
        }
    }
}
