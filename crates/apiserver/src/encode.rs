//! The last stage of a request: rendering what a handler produced as an HTTP response (JSON bodies
//! with their status code). Imports nothing of this crate, so the error type and every handler can
//! use it without a cycle.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, value: &Value) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes_response(code, bytes)
}

/// Adds Kubernetes' `Warning: 299 - "text"` headers (kubectl prints `Warning: text`).
pub fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = header::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A response from already-serialized JSON.
pub fn bytes_response(code: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `200 OK` with a JSON object.
pub fn ok(value: &Value) -> Response {
    json_response(StatusCode::OK, value)
}
