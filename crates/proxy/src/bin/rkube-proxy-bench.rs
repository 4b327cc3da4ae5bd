//! `rkube-proxy-bench`: how long generating and applying rules takes for N ClusterIP
//! Services with E endpoints each, as a full sync and as one endpoint change, in a scratch
//! network namespace (needs root and nft). Prints the median of each.
//!
//! `rkube-proxy-bench --services 1000,10000 --endpoints 4 --iterations 5`
//!
//! `rkube-proxy-bench traffic` measures HTTP throughput and latency through a ClusterIP
//! against the same pod reached directly (see [`traffic`]).

// Beside this file, not in `src/bin/`, where Cargo would take it for a binary of its own.
#[path = "rkube-proxy-bench/traffic.rs"]
mod traffic;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rkube_proxy::model::{Endpoint, Protocol, ServiceKey, ServicePort, ServicePortName};
use rkube_proxy::netns::ScratchNetns;
use rkube_proxy::nft::Nft;
use rkube_proxy::ruleset::{Config, Existing, PortRules, Ruleset, Transaction};

/// Measures rule generation and `nft -f` for many Services (or, with `traffic`, traffic
/// through a ClusterIP).
#[derive(Debug, Parser)]
#[command(name = "rkube-proxy-bench")]
struct Args {
    /// Another benchmark instead of the sync one.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Service counts to measure (comma-separated).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    services: Vec<usize>,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 4)]
    endpoints: usize,
    /// Runs per measurement (the median is printed).
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Only generate the scripts; do not run nft.
    #[arg(long)]
    no_apply: bool,
    /// Write the last full-sync script of each size to `PREFIX-N.nft`.
    #[arg(long)]
    dump: Option<String>,
}

/// The benchmarks other than the sync one, and the processes they run in namespaces.
#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Throughput and latency through a ClusterIP versus directly to the pod IP.
    Traffic(traffic::Args),
    /// The HTTP server of `traffic` (run inside the server pod's namespace).
    #[command(hide = true)]
    Serve(traffic::ServeArgs),
    /// The load generator of `traffic` (run inside the client pod's namespace).
    #[command(hide = true)]
    Load(traffic::LoadArgs),
}

fn port(i: usize, endpoints: usize, generation: usize) -> ServicePort {
    let i32 = u32::try_from(i).unwrap_or(u32::MAX);
    ServicePort {
        name: ServicePortName {
            service: ServiceKey::new("bench", &format!("svc-{i}")),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
        cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i32),
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        endpoints: (0..endpoints)
            .map(|e| Endpoint {
                // Generation g > 0 replaces the last endpoint: one endpoint change.
                ip: if generation > 0 && e + 1 == endpoints {
                    Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 245, 0, 0))
                            + i32.wrapping_mul(64)
                            + u32::try_from(generation % 64).unwrap_or(0),
                    )
                } else {
                    Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 244, 0, 0))
                            + i32 * 8
                            + u32::try_from(e).unwrap_or(0),
                    )
                },
                port: 8080,
                ready: true,
                serving: true,
                terminating: false,
                local: e == 0,
                unplaced: false,
            })
            .collect(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::Traffic(a)) => return traffic::run(a).await,
        Some(Mode::Serve(a)) => return traffic::serve(a).await,
        Some(Mode::Load(a)) => return traffic::load(a).await,
        None => {}
    }
    let config = Config {
        cluster_cidr: "10.244.0.0/16".parse().context("cluster CIDR")?,
        service_cidr: "10.96.0.0/12".parse().context("service CIDR")?,
    };
    for &n in &args.services {
        let netns = if args.no_apply {
            None
        } else {
            Some(
                ScratchNetns::create(&format!("rkube-proxy-bench-{}-{n}", std::process::id()))
                    .context("creating a scratch network namespace (root needed)")?,
            )
        };
        let nft = netns.as_ref().map(|ns| Nft::in_netns(ns.name()));
        let ports: Vec<ServicePort> = (0..n).map(|i| port(i, args.endpoints, 0)).collect();

        let (mut full_gen, mut full_list, mut full_apply, mut full_total) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut ruleset = Ruleset::default();
        let mut script_len = 0;
        for _ in 0..args.iterations.max(1) {
            // As the daemon does it: nft lists the table's chains and sets (to find
            // leftovers) while the rules are generated, then `nft -f` applies the script.
            let start = Instant::now();
            let listing = nft.clone().map(|nft| {
                tokio::spawn(async move {
                    let t = Instant::now();
                    let existing = nft.existing().await;
                    (existing, t.elapsed())
                })
            });
            let t = Instant::now();
            ruleset = Ruleset::from_ports(
                ports
                    .iter()
                    .map(|p| (p.name.clone(), PortRules::generate(p, &config))),
            );
            let mut generated = t.elapsed();
            let existing = match listing {
                Some(listing) => {
                    let (existing, took) = listing.await.context("listing task")?;
                    full_list.push(took);
                    existing.context("listing the table")?
                }
                None => Existing::default(),
            };
            let t = Instant::now();
            let plan = ruleset.full_sync(&config, &existing);
            generated += t.elapsed();
            full_gen.push(generated);
            script_len = plan.script.len();
            if let Some(prefix) = &args.dump {
                std::fs::write(format!("{prefix}-{n}.nft"), &plan.script)
                    .context("writing the script")?;
            }
            if let Some(nft) = &nft {
                let t = Instant::now();
                nft.apply(&plan.script)
                    .await
                    .context("applying a full sync")?;
                full_apply.push(t.elapsed());
                full_total.push(start.elapsed());
            }
        }

        let (mut one_gen, mut one_apply) = (Vec::new(), Vec::new());
        let mut one_len = 0;
        for k in 0..args.iterations.max(1) {
            let t = Instant::now();
            let changed = port((k * 7919) % n.max(1), args.endpoints, k + 1);
            let mut tx = Transaction::default();
            let rules = PortRules::generate(&changed, &config);
            ruleset.update(changed.name.clone(), Some(rules), &mut tx);
            let script = tx.script(&ruleset);
            one_gen.push(t.elapsed());
            one_len = script.len();
            if let Some(nft) = &nft {
                let t = Instant::now();
                nft.apply(&script).await.context("applying one change")?;
                one_apply.push(t.elapsed());
            }
        }

        println!(
            "{n} services x {} endpoints: {} rules, {} elements",
            args.endpoints,
            ruleset.rule_count(),
            ruleset.element_count()
        );
        println!(
            "  full sync:       generate {:>10}  list {:>8}  apply {:>10}  total {:>10}  ({} KiB)",
            ms(median(full_gen)),
            if nft.is_some() {
                ms(median(full_list))
            } else {
                "-".into()
            },
            if nft.is_some() {
                ms(median(full_apply))
            } else {
                "-".into()
            },
            if nft.is_some() {
                ms(median(full_total))
            } else {
                "-".into()
            },
            script_len / 1024
        );
        println!(
            "  endpoint change: generate {:>10}  apply {:>10}  ({} bytes)",
            ms(median(one_gen)),
            if nft.is_some() {
                ms(median(one_apply))
            } else {
                "-".into()
            },
            one_len
        );
    }
    Ok(())
}
