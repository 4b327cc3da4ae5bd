//! The watch cache of one resource: every object in memory, a window of recent events, and
//! the open watches. Lists and watches are served from here; the store is read only at start.
//!
//! One dispatcher task feeds all caches from a single store watch, in revision order. Each
//! event's object bytes come from the store as they were serialized at write time, so every
//! watcher on either face gets the same bytes. A watcher whose bounded buffer fills is closed
//! (it resumes from the last resourceVersion it received), never slowing the others.

use crate::metrics::Metrics;
use bytes::Bytes;
use rkube_store::{Event as StoreEvent, EventKind, Record, Revision};
use rkube_types::fields::{self, FieldSelector};
use rkube_types::selector::LabelSelector;
use rkube_types::{ApiError, ResourceInfo};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use tokio::sync::mpsc;

/// The most bytes of object JSON one resource's event window keeps; past it the oldest events
/// go even if the window has room by count (watchers resuming from before them get 410).
pub const HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// One object as the cache keeps it: its bytes and what selectors match against.
#[derive(Debug)]
pub struct CachedObject {
    /// Storage key.
    pub key: String,
    /// `metadata.namespace` (empty for cluster-scoped objects).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The object's resourceVersion.
    pub revision: Revision,
    /// Kubernetes JSON of the object, resourceVersion included.
    pub json: Bytes,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Field values for field selectors.
    pub fields: BTreeMap<String, String>,
}

impl CachedObject {
    /// Decodes the selector-relevant parts of an object's JSON.
    pub fn decode(info: &ResourceInfo, key: &str, revision: Revision, json: Bytes) -> Self {
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
        Self::from_value(info, key, revision, &value, json)
    }

    /// Like [`CachedObject::decode`] for an already parsed object.
    pub fn from_value(
        info: &ResourceInfo,
        key: &str,
        revision: Revision,
        value: &serde_json::Value,
        json: Bytes,
    ) -> Self {
        let meta = &value["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        CachedObject {
            key: key.to_string(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_string(),
            name: meta["name"].as_str().unwrap_or_default().to_string(),
            revision,
            json,
            labels,
            fields: fields::field_set(info, value),
        }
    }
}

/// The kind of a watch event, as Kubernetes names it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchType {
    /// The object is new to this watcher.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone (or no longer matches the watcher's selectors).
    Deleted,
    /// Progress: every event up to this resourceVersion was sent.
    Bookmark,
}

impl WatchType {
    /// `ADDED`, `MODIFIED`, `DELETED` or `BOOKMARK`.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
            WatchType::Bookmark => "BOOKMARK",
        }
    }
}

/// One event as sent to a watcher.
#[derive(Debug, Clone)]
pub struct WatchItem {
    /// Event type.
    pub kind: WatchType,
    /// The event's revision.
    pub revision: Revision,
    /// The object's JSON (for a bookmark, an object with only `metadata.resourceVersion`).
    pub object: Bytes,
}

/// What a watch or list selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this namespace, if set.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &CachedObject) -> bool {
        if let Some(ns) = &self.namespace
            && ns != &obj.namespace
        {
            return false;
        }
        self.labels.matches(&obj.labels) && self.fields.matches(&obj.fields)
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub enum WatchStart {
    /// With the current state as ADDED events, then live.
    Now,
    /// With the events after this revision.
    After(Revision),
}

/// A registered watch: the events to send first, then the live channel. Dropping it ends the
/// watch.
pub struct Subscription {
    /// Events to send before anything from `live`.
    pub replay: Vec<WatchItem>,
    /// Live events; the channel closes when the watcher is cut off.
    pub live: mpsc::Receiver<WatchItem>,
    guard: WatcherGuard,
}

impl Subscription {
    /// The cache's resource.
    pub fn resource(&self) -> &'static ResourceInfo {
        self.guard.info
    }
}

