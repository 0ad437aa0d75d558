//! The Kubernetes `Status` bodies of authentication and authorization failures (401 and 403),
//! byte-compatible with kube-apiserver's so kubectl prints them as it does for a real cluster.

use serde_json::{Value, json};

/// A failure `Status` object (`kind: Status`, `apiVersion: v1`).
pub fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let (Some(details), Some(map)) = (details, status.as_object_mut()) {
        map.insert("details".to_owned(), details);
    }
    status
}

/// kube-apiserver's 401 body: message and reason `Unauthorized`.
pub fn unauthorized() -> Value {
    failure(401, "Unauthorized", "Unauthorized", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_is_kube_apiservers() {
        assert_eq!(
            unauthorized(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"Unauthorized","reason":"Unauthorized","code":401})
        );
    }
}
