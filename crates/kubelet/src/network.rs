//! The pod network between nodes (host-gw), kept by the real kubelet.
//!
//! Every node's pods live on a bridge in its pod CIDR (the CNI configuration, see
//! [`crate::cni`]). To reach another node's pods, this node routes that node's pod CIDR
//! via its InternalIP ([`routes`]); that needs the nodes on one L2 network, as flannel's
//! host-gw backend does. Pod traffic keeps its source address between nodes and is
//! masqueraded only when it leaves the pod network ([`netfilter`]).
//!
//! [`reconcile`] takes a list of Nodes and makes the host match it: level-triggered and
//! idempotent, so [`run`] calls it after node events (debounced) and every
//! [`RESYNC`] to repair drift. Commands (`ip`, `nft`, `iptables`) run on a [`Host`]: this
//! network namespace, or a named one for tests.

pub mod netfilter;
pub mod routes;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, WatchStreamExt, reflector};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

pub use rkube_types::cidr::{CidrError, Ipv4Cidr};

use routes::{DesiredRoute, RoutePlan};

/// How often the host is made to match the Nodes although no event came.
pub const RESYNC: Duration = Duration::from_secs(30);

/// How long after a node event the reconcile waits for more (a node joining writes its
/// Node several times).
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// How soon a failed reconcile is retried first; the delay doubles with each failure in a
/// row, up to [`RESYNC`].
const RETRY: Duration = Duration::from_secs(5);

/// The delay before retrying after `failures` failed reconciles in a row (at least one).
fn retry_delay(failures: u32) -> Duration {
    RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(RESYNC)
}

/// Errors of the commands that program the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command could not be started (not installed, not executable) or be given its
    /// input.
    #[error("running {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The command's output was not what it should print.
    #[error("reading the output of {command}")]
    Output {
        /// The command line.
        command: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether the command is not installed.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the commands that program the network run: this process's network namespace, or
/// a named one (`ip netns exec NAME ...`), which the integration tests use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    netns: Option<String>,
}

impl Host {
    /// This process's network namespace.
    pub fn current() -> Self {
        Host::default()
    }

    /// The named network namespace (as `ip netns add` made it).
    pub fn netns(name: impl Into<String>) -> Self {
        Host {
            netns: Some(name.into()),
        }
    }

    /// The command line, for messages.
    fn describe(&self, program: &str, args: &[&str]) -> String {
        let mut words: Vec<&str> = Vec::new();
        if let Some(ns) = &self.netns {
            words.extend(["ip", "netns", "exec", ns.as_str()]);
        }
        words.push(program);
        words.extend(args);
        words.join(" ")
    }

    async fn output(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<std::process::Output> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), program]);
                c
            }
            None => tokio::process::Command::new(program),
        };
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_error = |source| Error::Spawn {
            command: self.describe(program, args),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(spawn_error)?;
            // Dropping the pipe closes it: the command sees the end of its input.
        }
        child.wait_with_output().await.map_err(spawn_error)
    }

    /// Runs `program` with `args` (and `stdin`), and returns its stdout; a non-zero exit
    /// is an error carrying stderr.
    pub async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.output(program, args, stdin).await?;
        if !out.status.success() {
            return Err(Error::Command {
                command: self.describe(program, args),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `program` with `args`; whether it exited 0 (a check such as `iptables -C`).
    pub async fn succeeds(&self, program: &str, args: &[&str]) -> Result<bool> {
        Ok(self.output(program, args, None).await?.status.success())
    }
}

/// What the pod network of this node is made of.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// Where to program it.
    pub host: Host,
    /// This node's name: its own Node is not routed to.
    pub node_name: String,
    /// This node's address: nodes at it are on this machine and not routed to.
    pub node_ip: Option<Ipv4Addr>,
    /// `--cluster-cidr`: the pod network of the whole cluster.
    pub cluster_cidr: Ipv4Cidr,
    /// `--pod-cidr`: this node's pod CIDR until its Node has one.
    pub pod_cidr: Option<Ipv4Cidr>,
}

/// What the host should look like, computed from the Nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The route to every other node's pods, by destination.
    pub routes: BTreeMap<Ipv4Cidr, DesiredRoute>,
    /// The pod networks: the cluster CIDR and every pod CIDR outside it.
    pub pod_cidrs: Vec<Ipv4Cidr>,
    /// The `nft -f` input of the masquerade table.
    pub ruleset: String,
}

