//! Store errors, and whether a failed write may still have happened.

use crate::Revision;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A create found the key already present. Nothing was written.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// An update or delete found no such key. Nothing was written.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The key's revision was not the one expected. Nothing was written.
    #[error("key {key:?} is at revision {actual}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision the key has.
        actual: Revision,
    },
    /// The requested revision has been compacted away.
    #[error("revision {requested} is older than the compaction floor {compacted}")]
    Expired {
        /// The revision asked for.
        requested: Revision,
        /// The compaction floor.
        compacted: Revision,
    },
    /// A watcher fell too far behind the live stream; it may resume after `last`.
    #[error("watch fell behind after revision {last}")]
    WatchLagged {
        /// The last revision the watcher received.
        last: Revision,
    },
    /// The backend failed before applying the write. Nothing was written.
    #[error("storage backend failed")]
    Backend(#[source] sled::Error),
    /// The write was applied but flushing it to disk failed: it may or may not survive a
    /// crash. Callers re-read instead of guessing.
    #[error("write may not be durable")]
    Indeterminate(#[source] sled::Error),
    /// Stored bytes could not be decoded.
    #[error("corrupt record at {0:?}")]
    Corrupt(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

impl Error {
    /// Whether a failed write may nevertheless have been applied.
    pub fn may_have_happened(&self) -> bool {
        matches!(self, Error::Indeterminate(_) | Error::Closed)
    }
}

/// Store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
