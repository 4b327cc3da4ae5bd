//! The sync: from the caches' changes to one `nft -f -` transaction.
//!
//! A full sync (at start, after a re-list, after a failed sync, and every `--sync-period`
//! to undo drift) recomputes every Service and rewrites the whole table in one
//! transaction ([`Ruleset::full_sync`]). Otherwise only the Services that changed are
//! recomputed and their differences applied ([`Ruleset::update`]): one endpoint change
//! among 10,000 Services is a transaction of a few lines.
//!
//! Chains a sync stopped using are deleted by a later sync, in a transaction of their own,
//! once they have been unused for [`STALE_CHAIN_DELAY`] (see [`crate::ruleset`] on why).
//!
//! Conntrack is never flushed: established connections keep their NAT mapping across
//! syncs and restarts. Upstream also clears conntrack entries of UDP endpoints that went
//! away so that clients stop sending into a black hole; rkube-proxy does not (yet), so a
//! UDP client keeps its flow to a deleted endpoint until the entry times out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::{Changes, Inputs};
use crate::metrics::Metrics;
use crate::model::ServicePortName;
use crate::nft::{self, Nft};
use crate::ruleset::{Config, FAMILY, PortRules, Ruleset, TABLE, Transaction};

/// How long a chain stays unused before it is deleted.
pub const STALE_CHAIN_DELAY: Duration = Duration::from_secs(1);

