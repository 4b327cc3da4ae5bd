//! The cluster zone kept current from informer caches: Services and EndpointSlices are listed
//! and watched through the client's watcher and reflector, and every change rebuilds an
//! immutable [`Snapshot`] that queries read without locks held across an answer.
//!
//! Rebuilds are coalesced: changes that arrive while one runs cause one more rebuild, not
//! one each. A rebuild walks every Service and slice, so it runs on the blocking pool.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::reflector::{self, Store};
use rkube_client::{Api, Client, WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::records::Snapshot;

/// A cheap, cloneable reader of the current zone.
#[derive(Debug, Clone)]
pub struct ZoneReader {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    synced: watch::Receiver<bool>,
}

impl ZoneReader {
    /// A reader of a fixed snapshot, marked synced (for tests and tools).
    pub fn fixed(snapshot: Snapshot) -> ZoneReader {
        let (_, snapshot) = watch::channel(Arc::new(snapshot));
        let (_, synced) = watch::channel(true);
        ZoneReader { snapshot, synced }
    }

    /// A reader of a snapshot whose caches have not listed yet (for tests).
    pub fn unsynced(snapshot: Snapshot) -> ZoneReader {
        let (_, snapshot) = watch::channel(Arc::new(snapshot));
        let (_, synced) = watch::channel(false);
        ZoneReader { snapshot, synced }
    }

    /// The zone as of the latest rebuild.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// Whether both caches have listed and the zone was built from them: until then the
    /// server answers from an empty zone, and `/readyz` says not ready.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until [`ZoneReader::is_synced`]; returns at once if the zone's tasks are gone.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }
}

/// Starts watching Services and EndpointSlices through `client` and rebuilding the zone
/// `domain` (records living `ttl` seconds) until `stop`. Returns the reader and the tasks.
pub fn start(
    client: &Client,
    domain: &str,
    ttl: u32,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> (ZoneReader, Vec<JoinHandle<()>>) {
    let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::empty(domain, ttl)));
    let (synced_tx, synced) = watch::channel(false);
    let changed = Arc::new(Notify::new());
    let (services, svc_task) = informer::<Service>(client, changed.clone(), stop.clone());
    let (slices, slice_task) = informer::<EndpointSlice>(client, changed.clone(), stop.clone());
    let domain = domain.to_string();
    let rebuild = tokio::spawn(async move {
        let mut stop = stop;
        let mut serial: u32 = 0;
        loop {
            tokio::select! {
                () = crate::stopped(&mut stop) => return,
                () = changed.notified() => {}
            }
            if !services.is_ready() || !slices.is_ready() {
                continue;
            }
            serial = serial.wrapping_add(1);
            let (svcs, sls) = (services.clone(), slices.clone());
            let zone = domain.clone();
            let built = tokio::task::spawn_blocking(move || {
                let svcs = svcs.state();
                let sls = sls.state();
                Snapshot::build(
                    &zone,
                    ttl,
                    serial,
                    svcs.iter().map(AsRef::as_ref),
                    sls.iter().map(AsRef::as_ref),
                )
            })
            .await;
            let built = match built {
                Ok(built) => built,
                Err(e) => {
                    warn!(error = %e, "zone rebuild failed");
                    continue;
                }
            };
            metrics.observe_rebuild(built.service_count());
            debug!(services = built.service_count(), serial, "zone rebuilt");
            snapshot_tx.send_replace(Arc::new(built));
            if !*synced_tx.borrow() {
                info!(domain = %domain, "caches synced, serving the cluster zone");
                synced_tx.send_replace(true);
            }
        }
    });
    (
        ZoneReader { snapshot, synced },
        vec![svc_task, slice_task, rebuild],
    )
}

/// Lists and watches every `K` into a cache, ringing `changed` after each change.
fn informer<K: rkube_client::Watched>(
    client: &Client,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> (Store<K>, JoinHandle<()>) {
    let (writer, store) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let task = tokio::spawn(async move {
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        futures::pin_mut!(events);
        loop {
            let event = tokio::select! {
                () = crate::stopped(&mut stop) => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => changed.notify_one(),
                Some(Err(e)) => warn!(kind = K::KIND, error = %e, "watch failed, retrying"),
                None => return,
            }
        }
    });
    (store, task)
}
