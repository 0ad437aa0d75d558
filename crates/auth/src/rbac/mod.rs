//! RBAC as Kubernetes evaluates it (`plugin/pkg/auth/authorizer/rbac`): a request's
//! [`Attributes`] are allowed when a rule of a role bound to the user allows them; there are no
//! deny rules. ClusterRoleBindings apply everywhere; RoleBindings only in their namespace (also
//! when they bind a ClusterRole). Users in `system:masters` are allowed everything, as by
//! kube-apiserver's privileged-group authorizer that runs before RBAC.
//!
//! [`RbacPolicy`] is an immutable snapshot of the four kinds of objects; the server builds a new
//! one whenever one of them changes. [`bootstrap`] has Kubernetes' and KubeVirt's default roles.

pub mod bootstrap;
mod types;

use std::collections::{BTreeMap, HashMap};

pub use types::*;

use crate::user::{SYSTEM_PRIVILEGED_GROUP, UserInfo};

/// What a request wants to do, as Kubernetes' `authorizer.Attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or for
    /// non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// Whether this is a request for an API resource (else for a path such as `/healthz`).
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path (what non-resource rules match).
    pub path: String,
}

impl Attributes {
    /// A resource request: `verb` on `resource` of `api_group` (cluster scope, no name; add them
    /// with the builder methods).
    pub fn resource(user: UserInfo, verb: &str, api_group: &str, resource: &str) -> Self {
        Attributes {
            user,
            verb: verb.to_owned(),
            resource_request: true,
            api_group: api_group.to_owned(),
            resource: resource.to_owned(),
            ..Attributes::default()
        }
    }

    /// A non-resource request: `verb` on `path`.
    pub fn non_resource(user: UserInfo, verb: &str, path: &str) -> Self {
        Attributes {
            user,
            verb: verb.to_owned(),
            path: path.to_owned(),
            ..Attributes::default()
        }
    }

    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.to_owned();
        self
    }

    pub fn version(mut self, api_version: &str) -> Self {
        self.api_version = api_version.to_owned();
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_owned();
        self
    }

    /// `resource/subresource`, or `resource` when there is no subresource.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The verb of a resource request, as kube-apiserver's RequestInfo derives it from the HTTP
/// method: `GET` is `get` for a named object, `list` for a collection, `watch` with `?watch=true`
/// (or under `/watch/`); `DELETE` of a collection is `deletecollection`.
pub fn resource_verb(method: &str, named: bool, watch: bool) -> String {
    match method.to_ascii_uppercase().as_str() {
        "GET" | "HEAD" if watch => "watch".to_owned(),
        "GET" | "HEAD" if named => "get".to_owned(),
        "GET" | "HEAD" => "list".to_owned(),
        "POST" => "create".to_owned(),
        "PUT" => "update".to_owned(),
        "PATCH" => "patch".to_owned(),
        "DELETE" if named => "delete".to_owned(),
        "DELETE" => "deletecollection".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

/// The verb of a non-resource request: the lower-case HTTP method.
pub fn non_resource_verb(method: &str) -> String {
    method.to_ascii_lowercase()
}

/// An authorization decision and its reason (kube-apiserver's wording: `RBAC: allowed by ...`,
/// or on a denial the errors met while resolving roles, e.g. a binding to a missing role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// `verbs` contains `*` or `verb`.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

/// `apiGroups` contains `*` or `group`.
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == "*" || g == group)
}

/// `resources` contains `*`, the combined `resource/subresource`, or `*/subresource`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// `resourceNames` is empty or contains `name`.
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

/// `nonResourceURLs` contains `*`, `path`, or a prefix of `path` followed by `*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|_| path.starts_with(url.trim_end_matches('*')))
    })
}

/// Whether `rule` allows the request (Kubernetes' `RuleAllows`).
pub fn rule_allows(attributes: &Attributes, rule: &PolicyRule) -> bool {
    if attributes.resource_request {
        let combined = attributes.combined_resource();
        return verb_matches(rule, &attributes.verb)
            && api_group_matches(rule, &attributes.api_group)
            && resource_matches(rule, &combined, &attributes.subresource)
            && resource_name_matches(rule, &attributes.name);
    }
    verb_matches(rule, &attributes.verb) && non_resource_url_matches(rule, &attributes.path)
}

/// Whether `subject` names `user`; a ServiceAccount subject without namespace means one in the
/// binding's namespace.
pub fn applies_to_user(user: &UserInfo, subject: &Subject, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let namespace = match subject.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => ns,
                _ => binding_namespace,
            };
            !namespace.is_empty()
                && user.name == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

