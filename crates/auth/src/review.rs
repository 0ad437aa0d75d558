//! `SelfSubjectAccessReview` (`authorization.k8s.io/v1`): what `kubectl auth can-i` creates to ask
//! whether the requesting user may do something. The server answers with the same object, its
//! `status` filled by the RBAC evaluator; nothing is stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rbac::{Attributes, RbacPolicy};
use crate::user::UserInfo;

pub const AUTHORIZATION_API_VERSION: &str = "authorization.k8s.io/v1";

/// The review object, request and response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfSubjectAccessReview {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub spec: SelfSubjectAccessReviewSpec,
    #[serde(default)]
    pub status: SubjectAccessReviewStatus,
}

fn api_version() -> String {
    AUTHORIZATION_API_VERSION.to_owned()
}
fn kind() -> String {
    "SelfSubjectAccessReview".to_owned()
}

/// Exactly one of the two must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfSubjectAccessReviewSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_attributes: Option<ResourceAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_resource_attributes: Option<NonResourceAttributes>,
}

/// `kubectl auth can-i VERB RESOURCE[/NAME] [--subresource S] [-n NS]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAttributes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Newer fields (fieldSelector, labelSelector) are kept but not evaluated, as RBAC ignores them.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `kubectl auth can-i VERB /path`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NonResourceAttributes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAccessReviewStatus {
    #[serde(default)]
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub evaluation_error: String,
}

/// A review the server must refuse with 422 Invalid (field path and message as Kubernetes').
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: {field}: Invalid value: {value}: {message}"
)]
pub struct InvalidReview {
    pub field: &'static str,
    pub value: String,
    pub message: &'static str,
}

impl SelfSubjectAccessReview {
    /// The request attributes of the review, for `user`.
    pub fn attributes(&self, user: &UserInfo) -> Result<Attributes, InvalidReview> {
        match (
            &self.spec.resource_attributes,
            &self.spec.non_resource_attributes,
        ) {
            (Some(r), None) => Ok(Attributes {
                user: user.clone(),
                verb: r.verb.clone(),
                resource_request: true,
                api_group: r.group.clone(),
                api_version: r.version.clone(),
                resource: r.resource.clone(),
                subresource: r.subresource.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                path: String::new(),
            }),
            (None, Some(n)) => Ok(Attributes::non_resource(user.clone(), &n.verb, &n.path)),
            (Some(_), Some(n)) => Err(InvalidReview {
                field: "spec.nonResourceAttributes",
                value: serde_json::to_string(n).unwrap_or_default(),
                message: "cannot be specified in combination with resourceAttributes",
            }),
            (None, None) => Err(InvalidReview {
                field: "spec.resourceAttributes",
                value: "\"null\"".to_owned(),
                message: "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            }),
        }
    }
}

/// Answers a review for the requesting `user`: the request with its `status` filled.
pub fn review(
    policy: &RbacPolicy,
    user: &UserInfo,
    mut request: SelfSubjectAccessReview,
) -> Result<SelfSubjectAccessReview, InvalidReview> {
    let attributes = request.attributes(user)?;
    let decision = policy.authorize(&attributes);
    request.status = SubjectAccessReviewStatus {
        allowed: decision.allowed,
        denied: false,
        reason: decision.reason,
        evaluation_error: String::new(),
    };
    request.api_version = api_version();
    request.kind = kind();
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::ALL_AUTHENTICATED;
    use serde_json::json;

    /// The body `kubectl auth can-i create virtualmachines.kubevirt.io -n default` sends.
    fn kubectl_body() -> Value {
        json!({"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1",
               "metadata":{"creationTimestamp":null},
               "spec":{"resourceAttributes":{"namespace":"default","verb":"create",
                                             "group":"kubevirt.io","resource":"virtualmachines"}},
               "status":{"allowed":false}})
    }

    #[test]
    fn kubectl_can_i() {
        let policy = RbacPolicy::bootstrap();
        let request: SelfSubjectAccessReview = serde_json::from_value(kubectl_body()).unwrap();

        let admin = review(&policy, &UserInfo::admin(), request.clone()).unwrap();
        assert!(admin.status.allowed);
        let body = serde_json::to_value(&admin).unwrap();
        assert_eq!(body["status"], json!({"allowed": true}));
        assert_eq!(body["spec"], kubectl_body()["spec"]);
        assert_eq!(body["metadata"], json!({"creationTimestamp": null}));

        let nobody = UserInfo::authenticated("bob", "", Vec::new());
        let denied = review(&policy, &nobody, request).unwrap();
        assert!(!denied.status.allowed);
        assert_eq!(
            serde_json::to_value(&denied).unwrap()["status"],
            json!({"allowed": false})
        );

        // Non-resource: `kubectl auth can-i get /version`.
        let version: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"nonResourceAttributes": {"path": "/version", "verb": "get"}}}))
        .unwrap();
        let answer = review(&policy, &nobody, version).unwrap();
        assert!(answer.status.allowed);
        assert!(
            answer
                .status
                .reason
                .starts_with("RBAC: allowed by ClusterRoleBinding \"system:discovery\""),
            "{}",
            answer.status.reason
        );
        let _ = ALL_AUTHENTICATED;
    }

    #[test]
    fn exactly_one_kind_of_attributes() {
        let policy = RbacPolicy::bootstrap();
        let empty: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {}})).unwrap();
        let err = review(&policy, &UserInfo::admin(), empty).unwrap_err();
        assert_eq!(err.field, "spec.resourceAttributes");
        assert!(err.to_string().contains("exactly one of"));
        let both: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
            "resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/", "verb": "get"}}})).unwrap();
        assert_eq!(
            review(&policy, &UserInfo::admin(), both).unwrap_err().field,
            "spec.nonResourceAttributes"
        );
    }
}