struct WatcherGuard {
    cache: Weak<WatchCache>,
    info: &'static ResourceInfo,
    id: u64,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        if let Some(cache) = self.cache.upgrade() {
            cache.remove_watcher(self.id);
        }
    }
}

struct Watcher {
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::Sender<WatchItem>,
}

/// A recent event kept for watchers resuming from an older revision.
struct HistoryEvent {
    revision: Revision,
    object: Arc<CachedObject>,
    prev: Option<Arc<CachedObject>>,
    deleted: bool,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<HistoryEvent>,
    /// Every event of this resource after `floor` is in `history`.
    floor: Revision,
    /// Bytes of object JSON in `history`.
    history_bytes: usize,
    watchers: HashMap<u64, Watcher>,
}

/// The newest revision applied to the caches. The dispatcher raises it while holding the
/// cache the event went to, so a reader holding any cache's lock sees a revision that is
/// exact for that cache.
#[derive(Clone)]
pub struct CacheRevision(Arc<tokio::sync::watch::Sender<Revision>>);

impl CacheRevision {
    /// Starts at `revision`.
    pub fn new(revision: Revision) -> Self {
        CacheRevision(Arc::new(tokio::sync::watch::channel(revision).0))
    }

    /// The current value.
    pub fn get(&self) -> Revision {
        *self.0.borrow()
    }

    /// Raises the revision (never lowers it).
    pub fn raise(&self, revision: Revision) {
        self.0.send_if_modified(|r| {
            let changed = *r < revision;
            *r = (*r).max(revision);
            changed
        });
    }

    /// Waits until the caches reached `revision`; false after `timeout`.
    pub async fn wait_for(&self, revision: Revision, timeout: std::time::Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A page of a list.
pub struct ListPage {
    /// The objects, in key order.
    pub items: Vec<Arc<CachedObject>>,
    /// The revision the page reflects.
    pub revision: Revision,
    /// Key of the last item, when more remain.
    pub continue_after: Option<String>,
    /// Matching objects after this page.
    pub remaining: usize,
}

/// The cache of one resource.
pub struct WatchCache {
    info: &'static ResourceInfo,
    state: RwLock<State>,
    history_capacity: usize,
    watcher_buffer: usize,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    this: Weak<WatchCache>,
}

impl WatchCache {
    /// An empty cache keeping `history_capacity` events and giving each watcher a buffer of
    /// `watcher_buffer` events.
    pub fn new(
        info: &'static ResourceInfo,
        history_capacity: usize,
        watcher_buffer: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| WatchCache {
            info,
            state: RwLock::new(State::default()),
            history_capacity: history_capacity.max(1),
            watcher_buffer: watcher_buffer.max(1),
            next_id: AtomicU64::new(0),
            metrics,
            this: this.clone(),
        })
    }

    /// The cache's resource.
    pub fn info(&self) -> &'static ResourceInfo {
        self.info
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the whole state with `records` at `revision`. Open watches are closed: they
    /// resume, and get 410 if they were behind the new floor.
    pub fn load(&self, records: Vec<Record>, revision: Revision) {
        let objects = records
            .into_iter()
            .map(|r| {
                let obj = CachedObject::decode(self.info, &r.key, r.mod_revision, r.value);
                (r.key, Arc::new(obj))
            })
            .collect();
        let mut state = self.write();
        let closed = state.watchers.len() as i64;
        *state = State {
            objects,
            history: VecDeque::new(),
            floor: revision,
            history_bytes: 0,
            watchers: HashMap::new(),
        };
        self.metrics.add_watchers(self.info.plural, -closed);
    }

    /// Applies one store event and sends it to the matching watchers; raises `global` to the
    /// event's revision while still holding this cache.
    pub fn apply(&self, event: &StoreEvent, global: &CacheRevision) {
        let deleted = event.kind == EventKind::Delete;
        let object = if deleted {
            // The stored value carries the revision of its last write; a DELETED event
            // carries the deletion's, as Kubernetes sends it.
            let mut value: serde_json::Value =
                serde_json::from_slice(&event.value).unwrap_or_default();
            if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.insert("resourceVersion".into(), event.revision.to_string().into());
            }
            let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
            CachedObject::from_value(self.info, &event.key, event.revision, &value, json)
        } else {
            CachedObject::decode(self.info, &event.key, event.revision, event.value.clone())
        };
        let object = Arc::new(object);
        let mut state = self.write();
        let prev = if deleted {
            state.objects.remove(&event.key)
        } else {
            state.objects.insert(event.key.clone(), object.clone())
        };
        let history = HistoryEvent {
            revision: event.revision,
            object,
            prev,
            deleted,
        };
        let mut slow = Vec::new();
        for (id, watcher) in &state.watchers {
            if let Some(item) = item_for(&watcher.filter, &history)
                && watcher.tx.try_send(item).is_err()
            {
                slow.push(*id);
            }
        }
        for id in slow {
            if let Some(w) = state.watchers.remove(&id) {
                if !w.tx.is_closed() {
                    self.metrics.slow_watcher_closed();
                    tracing::info!(
                        resource = self.info.plural,
                        revision = event.revision,
                        "closing slow watcher"
                    );
                }
                self.metrics.add_watchers(self.info.plural, -1);
            }
        }
        state.history_bytes += history.object.json.len();
        state.history.push_back(history);
        while state.history.len() > self.history_capacity
            || (state.history_bytes > HISTORY_BYTES && state.history.len() > 1)
        {
            if let Some(old) = state.history.pop_front() {
                state.floor = old.revision;
                state.history_bytes -= old.object.json.len();
            }
        }
        global.raise(event.revision);
    }

