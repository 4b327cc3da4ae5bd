//! The reflector: a cache of one resource kept equal to the server by watcher events.
//!
//! [`store`] makes the two halves: one [`Writer`], which applies [`watcher::Event`]s, and any
//! number of cheap [`Store`] clones, which read. A (re-)list is built aside and swapped in
//! whole at `InitDone`, so readers never see half a list, and objects gone while the watcher
//! was away disappear at that moment. [`reflector`] threads a watcher stream through a
//! writer so every event is applied as it passes by.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};

use futures::{Stream, TryStream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;

use crate::object_ref::ObjectRef;
use crate::watcher;

type Cache<K> = HashMap<ObjectRef, Arc<K>>;

/// The writer went away before the store was first filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the reflector writer was dropped before the store became ready")]
pub struct WriterDropped;

/// A fresh, empty cache: its only writer and a first reader.
pub fn store<K>() -> (Writer<K>, Store<K>)
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone,
{
    let writer = Writer::default();
    let reader = writer.as_reader();
    (writer, reader)
}

/// The one writer of a cache; applies watcher events to it.
pub struct Writer<K> {
    cache: Arc<RwLock<Cache<K>>>,
    /// The list being received between `Init` and `InitDone`.
    buffer: Option<Cache<K>>,
    ready: watch::Sender<bool>,
}

impl<K> Default for Writer<K>
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone,
{
    fn default() -> Self {
        Writer {
            cache: Arc::default(),
            buffer: None,
            ready: watch::Sender::new(false),
        }
    }
}

impl<K> Writer<K>
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone,
{
    /// A reader of this writer's cache.
    pub fn as_reader(&self) -> Store<K> {
        Store {
            cache: Arc::clone(&self.cache),
            ready: self.ready.subscribe(),
        }
    }

    /// Applies one event: `Init` starts a new list aside, `InitApply` adds to it, `InitDone`
    /// swaps it in and marks the store ready; `Apply` and `Delete` change the cache at once.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.buffer = Some(Cache::new()),
            watcher::Event::InitApply(obj) => {
                self.buffer
                    .get_or_insert_with(Cache::new)
                    .insert(ObjectRef::from_obj(obj), Arc::new(obj.clone()));
            }
            watcher::Event::InitDone => {
                let list = self.buffer.take().unwrap_or_default();
                *self.cache.write().unwrap_or_else(PoisonError::into_inner) = list;
                self.ready.send_replace(true);
            }
            watcher::Event::Apply(obj) => {
                self.write()
                    .insert(ObjectRef::from_obj(obj), Arc::new(obj.clone()));
            }
            watcher::Event::Delete(obj) => {
                self.write().remove(&ObjectRef::from_obj(obj));
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache<K>> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reader of a cache; clone it freely, every clone sees the same state.
pub struct Store<K> {
    cache: Arc<RwLock<Cache<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            cache: Arc::clone(&self.cache),
            ready: self.ready.clone(),
        }
    }
}

impl<K> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache<K>> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object `key`, if cached.
    pub fn get(&self, key: &ObjectRef) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// The object `name` in `namespace` (empty for cluster-scoped objects), if cached.
    pub fn get_by(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.get(&ObjectRef::namespaced(namespace, name))
    }

    /// Every cached object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// The cached objects for which `pred` holds.
    pub fn filter(&self, mut pred: impl FnMut(&K) -> bool) -> Vec<Arc<K>> {
        self.read()
            .values()
            .filter(|obj| pred(obj))
            .cloned()
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache holds no objects.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Whether the first list has been applied; until then the cache is not the server's
    /// state and controllers should not act on it.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first list has been applied.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| WriterDropped)
    }
}

/// Applies every `Ok` event of `stream` to `writer` as it passes; yields the items unchanged.
pub fn reflector<K, S>(writer: Writer<K>, stream: S) -> Reflect<S, K>
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone,
    S: TryStream<Ok = watcher::Event<K>>,
{
    Reflect {
        stream: Box::pin(stream),
        writer,
    }
}

/// The stream [`reflector`] returns.
pub struct Reflect<S, K> {
    stream: Pin<Box<S>>,
    writer: Writer<K>,
}

