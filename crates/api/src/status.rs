//! Admission results as Kubernetes reports them: `StatusCause` (type, message, field) and the
//! `Invalid` error (HTTP 422 `Status`, and kubectl's one-line rendering).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `metav1.CauseType` values used by admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CauseType {
    FieldValueInvalid,
    FieldValueRequired,
    FieldValueNotSupported,
    FieldValueDuplicate,
    FieldValueNotFound,
    FieldValueForbidden,
    UnexpectedServerResponse,
}

impl CauseType {
    /// The wire spelling (`FieldValueInvalid`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CauseType::FieldValueInvalid => "FieldValueInvalid",
            CauseType::FieldValueRequired => "FieldValueRequired",
            CauseType::FieldValueNotSupported => "FieldValueNotSupported",
            CauseType::FieldValueDuplicate => "FieldValueDuplicate",
            CauseType::FieldValueNotFound => "FieldValueNotFound",
            CauseType::FieldValueForbidden => "FieldValueForbidden",
            CauseType::UnexpectedServerResponse => "UnexpectedServerResponse",
        }
    }
}

/// `metav1.StatusCause`: one reason an object was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    #[serde(rename = "reason")]
    pub reason_type: CauseType,
    pub message: String,
    /// The field path, e.g. `spec.template.spec.domain.devices.tpm.persistent`; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl StatusCause {
    /// A `FieldValueInvalid` cause.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(CauseType::FieldValueInvalid, field, message)
    }

    /// A cause of any type.
    pub fn new(
        reason_type: CauseType,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            reason_type,
            message: message.into(),
            field: field.into(),
        }
    }

    /// `field: message`, or just the message when there is no field (kubectl's rendering).
    pub fn render(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An object was rejected by admission: HTTP 422 with a `Status` of reason `Invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// Kind of the rejected object, e.g. `VirtualMachine`.
    pub kind: String,
    /// API group, e.g. `kubevirt.io` (empty for the core group).
    pub group: String,
    /// Object name (may be empty when only generateName was given).
    pub name: String,
    /// Why, in KubeVirt's order.
    pub causes: Vec<StatusCause>,
}

impl Invalid {
    /// The Status message: `The <Kind> "<name>" is invalid: <causes>`, one cause as `field: message`,
    /// several as kubectl prints an aggregate: `[field: message, field: message]`.
    pub fn message(&self) -> String {
        let mut rendered: Vec<String> = Vec::new();
        for cause in &self.causes {
            let line = cause.render();
            if !rendered.contains(&line) {
                rendered.push(line);
            }
        }
        let aggregate = match rendered.as_slice() {
            [] => String::from("unknown error"),
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        format!(
            "The {} {:?} is invalid: {}",
            self.kind, self.name, aggregate
        )
    }

    /// The Kubernetes `Status` object for this error (what the REST API returns with code 422).
    pub fn to_status_json(&self) -> Value {
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|c| {
                let mut cause = json!({ "reason": c.reason_type.as_str(), "message": c.message });
                if !c.field.is_empty() {
                    cause["field"] = Value::String(c.field.clone());
                }
                cause
            })
            .collect();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": "Invalid",
            "details": {
                "name": self.name,
                "group": self.group,
                "kind": self.kind,
                "causes": causes,
            },
            "code": 422,
        })
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(causes: Vec<StatusCause>) -> Invalid {
        Invalid {
            kind: "VirtualMachine".into(),
            group: "kubevirt.io".into(),
            name: "vm".into(),
            causes,
        }
    }

    #[test]
    fn one_cause_is_rendered_plain_several_as_an_aggregate() {
        let one = invalid(vec![StatusCause::invalid("spec.running", "bad")]);
        assert_eq!(
            one.message(),
            r#"The VirtualMachine "vm" is invalid: spec.running: bad"#
        );
        let two = invalid(vec![
            StatusCause::invalid("a", "x"),
            StatusCause::new(CauseType::FieldValueRequired, "", "y"),
        ]);
        assert_eq!(
            two.message(),
            r#"The VirtualMachine "vm" is invalid: [a: x, y]"#
        );
    }

    #[test]
    fn status_json_has_kubernetes_shape() {
        let status = invalid(vec![StatusCause::invalid("spec.x", "bad")]).to_status_json();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["status"], "Failure");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueInvalid"
        );
        assert_eq!(status["details"]["causes"][0]["field"], "spec.x");
        assert_eq!(status["details"]["group"], "kubevirt.io");
    }
}
