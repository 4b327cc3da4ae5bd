//! The durable backend: one sled tree, group-committed flushes, and a change log.
//!
//! Writers take a short lock to number their write and apply it (object, log entry and
//! revision counter in one atomic sled batch), then wait for a flush. A single flusher thread
//! flushes whatever has accumulated since its previous flush, so every write that arrives
//! during one fsync shares the next. Only after a flush are the writers acknowledged and their
//! events published to watchers.

use crate::codec::{self, LOG, META_COMPACTED, META_REVISION};
use crate::disk_sync::DiskSync;
use crate::watch::{self, EventHub};
use crate::{
    Error, Event, EventKind, FlushStats, Record, Result, Revision, Store, ValueFn, WatchStream,
    check_expected,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// How many change-log entries one compaction batch removes before yielding to writers.
const COMPACTION_BATCH: usize = 1_000;

/// Settings of the sled backend.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Directory of the database; created if missing.
    pub path: PathBuf,
    /// Size of sled's page cache in bytes.
    pub cache_capacity: u64,
    /// How long the flusher waits after the first write of a group before flushing, so more
    /// writes join it (PostgreSQL's `commit_delay`). Zero flushes at once; a longer delay
    /// trades latency for fewer fsyncs on slow disks.
    pub flush_delay: std::time::Duration,
}

impl SledOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledOptions {
            path: path.into(),
            cache_capacity: 64 * 1024 * 1024,
            flush_delay: std::time::Duration::ZERO,
        }
    }
}

/// The durable, group-committing sled store.
pub struct SledStore {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    db: sled::Db,
    disk: Mutex<DiskSync>,
    writer: Mutex<Pending>,
    work: Condvar,
    flushed: tokio::sync::watch::Sender<Flushed>,
    hub: EventHub,
    compacted: AtomicU64,
    compacting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    flushes: AtomicU64,
    flushed_writes: AtomicU64,
    flush_delay: std::time::Duration,
}

/// Writes applied to sled but not yet flushed.
struct Pending {
    /// The last revision handed out.
    revision: Revision,
    events: Vec<Event>,
    /// The flusher sleeps on the condition variable: a write must wake it. While it is
    /// flushing, writes only queue (a wake-up is a syscall on every write otherwise).
    flusher_idle: bool,
}

/// What the flusher has made durable.
#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Writes up to here are settled (durable, or failed as below).
    revision: Revision,
    /// Set by the first failed flush: writes after `.0` may or may not be on disk. The store
    /// then refuses every further write (after a failed fsync the kernel may have dropped the
    /// pages, so later flushes prove nothing) until it is reopened.
    failed: Option<(Revision, String)>,
}

