//! Storage for rkube: the [`Store`] trait, a durable sled backend ([`SledStore`]), an
//! in-memory backend ([`MemoryStore`]) for tests, and the [`conformance`] suite both pass.
//!
//! The model follows etcd as the Kubernetes apiserver uses it: keys are
//! `/registry/{group}/{resource}/{namespace}/{name}`, one global revision counter numbers every
//! write (it is the objects' `resourceVersion`), updates compare-and-swap on the revision, and
//! `watch(prefix, after)` replays the change log after a revision and then goes live. The
//! change log is compacted incrementally; watching from below the compaction floor fails with
//! [`Error::Expired`].
//!
//! A write is acknowledged only once it is durable. The sled backend shares one flush between
//! all writes that arrive while the previous flush runs (group commit), and publishes events to
//! watchers only once they are durable, so no watcher ever sees a write that a crash undoes.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

mod codec;
pub mod conformance;
mod disk_sync;
mod error;
mod memory;
mod sled_store;
mod watch;

pub use error::{Error, Result};
pub use memory::MemoryStore;
pub use sled_store::{SledOptions, SledStore};

/// A position in the store's history: the number of the write that produced it.
pub type Revision = u64;

/// Builds the value to store once the write's revision is known, so that the stored bytes can
/// carry their own `resourceVersion` and are serialized once for storage and every watcher.
pub type ValueFn = Box<dyn FnOnce(Revision) -> Bytes + Send>;

/// One stored key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The full key.
    pub key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a deleted record: the deletion's).
    pub mod_revision: Revision,
}

/// What a write did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key did not exist before.
    Create,
    /// The key existed and was replaced.
    Update,
    /// The key was removed.
    Delete,
}

/// One entry of the change log, as watchers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The revision of the write.
    pub revision: Revision,
    /// The key written.
    pub key: String,
    /// The new value; for [`EventKind::Delete`], the last value the key had.
    pub value: Bytes,
}

/// How writes have shared flushes so far (group commit at work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Flushes (each one sled flush plus fsyncs) so far.
    pub flushes: u64,
    /// Writes those flushes made durable.
    pub writes: u64,
}

/// A live stream of events in revision order. It ends with an error if the watcher falls too
/// far behind ([`Error::WatchLagged`]) or the store shuts down.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The storage interface of the apiserver. Implementations are cheap to share (`Arc`).
///
/// Every write returns only once it is durable (for a persistent backend), and its event is
/// delivered to watchers in revision order, after it became durable.
pub trait Store: Send + Sync + 'static {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Record>>>;

    /// Every record whose key starts with `prefix`, in key order, and the revision of the
    /// store the list reflects.
    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<(Vec<Record>, Revision)>>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists.
    fn create(&self, key: &str, value: ValueFn) -> BoxFuture<'_, Result<Record>>;

    /// Replaces `key`. With `expected`, fails with [`Error::Conflict`] unless the key's
    /// current `mod_revision` equals it. Fails with [`Error::NotFound`] if the key is absent.
    fn update(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: ValueFn,
    ) -> BoxFuture<'_, Result<Record>>;

    /// Removes `key`, with the same precondition as [`Store::update`]. Returns the last value
    /// with `mod_revision` set to the deletion's revision.
    fn delete(&self, key: &str, expected: Option<Revision>) -> BoxFuture<'_, Result<Record>>;

    /// Events for keys under `prefix` with a revision greater than `after`, first replayed
    /// from the change log, then live. Fails with [`Error::Expired`] if `after` is below the
    /// compaction floor.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The newest revision that is durable and visible to watchers.
    fn revision(&self) -> Revision;

    /// The compaction floor: events at or below it are gone from the change log.
    fn compacted(&self) -> Revision;

    /// Drops change-log entries at or below `floor` (clamped to the current revision),
    /// in small batches, without holding up writers.
    fn compact(&self, floor: Revision) -> BoxFuture<'_, Result<()>>;

    /// Flush statistics; zero for a backend that does not flush.
    fn flush_stats(&self) -> FlushStats {
        FlushStats::default()
    }
}

/// Fails with [`Error::Conflict`] unless `current` is at the `expected` revision.
pub(crate) fn check_expected(
    key: &str,
    current: &Record,
    expected: Option<Revision>,
) -> Result<()> {
    match expected {
        Some(expected) if expected != current.mod_revision => Err(Error::Conflict {
            key: key.to_string(),
            expected,
            actual: current.mod_revision,
        }),
        _ => Ok(()),
    }
}
