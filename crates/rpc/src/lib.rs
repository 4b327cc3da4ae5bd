//! The rkube gRPC API, generated from `proto/rkube/v1/api.proto`, and the mapping between
//! Kubernetes errors ([`ApiError`]) and gRPC statuses.
//!
//! A failed call carries the full Kubernetes `Status` JSON in the gRPC status details, so the
//! HTTP code, reason and field causes survive the trip; the gRPC code is chosen to be the
//! closest match for clients that only look at it.

use rkube_types::{ApiError, Reason};

/// Generated messages and the `Resources` service (client and server).
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("rkube.v1");
}

pub use v1::resources_client::ResourcesClient;
pub use v1::resources_server::{Resources, ResourcesServer};

/// Objects (and thus request bodies) larger than this are refused with 413, as etcd does.
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024 / 2;

/// gRPC messages may be larger than one object (a list); this is the limit both ends use.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// The gRPC code closest to a Kubernetes reason.
pub fn grpc_code(reason: Reason) -> tonic::Code {
    use tonic::Code;
    match reason {
        Reason::BadRequest | Reason::Invalid | Reason::MethodNotAllowed => Code::InvalidArgument,
        Reason::UnsupportedMediaType => Code::InvalidArgument,
        Reason::Unauthorized => Code::Unauthenticated,
        Reason::Forbidden => Code::PermissionDenied,
        Reason::NotFound => Code::NotFound,
        Reason::AlreadyExists => Code::AlreadyExists,
        Reason::Conflict => Code::Aborted,
        Reason::Expired | Reason::Gone => Code::OutOfRange,
        Reason::RequestEntityTooLarge | Reason::TooManyRequests => Code::ResourceExhausted,
        Reason::InternalError => Code::Internal,
        Reason::ServiceUnavailable => Code::Unavailable,
        Reason::Timeout => Code::DeadlineExceeded,
    }
}

/// Encodes a Kubernetes error as a gRPC status carrying the `Status` JSON in its details.
pub fn to_grpc(err: &ApiError) -> tonic::Status {
    let details = serde_json::to_vec(&err.to_status()).unwrap_or_default();
    tonic::Status::with_details(grpc_code(err.reason), err.message.clone(), details.into())
}

/// Decodes a gRPC status into a Kubernetes error: from the `Status` JSON when the server sent
/// one, otherwise from the gRPC code (transport failures, deadlines).
pub fn from_grpc(status: &tonic::Status) -> ApiError {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(status.details())
        && let Some(err) = ApiError::from_status(&json)
    {
        return err;
    }
    use tonic::Code;
    let reason = match status.code() {
        Code::InvalidArgument => Reason::BadRequest,
        Code::NotFound => Reason::NotFound,
        Code::AlreadyExists => Reason::AlreadyExists,
        Code::Aborted => Reason::Conflict,
        Code::OutOfRange => Reason::Expired,
        Code::ResourceExhausted => Reason::TooManyRequests,
        Code::Unauthenticated => Reason::Unauthorized,
        Code::PermissionDenied => Reason::Forbidden,
        Code::DeadlineExceeded => Reason::Timeout,
        Code::Unavailable | Code::Cancelled | Code::Unknown => Reason::ServiceUnavailable,
        _ => Reason::InternalError,
    };
    ApiError::new(reason, status.message().to_string())
}

impl v1::ResourceRef {
    /// A reference to `group/version/resource`, optionally within `namespace`.
    pub fn new(group: &str, version: &str, resource: &str, namespace: &str) -> Self {
        v1::ResourceRef {
            group: group.to_string(),
            version: version.to_string(),
            resource: resource.to_string(),
            namespace: namespace.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_types::StatusCause;

    #[test]
    fn status_survives_grpc() {
        let err = ApiError::invalid(
            "",
            "ConfigMap",
            "configmaps",
            "x",
            vec![StatusCause::required("metadata.name")],
        );
        let status = to_grpc(&err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(from_grpc(&status), err);
    }

    #[test]
    fn bare_grpc_codes_map_to_reasons() {
        let err = from_grpc(&tonic::Status::unavailable("connection refused"));
        assert_eq!(err.reason, Reason::ServiceUnavailable);
        assert_eq!(err.code(), 503);
    }
}
