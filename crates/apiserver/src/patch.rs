//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch.
//!
//! Strategic merge patch is applied as a JSON merge patch after removing its `$`-directives
//! (`$patch`, `$retainKeys`, `$setElementOrder/...`, `$deleteFromPrimitiveList/...`): none of the
//! kinds served here declares merge keys for lists, so for them Kubernetes' strategic merge
//! replaces lists as a merge patch does. Server-side apply (`application/apply-patch+yaml`) is not
//! supported (415).

use serde_json::Value;

use crate::error::ApiError;

/// The patch formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
}

impl PatchKind {
    /// From the request's `Content-Type` (415 when it is not a patch type we apply).
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies a patch body to `target`.
pub fn apply(kind: PatchKind, target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    match kind {
        PatchKind::Merge => {
            require_object(&patch)?;
            json_patch::merge(target, &patch);
        }
        PatchKind::Strategic => {
            require_object(&patch)?;
            let mut patch = patch;
            strip_directives(&mut patch);
            json_patch::merge(target, &patch);
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
            })?;
            json_patch::patch(target, &ops).map_err(|e| {
                ApiError::invalid(format!("the JSON patch could not be applied: {e}"))
            })?;
        }
    }
    Ok(())
}

fn require_object(patch: &Value) -> Result<(), ApiError> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request("a merge patch must be a JSON object"))
    }
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !key.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_and_removes() {
        let mut obj =
            json!({"spec": {"running": true, "a": 1}, "metadata": {"labels": {"x": "1"}}});
        apply(
            PatchKind::Merge,
            &mut obj,
            br#"{"spec":{"running":false,"a":null},"metadata":{"labels":{"y":"2"}}}"#,
        )
        .unwrap();
        assert_eq!(
            obj,
            json!({"spec": {"running": false}, "metadata": {"labels": {"x": "1", "y": "2"}}})
        );
    }

    #[test]
    fn strategic_merge_drops_directives() {
        let mut obj = json!({"spec": {"list": [1, 2]}});
        apply(
            PatchKind::Strategic,
            &mut obj,
            br#"{"$setElementOrder/list":[3],"spec":{"list":[3],"$retainKeys":["list"]}}"#,
        )
        .unwrap();
        assert_eq!(obj, json!({"spec": {"list": [3]}}));
    }

    #[test]
    fn json_patch_ops_and_errors() {
        let mut obj = json!({"spec": {"runStrategy": "Always"}});
        apply(
            PatchKind::Json,
            &mut obj,
            br#"[{"op":"replace","path":"/spec/runStrategy","value":"Halted"}]"#,
        )
        .unwrap();
        assert_eq!(obj["spec"]["runStrategy"], "Halted");
        let err = apply(
            PatchKind::Json,
            &mut obj,
            br#"[{"op":"test","path":"/spec/runStrategy","value":"Always"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            apply(PatchKind::Merge, &mut obj, b"[1]").unwrap_err().code,
            400
        );
        assert_eq!(
            apply(PatchKind::Json, &mut obj, b"{}").unwrap_err().code,
            400
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml")
                .unwrap_err()
                .code,
            415
        );
    }
}
