//! Kubernetes API errors and their `metav1.Status` form.
//!
//! Every layer of rkube that refuses a request builds an [`ApiError`]; this module is the one
//! place that knows how such an error looks as a Kubernetes `Status` object (HTTP code, reason,
//! message, details with field causes). The gRPC mapping lives in `rkube-rpc`, beside it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The machine-readable reason of a failed request (`Status.reason`), as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// 400: the request could not be understood (malformed body, bad selector, ...).
    BadRequest,
    /// 401: the client did not authenticate.
    Unauthorized,
    /// 403: the client is not allowed to do this.
    Forbidden,
    /// 404: the object or resource does not exist.
    NotFound,
    /// 409: the object already exists.
    AlreadyExists,
    /// 409: the write lost a compare-and-swap race (stale resourceVersion or precondition).
    Conflict,
    /// 410: the requested resourceVersion is older than the history kept.
    Expired,
    /// 410: the object is gone.
    Gone,
    /// 413: the request or the object is too large.
    RequestEntityTooLarge,
    /// 415: the content type is not supported.
    UnsupportedMediaType,
    /// 422: the object failed validation; see the causes.
    Invalid,
    /// 429: the server is overloaded; retry later.
    TooManyRequests,
    /// 500: an unexpected failure inside the server.
    InternalError,
    /// 503: the server cannot serve the request now.
    ServiceUnavailable,
    /// 504: the server did not finish in time.
    Timeout,
    /// 405: the verb is not supported on this resource.
    MethodNotAllowed,
}

impl Reason {
    /// The HTTP status code Kubernetes uses for this reason.
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Expired | Reason::Gone => 410,
            Reason::RequestEntityTooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
        }
    }

    /// The reason as it appears in `Status.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Expired => "Expired",
            Reason::Gone => "Gone",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::Invalid => "Invalid",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
        }
    }

    /// Parses a `Status.reason`; unknown reasons map to `None`.
    pub fn parse(s: &str) -> Option<Reason> {
        Some(match s {
            "BadRequest" => Reason::BadRequest,
            "Unauthorized" => Reason::Unauthorized,
            "Forbidden" => Reason::Forbidden,
            "NotFound" => Reason::NotFound,
            "MethodNotAllowed" => Reason::MethodNotAllowed,
            "AlreadyExists" => Reason::AlreadyExists,
            "Conflict" => Reason::Conflict,
            "Expired" => Reason::Expired,
            "Gone" => Reason::Gone,
            "RequestEntityTooLarge" => Reason::RequestEntityTooLarge,
            "UnsupportedMediaType" => Reason::UnsupportedMediaType,
            "Invalid" => Reason::Invalid,
            "TooManyRequests" => Reason::TooManyRequests,
            "InternalError" => Reason::InternalError,
            "ServiceUnavailable" => Reason::ServiceUnavailable,
            "Timeout" => Reason::Timeout,
            _ => return None,
        })
    }
}

/// One field-level cause of a failure (`Status.details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Machine-readable cause, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// JSON path of the field at fault, e.g. `metadata.name`, `spec.containers[0].image`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl StatusCause {
    /// A cause with the given reason, field and message.
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        StatusCause {
            reason: reason.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// `FieldValueRequired` at `field`.
    pub fn required(field: impl Into<String>) -> Self {
        Self::new("FieldValueRequired", field, "Required value")
    }

    /// `FieldValueInvalid` at `field`, with the offending value quoted in the message.
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl AsRef<str>) -> Self {
        Self::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {value:?}: {}", detail.as_ref()),
        )
    }

    /// `FieldValueForbidden` at `field`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            "FieldValueForbidden",
            field,
            format!("Forbidden: {}", detail.into()),
        )
    }

    /// `FieldValueNotSupported` at `field`.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        )
    }

    /// `FieldValueDuplicate` at `field`.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {value:?}"),
        )
    }
}

