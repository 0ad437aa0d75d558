//! The two questions a client asks about itself, answered and never stored:
//! `SelfSubjectAccessReview` (`authorization.k8s.io/v1`, `kubectl auth can-i`: may I do this?)
//! evaluated with the RBAC policy in force, and `SelfSubjectReview` (`authentication.k8s.io/v1`,
//! `kubectl auth whoami` and the web UI's login: who am I?).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrovirt_auth::UserInfo;
use ferrovirt_auth::review::{SelfSubjectAccessReview, review};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::encode::json_response;
use crate::error::ApiError;
use crate::http::decode_object;
use crate::request::{ApiRequest, Target};

/// Answers a review `POST` (201 with the review and its status).
pub fn answer(app: &AppState, request: &ApiRequest, body: &[u8]) -> Response {
    let user = request.user.clone().unwrap_or_else(UserInfo::anonymous);
    let decoded = if request.content_type == crate::protobuf::MEDIA_TYPE {
        crate::protobuf::decode_review(body)
    } else {
        decode_object(&request.content_type, body)
    };
    let object = match decoded {
        Ok(object) => object,
        Err(error) => return error.into_response(),
    };
    let answer = match request.target {
        Target::SelfSubjectAccessReview => access_review(app, &user, object),
        _ => Ok(self_subject_review(&user, &object)),
    };
    match answer {
        Ok(value) => json_response(StatusCode::CREATED, &value),
        Err(error) => error.into_response(),
    }
}

fn access_review(app: &AppState, user: &UserInfo, object: Value) -> Result<Value, ApiError> {
    let asked: SelfSubjectAccessReview = serde_json::from_value(object).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a SelfSubjectAccessReview (authorization.k8s.io/v1): {e}"
        ))
    })?;
    let answered = review(&app.policy.current(), user, asked)
        .map_err(|invalid| ApiError::invalid(invalid.to_string()))?;
    serde_json::to_value(answered).map_err(|e| ApiError::internal(e.to_string()))
}

/// `SelfSubjectReview` with `status.userInfo` (Kubernetes' shape: username, uid, groups, extra).
pub fn self_subject_review(user: &UserInfo, asked: &Value) -> Value {
    let metadata = asked
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({"creationTimestamp": null}));
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": metadata,
        "status": {"userInfo": user},
    })
}
