//! API errors as Kubernetes `Status` objects: every failure the server returns is one of these,
//! with the HTTP code and `reason` the Kubernetes API server uses for the same situation.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrovirt_api::Invalid;
use ferrovirt_store::StoreError;
use serde_json::{Value, json};

/// A failed request, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), when known.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }

    /// `<qualified> "<name>" not found` with details, as Kubernetes.
    pub fn object_not_found(qualified: &str, name: &str) -> Self {
        let (resource, group) = qualified.split_once('.').unwrap_or((qualified, ""));
        Self {
            details: Some(json!({"name": name, "group": group, "kind": resource})),
            ..Self::not_found(format!("{qualified} \"{name}\" not found"))
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit} bytes"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let details = match &error {
            StoreError::NotFound { resource, name }
            | StoreError::AlreadyExists { resource, name }
            | StoreError::Conflict { resource, name, .. }
            | StoreError::PreconditionFailed { resource, name, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            StoreError::Invalid { field, message } => Some(json!({
                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]
            })),
            _ => None,
        };
        let code = error.http_status();
        if code >= 500 {
            tracing::error!(error = %error, "store failure");
        }
        Self {
            code,
            reason: error.reason(),
            message: error.to_string(),
            details,
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        let status = invalid.to_status_json();
        Self {
            code: 422,
            reason: "Invalid",
            message: invalid.message(),
            details: status.get("details").cloned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::encode::json_response(code, &self.to_status())
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_kubernetes_codes() {
        let err: ApiError = StoreError::NotFound {
            resource: "virtualmachines.kubevirt.io".into(),
            name: "x".into(),
        }
        .into();
        assert_eq!(err.code, 404);
        let status = err.to_status();
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["details"]["kind"], "virtualmachines");
        assert_eq!(status["details"]["group"], "kubevirt.io");
        assert_eq!(
            status["message"],
            "virtualmachines.kubevirt.io \"x\" not found"
        );
    }
}
