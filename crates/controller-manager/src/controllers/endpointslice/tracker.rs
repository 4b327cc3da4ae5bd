//! What the controller last wrote to each slice (upstream's `EndpointSliceTracker`), so that
//! it can tell its own writes from other people's and a stale cache from a current one.
//!
//! After each create or update the controller records the slice's generation; after each
//! delete it records that the slice should disappear. A slice event whose generation is no
//! newer than the recorded one is the echo of the controller's own write and needs no
//! reconcile; anything else (a change or deletion by someone else) does. Before planning, a
//! cache that lacks a slice the controller wrote, holds an older generation of it, or still
//! holds one it deleted is stale: planning on it could create duplicates, so the reconcile
//! waits for the watch to catch up. A cache that stays stale for [`STALE_LIMIT`] (an event
//! the watch never delivered) is trusted again, so a Service is never stuck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use rkube_client::ObjectRef;
use tokio::time::Instant;

use super::reconciler::{LABEL_SERVICE_NAME, label};

/// How long a Service's slices may look stale before the tracker forgets what it expected.
pub const STALE_LIMIT: Duration = Duration::from_secs(30);

/// A slice's expected state: its generation, or `None` when its deletion is expected.
type Expected = Option<i64>;

#[derive(Debug, Default)]
struct ServiceSlices {
    by_uid: HashMap<String, Expected>,
    stale_since: Option<Instant>,
}

/// The generations the controller wrote, by Service and slice UID.
#[derive(Debug, Default)]
pub struct Tracker {
    services: Mutex<HashMap<ObjectRef, ServiceSlices>>,
}

/// The key of the Service a slice belongs to, from its namespace and service-name label.
pub fn service_key(slice: &EndpointSlice) -> Option<ObjectRef> {
    let name = label(slice, LABEL_SERVICE_NAME)?;
    Some(ObjectRef::namespaced(
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        name,
    ))
}

fn uid(slice: &EndpointSlice) -> String {
    slice.metadata.uid.clone().unwrap_or_default()
}

fn generation(slice: &EndpointSlice) -> i64 {
    slice.metadata.generation.unwrap_or_default()
}

impl Tracker {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ObjectRef, ServiceSlices>) -> T) -> T {
        f(&mut self.services.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a slice as the controller just wrote it.
    pub fn update(&self, slice: &EndpointSlice) {
        if let Some(key) = service_key(slice) {
            self.with(|m| {
                m.entry(key)
                    .or_default()
                    .by_uid
                    .insert(uid(slice), Some(generation(slice)));
            });
        }
    }

    /// Records that the controller deleted a slice.
    pub fn expect_deletion(&self, slice: &EndpointSlice) {
        if let Some(key) = service_key(slice) {
            self.with(|m| {
                m.entry(key).or_default().by_uid.insert(uid(slice), None);
            });
        }
    }

    /// Whether a slice event needs a reconcile: the slice is unknown, or newer than what
    /// the controller wrote.
    pub fn should_sync(&self, slice: &EndpointSlice) -> bool {
        let Some(key) = service_key(slice) else {
            return true;
        };
        self.with(
            |m| match m.get(&key).and_then(|s| s.by_uid.get(&uid(slice))) {
                Some(Some(g)) => generation(slice) > *g,
                Some(None) | None => true,
            },
        )
    }

    /// Forgets a deleted slice; returns whether the controller expected the deletion.
    pub fn handle_deletion(&self, slice: &EndpointSlice) -> bool {
        let Some(key) = service_key(slice) else {
            return false;
        };
        self.with(|m| {
            let Some(service) = m.get_mut(&key) else {
                return false;
            };
            let expected = service.by_uid.remove(&uid(slice));
            if service.by_uid.is_empty() {
                m.remove(&key);
            }
            matches!(expected, Some(None))
        })
    }

    /// Whether `slices` (the cached slices of `service`, those being deleted included) miss
    /// writes the controller made.
    /// After [`STALE_LIMIT`] of staleness the expectations are dropped and this answers
    /// false.
    pub fn stale(&self, service: &ObjectRef, slices: &[Arc<EndpointSlice>], now: Instant) -> bool {
        self.with(|m| {
            let Some(state) = m.get_mut(service) else {
                return false;
            };
            // A slice being deleted (held by a finalizer) counts as gone for a deletion the
            // controller expects: it will not come back.
            let cached: HashMap<String, (i64, bool)> = slices
                .iter()
                .map(|s| {
                    let deleting = s.metadata.deletion_timestamp.is_some();
                    (uid(s), (generation(s), deleting))
                })
                .collect();
            let stale = state.by_uid.iter().any(|(uid, expected)| match expected {
                None => cached.get(uid).is_some_and(|(_, deleting)| !deleting),
                Some(g) => cached.get(uid).is_none_or(|(c, _)| c < g),
            });
            if !stale {
                state.stale_since = None;
                return false;
            }
            let since = *state.stale_since.get_or_insert(now);
            if now.duration_since(since) >= STALE_LIMIT {
                m.remove(service);
                return false;
            }
            true
        })
    }

    /// Forgets a deleted Service.
    pub fn delete_service(&self, service: &ObjectRef) {
        self.with(|m| {
            m.remove(service);
        });
    }
}
