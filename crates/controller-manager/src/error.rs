//! Errors of reconciles. A failed reconcile is retried with the key's backoff, so the only
//! thing that matters about an error is what it says in the log.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the apiserver failed.
    #[error(transparent)]
    Api(#[from] rkube_client::Error),
    /// An object the controller read cannot be acted on as it is (e.g. a selector that does
    /// not parse); retried in case it is fixed.
    #[error("{0}")]
    Invalid(String),
}

/// A reconcile's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
