//! Shared informers: one watch and one cache per resource, read by every controller.
//!
//! An [`Informer<K>`] lists and watches one resource, keeps the objects in a cache indexed by
//! namespace, and tells its subscribers what changed ([`Change`]). Subscribers are the
//! controllers' event handlers: they run on the informer's task after the cache has been
//! updated, so a reconcile triggered by a change always sees it, and they must be cheap
//! (add keys to a work queue, nothing more).
//!
//! [`Informers`] hands out one informer per type, created on first use, so ten controllers
//! that read pods share one pod watch and one pod cache. Every informer is created while the
//! controllers are being built and started afterwards, so no event reaches a handler that is
//! not registered yet.
//!
//! After a re-list (the watcher's `Init`…`InitDone`) subscribers see the difference to the
//! cache as ordinary changes: objects that changed as `Updated`, new ones as `Added` and
//! those gone as `Deleted`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::StreamExt;
use rkube_client::watcher::{self, Event};
use rkube_client::{Api, Client, WatchStreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// What the informers can hold: a Kubernetes object type with standard metadata.
pub use rkube_client::Watched as Object;

/// One change to a cached object, as subscribers see it.
#[derive(Debug)]
pub enum Change<K> {
    /// A new object.
    Added(Arc<K>),
    /// An object changed; `old` is what the cache held before.
    Updated {
        /// The previous state.
        old: Arc<K>,
        /// The new state.
        new: Arc<K>,
    },
    /// The object is gone; this is its last known state.
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object as it is now (or was last, when deleted).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(obj) | Change::Deleted(obj) => obj,
            Change::Updated { new, .. } => new,
        }
    }

    /// The previous state of an update, or the last state of a deletion.
    pub fn old(&self) -> Option<&Arc<K>> {
        match self {
            Change::Added(_) => None,
            Change::Updated { old, .. } => Some(old),
            Change::Deleted(obj) => Some(obj),
        }
    }
}

type Handler<K> = Arc<dyn Fn(&Change<K>) + Send + Sync>;
type Cache<K> = HashMap<String, HashMap<String, Arc<K>>>;

struct Inner<K> {
    /// Namespace (empty for cluster-scoped objects) → name → object.
    cache: RwLock<Cache<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
    config: watcher::Config,
}

/// A cache of one resource kept current by a watch, with change subscribers. Clones share
/// the cache.
pub struct Informer<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Informer")
            .field("synced", &*self.inner.synced.borrow())
            .finish_non_exhaustive()
    }
}

impl<K: Object> Informer<K> {
    /// An empty informer that will watch with `config` once run.
    pub fn new(config: watcher::Config) -> Self {
        Informer {
            inner: Arc::new(Inner {
                cache: RwLock::default(),
                handlers: RwLock::default(),
                synced: watch::Sender::new(false),
                config,
            }),
        }
    }