impl SledStore {
    /// Opens (or creates) the database and starts its flusher.
    pub fn open(options: &SledOptions) -> Result<Self> {
        let db = sled::Config::new()
            .path(&options.path)
            .cache_capacity(options.cache_capacity)
            // Flushing is ours to schedule (group commit); no background timer.
            .flush_every_ms(None)
            .open()
            .map_err(Error::Backend)?;
        let revision = codec::decode_u64(db.get(META_REVISION).map_err(Error::Backend)?.as_deref());
        let compacted =
            codec::decode_u64(db.get(META_COMPACTED).map_err(Error::Backend)?.as_deref());
        let disk = DiskSync::open(&options.path).map_err(|e| Error::Backend(sled::Error::Io(e)))?;
        let (flushed, _) = tokio::sync::watch::channel(Flushed {
            revision,
            failed: None,
        });
        let shared = Arc::new(Shared {
            db,
            disk: Mutex::new(disk),
            writer: Mutex::new(Pending {
                revision,
                events: Vec::new(),
                flusher_idle: false,
            }),
            work: Condvar::new(),
            flushed,
            hub: EventHub::new(),
            compacted: AtomicU64::new(compacted),
            compacting: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            flushed_writes: AtomicU64::new(0),
            flush_delay: options.flush_delay,
        });
        let for_flusher = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("rkube-store-flush".into())
            .spawn(move || for_flusher.run_flusher())
            .map_err(|e| Error::Backend(sled::Error::Io(e)))?;
        tracing::info!(path = %options.path.display(), revision, compacted, "sled store opened");
        Ok(SledStore {
            shared,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.shared.db.size_on_disk().unwrap_or(0)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.work.notify_all();
        let handle = self
            .flusher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The flusher loop: take everything pending, flush once, settle those writers.
    fn run_flusher(&self) {
        loop {
            {
                let mut pending = self.lock();
                while pending.events.is_empty() && !self.closed.load(Ordering::SeqCst) {
                    pending.flusher_idle = true;
                    pending = self
                        .work
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                pending.flusher_idle = false;
                if pending.events.is_empty() {
                    break;
                }
            }
            if !self.flush_delay.is_zero() {
                std::thread::sleep(self.flush_delay);
            }
            let (target, events) = {
                let mut pending = self.lock();
                (pending.revision, std::mem::take(&mut pending.events))
            };
            let result = self.flush();
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.flushed_writes
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            let previous = self.flushed.borrow().revision;
            // Settle first, publish second: a watcher that subscribes between the two replays
            // up to `target` from the log and drops the published duplicates, never a gap.
            if let Err(e) = result {
                tracing::error!(error = %e, after = previous, "store flush failed; refusing further writes");
                self.closed.store(true, Ordering::SeqCst);
                self.flushed.send_modify(|f| {
                    f.revision = target;
                    f.failed = Some((previous, e.to_string()));
                });
                // Nothing is published: no watcher may see a write that may not survive.
                return;
            }
            self.flushed.send_modify(|f| f.revision = target);
            for event in events {
                self.hub.publish(Arc::new(event));
            }
        }
        let _ = self.flush();
    }

    /// One group commit: sled's flush, then the fsyncs sled leaves out.
    fn flush(&self) -> sled::Result<()> {
        self.db.flush()?;
        self.disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sync()
            .map_err(sled::Error::Io)
    }

    /// Applies one write under the writer lock: `decide` sees the current record and returns
    /// the event to write; the object, log entry and revision go to sled in one batch.
    fn apply(
        &self,
        key: &str,
        decide: impl FnOnce(Option<Record>, Revision) -> Result<(EventKind, Record)>,
    ) -> Result<Record> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let object_key = codec::object_key(key);
        let mut pending = self.lock();
        let current = match self.db.get(&object_key).map_err(Error::Backend)? {
            Some(raw) => Some(codec::decode_object(key, &raw)?),
            None => None,
        };
        let revision = pending.revision + 1;
        let (kind, record) = decide(current, revision)?;
        let mut batch = sled::Batch::default();
        match kind {
            EventKind::Delete => batch.remove(object_key),
            _ => batch.insert(
                object_key,
                codec::encode_object(record.create_revision, revision, &record.value),
            ),
        }
        batch.insert(
            &codec::log_key(revision),
            codec::encode_event(kind, key, &record.value),
        );
        batch.insert(META_REVISION, &revision.to_be_bytes());
        self.db.apply_batch(batch).map_err(Error::Backend)?;
        pending.revision = revision;
        pending.events.push(Event {
            kind,
            revision,
            key: key.to_string(),
            value: record.value.clone(),
        });
        let wake = std::mem::take(&mut pending.flusher_idle);
        drop(pending);
        if wake {
            self.work.notify_one();
        }
        Ok(record)
    }

    /// Waits until the flusher has settled `revision`.
    async fn durable(&self, revision: Revision) -> Result<()> {
        let mut rx = self.flushed.subscribe();
        let flushed = rx
            .wait_for(|f| f.revision >= revision)
            .await
            .map_err(|_| Error::Closed)?;
        match &flushed.failed {
            Some((after, msg)) if revision > *after => Err(Error::Indeterminate(sled::Error::Io(
                std::io::Error::other(msg.clone()),
            ))),
            _ => Ok(()),
        }
    }

    fn read_log(&self, after: Revision, through: Revision) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        if through <= after {
            return Ok(events);
        }
        for item in self
            .db
            .range(codec::log_key(after + 1)..=codec::log_key(through))
        {
            let (k, v) = item.map_err(Error::Backend)?;
            if k.len() != 9 || k[0] != LOG {
                continue;
            }
            events.push(codec::decode_event(codec::u64_at(&k, 1), &v)?);
        }
        Ok(events)
    }
}

impl Store for SledStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Record>>> {
        let result = (|| match self
            .shared
            .db
            .get(codec::object_key(key))
            .map_err(Error::Backend)?
        {
            Some(raw) => Ok(Some(codec::decode_object(key, &raw)?)),
            None => Ok(None),
        })();
        futures::future::ready(result).boxed()
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Record>, Revision)>> {
        let result = (|| {
            // A snapshot: writers wait while the scan runs (lists of the store happen only
            // when the apiserver loads its caches).
            let pending = self.shared.lock();
            let revision = pending.revision;
            let mut records = Vec::new();
            for item in self.shared.db.scan_prefix(codec::object_key(prefix)) {
                let (k, v) = item.map_err(Error::Backend)?;
                let key = std::str::from_utf8(&k[1..])
                    .map_err(|_| Error::Corrupt(String::from_utf8_lossy(&k).into_owned()))?;
                records.push(codec::decode_object(key, &v)?);
            }
            drop(pending);
            Ok((records, revision))
        })();
        async move {
            let (records, revision) = result?;
            self.shared.durable(revision).await?;
            Ok((records, revision))
        }
        .boxed()
    }

    fn create(&self, key: &str, value: ValueFn) -> BoxFuture<'_, Result<Record>> {
        let key = key.to_string();
        async move {
            let record = self.shared.apply(&key, |current, revision| {
                if current.is_some() {
                    return Err(Error::AlreadyExists { key: key.clone() });
                }
                Ok((
                    EventKind::Create,
                    Record {
                        key: key.clone(),
                        value: value(revision),
                        create_revision: revision,
                        mod_revision: revision,
                    },
                ))
            })?;
            self.shared.durable(record.mod_revision).await?;
            Ok(record)
        }
        .boxed()
    }