impl<S, K> Stream for Reflect<S, K>
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone,
    S: TryStream<Ok = watcher::Event<K>>,
{
    type Item = Result<watcher::Event<K>, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = ready!(this.stream.as_mut().try_poll_next(cx));
        if let Some(Ok(event)) = &item {
            this.writer.apply_watcher_event(event);
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{ConfigMap, Node};
    use std::time::Duration;
    use watcher::Event;

    fn cm(ns: &str, name: &str, value: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.to_string());
        cm.metadata.namespace = Some(ns.to_string());
        cm.data = Some([("v".to_string(), value.to_string())].into());
        cm
    }

    fn value(store: &Store<ConfigMap>, ns: &str, name: &str) -> Option<String> {
        store
            .get_by(ns, name)
            .and_then(|cm| cm.data.as_ref()?.get("v").cloned())
    }

    fn names(store: &Store<ConfigMap>) -> Vec<String> {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|cm| ObjectRef::from_obj(cm.as_ref()).to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_list_is_swapped_in_whole_at_init_done() {
        let (mut writer, store) = store::<ConfigMap>();
        assert!(!store.is_ready());

        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(cm("a", "x", "1")));
        writer.apply_watcher_event(&Event::InitApply(cm("b", "y", "1")));
        // Half a list is invisible.
        assert!(store.is_empty());
        assert!(!store.is_ready());
        writer.apply_watcher_event(&Event::InitDone);
        assert!(store.is_ready());
        assert_eq!(names(&store), ["a/x", "b/y"]);

        // A re-list: the old state is served until the new one is complete, then objects
        // missing from it are gone.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(cm("a", "x", "2")));
        assert_eq!(names(&store), ["a/x", "b/y"]);
        assert_eq!(value(&store, "a", "x").as_deref(), Some("1"));
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(names(&store), ["a/x"]);
        assert_eq!(value(&store, "a", "x").as_deref(), Some("2"));
        assert!(store.is_ready());
    }

    #[test]
    fn apply_and_delete_change_the_cache_at_once() {
        let (mut writer, store) = store::<ConfigMap>();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);

        writer.apply_watcher_event(&Event::Apply(cm("a", "x", "1")));
        writer.apply_watcher_event(&Event::Apply(cm("b", "x", "1")));
        assert_eq!(store.len(), 2);
        writer.apply_watcher_event(&Event::Apply(cm("a", "x", "2")));
        assert_eq!(store.len(), 2);
        assert_eq!(value(&store, "a", "x").as_deref(), Some("2"));

        // Delete goes by key; the state carried does not matter.
        writer.apply_watcher_event(&Event::Delete(cm("a", "x", "old")));
        assert_eq!(names(&store), ["b/x"]);
        // Deleting what is not there is fine.
        writer.apply_watcher_event(&Event::Delete(cm("a", "x", "old")));
        assert_eq!(store.len(), 1);

        let reader = store.clone();
        assert!(reader.get(&ObjectRef::namespaced("b", "x")).is_some());
        assert_eq!(
            reader
                .filter(|cm| cm.metadata.name.as_deref() == Some("x"))
                .len(),
            1
        );
        assert_eq!(reader.filter(|_| false).len(), 0);
    }

    #[test]
    fn cluster_scoped_objects_are_keyed_by_name() {
        let (mut writer, store) = store::<Node>();
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        writer.apply_watcher_event(&Event::Apply(node));
        assert!(store.get_by("", "n1").is_some());
        assert!(store.get(&ObjectRef::new("n1")).is_some());
    }

    #[test]
    fn init_apply_without_init_still_lands_at_init_done() {
        let (mut writer, store) = store::<ConfigMap>();
        writer.apply_watcher_event(&Event::InitApply(cm("a", "x", "1")));
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(names(&store), ["a/x"]);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_ready_wakes_at_init_done() {
        let (mut writer, store) = store::<ConfigMap>();
        let reader = store.clone();
        let waiter = tokio::spawn(async move { reader.wait_until_ready().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let result = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("waiter woke")
            .expect("task ran");
        assert_eq!(result, Ok(()));
        // Once ready, it returns at once.
        assert_eq!(store.wait_until_ready().await, Ok(()));
    }

    #[tokio::test]
    async fn wait_until_ready_fails_when_the_writer_is_dropped() {
        let (writer, store) = store::<ConfigMap>();
        drop(writer);
        assert_eq!(store.wait_until_ready().await, Err(WriterDropped));
    }

    #[tokio::test]
    async fn reflector_applies_events_as_they_pass() {
        let (writer, store) = store::<ConfigMap>();
        let events: Vec<Result<Event<ConfigMap>, &str>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "x", "1"))),
            Ok(Event::InitDone),
            Err("watch failed"),
            Ok(Event::Apply(cm("a", "y", "1"))),
        ];
        let mut stream = reflector(writer, futures::stream::iter(events));
        for _ in 0..3 {
            assert!(matches!(stream.next().await, Some(Ok(_))));
        }
        assert!(store.is_ready());
        assert_eq!(names(&store), ["a/x"]);
        assert_eq!(stream.next().await, Some(Err("watch failed")));
        assert!(matches!(stream.next().await, Some(Ok(Event::Apply(_)))));
        assert_eq!(names(&store), ["a/x", "a/y"]);
        assert_eq!(stream.next().await, None);
    }
}
