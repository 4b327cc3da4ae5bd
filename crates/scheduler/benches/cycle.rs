//! The scheduling cycle alone, in process: the default profile over a snapshot of 5,000
//! nodes, placing pods one after another as the scheduling loop does (filter, score,
//! assume), without the apiserver. It measures what the scheduler itself can do; the
//! end-to-end figure is `rkube-bench scheduling`.
//!
//! `cargo bench -p rkube-scheduler --bench cycle` runs the full sizes; under `cargo test`
//! it runs a small smoke version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rkube_scheduler::config::SchedulerConfig;
use rkube_scheduler::cycle::{TieBreaker, schedule_pod};
use rkube_scheduler::node_info::PodInfo;
use rkube_scheduler::snapshot::Snapshot;
use rkube_scheduler::testing::{node, pod};

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Basic,
    AntiAffinity,
    Spread,
}

fn run(nodes: usize, pods: usize, scenario: Scenario) -> (f64, Duration, Duration) {
    let profile = SchedulerConfig::default()
        .build_profiles()
        .expect("default profile")
        .remove(0);
    let mut snapshot = Snapshot::new();
    for i in 0..nodes {
        let name = format!("node-{i}");
        snapshot.upsert_node(Arc::new(
            node(&name)
                .cpu("4")
                .memory("32Gi")
                .pods(110)
                .label("kubernetes.io/hostname", &name)
                .label("topology.kubernetes.io/zone", &format!("zone-{}", i % 10))
                .build(),
        ));
    }
    let groups = pods.div_ceil((nodes / 2).max(1));
    let infos: Vec<Arc<PodInfo>> = (0..pods)
        .map(|i| {
            let mut b = pod(&format!("pod-{i}"))
                .cpu("100m")
                .memory("500Mi")
                .label("app", "bench");
            match scenario {
                Scenario::Basic => {}
                Scenario::AntiAffinity => {
                    let g = format!("g{}", i % groups);
                    b = b.label("group", &g).pod_anti_affinity(
                        "kubernetes.io/hostname",
                        "group",
                        &g,
                    );
                }
                Scenario::Spread => {
                    b = b.spread(
                        1,
                        "topology.kubernetes.io/zone",
                        "DoNotSchedule",
                        "app",
                        "bench",
                    );
                }
            }
            Arc::new(PodInfo::new(Arc::new(b.build())))
        })
        .collect();
    let mut ties = TieBreaker::new(42);
    let mut start = 0;
    let mut cycles = Vec::with_capacity(pods);
    let began = Instant::now();
    for info in infos {
        let t = Instant::now();
        let placement = schedule_pod(&profile, &snapshot, &info, start, &mut ties)
            .unwrap_or_else(|_| panic!("{} fits somewhere", info.key));
        start = placement.next_start;
        snapshot.add_pod(info, &placement.node);
        cycles.push(t.elapsed());
    }
    let rate = pods as f64 / began.elapsed().as_secs_f64();
    cycles.sort_unstable();
    let p = |q: f64| cycles[((cycles.len() - 1) as f64 * q) as usize];
    (rate, p(0.5), p(0.99))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, usize)] = if full {
        match std::env::var("RKUBE_BENCH_PODS")
            .ok()
            .and_then(|p| p.parse().ok())
        {
            Some(pods) => Box::leak(Box::new([(5000, pods)])),
            None => &[(5000, 10_000), (5000, 50_000)],
        }
    } else {
        &[(100, 300)]
    };
    println!("| scenario | nodes | pods | pods/s | cycle p50 | cycle p99 |");
    println!("|---|---|---|---|---|---|");
    // `cargo bench ... -- spread` runs only the scenarios whose name contains "spread".
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.to_lowercase())
        .collect();
    for scenario in [Scenario::Basic, Scenario::AntiAffinity, Scenario::Spread] {
        let name = format!("{scenario:?}").to_lowercase();
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        for &(nodes, pods) in sizes {
            // Affinity and spread cost grows with the pods already placed; 50,000 of them
            // take minutes per scenario, so the full run stops at 10,000.
            if full && pods > 10_000 && !matches!(scenario, Scenario::Basic) {
                continue;
            }
            let (rate, p50, p99) = run(nodes, pods, scenario);
            println!(
                "| {scenario:?} | {nodes} | {pods} | {rate:.0} | {:.1} µs | {:.1} µs |",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
        }
    }
}