impl PodNetwork {
    /// The desired state for `nodes`.
    pub fn desired<N: Borrow<Node>>(&self, nodes: &[N]) -> Desired {
        let own = nodes
            .iter()
            .map(Borrow::borrow)
            .find(|n| n.metadata.name.as_deref() == Some(self.node_name.as_str()));
        let own_cidr = own.and_then(routes::node_pod_cidr).or(self.pod_cidr);
        let self_ip = self
            .node_ip
            .or_else(|| own.and_then(routes::node_internal_ip));
        let routes = routes::desired_routes(nodes, &self.node_name, self_ip, own_cidr);
        // A pod CIDR outside --cluster-cidr (e.g. `rkube up`'s default 10.88.0.0/24 on a
        // cluster without node IPAM) is still pod network: never NATed between pods, and
        // masqueraded when it leaves.
        let pod_cidrs = rkube_types::cidr::minimal_cover(
            std::iter::once(self.cluster_cidr).chain(own_cidr).chain(
                nodes
                    .iter()
                    .filter_map(|n| routes::node_pod_cidr(n.borrow())),
            ),
        );
        let ruleset = netfilter::ruleset(&pod_cidrs, own_cidr);
        Desired {
            routes,
            pod_cidrs,
            ruleset,
        }
    }
}

/// What one [`reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Routes added.
    pub added: usize,
    /// Routes replaced (their node's address changed).
    pub replaced: usize,
    /// Stale routes deleted.
    pub deleted: usize,
    /// Route changes that failed (logged; retried with backoff).
    pub failed: usize,
    /// Whether IP forwarding had to be turned on.
    pub enabled_forwarding: bool,
    /// What the forward chain needed.
    pub forward: Option<netfilter::Forward>,
}

/// Makes `net.host` match `nodes`: IP forwarding on, the masquerade table, the forward
/// chain where one is needed, and the routes (add, replace, delete stale). The steps are
/// independent: each runs although an earlier one failed, and the first failure is the
/// error. A route that cannot be changed (for example because a route of another protocol
/// has its destination) is logged and counted in [`Report::failed`].
pub async fn reconcile<N: Borrow<Node>>(net: &PodNetwork, nodes: &[N]) -> Result<Report> {
    let desired = net.desired(nodes);
    apply(net, &desired).await
}

