//! The daemon around the proxier: watches of Services, EndpointSlices and this Node
//! feeding the caches, the sync loop that batches changes by `--min-sync-period`, and the
//! HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Rules are left in place on shutdown, as upstream leaves them: a restarted proxy takes
//! over from them with a full sync that never leaves the table empty.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, WatchStreamExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cache::Inputs;
use crate::metrics::Metrics;
use crate::model::SERVICE_NAME_LABEL;
use crate::nft::Nft;
use crate::proxier::Proxier;
use crate::ruleset::Config;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node: String,
    /// What the rules depend on besides the Services.
    pub config: Config,
    /// The least time between the starts of two syncs: changes within it are batched.
    pub min_sync_period: Duration,
    /// The most time between two full syncs.
    pub sync_period: Duration,
    /// How to run nft.
    pub nft: Nft,
}

/// Health as `/healthz` and `/readyz` report it.
#[derive(Debug)]
pub struct Health {
    state: Mutex<HealthState>,
    limit: Duration,
}

#[derive(Debug)]
struct HealthState {
    /// Since when changes (or the first sync) wait to be programmed.
    pending_since: Option<Instant>,
    /// Whether a sync succeeded once.
    synced_once: bool,
}

impl Health {
    /// Healthy while no change waits longer than `limit` (upstream: twice the sync
    /// period) to be programmed. Starts pending: the first sync is awaited.
    pub fn new(limit: Duration) -> Self {
        Health {
            state: Mutex::new(HealthState {
                pending_since: Some(Instant::now()),
                synced_once: false,
            }),
            limit,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that changes wait to be programmed.
    pub fn queued(&self) {
        self.state().pending_since.get_or_insert_with(Instant::now);
    }

    /// Notes a successful sync that started at `started`; `more` when changes arrived
    /// meanwhile (they wait since no earlier than the sync's start).
    pub fn synced(&self, started: Instant, more: bool) {
        let mut s = self.state();
        s.pending_since = more.then_some(started);
        s.synced_once = true;
    }

    /// `Err(why)` when changes have waited too long.
    pub fn healthy(&self) -> Result<(), String> {
        match self.state().pending_since {
            Some(since) if since.elapsed() > self.limit => Err(format!(
                "rules not synced for {}s",
                since.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }

    /// Whether the rules have been programmed once.
    pub fn ready(&self) -> bool {
        self.state().synced_once
    }
}

/// Runs the proxy until `stop`: watches, and syncs whenever something changed (at most
/// once per `min_sync_period`), when a periodic full sync is due, and to retry failures.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) {
    let inputs = Arc::new(Mutex::new(Inputs::new()));
    let notify = Arc::new(Notify::new());
    let watches = [
        tokio::spawn(watch_into(
            Api::<Service>::all(client.clone()),
            // As upstream: a Service labelled for another proxy is not ours to program.
            watcher::Config::default().labels("!service.kubernetes.io/service-proxy-name"),
            "services",
            inputs.clone(),
            notify.clone(),
            |inputs, event| inputs.apply_service(event),
            stop.clone(),
        )),
        tokio::spawn(watch_into(
            Api::<EndpointSlice>::all(client.clone()),
            // Only slices managed for a Service: the label names it.
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
            "endpointslices",
            inputs.clone(),
            notify.clone(),
            |inputs, event| inputs.apply_slice(event, SystemTime::now()),
            stop.clone(),
        )),
        tokio::spawn(watch_node(client, settings.node.clone(), stop.clone())),
    ];
    sync_loop(&settings, &inputs, &notify, metrics, health, stop).await;
    for w in watches {
        w.abort();
    }
}

/// The sync loop, apart from the watches so tests can feed `inputs` directly.
pub async fn sync_loop(
    settings: &Settings,
    inputs: &Mutex<Inputs>,
    notify: &Notify,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    let mut proxier = Proxier::new(
        settings.config.clone(),
        &settings.node,
        settings.nft.clone(),
        settings.sync_period,
        metrics,
    );
    let min_period = settings.min_sync_period;
    let mut last_start: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = min_period.max(Duration::from_millis(100));
    let mut waiting_reported = false;
    loop {
        let now = Instant::now();
        let synced = lock(inputs).is_synced();
        let changed = lock(inputs).has_changes();
        // After a failure only the backoff decides; otherwise changes, or a due full
        // sync or stale-chain deletion.
        let due = retry_at.or_else(|| proxier.next_due());
        let run_now = synced
            && match retry_at {
                Some(retry) => retry <= now,
                None => changed || proxier.full_due(now) || due.is_some_and(|d| d <= now),
            };
        if !run_now {
            if !synced && !waiting_reported && last_start.is_none() {
                info!("waiting for the first list of services and endpointslices");
                waiting_reported = true;
            }
            let sleep = async {
                match due {
                    Some(d) if synced => tokio::time::sleep_until(d).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notify.notified() => health.queued(),
                () = sleep => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        // Batch: no two syncs start closer than --min-sync-period.
        if let Some(last) = last_start {
            let earliest = last + min_period;
            if earliest > now {
                tokio::select! {
                    () = tokio::time::sleep_until(earliest) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        last_start = Some(started);
        match proxier.sync(inputs).await {
            Ok(done) => {
                retry_at = None;
                backoff = min_period.max(Duration::from_millis(100));
                health.synced(started, lock(inputs).has_changes());
                tracing::trace!(
                    full = done.full,
                    ports = done.ports,
                    bytes = done.script_bytes,
                    "sync done"
                );
            }
            Err(e) => {
                error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "sync failed");
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(settings.sync_period);
            }
        }
    }
}

fn lock(inputs: &Mutex<Inputs>) -> std::sync::MutexGuard<'_, Inputs> {
    inputs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Feeds the watch of `api` (as `config` selects) into `inputs` with `apply`, waking the
/// sync loop on every event but those of a list in progress, until `stop`.
async fn watch_into<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
    inputs: Arc<Mutex<Inputs>>,
    notify: Arc<Notify>,
    apply: fn(&mut Inputs, Event<K>),
    mut stop: watch::Receiver<bool>,
) where
    K: rkube_client::Watched,
{
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .map(|e| e.map(|e| e.map(watcher::strip_managed_fields)));
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            None => return,
            Some(Ok(event)) => {
                let signal = !matches!(event, Event::Init | Event::InitApply(_));
                apply(&mut lock(&inputs), event);
                if signal {
                    notify.notify_one();
                }
            }
            Some(Err(e)) => warn!(error = %e, watch = what, "watch failed"),
        }
    }
}

/// Watches this node's Node object, for the log only: the proxy works without it.
async fn watch_node(client: Client, node: String, mut stop: watch::Receiver<bool>) {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut seen = false;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            None => return,
            Some(Ok(Event::InitDone)) if !seen => {
                warn!(node = %node, "no Node object with this name (yet); endpoints on it still count as local");
            }
            Some(Ok(Event::Apply(_) | Event::InitApply(_))) if !seen => {
                seen = true;
                info!(node = %node, "found this node's Node object");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => warn!(error = %e, "node watch failed"),
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `stop`.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let healthz = health.clone();
    rkube_client::health::Endpoints {
        healthz: Arc::new(move || healthz.healthy()),
        readyz: Arc::new(move || match health.ready() {
            true => Ok(()),
            false => Err("rules not synced yet".into()),
        }),
        metrics: Arc::new(move || metrics.render()),
    }
    .serve(listener, stop)
    .await
}

/// Binds the HTTP endpoints' listener.
pub async fn bind_http(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn health_fails_only_when_changes_wait_too_long() {
        let health = Health::new(Duration::from_secs(60));
        assert!(health.healthy().is_ok());
        assert!(!health.ready(), "not ready before the first sync");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(health.healthy().is_err(), "the first sync is overdue");

        let started = Instant::now();
        health.synced(started, false);
        assert!(health.ready());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(health.healthy().is_ok(), "idle is healthy");

        // Busy: every sync leaves new changes behind, yet each is programmed in time.
        for _ in 0..5 {
            health.queued();
            tokio::time::advance(Duration::from_secs(30)).await;
            health.synced(Instant::now(), true);
            assert!(health.healthy().is_ok());
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        let why = health.healthy().unwrap_err();
        assert!(why.contains("not synced for 61s"), "{why}");
    }
}
