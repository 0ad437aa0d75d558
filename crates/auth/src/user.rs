//! The identity of a request, as Kubernetes' `user.Info`: name, uid, groups and extra.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The group every authenticated user is in.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of requests without credentials.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group that may do anything (Kubernetes' `system:masters`).
pub const SYSTEM_PRIVILEGED_GROUP: &str = "system:masters";
/// The user of the admin token that `ferrovirt serve` creates at first start.
pub const ADMIN_USER: &str = "ferrovirt-admin";

/// A user as Kubernetes knows it (`authentication.k8s.io/v1` UserInfo in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(rename = "username", default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// An authenticated user: `groups` plus `system:authenticated` (added once, as Kubernetes'
    /// authenticators do).
    pub fn authenticated(
        name: impl Into<String>,
        uid: impl Into<String>,
        groups: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == ALL_AUTHENTICATED) {
            groups.push(ALL_AUTHENTICATED.to_owned());
        }
        UserInfo {
            name: name.into(),
            uid: uid.into(),
            groups,
            extra: BTreeMap::new(),
        }
    }

    /// The user of the admin token: `ferrovirt-admin` in `system:masters`.
    pub fn admin() -> Self {
        Self::authenticated(ADMIN_USER, "", [SYSTEM_PRIVILEGED_GROUP.to_owned()])
    }

    /// The user of a request without credentials: `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.to_owned(),
            uid: String::new(),
            groups: vec![ALL_UNAUTHENTICATED.to_owned()],
            extra: BTreeMap::new(),
        }
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_users_get_the_group_once() {
        let u = UserInfo::authenticated(
            "alice",
            "1",
            ["dev".to_owned(), ALL_AUTHENTICATED.to_owned()],
        );
        assert_eq!(u.groups, vec!["dev", ALL_AUTHENTICATED]);
        let admin = UserInfo::admin();
        assert!(admin.in_group(SYSTEM_PRIVILEGED_GROUP) && admin.in_group(ALL_AUTHENTICATED));
        assert!(UserInfo::anonymous().is_anonymous());
        assert!(!UserInfo::anonymous().in_group(ALL_AUTHENTICATED));
    }

    #[test]
    fn json_shape_is_kubernetes_user_info() {
        let u = UserInfo::authenticated("alice", "", Vec::new());
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            serde_json::json!({"username": "alice", "groups": ["system:authenticated"]})
        );
    }
}
