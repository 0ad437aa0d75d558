//! Request bodies (size limit, JSON or YAML) and field selectors, for the handlers. Headers are
//! not read here: the media type comes from the typed request ([`crate::request`]).

use axum::body::Body;
use serde_json::Value;

use crate::error::ApiError;

/// Largest request body accepted (the Kubernetes API server's limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub async fn read_body(body: Body) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))
}

/// Decodes an object body: JSON, or YAML for `application/yaml`. 415 for other media types.
pub fn decode_object(content_type: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    match content_type {
        "" | "application/json" | "*/*" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let mut values = ferrovirt_api::parse::parse_values(bytes, "request body")
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if values.len() != 1 {
                return Err(ApiError::bad_request(format!(
                    "the request body must hold exactly one object, found {}",
                    values.len()
                )));
            }
            Ok(values.remove(0))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A parsed `fieldSelector` (terms joined by `,`; all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector {text:?}: {term:?} is not field=value or field!=value"
                )));
            };
            terms.push(FieldRequirement {
                field: field.trim().to_owned(),
                value: value.trim().to_owned(),
                equal,
            });
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object matches (a missing field reads as `""`).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|req| {
            let pointer = format!("/{}", req.field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == req.value) == req.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_selectors() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "d"}, "involvedObject": {"name": "vm"}});
        assert!(
            FieldSelector::parse("metadata.name=a")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("metadata.name==a,metadata.namespace=d")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("involvedObject.name=vm")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("involvedObject.kind=")
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn bodies() {
        assert_eq!(
            decode_object("application/json", b"{\"a\":1}").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            decode_object("application/yaml", b"a: 1\n").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(decode_object("text/plain", b"x").unwrap_err().code, 415);
        assert_eq!(
            decode_object("application/json", b"{").unwrap_err().code,
            400
        );
    }
}