impl fmt::Display for StatusCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A refused request, in Kubernetes terms. Converts losslessly to and from `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Why the request failed; decides the HTTP code.
    pub reason: Reason,
    /// Human-readable message, as kubectl prints it after `Error from server (Reason):`.
    pub message: String,
    /// `details.group` of the object concerned.
    pub group: String,
    /// `details.kind` (the resource, e.g. `pods`) of the object concerned.
    pub kind: String,
    /// `details.name` of the object concerned.
    pub name: String,
    /// `details.causes`.
    pub causes: Vec<StatusCause>,
    /// `details.retryAfterSeconds`, for 429 and 503.
    pub retry_after_seconds: Option<i32>,
}

impl ApiError {
    /// An error with a reason and a message and no details.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            group: String::new(),
            kind: String::new(),
            name: String::new(),
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    /// Names the object concerned in `details`.
    pub fn with_details(mut self, group: &str, resource: &str, name: &str) -> Self {
        self.group = group.to_string();
        self.kind = resource.to_string();
        self.name = name.to_string();
        self
    }

    /// Adds `cause` to `details.causes`.
    pub fn with_cause(mut self, cause: StatusCause) -> Self {
        self.causes.push(cause);
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            Reason::InternalError,
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 404 NotFound for `resource` (plural, with group suffix if any) named `name`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            Reason::NotFound,
            format!("{} {name:?} not found", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            Reason::AlreadyExists,
            format!("{} {name:?} already exists", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409 Conflict, with Kubernetes' wording for a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        Self::new(
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {detail}",
                qualified(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 410 Expired: the resourceVersion is below what is kept.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(Reason::Expired, message)
    }

    /// 422 Invalid, with field causes; the message lists them as Kubernetes does.
    pub fn invalid(
        group: &str,
        kind: &str,
        resource: &str,
        name: &str,
        causes: Vec<StatusCause>,
    ) -> Self {
        let list: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut err = Self::new(
            Reason::Invalid,
            format!("{kind} {name:?} is invalid: {summary}"),
        )
        .with_details(group, resource, name);
        // Kubernetes puts the kind, not the plural, into details.kind for Invalid.
        err.kind = kind.to_string();
        err.causes = causes;
        err
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Reason::RequestEntityTooLarge, message)
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// The `metav1.Status` JSON object for this error.
    pub fn to_status(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code(),
        });
        let mut details = serde_json::Map::new();
        if !self.name.is_empty() {
            details.insert("name".into(), self.name.clone().into());
        }
        if !self.group.is_empty() {
            details.insert("group".into(), self.group.clone().into());
        }
        if !self.kind.is_empty() {
            details.insert("kind".into(), self.kind.clone().into());
        }
        if !self.causes.is_empty() {
            details.insert(
                "causes".into(),
                serde_json::to_value(&self.causes).unwrap_or_default(),
            );
        }
        if let Some(secs) = self.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), secs.into());
        }
        if !details.is_empty() {
            status["details"] = serde_json::Value::Object(details);
        }
        status
    }

    /// Reads a `metav1.Status` JSON object back; `None` if it is not a failure Status.
    pub fn from_status(status: &serde_json::Value) -> Option<ApiError> {
        let reason_str = status.get("reason").and_then(|r| r.as_str()).unwrap_or("");
        let code = status.get("code").and_then(|c| c.as_u64()).unwrap_or(500) as u16;
        let reason = Reason::parse(reason_str).unwrap_or(match code {
            400 => Reason::BadRequest,
            404 => Reason::NotFound,
            409 => Reason::Conflict,
            410 => Reason::Expired,
            422 => Reason::Invalid,
            429 => Reason::TooManyRequests,
            _ => Reason::InternalError,
        });
        let details = status.get("details");
        let text = |v: Option<&serde_json::Value>, k: &str| {
            v.and_then(|d| d.get(k))
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_string()
        };
        Some(ApiError {
            reason,
            message: text(Some(status), "message"),
            group: text(details, "group"),
            kind: text(details, "kind"),
            name: text(details, "name"),
            causes: details
                .and_then(|d| d.get("causes"))
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default(),
            retry_after_seconds: details
                .and_then(|d| d.get("retryAfterSeconds"))
                .and_then(|s| s.as_i64())
                .map(|s| s as i32),
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code(),
            self.reason.as_str(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// `resource.group`, or `resource` in the core group, as Kubernetes names a resource in errors.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_causes() {
        let err = ApiError::invalid(
            "",
            "Pod",
            "pods",
            "Bad_Name",
            vec![StatusCause::invalid(
                "metadata.name",
                "Bad_Name",
                "must be lowercase",
            )],
        );
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(ApiError::from_status(&status), Some(err));
    }

    #[test]
    fn not_found_message_matches_kubernetes() {
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" not found");
        assert_eq!(err.code(), 404);
    }
}
