//! The daemon around the scheduling loop: the informers feeding it, the event writers, and
//! the HTTP endpoints (`/healthz`, `/readyz`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, Recorder, WatchStreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::profile::Profile;
use crate::queue::{Less, SchedulingQueue};
use crate::scheduler::{DEFAULT_SCHEDULER_NAME, Scheduler, Update};

/// How many informer updates may wait for the loop.
pub const UPDATE_QUEUE: usize = 8192;

/// Runs the scheduler until `stop` turns true: starts the informers of nodes, pods,
/// namespaces and PodDisruptionBudgets and the scheduling loop over them.
pub async fn run(
    client: Client,
    profiles: Vec<Profile>,
    initial_backoff: Duration,
    max_backoff: Duration,
    metrics: Arc<Metrics>,
    syncing: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) {
    let sort = profiles.iter().find_map(|p| p.queue_sort.clone());
    let less: Less = Arc::new(move |a, a_added, b, b_added| match &sort {
        Some(p) => p
            .as_queue_sort()
            .map(|qs| qs.less(a, a_added, b, b_added))
            .unwrap_or(a_added < b_added),
        None => a_added < b_added,
    });
    let queue = Arc::new(SchedulingQueue::new(less, initial_backoff, max_backoff));
    let recorder = Recorder::new(client.clone(), DEFAULT_SCHEDULER_NAME);
    let events = EventSink::start(recorder, metrics.clone());
    let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
    let informers = vec![
        tokio::spawn(inform(
            Api::<Node>::all(client.clone()),
            tx.clone(),
            |ev| Update::Node(Box::new(ev)),
            stop.clone(),
        )),
        tokio::spawn(inform(
            Api::<Pod>::all(client.clone()),
            tx.clone(),
            |ev| Update::Pod(Box::new(ev)),
            stop.clone(),
        )),
        tokio::spawn(inform(
            Api::<Namespace>::all(client.clone()),
            tx.clone(),
            |ev| Update::Namespace(Box::new(ev)),
            stop.clone(),
        )),
        tokio::spawn(inform(
            Api::<PodDisruptionBudget>::all(client.clone()),
            tx,
            |ev| Update::Budget(Box::new(ev)),
            stop.clone(),
        )),
    ];
    Scheduler::new(profiles, queue, client, events, metrics)
        .with_readiness(syncing)
        .run(rx, stop)
        .await;
    for informer in informers {
        informer.abort();
    }
}

/// Feeds one resource's watcher events to the loop until `stop`.
async fn inform<K>(
    api: Api<K>,
    tx: mpsc::Sender<Update>,
    wrap: fn(Event<K>) -> Update,
    mut stop: watch::Receiver<bool>,
) where
    K: rkube_client::Watched,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            item = stream.next() => match item {
                Some(Ok(ev)) => {
                    // The snapshot and queue hold every pod; managedFields is dead weight.
                    let ev = ev.map(rkube_client::watcher::strip_managed_fields);
                    if tx.send(wrap(ev)).await.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => warn!(kind = K::KIND, %error, "watch failed, retrying"),
                None => return,
            },
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until `stop`. `/readyz`
/// answers 503 while the replica leads but its informers have not listed yet (`syncing`);
/// a standby replica waiting for the Lease is ready.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    syncing: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    rkube_client::health::Endpoints {
        healthz: rkube_client::health::always(),
        readyz: Arc::new(move || match syncing.load(Ordering::Relaxed) {
            true => Err("informers not synced".into()),
            false => Ok(()),
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