async fn apply(net: &PodNetwork, desired: &Desired) -> Result<Report> {
    let host = &net.host;
    let mut report = Report::default();
    let mut first_error: Option<Error> = None;
    let mut keep = |e: Error| {
        first_error.get_or_insert(e);
    };
    match netfilter::ensure_ip_forward(host).await {
        Ok(true) => {
            report.enabled_forwarding = true;
            tracing::info!("turned ip forwarding on");
        }
        Ok(false) => {}
        Err(e) => keep(e),
    }
    if let Err(e) = netfilter::apply_ruleset(host, &desired.ruleset).await {
        keep(e);
    }
    match netfilter::ensure_forward(host, &desired.pod_cidrs).await {
        Ok(f) => report.forward = Some(f),
        Err(e) => keep(e),
    }
    match routes::list(host).await {
        Ok(installed) => {
            let plan = routes::plan(&desired.routes, &installed);
            apply_routes(host, &plan, &mut report).await;
        }
        Err(e) => keep(e),
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn apply_routes(host: &Host, plan: &RoutePlan, report: &mut Report) {
    for r in &plan.replace {
        match routes::install(host, r, true).await {
            Ok(()) => {
                report.replaced += 1;
                tracing::info!(node = %r.node, pod_cidr = %r.dst, via = %r.via, "replaced the route to a node's pods");
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(node = %r.node, pod_cidr = %r.dst, via = %r.via, error = %e, "replacing the route to a node's pods failed");
            }
        }
    }
    for r in &plan.add {
        match routes::install(host, r, false).await {
            Ok(()) => {
                report.added += 1;
                tracing::info!(node = %r.node, pod_cidr = %r.dst, via = %r.via, "added the route to a node's pods");
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(node = %r.node, pod_cidr = %r.dst, via = %r.via, error = %e, "adding the route to a node's pods failed");
            }
        }
    }
    for r in &plan.delete {
        let via = r.gateway.map(|g| g.to_string()).unwrap_or_default();
        match routes::remove(host, r).await {
            Ok(()) => {
                report.deleted += 1;
                tracing::info!(pod_cidr = %r.dst, via = %via, "deleted a stale route to a node's pods");
            }
            Err(e) => {
                report.failed += 1;
                tracing::warn!(pod_cidr = %r.dst, via = %via, error = %e, "deleting a stale route failed");
            }
        }
    }
}

/// Keeps the pod network of this node until `shutdown`: watches all Nodes into a cache,
/// reconciles [`DEBOUNCE`] after changes that alter the desired state, and fully every
/// [`RESYNC`]. Nothing is removed at shutdown: pods keep running across kubelet
/// restarts, and so must their network (`rkube down` removes it).
pub async fn run(client: Client, net: PodNetwork, mut shutdown: watch::Receiver<bool>) {
    let (writer, store) = reflector::store::<Node>();
    let api: Api<Node> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|e| e.map(watcher::strip_managed_fields)))
        .reflect(writer);
    futures::pin_mut!(stream);
    tracing::info!(cluster_cidr = %net.cluster_cidr, "keeping the pod network (host-gw)");

    let mut state = LoopState::default();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = state.next.map(|(at, _)| at);
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                        state.next.get_or_insert((Instant::now() + DEBOUNCE, false));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "node watch failed"),
                }
            }
            () = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                let full = state.next.take().is_some_and(|(_, full)| full);
                state.sync(&net, &store, full).await;
            }
            _ = resync.tick() => {
                if store.is_ready() {
                    state.sync(&net, &store, true).await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// What [`run`] remembers between reconciles.
#[derive(Default)]
struct LoopState {
    /// The state last applied (route failures aside, which the resync retries); events
    /// that leave the desired state as it is cost nothing.
    applied: Option<Desired>,
    /// Failed reconciles in a row.
    failures: u32,
    /// When to reconcile next, and whether fully (a retry).
    next: Option<(Instant, bool)>,
}

impl LoopState {
    /// One reconcile from the cache: skipped when not `full` and the desired state is the
    /// one last applied; retried after [`retry_delay`] on error.
    async fn sync(&mut self, net: &PodNetwork, store: &reflector::Store<Node>, full: bool) {
        let nodes: Vec<Arc<Node>> = store.state();
        let desired = net.desired(&nodes);
        if !full && self.applied.as_ref() == Some(&desired) {
            return;
        }
        match apply(net, &desired).await {
            Ok(report) => {
                tracing::debug!(
                    nodes = nodes.len(),
                    routes = desired.routes.len(),
                    ?report,
                    "pod network reconciled"
                );
                if report.failed > 0 {
                    // Some routes could not be made (e.g. a gateway not reachable yet):
                    // retried soon, with backoff, rather than at the next resync.
                    self.applied = None;
                    self.failures = self.failures.saturating_add(1);
                    self.next = Some((Instant::now() + retry_delay(self.failures), true));
                } else {
                    self.applied = Some(desired);
                    self.failures = 0;
                }
            }
            Err(e) => {
                self.applied = None;
                self.failures = self.failures.saturating_add(1);
                let delay = retry_delay(self.failures);
                tracing::warn!(error = %e, failures = self.failures, retry_in = ?delay, "reconciling the pod network failed");
                self.next = Some((Instant::now() + delay, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, internal_ip: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.spec = Some(NodeSpec {
            pod_cidr: cidr.map(Into::into),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: internal_ip.into(),
            }]),
            ..Default::default()
        });
        n
    }

    fn net(pod_cidr: Option<&str>) -> PodNetwork {
        PodNetwork {
            host: Host::current(),
            node_name: "a".into(),
            node_ip: None,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            pod_cidr: pod_cidr.map(|c| c.parse().unwrap()),
        }
    }

    #[test]
    fn desired_uses_the_nodes_cidr_and_address() {
        let nodes = vec![
            node("a", Some("10.244.0.0/24"), "172.18.0.2"),
            node("b", Some("10.244.1.0/24"), "172.18.0.3"),
            // Same machine as a (the address is a's): no route.
            node("c", Some("10.244.2.0/24"), "172.18.0.2"),
        ];
        let d = net(Some("10.99.0.0/24")).desired(&nodes);
        assert_eq!(d.routes.len(), 1, "{:?}", d.routes);
        assert_eq!(d.pod_cidrs, vec!["10.244.0.0/16".parse().unwrap()]);
        // The Node's pod CIDR beats the flag.
        assert!(
            d.ruleset.contains("ip daddr 10.244.0.0/24 return"),
            "{}",
            d.ruleset
        );
    }

    #[test]
    fn pod_cidrs_outside_the_cluster_cidr_are_pod_network() {
        // `rkube up` without node IPAM: only --pod-cidr, outside the default cluster CIDR.
        let nodes = vec![node("a", None, "172.18.0.2")];
        let d = net(Some("10.88.0.0/24")).desired(&nodes);
        assert!(d.routes.is_empty());
        assert_eq!(
            d.pod_cidrs,
            vec![
                "10.88.0.0/24".parse().unwrap(),
                "10.244.0.0/16".parse().unwrap()
            ]
        );
        assert!(
            d.ruleset.contains("ip daddr 10.88.0.0/24 return"),
            "{}",
            d.ruleset
        );
    }

    #[test]
    fn retries_back_off_up_to_the_resync() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(3), Duration::from_secs(20));
        assert_eq!(retry_delay(4), RESYNC);
        assert_eq!(retry_delay(u32::MAX), RESYNC);
    }

    #[test]
    fn host_describes_the_command_it_runs() {
        assert_eq!(
            Host::netns("t1").describe("ip", &["route", "show"]),
            "ip netns exec t1 ip route show"
        );
        assert_eq!(Host::current().describe("nft", &["-f", "-"]), "nft -f -");
    }

    #[tokio::test]
    async fn run_reports_failures_and_missing_commands() {
        let host = Host::current();
        let e = host
            .run("rkube-no-such-command", &[], None)
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = host.run("false", &[], None).await.unwrap_err();
        assert!(matches!(e, Error::Command { .. }), "{e}");
        assert_eq!(host.run("cat", &[], Some("in\n")).await.unwrap(), "in\n");
        assert!(!host.succeeds("false", &[]).await.unwrap());
    }
}
