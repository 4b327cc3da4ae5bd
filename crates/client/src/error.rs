//! The one error type of the client library.
//!
//! A request either reached the server and was refused ([`Error::Api`], carrying the
//! Kubernetes `Status` the server sent), or failed on this side: the connection could not be
//! set up, an object did not (de)serialize, or a watch stream misbehaved. Callers mostly ask
//! the helpers ([`Error::is_not_found`], [`Error::is_conflict`], [`Error::is_expired`]) rather
//! than matching variants.

use rkube_types::{ApiError, Reason};

/// Everything that can go wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request, or the call failed on the way (then the reason is
    /// `ServiceUnavailable`, `Timeout`, ...): the Kubernetes error decoded from the gRPC status.
    /// Boxed to keep `Result`s small.
    #[error(transparent)]
    Api(Box<ApiError>),

    /// An object or event from the server is not valid JSON for the expected type.
    #[error("decoding an object from the server failed: {0}")]
    Decode(#[source] serde_json::Error),

    /// An object or patch could not be turned into JSON.
    #[error("encoding a request body failed: {0}")]
    Encode(#[source] serde_json::Error),

    /// The channel to the server could not be built (bad endpoint address, ...).
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The connection settings are unusable (an unreadable or malformed kubeconfig, ...).
    #[error("client configuration: {0}")]
    Config(String),

    /// The client was built outside a Tokio runtime, which its connection needs.
    #[error("a client must be created inside a tokio runtime")]
    NoRuntime,

    /// A watch event had a type other than ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
    #[error("watch event of unknown type {0:?}")]
    UnknownEventType(String),

    /// A watch stream was closed by the server right after it was opened, without a single
    /// event; the watcher reports it so that backoff applies before the next attempt.
    #[error("watch stream ended without events")]
    WatchEnded,
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The Kubernetes error, when the server (or the gRPC layer) refused the call.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Api(err) => Some(err.as_ref()),
            _ => None,
        }
    }

    /// The Kubernetes reason of a refused call.
    pub fn reason(&self) -> Option<Reason> {
        self.api_error().map(|err| err.reason)
    }

    /// 404: the object (or its namespace, or the resource) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.reason() == Some(Reason::NotFound)
    }

    /// 409 Conflict: a write lost a compare-and-swap race; re-read and retry.
    pub fn is_conflict(&self) -> bool {
        self.reason() == Some(Reason::Conflict)
    }

    /// 409 AlreadyExists: a create found the name taken.
    pub fn is_already_exists(&self) -> bool {
        self.reason() == Some(Reason::AlreadyExists)
    }

    /// 410: the resourceVersion asked for is older than the history the server keeps; a
    /// watcher must list again.
    pub fn is_expired(&self) -> bool {
        matches!(self.reason(), Some(Reason::Expired | Reason::Gone))
    }
}

impl From<ApiError> for Error {
    fn from(err: ApiError) -> Self {
        Error::Api(Box::new(err))
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from(rkube_rpc::from_grpc(&status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_read_the_reason() {
        let err = Error::from(ApiError::not_found("", "pods", "web"));
        assert!(err.is_not_found());
        assert!(!err.is_conflict());
        assert_eq!(err.to_string(), "404 (NotFound): pods \"web\" not found");

        let err = Error::from(ApiError::conflict("", "pods", "web", "stale"));
        assert!(err.is_conflict());

        let err = Error::from(ApiError::expired("too old"));
        assert!(err.is_expired());

        assert!(!Error::WatchEnded.is_expired());
        assert_eq!(Error::WatchEnded.reason(), None);
    }

    #[test]
    fn grpc_status_becomes_api_error() {
        let err = Error::from(tonic::Status::out_of_range("resource version too old"));
        assert!(err.is_expired());
        let err = Error::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(err.reason(), Some(Reason::ServiceUnavailable));
    }
}