/// A sync that did not make it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the table before a full sync failed.
    #[error("listing the table: {0}")]
    List(#[source] nft::Error),
    /// nft rejected the transaction (nothing was applied) or could not run.
    #[error("applying the rules: {0}")]
    Apply(#[source] nft::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a successful sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Whether it rewrote the whole table.
    pub full: bool,
    /// Service ports with rules afterwards.
    pub ports: usize,
    /// Bytes of nft script applied (0: nothing had changed).
    pub script_bytes: usize,
}

/// The proxier: what is programmed and how to program more.
#[derive(Debug)]
pub struct Proxier {
    config: Config,
    node: String,
    nft: Nft,
    sync_period: Duration,
    metrics: Arc<Metrics>,
    ruleset: Ruleset,
    stale: BTreeMap<String, Instant>,
    stale_delay: Duration,
    needs_full: bool,
    last_full: Option<Instant>,
}

impl Proxier {
    /// A proxier for node `node` that has programmed nothing yet; its first sync is full.
    pub fn new(
        config: Config,
        node: &str,
        nft: Nft,
        sync_period: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Proxier {
            config,
            node: node.to_string(),
            nft,
            sync_period,
            metrics,
            ruleset: Ruleset::default(),
            stale: BTreeMap::new(),
            stale_delay: STALE_CHAIN_DELAY,
            needs_full: true,
            last_full: None,
        }
    }

    /// Deletes unused chains after `delay` instead of [`STALE_CHAIN_DELAY`] (tests, on
    /// kernels from 6.2 on, can use zero).
    pub fn set_stale_chain_delay(&mut self, delay: Duration) {
        self.stale_delay = delay;
    }

    /// Makes the next sync a full one.
    pub fn request_full_sync(&mut self) {
        self.needs_full = true;
    }

    /// Chains waiting to be deleted.
    pub fn stale_chains(&self) -> impl Iterator<Item = &str> {
        self.stale.keys().map(String::as_str)
    }

    /// What is programmed.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// When the next sync is due although nothing changed: the periodic full sync, or
    /// the deletion of stale chains.
    pub fn next_due(&self) -> Option<Instant> {
        let full = self.last_full.map(|t| t + self.sync_period);
        let stale = self.stale.values().min().map(|t| *t + self.stale_delay);
        match (full, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the next sync will be full.
    pub fn full_due(&self, now: Instant) -> bool {
        self.needs_full || self.last_full.is_none_or(|t| now >= t + self.sync_period)
    }

    /// Syncs the changes recorded in `inputs`. On failure the changes go back to
    /// `inputs` and the next sync is a full one.
    pub async fn sync(&mut self, inputs: &Mutex<Inputs>) -> Result<Synced> {
        let start = Instant::now();
        self.delete_stale_chains(start).await;
        let changes = lock(inputs).take_changes();
        // A re-list (after a watch gap or an apiserver restart) swaps the caches whole
        // without saying which Services changed: only a full sync is sure to match them.
        let full = self.full_due(start) || changes.full;
        let result = if full {
            self.sync_full(inputs).await
        } else {
            self.sync_partial(inputs, &changes).await
        };
        let elapsed = start.elapsed();
        self.metrics.sync_duration.observe(elapsed.as_secs_f64());
        match result {
            Ok(script_bytes) => {
                if full {
                    self.needs_full = false;
                    self.last_full = Some(start);
                }
                self.metrics.synced(full);
                self.metrics
                    .rules
                    .set(i64::try_from(self.ruleset.rule_count()).unwrap_or(i64::MAX));
                self.metrics
                    .elements
                    .set(i64::try_from(self.ruleset.element_count()).unwrap_or(i64::MAX));
                let now = SystemTime::now();
                for when in changes.triggers.values() {
                    let latency = now.duration_since(*when).unwrap_or_default();
                    self.metrics
                        .network_programming
                        .observe(latency.as_secs_f64());
                }
                debug!(
                    full,
                    ports = self.ruleset.len(),
                    script_bytes,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "synced nftables rules"
                );
                Ok(Synced {
                    full,
                    ports: self.ruleset.len(),
                    script_bytes,
                })
            }
            Err(e) => {
                self.needs_full = true;
                self.metrics.failed();
                lock(inputs).restore(changes);
                Err(e)
            }
        }
    }

    async fn sync_full(&mut self, inputs: &Mutex<Inputs>) -> Result<usize> {
        // nft lists the table's chains while the rules are generated (tens of
        // milliseconds each at 10,000 Services).
        let nft = self.nft.clone();
        let listing = tokio::spawn(async move { nft.existing().await });
        let ports: Vec<(ServicePortName, PortRules)> = {
            let inputs = lock(inputs);
            inputs
                .service_keys()
                .flat_map(|key| inputs.service_ports(key, &self.node))
                .map(|p| {
                    let rules = PortRules::generate(&p, &self.config);
                    (p.name, rules)
                })
                .collect()
        };
        let ruleset = Ruleset::from_ports(ports);
        // The task is never aborted, so it can only fail by panicking: pass that on.
        let existing = listing
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(Error::List)?;
        let plan = ruleset.full_sync(&self.config, &existing);
        self.nft.apply(&plan.script).await.map_err(Error::Apply)?;
        let now = Instant::now();
        for chain in plan.stale_chains {
            self.stale.entry(chain).or_insert(now);
        }
        // The first sync and recoveries are news; the periodic ones are not.
        if self.needs_full {
            info!(
                ports = ruleset.len(),
                rules = ruleset.rule_count(),
                elements = ruleset.element_count(),
                "full sync applied"
            );
        } else {
            debug!(
                ports = ruleset.len(),
                rules = ruleset.rule_count(),
                elements = ruleset.element_count(),
                "periodic full sync applied"
            );
        }
        self.ruleset = ruleset;
        Ok(plan.script.len())
    }

    async fn sync_partial(&mut self, inputs: &Mutex<Inputs>, changes: &Changes) -> Result<usize> {
        let mut tx = Transaction::default();
        {
            let inputs = lock(inputs);
            for key in &changes.dirty {
                let ports = inputs.service_ports(key, &self.node);
                let gone: Vec<ServicePortName> = self
                    .ruleset
                    .ports_of(key)
                    .filter(|name| !ports.iter().any(|p| &p.name == *name))
                    .cloned()
                    .collect();
                for name in gone {
                    self.ruleset.update(name, None, &mut tx);
                }
                for port in ports {
                    let rules = PortRules::generate(&port, &self.config);
                    self.ruleset.update(port.name, Some(rules), &mut tx);
                }
            }
        }
        let script = tx.script(&self.ruleset);
        if script.is_empty() {
            return Ok(0);
        }
        self.nft.apply(&script).await.map_err(Error::Apply)?;
        let now = Instant::now();
        // Fresh timestamps: a chain that went stale before, came back and is stale again
        // must still wait the whole delay after its last reference went.
        for chain in tx.stale_chains() {
            self.stale.insert(chain.clone(), now);
        }
        Ok(script.len())
    }

    /// Deletes the chains unused for long enough, in a transaction of their own whose
    /// failure is only logged: a chain that survives is found again by a full sync.
    async fn delete_stale_chains(&mut self, now: Instant) {
        let due: Vec<String> = self
            .stale
            .iter()
            .filter(|(_, since)| now >= **since + self.stale_delay)
            .map(|(chain, _)| chain.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let mut script = String::new();
        for chain in &due {
            self.stale.remove(chain);
            if !self.ruleset.has_chain(chain) {
                script.push_str(&format!("delete chain {FAMILY} {TABLE} {chain}\n"));
            }
        }
        if script.is_empty() {
            return;
        }
        match self.nft.apply(&script).await {
            Ok(()) => debug!(chains = due.len(), "deleted stale chains"),
            Err(e) => warn!(chains = due.len(), error = %e, "deleting stale chains failed"),
        }
    }
}

fn lock(inputs: &Mutex<Inputs>) -> std::sync::MutexGuard<'_, Inputs> {
    inputs.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{service, slice};
    use rkube_client::watcher::Event;

    /// A stand-in for nft that swallows its input and exits with the code in `rc`.
    struct FakeNft {
        dir: tempfile::TempDir,
    }

    impl FakeNft {
        fn new() -> Self {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().expect("temp dir");
            let script = dir.path().join("nft");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\ncat > /dev/null\nexit $(cat {})\n",
                    dir.path().join("rc").display()
                ),
            )
            .expect("writing the fake nft");
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("making it executable");
            let fake = FakeNft { dir };
            fake.exit_with(0);
            fake
        }

        fn exit_with(&self, rc: i32) {
            std::fs::write(self.dir.path().join("rc"), rc.to_string()).expect("writing rc");
        }

        fn nft(&self) -> Nft {
            Nft::with_program(&self.dir.path().join("nft").to_string_lossy())
        }
    }

    fn inputs() -> Mutex<Inputs> {
        let mut inputs = Inputs::new();
        inputs.apply_service(Event::Init);
        inputs.apply_service(Event::InitApply(service("ns", "web", "10.96.0.10", "", 80)));
        inputs.apply_service(Event::InitDone);
        inputs.apply_slice(Event::Init, SystemTime::now());
        inputs.apply_slice(Event::InitDone, SystemTime::now());
        Mutex::new(inputs)
    }

    fn proxier(nft: Nft, metrics: Arc<Metrics>) -> Proxier {
        let config = Config {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
        };
        Proxier::new(config, "n1", nft, Duration::from_secs(3600), metrics)
    }

    fn add_endpoint(inputs: &Mutex<Inputs>, ip: &str) {
        set_endpoints(inputs, &[ip]);
    }

    fn set_endpoints(inputs: &Mutex<Inputs>, ips: &[&str]) {
        let endpoints: Vec<_> = ips
            .iter()
            .map(|ip| (*ip, "n1", true, true, false))
            .collect();
        lock(inputs).apply_slice(
            Event::Apply(slice("ns", "web", "web-1", "", 8080, &endpoints)),
            SystemTime::now(),
        );
    }

    #[tokio::test]
    async fn a_failed_sync_keeps_its_changes_and_makes_the_next_one_full() {
        let fake = FakeNft::new();
        let metrics = Arc::new(Metrics::new());
        let mut p = proxier(fake.nft(), metrics.clone());
        let inputs = inputs();

        let first = p.sync(&inputs).await.expect("first sync");
        assert!(first.full, "the first sync is full");
        assert_eq!(p.ruleset().len(), 1);

        add_endpoint(&inputs, "10.244.1.2");
        fake.exit_with(1);
        let e = p.sync(&inputs).await.expect_err("nft fails");
        assert!(matches!(e, Error::Apply(_)), "{e}");
        assert!(
            lock(&inputs).has_changes(),
            "the change waits for the retry"
        );

        fake.exit_with(0);
        let retry = p.sync(&inputs).await.expect("retry");
        assert!(retry.full, "after a failure the table is rewritten whole");
        assert!(!lock(&inputs).has_changes());
        let text = metrics.render();
        assert!(text.contains("rkube_proxy_sync_proxy_rules_nftables_sync_failures_total 1"));
        assert!(text.contains("rkube_proxy_network_programming_duration_seconds_count 1"));

        set_endpoints(&inputs, &[]);
        let partial = p.sync(&inputs).await.expect("partial sync");
        assert!(!partial.full);
        assert!(partial.script_bytes > 0);
        // The service chain went stale; it is deleted once the delay has passed.
        assert_eq!(p.stale_chains().count(), 1);
        p.set_stale_chain_delay(Duration::ZERO);
        let nothing = p.sync(&inputs).await.expect("idle sync");
        assert_eq!(nothing.script_bytes, 0, "nothing changed");
        assert_eq!(p.stale_chains().count(), 0);
    }

    /// Regression: a re-list swapped the caches but the next sync was an empty partial one,
    /// so a Service deleted during the watch gap kept its rules until the periodic sync.
    #[tokio::test]
    async fn a_relist_makes_the_next_sync_full() {
        let fake = FakeNft::new();
        let mut p = proxier(fake.nft(), Arc::new(Metrics::new()));
        let inputs = inputs();
        p.sync(&inputs).await.expect("first sync");
        assert_eq!(p.ruleset().len(), 1);
        // The watch comes back with a list in which the Service is gone.
        lock(&inputs).apply_service(Event::Init);
        lock(&inputs).apply_service(Event::InitDone);
        let after = p.sync(&inputs).await.expect("sync after the re-list");
        assert!(after.full, "a re-list asks for a full sync");
        assert_eq!(p.ruleset().len(), 0, "the deleted Service's rules are gone");
    }

    #[tokio::test]
    async fn full_syncs_come_back_every_sync_period() {
        let fake = FakeNft::new();
        let mut p = proxier(fake.nft(), Arc::new(Metrics::new()));
        let inputs = inputs();
        assert!(p.full_due(Instant::now()));
        p.sync(&inputs).await.expect("first sync");
        // Paused only now: with time paused from the start, the runtime would jump to the
        // nft time limit while waiting for the (real) process.
        tokio::time::pause();
        assert!(!p.full_due(Instant::now()));
        let due = p.next_due().expect("a periodic sync is scheduled");
        let left = due - Instant::now();
        assert!(
            left <= Duration::from_secs(3600) && left > Duration::from_secs(3590),
            "the next full sync is a sync period after the first, {left:?} from now"
        );
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(p.full_due(Instant::now()));
    }
}