    /// Lists the selected objects in key order, `limit` at a time (0 = all), starting after
    /// the key `continue_after`.
    pub fn list(
        &self,
        filter: &Filter,
        limit: usize,
        continue_after: Option<&str>,
        global: &CacheRevision,
    ) -> ListPage {
        let state = self.read();
        let revision = global.get();
        let prefix = match &filter.namespace {
            Some(ns) if self.info.namespaced => self.info.storage_namespace_prefix(ns),
            _ => self.info.storage_prefix(),
        };
        let start = match continue_after {
            Some(key) if key.starts_with(&prefix) => std::ops::Bound::Excluded(key.to_string()),
            _ => std::ops::Bound::Included(prefix.clone()),
        };
        let mut selected = state
            .objects
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, o)| o)
            .filter(|o| filter.matches(o));
        let mut items = Vec::new();
        for obj in selected.by_ref() {
            items.push(obj.clone());
            if limit > 0 && items.len() == limit {
                break;
            }
        }
        let remaining = selected.count();
        let continue_after = if remaining > 0 {
            items.last().map(|o| o.key.clone())
        } else {
            None
        };
        ListPage {
            items,
            revision,
            continue_after,
            remaining,
        }
    }

    /// The object at `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.read().objects.get(key).cloned()
    }

    /// Registers a watch. Fails with 410 Expired when `start` is below the cache's window.
    pub fn watch(
        &self,
        filter: Filter,
        start: WatchStart,
        bookmarks: bool,
        global: &CacheRevision,
    ) -> Result<Subscription, ApiError> {
        let mut state = self.write();
        let replay = match start {
            WatchStart::Now => {
                let revision = global.get();
                let mut items: Vec<WatchItem> = state
                    .objects
                    .values()
                    .filter(|o| filter.matches(o))
                    .map(|o| WatchItem {
                        kind: WatchType::Added,
                        revision: o.revision,
                        object: o.json.clone(),
                    })
                    .collect();
                if bookmarks {
                    items.push(self.bookmark_item(revision));
                }
                items
            }
            WatchStart::After(after) => {
                if after < state.floor {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {after} ({})",
                        state.floor
                    )));
                }
                let start = state.history.partition_point(|e| e.revision <= after);
                state
                    .history
                    .range(start..)
                    .filter_map(|e| item_for(&filter, e))
                    .collect()
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, live) = mpsc::channel(self.watcher_buffer);
        state.watchers.insert(
            id,
            Watcher {
                filter,
                bookmarks,
                tx,
            },
        );
        self.metrics.add_watchers(self.info.plural, 1);
        Ok(Subscription {
            replay,
            live,
            guard: WatcherGuard {
                cache: self.this.clone(),
                info: self.info,
                id,
            },
        })
    }

    /// Sends a bookmark at the current revision to every watcher that asked for them.
    pub fn bookmark(&self, global: &CacheRevision) {
        let state = self.write();
        let revision = global.get();
        let item = self.bookmark_item(revision);
        for watcher in state.watchers.values().filter(|w| w.bookmarks) {
            // A full buffer skips the bookmark; the next event or bookmark catches up.
            let _ = watcher.tx.try_send(item.clone());
        }
    }

    /// Whether any cached object satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&CachedObject) -> bool) -> bool {
        self.read().objects.values().any(|o| pred(o))
    }

    /// The number of open watches.
    pub fn watcher_count(&self) -> usize {
        self.read().watchers.len()
    }

    /// The number of cached objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove_watcher(&self, id: u64) {
        if self.write().watchers.remove(&id).is_some() {
            self.metrics.add_watchers(self.info.plural, -1);
        }
    }

    fn bookmark_item(&self, revision: Revision) -> WatchItem {
        let object = serde_json::json!({
            "kind": self.info.kind,
            "apiVersion": self.info.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        });
        WatchItem {
            kind: WatchType::Bookmark,
            revision,
            object: Bytes::from(serde_json::to_vec(&object).unwrap_or_default()),
        }
    }
}

