//! An event recorder: controllers tell users what they did to an object by writing core/v1
//! Events about it, as client-go's `record.EventRecorder` does.
//!
//! Repeats are aggregated: the same (object, type, reason, message) published again within
//! [`AGGREGATION_WINDOW`] bumps `count` and `lastTimestamp` of the Event already written
//! instead of creating another. The recorder remembers at most [`CACHE_CAPACITY`] recent
//! events, forgetting the least recently used. Recording is best effort: failures are logged,
//! never returned, so a controller's reconcile does not fail because of an Event.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;
use tracing::warn;

use crate::api::Api;
use crate::client::Client;
use crate::params::Patch;

/// How long after the last occurrence a repeat still counts on the same Event.
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How many distinct recent events the recorder remembers for aggregation.
pub const CACHE_CAPACITY: usize = 1024;

/// The `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Things going as they should.
    Normal,
    /// Something that may need attention.
    Warning,
}

impl EventType {
    /// The value written to `Event.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to `obj` for [`Recorder::publish`]: its apiVersion, kind, namespace, name,
/// uid and resourceVersion.
pub fn object_reference<K>(obj: &K) -> ObjectReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// Writes Events on behalf of one component; clone it freely (clones share the
/// aggregation cache).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: Arc<str>,
    host: Option<Arc<str>>,
    cache: Arc<Mutex<EventCache>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder whose Events name `component` (e.g. `"default-scheduler"`) as their
    /// source.
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: Arc::from(component),
            host: None,
            cache: Arc::new(Mutex::new(EventCache::new(CACHE_CAPACITY))),
        }
    }

    /// Also names `host` (a node name) as the source.
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(Arc::from(host));
        self
    }

    /// Records an Event about `target` in its namespace (`default` for cluster-scoped
    /// objects), or counts a repeat on the Event recorded before. Never fails: errors are
    /// logged.
    pub async fn publish(
        &self,
        target: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let namespace = target
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let key = EventKey {
            kind: target.kind.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: target.name.clone().unwrap_or_default(),
            uid: target.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();

        let repeat = self.lock_cache().repeat(&key, Instant::now());
        if let Some((event_name, count)) = repeat {
            let patch = Patch::Merge(serde_json::json!({
                "count": count,
                "lastTimestamp": Time(now),
                "message": message,
            }));
            match api.patch(&event_name, &patch).await {
                Ok(_) => return,
                // The Event expired or was deleted: write a new one.
                Err(e) if e.is_not_found() => self.lock_cache().forget(&key),
                Err(error) => {
                    warn!(event = %event_name, namespace = %namespace, %error,
                        "updating event failed");
                    return;
                }
            }
        }

        let object_name = target.name.as_deref().unwrap_or("unknown");
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{object_name}.{:x}", unique_suffix(now))),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: target.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: self.host.as_deref().map(str::to_string),
            }),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: self.host.as_deref().map(str::to_string),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        match api.create(&event).await {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                self.lock_cache().insert(key, name, Instant::now());
            }
            Err(error) => {
                warn!(object = %object_name, namespace = %namespace, reason, %error,
                    "recording event failed");
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, EventCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A suffix for Event names: the time in nanoseconds, bumped so that no two in this process
/// are equal.
fn unique_suffix(now: Timestamp) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(nanos.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    nanos.max(prev.saturating_add(1))
}

/// What makes two events the same for aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    type_: EventType,
    reason: String,
    message: String,
}

#[derive(Debug)]
struct CachedEvent {
    event_name: String,
    count: i32,
    last_seen: Instant,
    /// Position in the recency order.
    tick: u64,
}

/// A bounded least-recently-used map of recently written Events.
#[derive(Debug)]
struct EventCache {
    capacity: usize,
    entries: HashMap<EventKey, CachedEvent>,
    by_recency: BTreeMap<u64, EventKey>,
    next_tick: u64,
}

impl EventCache {
    fn new(capacity: usize) -> Self {
        EventCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_recency: BTreeMap::new(),
            next_tick: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// For a repeat of a recent event: its Event's name and the new count (already counted).
    fn repeat(&mut self, key: &EventKey, now: Instant) -> Option<(String, i32)> {
        let fresh = self
            .entries
            .get(key)
            .is_some_and(|e| now.saturating_duration_since(e.last_seen) <= AGGREGATION_WINDOW);
        if !fresh {
            self.forget(key);
            return None;
        }
        let tick = self.tick();
        let entry = self.entries.get_mut(key)?;
        self.by_recency.remove(&entry.tick);
        self.by_recency.insert(tick, key.clone());
        entry.tick = tick;
        entry.count = entry.count.saturating_add(1);
        entry.last_seen = now;
        Some((entry.event_name.clone(), entry.count))
    }

    /// Remembers a newly written Event, evicting the least recently used when full.
    fn insert(&mut self, key: EventKey, event_name: String, now: Instant) {
        self.forget(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_recency.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let tick = self.tick();
        self.by_recency.insert(tick, key.clone());
        self.entries.insert(
            key,
            CachedEvent {
                event_name,
                count: 1,
                last_seen: now,
                tick,
            },
        );
    }

    fn forget(&mut self, key: &EventKey) {
        if let Some(entry) = self.entries.remove(key) {
            self.by_recency.remove(&entry.tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(message: &str) -> EventKey {
        EventKey {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u-1".into(),
            type_: EventType::Normal,
            reason: "Scheduled".into(),
            message: message.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_count_within_the_window_only() {
        let mut cache = EventCache::new(8);
        assert_eq!(cache.repeat(&key("a"), Instant::now()), None);
        cache.insert(key("a"), "web.1".into(), Instant::now());
        assert_eq!(
            cache.repeat(&key("a"), Instant::now()),
            Some(("web.1".into(), 2))
        );
        assert_eq!(cache.repeat(&key("b"), Instant::now()), None);
        tokio::time::advance(AGGREGATION_WINDOW + Duration::from_secs(1)).await;
        assert_eq!(cache.repeat(&key("a"), Instant::now()), None);
        assert!(cache.entries.is_empty() && cache.by_recency.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn evicts_the_least_recently_used() {
        let mut cache = EventCache::new(2);
        let now = Instant::now();
        cache.insert(key("a"), "a".into(), now);
        cache.insert(key("b"), "b".into(), now);
        // Touch "a", so "b" is the oldest.
        assert!(cache.repeat(&key("a"), now).is_some());
        cache.insert(key("c"), "c".into(), now);
        assert_eq!(cache.entries.len(), 2);
        assert!(cache.entries.contains_key(&key("a")));
        assert!(!cache.entries.contains_key(&key("b")));
        assert!(cache.entries.contains_key(&key("c")));
        assert_eq!(cache.by_recency.len(), 2);
    }

    #[test]
    fn suffixes_are_unique() {
        let now = Timestamp::now();
        let a = unique_suffix(now);
        let b = unique_suffix(now);
        assert!(b > a);
    }
}
