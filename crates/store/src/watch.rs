//! The live half of `Store::watch`, shared by the backends: a broadcast hub of durable
//! events, and the stream that joins a replay of the change log to the live events without
//! gaps or duplicates.

use crate::{Error, Event, Revision, WatchStream};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many live events a watcher may be behind before it is cut off with
/// [`Error::WatchLagged`]; it then resumes from the change log.
pub(crate) const LIVE_BUFFER: usize = 65_536;

/// Fans durable events out to every store watcher.
pub(crate) struct EventHub {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        EventHub { tx }
    }

    /// Sends one event to every watcher; events must be published in revision order.
    pub(crate) fn publish(&self, event: Arc<Event>) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Subscribes before the replay is read, so no event can fall between the two.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// Joins `replay` (events after `after` up to some revision, in order) with `live` (subscribed
/// before the replay was read), dropping live events already replayed, and keeping only keys
/// under `prefix`.
pub(crate) fn join(
    prefix: &str,
    after: Revision,
    replay: Vec<Event>,
    live: broadcast::Receiver<Arc<Event>>,
) -> WatchStream {
    let prefix = prefix.to_string();
    let last = replay
        .last()
        .map(|e| e.revision)
        .unwrap_or(after)
        .max(after);
    let live_prefix = prefix.clone();
    let replayed = futures::stream::iter(
        replay
            .into_iter()
            .filter(move |e| e.key.starts_with(&prefix))
            .map(Ok),
    );
    let live = futures::stream::unfold((live, last, false), move |(mut rx, last, done)| {
        let prefix = live_prefix.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(event) if event.revision <= last => continue,
                    Ok(event) => {
                        let rev = event.revision;
                        if !event.key.starts_with(&prefix) {
                            // Keep `last` moving so a lag error can name a resume point.
                            return Some((None, (rx, rev, false)));
                        }
                        return Some((Some(Ok((*event).clone())), (rx, rev, false)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((Some(Err(Error::WatchLagged { last })), (rx, last, true)));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Some((Some(Err(Error::Closed)), (rx, last, true)));
                    }
                }
            }
        }
    })
    .filter_map(futures::future::ready);
    replayed.chain(live).boxed()
}