/// What one history event means to a watcher with `filter`: an object entering the selection
/// is ADDED, one leaving it is DELETED, as Kubernetes does.
fn item_for(filter: &Filter, event: &HistoryEvent) -> Option<WatchItem> {
    let now = !event.deleted && filter.matches(&event.object);
    let before = match &event.prev {
        Some(prev) => filter.matches(prev),
        None => false,
    };
    let kind = match (before, now, event.deleted) {
        (_, _, true) if filter.matches(&event.object) => WatchType::Deleted,
        (false, true, _) => WatchType::Added,
        (true, true, _) => WatchType::Modified,
        (true, false, _) => WatchType::Deleted,
        _ => return None,
    };
    Some(WatchItem {
        kind,
        revision: event.revision,
        object: event.object.json.clone(),
    })
}

impl Subscription {
    /// The events in order: the replay, then live ones until the watcher is cut off. The
    /// watch stays registered while the stream lives.
    pub fn into_stream(self) -> futures::stream::BoxStream<'static, WatchItem> {
        use futures::StreamExt;
        let Subscription {
            replay,
            live,
            guard,
        } = self;
        futures::stream::iter(replay)
            .chain(tokio_stream::wrappers::ReceiverStream::new(live))
            .map(move |item| {
                let _registered = &guard;
                item
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn cache() -> (Arc<WatchCache>, CacheRevision) {
        let info = rkube_types::registry::lookup("", "v1", "configmaps").expect("registered");
        (
            WatchCache::new(info, 3, 16, Arc::new(Metrics::new())),
            CacheRevision::new(0),
        )
    }

    fn event(kind: EventKind, revision: Revision, name: &str, tier: &str) -> StoreEvent {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": revision.to_string(),
                         "labels": {"tier": tier}},
        });
        StoreEvent {
            kind,
            revision,
            key: format!("/registry/core/configmaps/ns/{name}"),
            value: Bytes::from(serde_json::to_vec(&obj).expect("json")),
        }
    }

    fn front() -> Filter {
        Filter {
            labels: LabelSelector::parse("tier=front").expect("selector"),
            ..Default::default()
        }
    }

    async fn next(
        stream: &mut futures::stream::BoxStream<'static, WatchItem>,
    ) -> (WatchType, Revision) {
        let item = stream.next().await.expect("an event");
        (item.kind, item.revision)
    }

    #[tokio::test]
    async fn objects_entering_and_leaving_a_selection_are_added_and_deleted() {
        let (cache, global) = cache();
        let sub = cache
            .watch(front(), WatchStart::After(0), false, &global)
            .expect("watch");
        let mut stream = sub.into_stream();
        cache.apply(&event(EventKind::Create, 1, "a", "back"), &global);
        cache.apply(&event(EventKind::Update, 2, "a", "front"), &global);
        cache.apply(&event(EventKind::Update, 3, "a", "front"), &global);
        cache.apply(&event(EventKind::Update, 4, "a", "back"), &global);
        cache.apply(&event(EventKind::Create, 5, "b", "front"), &global);
        cache.apply(&event(EventKind::Delete, 6, "b", "front"), &global);
        assert_eq!(next(&mut stream).await, (WatchType::Added, 2));
        assert_eq!(next(&mut stream).await, (WatchType::Modified, 3));
        assert_eq!(next(&mut stream).await, (WatchType::Deleted, 4));
        assert_eq!(next(&mut stream).await, (WatchType::Added, 5));
        assert_eq!(next(&mut stream).await, (WatchType::Deleted, 6));
        assert_eq!(global.get(), 6);
        assert_eq!(cache.len(), 1, "b is gone, a stays");
    }

    #[tokio::test]
    async fn deleted_events_carry_the_deletion_revision() {
        let (cache, global) = cache();
        cache.apply(&event(EventKind::Create, 1, "a", "front"), &global);
        let mut stream = cache
            .watch(Filter::default(), WatchStart::After(1), false, &global)
            .expect("watch")
            .into_stream();
        cache.apply(&event(EventKind::Delete, 2, "a", "front"), &global);
        let item = stream.next().await.expect("event");
        let obj: serde_json::Value = serde_json::from_slice(&item.object).expect("json");
        assert_eq!(obj["metadata"]["resourceVersion"], "2");
    }

    #[tokio::test]
    async fn the_window_moves_and_older_watches_expire() {
        let (cache, global) = cache();
        for rev in 1..=5 {
            cache.apply(
                &event(EventKind::Create, rev, &format!("o{rev}"), "x"),
                &global,
            );
        }
        // Capacity 3: events 3, 4, 5 kept; the floor is 2.
        let err = cache
            .watch(Filter::default(), WatchStart::After(1), false, &global)
            .err()
            .expect("below the window");
        assert_eq!(err.code(), 410);
        let sub = cache
            .watch(Filter::default(), WatchStart::After(2), false, &global)
            .expect("at the floor");
        let revs: Vec<Revision> = sub.replay.iter().map(|i| i.revision).collect();
        assert_eq!(revs, [3, 4, 5]);
    }

    #[tokio::test]
    async fn a_full_watcher_is_dropped_and_the_others_go_on() {
        let (cache, global) = cache();
        let slow = cache
            .watch(Filter::default(), WatchStart::After(0), false, &global)
            .expect("watch");
        let fast = cache
            .watch(Filter::default(), WatchStart::After(0), false, &global)
            .expect("watch");
        let mut fast = fast.into_stream();
        for rev in 1..=40u64 {
            cache.apply(
                &event(EventKind::Create, rev, &format!("o{rev}"), "x"),
                &global,
            );
            assert_eq!(next(&mut fast).await.1, rev);
        }
        assert_eq!(cache.watcher_count(), 1, "the slow watcher was dropped");
        let got: Vec<_> = slow.into_stream().collect().await;
        assert_eq!(got.len(), 16, "it keeps what its buffer held, then ends");
    }
}
