//! Best-effort Events (`Scheduled`, `FailedScheduling`, `Preempted`) written off the
//! scheduling loop: the loop hands each event to a bounded queue and goes on; a few
//! writers drain it. When the queue is full the event is dropped and counted, as
//! client-go's broadcaster drops events rather than slow the scheduler down.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use rkube_client::{EventType, Recorder, object_reference};
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;

/// How many events may wait to be written.
pub const QUEUE_CAPACITY: usize = 4096;
/// How many event writes may be in flight.
pub const WRITERS: usize = 16;

struct Pending {
    target: ObjectReference,
    type_: EventType,
    reason: &'static str,
    message: String,
}

/// Hands events to the writers.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// Starts the writers; they stop when every sink is dropped and the queue is drained.
    pub fn start(recorder: Recorder, metrics: Arc<Metrics>) -> EventSink {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(WRITERS));
            while let Some(ev) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    recorder
                        .publish(&ev.target, ev.type_, ev.reason, &ev.message)
                        .await;
                    drop(permit);
                });
            }
        });
        EventSink { tx, metrics }
    }

    /// Records an event about `pod`; never waits.
    pub fn pod(&self, pod: &Pod, type_: EventType, reason: &'static str, message: String) {
        let ev = Pending {
            target: object_reference(pod),
            type_,
            reason,
            message,
        };
        if self.tx.try_send(ev).is_err() {
            self.metrics.event_dropped();
        }
    }
}
