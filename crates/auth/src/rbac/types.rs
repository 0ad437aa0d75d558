//! `rbac.authorization.k8s.io/v1` objects with Kubernetes' JSON field names. Metadata fields this
//! crate does not read (uid, resourceVersion, ...) are kept as they came.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The API group of RBAC objects and role references.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// `apiVersion` of RBAC objects.
pub const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// The parts of `metadata` RBAC evaluation reads; everything else is kept in `rest`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl ObjectMeta {
    pub fn named(name: &str) -> Self {
        ObjectMeta {
            name: name.to_owned(),
            ..ObjectMeta::default()
        }
    }
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        rename = "nonResourceURLs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A resource rule: `verbs` on `resources` in `groups`.
    pub fn resources(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..PolicyRule::default()
        }
    }

    /// A non-resource rule: `verbs` on URL paths (a trailing `*` matches any suffix).
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        PolicyRule {
            verbs: strings(verbs),
            non_resource_urls: strings(urls),
            ..PolicyRule::default()
        }
    }

    /// This rule restricted to the named objects.
    pub fn named(mut self, names: &[&str]) -> Self {
        self.resource_names = strings(names);
        self
    }
}

pub(crate) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A namespaced set of rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    #[serde(default = "rbac_api_version")]
    pub api_version: String,
    #[serde(default = "role_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rules: Vec<PolicyRule>,
}

/// A cluster-wide set of rules, possibly aggregated from other ClusterRoles by label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRole {
    #[serde(default = "rbac_api_version")]
    pub api_version: String,
    #[serde(default = "cluster_role_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rules: Vec<PolicyRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_rule: Option<AggregationRule>,
}

/// Which ClusterRoles' rules an aggregated ClusterRole gathers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry: `In`, `NotIn`, `Exists`, `DoesNotExist`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` match, as `metav1.LabelSelectorAsSelector` evaluates it. An empty
    /// selector matches everything; an unknown operator matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let labels_match = self
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        labels_match
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// Grants a Role or ClusterRole's rules to subjects within one namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    #[serde(default = "rbac_api_version")]
    pub api_version: String,
    #[serde(default = "role_binding_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub subjects: Vec<Subject>,
    pub role_ref: RoleRef,
}

/// Grants a ClusterRole's rules to subjects in every namespace and at the cluster scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRoleBinding {
    #[serde(default = "rbac_api_version")]
    pub api_version: String,
    #[serde(default = "cluster_role_binding_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub subjects: Vec<Subject>,
    pub role_ref: RoleRef,
}

/// Who a binding is for: `User`, `Group` or `ServiceAccount`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Subject {
    pub fn user(name: &str) -> Self {
        Subject {
            kind: "User".to_owned(),
            api_group: RBAC_GROUP.to_owned(),
            name: name.to_owned(),
            namespace: None,
        }
    }

    pub fn group(name: &str) -> Self {
        Subject {
            kind: "Group".to_owned(),
            api_group: RBAC_GROUP.to_owned(),
            name: name.to_owned(),
            namespace: None,
        }
    }

    pub fn service_account(namespace: &str, name: &str) -> Self {
        Subject {
            kind: "ServiceAccount".to_owned(),
            api_group: String::new(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
        }
    }
}

/// The role a binding grants.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

impl RoleRef {
    pub fn cluster_role(name: &str) -> Self {
        RoleRef {
            api_group: RBAC_GROUP.to_owned(),
            kind: "ClusterRole".to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn role(name: &str) -> Self {
        RoleRef {
            api_group: RBAC_GROUP.to_owned(),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        }
    }
}

impl Role {
    pub fn new(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Self {
        let mut metadata = ObjectMeta::named(name);
        metadata.namespace = Some(namespace.to_owned());
        Role {
            api_version: rbac_api_version(),
            kind: role_kind(),
            metadata,
            rules,
        }
    }
}

impl ClusterRole {
    pub fn new(name: &str, rules: Vec<PolicyRule>) -> Self {
        ClusterRole {
            api_version: rbac_api_version(),
            kind: cluster_role_kind(),
            metadata: ObjectMeta::named(name),
            rules,
            aggregation_rule: None,
        }
    }
}

impl RoleBinding {
    pub fn new(namespace: &str, name: &str, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        let mut metadata = ObjectMeta::named(name);
        metadata.namespace = Some(namespace.to_owned());
        RoleBinding {
            api_version: rbac_api_version(),
            kind: role_binding_kind(),
            metadata,
            subjects,
            role_ref,
        }
    }
}

impl ClusterRoleBinding {
    pub fn new(name: &str, role_ref: RoleRef, subjects: Vec<Subject>) -> Self {
        ClusterRoleBinding {
            api_version: rbac_api_version(),
            kind: cluster_role_binding_kind(),
            metadata: ObjectMeta::named(name),
            subjects,
            role_ref,
        }
    }
}

fn rbac_api_version() -> String {
    RBAC_API_VERSION.to_owned()
}
fn role_kind() -> String {
    "Role".to_owned()
}
fn cluster_role_kind() -> String {
    "ClusterRole".to_owned()
}
fn role_binding_kind() -> String {
    "RoleBinding".to_owned()
}
fn cluster_role_binding_kind() -> String {
    "ClusterRoleBinding".to_owned()
}

/// `null` lists (as Go writes empty slices) read as empty.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}
