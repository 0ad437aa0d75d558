//! Identity of a stored resource type: API group + plural resource name + scope.

use std::fmt;

/// A resource type as the API server routes it, e.g. `virtualmachines` in `kubevirt.io`
/// (namespaced) or `storageclasses` in `storage.k8s.io` (cluster-scoped). The core group is `""`.
/// Objects are keyed by (group, resource, namespace, name); the version is not part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKind {
    /// API group, `""` for the core group (`v1` Namespace, PersistentVolumeClaim, Event).
    pub group: String,
    /// Plural lower-case resource name, e.g. `virtualmachines`.
    pub resource: String,
    /// Whether objects live in a namespace (`metadata.namespace` required) or are cluster-scoped.
    pub namespaced: bool,
}

impl ResourceKind {
    pub fn new(group: impl Into<String>, resource: impl Into<String>, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
            namespaced,
        }
    }

    /// `resource.group` as Kubernetes prints it in messages (`virtualmachines.kubevirt.io`),
    /// just `resource` for the core group (`persistentvolumeclaims`).
    pub fn qualified_name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        assert_eq!(
            ResourceKind::new("kubevirt.io", "virtualmachines", true).qualified_name(),
            "virtualmachines.kubevirt.io"
        );
        assert_eq!(
            ResourceKind::new("", "persistentvolumeclaims", true).qualified_name(),
            "persistentvolumeclaims"
        );
    }
}
