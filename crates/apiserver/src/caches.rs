//! All watch caches, and the dispatcher that feeds them from one store watch.

use crate::metrics::Metrics;
use crate::watch_cache::{CacheRevision, WatchCache};
use futures::StreamExt;
use rkube_store::{Error as StoreError, Record, Revision, Store};
use rkube_types::{ResourceInfo, registry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Every key the apiserver stores starts with this.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// The watch caches of every resource in the registry.
pub struct Caches {
    by_prefix: HashMap<String, Arc<WatchCache>>,
    /// The newest revision applied to the caches.
    pub revision: CacheRevision,
    metrics: Arc<Metrics>,
}

impl Caches {
    /// Loads every resource from the store with one list.
    pub async fn load(
        store: &dyn Store,
        history_capacity: usize,
        watcher_buffer: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let mut by_prefix = HashMap::new();
        for info in registry::all() {
            by_prefix.insert(
                info.storage_prefix(),
                WatchCache::new(info, history_capacity, watcher_buffer, metrics.clone()),
            );
        }
        let caches = Caches {
            by_prefix,
            revision: CacheRevision::new(0),
            metrics,
        };
        caches.reload(store).await?;
        Ok(caches)
    }

    async fn reload(&self, store: &dyn Store) -> Result<Revision, StoreError> {
        let (records, revision) = store.list(REGISTRY_PREFIX).await?;
        let mut split: HashMap<String, Vec<Record>> = HashMap::new();
        for record in records {
            if let Some(prefix) = resource_prefix(&record.key) {
                split.entry(prefix.to_string()).or_default().push(record);
            }
        }
        for (prefix, cache) in &self.by_prefix {
            cache.load(split.remove(prefix).unwrap_or_default(), revision);
        }
        self.revision.raise(revision);
        tracing::info!(revision, "watch caches loaded");
        Ok(revision)
    }

    /// The cache of `info`.
    pub fn cache(&self, info: &ResourceInfo) -> Option<&Arc<WatchCache>> {
        self.by_prefix.get(&info.storage_prefix())
    }

    /// Every cache.
    pub fn all(&self) -> impl Iterator<Item = &Arc<WatchCache>> {
        self.by_prefix.values()
    }

    /// Feeds the caches from the store until `shutdown` turns true. Resumes after a lagged
    /// store watch; reloads everything if the store compacted past the caches.
    pub async fn run_dispatcher(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut after = self.revision.get();
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut stream = match store.watch(REGISTRY_PREFIX, after) {
                Ok(stream) => stream,
                Err(StoreError::Expired { .. }) => {
                    tracing::warn!(after, "store compacted past the watch caches; reloading");
                    match self.reload(store.as_ref()).await {
                        Ok(rev) => after = rev,
                        Err(e) => tracing::error!(error = %e, "watch cache reload failed"),
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "store watch failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = shutdown.changed() => return,
                };
                match item {
                    Some(Ok(event)) => {
                        backoff = Duration::from_millis(50);
                        match resource_prefix(&event.key).and_then(|p| self.by_prefix.get(p)) {
                            Some(cache) => cache.apply(&event, &self.revision),
                            None => self.revision.raise(event.revision),
                        }
                        self.metrics.watch_event(event.revision);
                        after = event.revision;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, after, "store watch interrupted; resuming");
                        break;
                    }
                    None => break,
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Sends bookmarks to the watchers that asked for them, every `interval`.
    pub async fn run_bookmarks(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for cache in self.all() {
                cache.bookmark(&self.revision);
            }
        }
    }
}

/// `/registry/{group}/{plural}/` of a storage key.
fn resource_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(REGISTRY_PREFIX)?;
    let group_end = rest.find('/')?;
    let plural_end = rest[group_end + 1..].find('/')?;
    Some(&key[..REGISTRY_PREFIX.len() + group_end + 1 + plural_end + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_prefix_of_keys() {
        assert_eq!(
            resource_prefix("/registry/core/pods/default/web"),
            Some("/registry/core/pods/")
        );
        assert_eq!(
            resource_prefix("/registry/apps/deployments/ns/x"),
            Some("/registry/apps/deployments/")
        );
        assert_eq!(resource_prefix("/registry/core"), None);
        assert_eq!(resource_prefix("/other/x/y/z"), None);
    }
}