    fn update(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: ValueFn,
    ) -> BoxFuture<'_, Result<Record>> {
        let key = key.to_string();
        async move {
            let record = self.shared.apply(&key, |current, revision| {
                let current = current.ok_or_else(|| Error::NotFound { key: key.clone() })?;
                check_expected(&key, &current, expected)?;
                Ok((
                    EventKind::Update,
                    Record {
                        key: key.clone(),
                        value: value(revision),
                        create_revision: current.create_revision,
                        mod_revision: revision,
                    },
                ))
            })?;
            self.shared.durable(record.mod_revision).await?;
            Ok(record)
        }
        .boxed()
    }

    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<Record>> {
        let key = key.to_string();
        async move {
            let record = self.shared.apply(&key, |current, revision| {
                let current = current.ok_or_else(|| Error::NotFound { key: key.clone() })?;
                check_expected(&key, &current, expected)?;
                Ok((
                    EventKind::Delete,
                    Record {
                        mod_revision: revision,
                        ..current
                    },
                ))
            })?;
            self.shared.durable(record.mod_revision).await?;
            Ok(record)
        }
        .boxed()
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let live = self.shared.hub.subscribe();
        let through = self.revision();
        let compacted = self.compacted();
        if after < compacted {
            return Err(Error::Expired {
                requested: after,
                compacted,
            });
        }
        let replay = self.shared.read_log(after, through)?;
        // A compaction that raced with the read may have removed part of it.
        let compacted = self.compacted();
        if after < compacted {
            return Err(Error::Expired {
                requested: after,
                compacted,
            });
        }
        Ok(watch::join(prefix, after, replay, live))
    }

    fn revision(&self) -> Revision {
        self.shared.flushed.borrow().revision
    }

    fn compacted(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    fn flush_stats(&self) -> FlushStats {
        FlushStats {
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            writes: self.shared.flushed_writes.load(Ordering::Relaxed),
        }
    }

    fn compact(&self, floor: Revision) -> BoxFuture<'_, Result<()>> {
        async move {
            let _one_at_a_time = self.shared.compacting.lock().await;
            let floor = floor.min(self.revision());
            if floor <= self.compacted() {
                return Ok(());
            }
            let db = &self.shared.db;
            // The floor goes to disk before any entry goes, so no restart can ever replay a
            // log with a hole in it.
            db.insert(META_COMPACTED, &floor.to_be_bytes())
                .map_err(Error::Backend)?;
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.flush())
                .await
                .map_err(|e| Error::Indeterminate(sled::Error::Io(std::io::Error::other(e))))?
                .map_err(Error::Indeterminate)?;
            self.shared.compacted.store(floor, Ordering::SeqCst);
            loop {
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for item in db.range(codec::log_key(0)..=codec::log_key(floor)) {
                    let (k, _) = item.map_err(Error::Backend)?;
                    batch.remove(k);
                    n += 1;
                    if n == COMPACTION_BATCH {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
                db.apply_batch(batch).map_err(Error::Backend)?;
                tokio::task::yield_now().await;
            }
            tracing::debug!(floor, "store compacted");
            Ok(())
        }
        .boxed()
    }
}
