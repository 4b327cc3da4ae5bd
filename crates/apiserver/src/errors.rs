//! The one mapping from store errors to Kubernetes errors.

use rkube_store::Error as StoreError;
use rkube_types::{ApiError, Reason, ResourceInfo};

/// Kubernetes' message for a lost compare-and-swap.
pub const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// The Kubernetes error for a failed store call on `info`/`name`.
pub fn from_store(info: &ResourceInfo, name: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(info.group, info.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(info.group, info.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(info.group, info.plural, name, MODIFIED),
        StoreError::Expired {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::Closed => {
            ApiError::new(Reason::ServiceUnavailable, "the apiserver is shutting down")
        }
        e @ StoreError::Indeterminate(_) => {
            tracing::error!(error = %e, resource = info.plural, name, "write may not be durable");
            ApiError::internal(format!(
                "the write to {} {name:?} may or may not have been persisted; read it back",
                info.plural
            ))
        }
        e => {
            tracing::error!(error = %e, resource = info.plural, name, "store failure");
            ApiError::internal(e.to_string())
        }
    }
}