    /// Calls `handler` for every change from now on. Handlers run on the informer's task and
    /// must not block.
    pub fn subscribe(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(handler));
    }

    /// The cached object `namespace/name` (`namespace` empty for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The cached objects of one namespace that `pred` accepts.
    pub fn filter_namespace(
        &self,
        namespace: &str,
        mut pred: impl FnMut(&K) -> bool,
    ) -> Vec<Arc<K>> {
        self.read()
            .get(namespace)
            .map(|m| m.values().filter(|o| pred(o)).cloned().collect())
            .unwrap_or_default()
    }

    /// Every cached object that `pred` accepts.
    pub fn filter(&self, mut pred: impl FnMut(&K) -> bool) -> Vec<Arc<K>> {
        self.read()
            .values()
            .flat_map(|m| m.values())
            .filter(|o| pred(o))
            .cloned()
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has been applied.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits until the first list has been applied.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache<K>> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, change: &Change<K>) {
        let handlers = self
            .inner
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for handler in handlers {
            // A panicking handler is a bug in one controller; it must not end the informer
            // task and leave every controller sharing it on a frozen cache.
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(change)));
            if called.is_err() {
                tracing::error!(
                    kind = K::KIND,
                    "an event handler panicked; event skipped for it"
                );
            }
        }
    }

    /// Applies one watcher event to the cache and tells the subscribers. `list` holds the
    /// objects of a re-list in progress. Objects are cached without `managedFields`.
    pub fn apply(&self, event: Event<K>, list: &mut Option<Cache<K>>) {
        match event.map(rkube_client::watcher::strip_managed_fields) {
            Event::Init => *list = Some(Cache::new()),
            Event::InitApply(obj) => {
                let (ns, name) = key_of(&obj);
                list.get_or_insert_with(Cache::new)
                    .entry(ns)
                    .or_default()
                    .insert(name, Arc::new(obj));
            }
            Event::InitDone => {
                let new = list.take().unwrap_or_default();
                let old = std::mem::replace(
                    &mut *self
                        .inner
                        .cache
                        .write()
                        .unwrap_or_else(PoisonError::into_inner),
                    new.clone(),
                );
                self.inner.synced.send_replace(true);
                for (ns, objects) in &new {
                    for (name, obj) in objects {
                        match old.get(ns).and_then(|m| m.get(name)) {
                            Some(prev) if same_version(&**prev, &**obj) => {}
                            Some(prev) => self.notify(&Change::Updated {
                                old: prev.clone(),
                                new: obj.clone(),
                            }),
                            None => self.notify(&Change::Added(obj.clone())),
                        }
                    }
                }
                for (ns, objects) in &old {
                    for (name, obj) in objects {
                        if new.get(ns).is_none_or(|m| !m.contains_key(name)) {
                            self.notify(&Change::Deleted(obj.clone()));
                        }
                    }
                }
            }
            Event::Apply(obj) => {
                let (ns, name) = key_of(&obj);
                let obj = Arc::new(obj);
                let prev = self
                    .inner
                    .cache
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(ns)
                    .or_default()
                    .insert(name, obj.clone());
                match prev {
                    Some(old) => self.notify(&Change::Updated { old, new: obj }),
                    None => self.notify(&Change::Added(obj)),
                }
            }
            Event::Delete(obj) => {
                let (ns, name) = key_of(&obj);
                {
                    let mut cache = self
                        .inner
                        .cache
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(objects) = cache.get_mut(&ns) {
                        objects.remove(&name);
                        if objects.is_empty() {
                            cache.remove(&ns);
                        }
                    }
                }
                // The event carries the last state, which may be newer than the cached one.
                self.notify(&Change::Deleted(Arc::new(obj)));
            }
        }
    }

    /// Lists and watches through `client` until `stop` turns true.
    pub async fn run(self, client: Client, mut stop: watch::Receiver<bool>) {
        let api: Api<K> = Api::all(client);
        let stream = watcher::watcher(api, self.inner.config.clone()).default_backoff();
        futures::pin_mut!(stream);
        let mut list = None;
        loop {
            tokio::select! {
                () = crate::stopped(&mut stop) => return,
                item = stream.next() => match item {
                    Some(Ok(event)) => self.apply(event, &mut list),
                    Some(Err(error)) => warn!(kind = K::KIND, %error, "watch failed, retrying"),
                    None => return,
                },
            }
        }
    }
}

fn key_of<K: Object>(obj: &K) -> (String, String) {
    let meta = obj.metadata();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn same_version<K: Object>(a: &K, b: &K) -> bool {
    let (a, b) = (a.metadata(), b.metadata());
    a.uid == b.uid && a.resource_version.is_some() && a.resource_version == b.resource_version
}

/// A type-erased informer, so the registry can start and await informers of any type.
trait AnyInformer: Send + Sync {
    fn spawn(&self, client: Client, stop: watch::Receiver<bool>) -> JoinHandle<()>;
    fn is_synced(&self) -> bool;
    fn as_any(&self) -> &dyn Any;
    fn kind(&self) -> &'static str;
}

impl<K: Object> AnyInformer for Informer<K> {
    fn spawn(&self, client: Client, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.clone().run(client, stop))
    }

    fn is_synced(&self) -> bool {
        Informer::is_synced(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn kind(&self) -> &'static str {
        K::KIND
    }
}

/// One informer per object type, shared by every controller that asks for it.
#[derive(Default)]
pub struct Informers {
    map: Mutex<Vec<(TypeId, Box<dyn AnyInformer>)>>,
}

impl fmt::Debug for Informers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_list()
            .entries(map.iter().map(|(_, i)| i.kind()))
            .finish()
    }
}