fn describe_subject(subject: &Subject, binding_namespace: &str) -> String {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            format!(
                "{} {:?}",
                subject.kind,
                format!("{}/{namespace}", subject.name)
            )
        }
        _ => format!("{} {:?}", subject.kind, subject.name),
    }
}

/// A snapshot of the RBAC objects, ready to answer authorization questions.
#[derive(Debug, Clone, Default)]
pub struct RbacPolicy {
    roles: HashMap<(String, String), Role>,
    cluster_roles: HashMap<String, ClusterRole>,
    role_bindings: BTreeMap<String, Vec<RoleBinding>>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl RbacPolicy {
    /// A policy from the objects in the store. Aggregated ClusterRoles get their rules from the
    /// ClusterRoles their selectors match (what Kubernetes' aggregation controller writes).
    pub fn new(
        roles: Vec<Role>,
        mut cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        mut cluster_role_bindings: Vec<ClusterRoleBinding>,
    ) -> Self {
        aggregate_cluster_roles(&mut cluster_roles);
        let roles = roles
            .into_iter()
            .map(|r| {
                let namespace = r.metadata.namespace.clone().unwrap_or_default();
                ((namespace, r.metadata.name.clone()), r)
            })
            .collect();
        let cluster_roles = cluster_roles
            .into_iter()
            .map(|r| (r.metadata.name.clone(), r))
            .collect();
        let mut by_namespace: BTreeMap<String, Vec<RoleBinding>> = BTreeMap::new();
        for binding in role_bindings {
            let namespace = binding.metadata.namespace.clone().unwrap_or_default();
            by_namespace.entry(namespace).or_default().push(binding);
        }
        for bindings in by_namespace.values_mut() {
            bindings.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        cluster_role_bindings.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        RbacPolicy {
            roles,
            cluster_roles,
            role_bindings: by_namespace,
            cluster_role_bindings,
        }
    }

    /// The default policy alone ([`bootstrap::cluster_roles`] and
    /// [`bootstrap::cluster_role_bindings`]).
    pub fn bootstrap() -> Self {
        Self::new(
            Vec::new(),
            bootstrap::cluster_roles(),
            Vec::new(),
            bootstrap::cluster_role_bindings(),
        )
    }

    fn role_reference_rules(
        &self,
        role_ref: &RoleRef,
        binding_namespace: &str,
    ) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .get(&(binding_namespace.to_owned(), role_ref.name.clone()))
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {:?} not found",
                        role_ref.name
                    )
                }),
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// Visits the rules that apply to `user` in `namespace` (cluster-wide ones first), with a
    /// description of the binding that grants each, as Kubernetes' `VisitRulesFor`. Stops when
    /// `visit` returns false. Errors (bindings to missing roles) are collected and returned.
    pub fn visit_rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&dyn Fn() -> String, &PolicyRule) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for binding in &self.cluster_role_bindings {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| applies_to_user(user, s, ""))
            else {
                continue;
            };
            match self.role_reference_rules(&binding.role_ref, "") {
                Ok(rules) => {
                    let describe = || {
                        format!(
                            "ClusterRoleBinding {:?} of {} {:?} to {}",
                            binding.metadata.name,
                            binding.role_ref.kind,
                            binding.role_ref.name,
                            describe_subject(subject, "")
                        )
                    };
                    for rule in rules {
                        if !visit(&describe, rule) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if namespace.is_empty() {
            return errors;
        }
        for binding in self.role_bindings.get(namespace).into_iter().flatten() {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| applies_to_user(user, s, namespace))
            else {
                continue;
            };
            match self.role_reference_rules(&binding.role_ref, namespace) {
                Ok(rules) => {
                    let describe = || {
                        format!(
                            "RoleBinding {:?} of {} {:?} to {}",
                            format!("{}/{namespace}", binding.metadata.name),
                            binding.role_ref.kind,
                            binding.role_ref.name,
                            describe_subject(subject, namespace)
                        )
                    };
                    for rule in rules {
                        if !visit(&describe, rule) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Whether the request is allowed, and why.
    pub fn authorize(&self, attributes: &Attributes) -> Decision {
        if attributes.user.in_group(SYSTEM_PRIVILEGED_GROUP) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let mut allowed_by = None;
        let errors =
            self.visit_rules_for(&attributes.user, &attributes.namespace, |describe, rule| {
                if rule_allows(attributes, rule) {
                    allowed_by = Some(describe());
                    return false;
                }
                true
            });
        if let Some(source) = allowed_by {
            return Decision {
                allowed: true,
                reason: format!("RBAC: allowed by {source}"),
            };
        }
        let reason = match errors.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        };
        Decision {
            allowed: false,
            reason,
        }
    }

    /// The ClusterRoles, aggregated (for seeding the store, or showing them).
    pub fn cluster_roles(&self) -> impl Iterator<Item = &ClusterRole> {
        self.cluster_roles.values()
    }
}

/// Fills the rules of every ClusterRole with an `aggregationRule` from the ClusterRoles its
/// selectors match (sorted by name, each rule once, itself excluded), repeating until nothing
/// changes so that aggregated roles can feed other aggregated roles (`view` -> `edit` ->
/// `admin`), as Kubernetes' ClusterRole aggregation controller does. Returns the names of the
/// roles whose rules changed.
pub fn aggregate_cluster_roles(roles: &mut [ClusterRole]) -> Vec<String> {
    let mut changed_names = Vec::new();
    for _ in 0..=roles.len() {
        let mut changed = false;
        for index in 0..roles.len() {
            let Some(rule) = roles[index].aggregation_rule.clone() else {
                continue;
            };
            let name = roles[index].metadata.name.clone();
            let mut sources: Vec<&ClusterRole> = roles
                .iter()
                .filter(|r| r.metadata.name != name)
                .filter(|r| {
                    rule.cluster_role_selectors
                        .iter()
                        .any(|s| s.matches(&r.metadata.labels))
                })
                .collect();
            sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let mut rules: Vec<PolicyRule> = Vec::new();
            for source in sources {
                for r in &source.rules {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
            if roles[index].rules != rules {
                roles[index].rules = rules;
                changed = true;
                if !changed_names.contains(&name) {
                    changed_names.push(name);
                }
            }
        }
        if !changed {
            break;
        }
    }
    changed_names
}

/// Why a request was refused, as kube-apiserver builds the 403 `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The whole message, e.g. `virtualmachines.kubevirt.io "vm1" is forbidden: User "u" cannot
    /// delete resource "virtualmachines" in API group "kubevirt.io" in the namespace "default"`.
    pub message: String,
    pub group: String,
    pub resource: String,
    pub name: String,
}

impl Forbidden {
    /// The refusal of `attributes`, with the authorizer's `reason` appended when there is one.
    pub fn new(attributes: &Attributes, reason: &str) -> Self {
        let message = forbidden_message(attributes);
        let error = if reason.is_empty() {
            message
        } else {
            format!("{message}: {reason}")
        };
        let qualified = if attributes.api_group.is_empty() {
            attributes.resource.clone()
        } else {
            format!("{}.{}", attributes.resource, attributes.api_group)
        };
        let message = if qualified.is_empty() {
            format!("forbidden: {error}")
        } else if attributes.name.is_empty() {
            format!("{qualified} is forbidden: {error}")
        } else {
            format!("{qualified} {:?} is forbidden: {error}", attributes.name)
        };
        Forbidden {
            message,
            group: attributes.api_group.clone(),
            resource: attributes.resource.clone(),
            name: attributes.name.clone(),
        }
    }

    /// The 403 `Status` body.
    pub fn status(&self) -> serde_json::Value {
        let mut details = serde_json::Map::new();
        for (key, value) in [
            ("name", &self.name),
            ("group", &self.group),
            ("kind", &self.resource),
        ] {
            if !value.is_empty() {
                details.insert(key.to_owned(), serde_json::Value::String(value.clone()));
            }
        }
        crate::status::failure(
            403,
            "Forbidden",
            &self.message,
            Some(serde_json::Value::Object(details)),
        )
    }
}

/// kube-apiserver's `forbiddenMessage`: `User "u" cannot VERB resource "R[/SUB]" in API group
/// "G" in the namespace "NS"` (or `at the cluster scope`), or `User "u" cannot VERB path "/p"`.
pub fn forbidden_message(attributes: &Attributes) -> String {
    let user = &attributes.user.name;
    let verb = &attributes.verb;
    if !attributes.resource_request {
        return format!("User {user:?} cannot {verb} path {:?}", attributes.path);
    }
    let resource = attributes.combined_resource();
    let group = &attributes.api_group;
    if attributes.namespace.is_empty() {
        format!(
            "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"
        )
    } else {
        format!(
            "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {:?}",
            attributes.namespace
        )
    }
}

#[cfg(test)]
mod tests;
