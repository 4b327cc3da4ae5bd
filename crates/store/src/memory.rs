//! The in-memory backend, for tests and for trying rkube out: the same semantics as the sled
//! backend (revisions, compare-and-swap, change log, compaction, watch) with nothing on disk.

use crate::watch::{self, EventHub};
use crate::{
    Error, Event, EventKind, Record, Result, Revision, Store, ValueFn, WatchStream, check_expected,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// A store that keeps everything in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    hub: Hub,
}

struct Hub(EventHub);

impl Default for Hub {
    fn default() -> Self {
        Hub(EventHub::new())
    }
}

#[derive(Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    objects: BTreeMap<String, Record>,
    log: VecDeque<Event>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(
        &self,
        key: &str,
        decide: impl FnOnce(Option<&Record>, Revision) -> Result<(EventKind, Record)>,
    ) -> Result<Record> {
        let mut state = self.lock();
        let revision = state.revision + 1;
        let (kind, record) = decide(state.objects.get(key), revision)?;
        state.revision = revision;
        match kind {
            EventKind::Delete => {
                state.objects.remove(key);
            }
            _ => {
                state.objects.insert(key.to_string(), record.clone());
            }
        }
        let event = Event {
            kind,
            revision,
            key: key.to_string(),
            value: record.value.clone(),
        };
        state.log.push_back(event.clone());
        // Published under the lock so events leave in revision order.
        self.hub.0.publish(Arc::new(event));
        Ok(record)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Record>>> {
        futures::future::ready(Ok(self.lock().objects.get(key).cloned())).boxed()
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Record>, Revision)>> {
        let state = self.lock();
        let records = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect();
        futures::future::ready(Ok((records, state.revision))).boxed()
    }

    fn create(&self, key: &str, value: ValueFn) -> BoxFuture<'_, Result<Record>> {
        let result = self.apply(key, |current, revision| {
            if current.is_some() {
                return Err(Error::AlreadyExists {
                    key: key.to_string(),
                });
            }
            Ok((
                EventKind::Create,
                Record {
                    key: key.to_string(),
                    value: value(revision),
                    create_revision: revision,
                    mod_revision: revision,
                },
            ))
        });
        futures::future::ready(result).boxed()
    }

    fn update(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: ValueFn,
    ) -> BoxFuture<'_, Result<Record>> {
        let result = self.apply(key, |current, revision| {
            let current = current.ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })?;
            check_expected(key, current, expected)?;
            Ok((
                EventKind::Update,
                Record {
                    key: key.to_string(),
                    value: value(revision),
                    create_revision: current.create_revision,
                    mod_revision: revision,
                },
            ))
        });
        futures::future::ready(result).boxed()
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<Record>> {
        let result = self.apply(key, |current, revision| {
            let current = current.ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })?;
            check_expected(key, current, expected)?;
            Ok((
                EventKind::Delete,
                Record {
                    mod_revision: revision,
                    ..current.clone()
                },
            ))
        });
        futures::future::ready(result).boxed()
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let state = self.lock();
        if after < state.compacted {
            return Err(Error::Expired {
                requested: after,
                compacted: state.compacted,
            });
        }
        // Subscribing under the lock: no event can be published between replay and live.
        let live = self.hub.0.subscribe();
        let start = state.log.partition_point(|e| e.revision <= after);
        let replay: Vec<Event> = state
            .log
            .range(start..)
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        drop(state);
        Ok(watch::join(prefix, after, replay, live))
    }

    fn revision(&self) -> Revision {
        self.lock().revision
    }

    fn compacted(&self) -> Revision {
        self.lock().compacted
    }

    fn compact(&self, floor: Revision) -> BoxFuture<'_, Result<()>> {
        let mut state = self.lock();
        let floor = floor.min(state.revision);
        if floor > state.compacted {
            state.compacted = floor;
            while state.log.front().is_some_and(|e| e.revision <= floor) {
                state.log.pop_front();
            }
        }
        futures::future::ready(Ok(())).boxed()
    }
}