impl Informers {
    /// The informer of `K`, created (watching every object of the type) on first use.
    pub fn get<K: Object>(&self) -> Informer<K> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let id = TypeId::of::<K>();
        if let Some((_, informer)) = map.iter().find(|(t, _)| *t == id)
            && let Some(informer) = informer.as_any().downcast_ref::<Informer<K>>()
        {
            return informer.clone();
        }
        let informer = Informer::<K>::new(watcher::Config::default());
        map.push((id, Box::new(informer.clone())));
        informer
    }

    /// Starts every informer created so far; each runs until `stop`.
    pub fn start(&self, client: &Client, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(_, i)| i.spawn(client.clone(), stop.clone()))
            .collect()
    }

    /// Whether every informer has applied its first list.
    pub fn all_synced(&self) -> bool {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().all(|(_, i)| i.is_synced())
    }

    /// The kinds of the informers not synced yet.
    pub fn unsynced(&self) -> Vec<&'static str> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|(_, i)| !i.is_synced())
            .map(|(_, i)| i.kind())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Mutex;

    fn pod(ns: &str, name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn recorded(informer: &Informer<Pod>) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        informer.subscribe(move |c| {
            let name = c.object().metadata.name.clone().unwrap_or_default();
            let what = match c {
                Change::Added(_) => "added",
                Change::Updated { .. } => "updated",
                Change::Deleted(_) => "deleted",
            };
            sink.lock().unwrap().push(format!("{what} {name}"));
        });
        seen
    }

    #[test]
    fn a_relist_reports_only_the_difference() {
        let informer = Informer::<Pod>::new(watcher::Config::default());
        let seen = recorded(&informer);
        let mut list = None;
        for ev in [
            Event::Init,
            Event::InitApply(pod("a", "keep", "1")),
            Event::InitApply(pod("a", "change", "1")),
            Event::InitApply(pod("b", "gone", "1")),
            Event::InitDone,
        ] {
            informer.apply(ev, &mut list);
        }
        assert!(informer.is_synced());
        assert_eq!(informer.len(), 3);
        seen.lock().unwrap().clear();
        for ev in [
            Event::Init,
            Event::InitApply(pod("a", "keep", "1")),
            Event::InitApply(pod("a", "change", "2")),
            Event::InitApply(pod("b", "new", "3")),
            Event::InitDone,
        ] {
            informer.apply(ev, &mut list);
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, ["added new", "deleted gone", "updated change"]);
        assert_eq!(informer.list_namespace("a").len(), 2);
        assert!(informer.get("b", "gone").is_none());
    }

    #[test]
    fn handlers_see_the_cache_already_updated() {
        let informer = Informer::<Pod>::new(watcher::Config::default());
        let reader = informer.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        informer.subscribe(move |c| {
            let name = c.object().metadata.name.clone().unwrap_or_default();
            sink.lock().unwrap().push(reader.get("a", &name).is_some());
        });
        let mut list = None;
        informer.apply(Event::Apply(pod("a", "p", "1")), &mut list);
        informer.apply(Event::Delete(pod("a", "p", "2")), &mut list);
        assert_eq!(*seen.lock().unwrap(), [true, false]);
        assert!(informer.is_empty());
    }

    #[test]
    fn cached_objects_carry_no_managed_fields() {
        let informer = Informer::<Pod>::new(watcher::Config::default());
        let mut with_fields = pod("a", "p", "1");
        with_fields.metadata.managed_fields = Some(vec![Default::default()]);
        let mut list = None;
        informer.apply(Event::Apply(with_fields), &mut list);
        let cached = informer.get("a", "p").expect("cached");
        assert_eq!(cached.metadata.managed_fields, None);
        assert_eq!(cached.metadata.resource_version.as_deref(), Some("1"));
    }

    #[test]
    fn one_informer_per_type() {
        let informers = Informers::default();
        let a = informers.get::<Pod>();
        let b = informers.get::<Pod>();
        let mut list = None;
        a.apply(Event::Apply(pod("a", "p", "1")), &mut list);
        assert_eq!(b.len(), 1);
        assert_eq!(informers.unsynced(), ["Pod"]);
    }
}
