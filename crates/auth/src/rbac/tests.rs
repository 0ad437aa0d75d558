//! Table tests of the evaluator against Kubernetes' semantics, including the cases of
//! kubernetes/kubernetes `plugin/pkg/auth/authorizer/rbac/rbac_test.go` (TestAuthorizer,
//! TestRuleMatches), `rule_test.go` (appliesTo) and the apiserver's `errors_test.go`
//! (forbidden messages).

use super::*;
use crate::user::{ALL_AUTHENTICATED, ALL_UNAUTHENTICATED};
use serde_json::json;

fn split(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').collect()
    }
}

/// Kubernetes' test helper `newRule(verbs, apiGroups, resources, nonResourceURLs)`.
fn new_rule(verbs: &str, groups: &str, resources: &str, urls: &str) -> PolicyRule {
    PolicyRule {
        verbs: types::strings(&split(verbs)),
        api_groups: types::strings(&split(groups)),
        resources: types::strings(&split(resources)),
        non_resource_urls: types::strings(&split(urls)),
        resource_names: Vec::new(),
    }
}

/// `"User:name"`, `"Group:name"`, `"ServiceAccount:ns:name"`.
fn subjects(specs: &[&str]) -> Vec<Subject> {
    specs
        .iter()
        .map(|spec| {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.as_slice() {
                ["User", name] => Subject::user(name),
                ["Group", name] => Subject::group(name),
                ["ServiceAccount", ns, name] => Subject::service_account(ns, name),
                _ => panic!("bad subject {spec}"),
            }
        })
        .collect()
}

fn user(name: &str, groups: &str) -> UserInfo {
    UserInfo {
        name: name.to_owned(),
        groups: types::strings(&split(groups)),
        ..UserInfo::default()
    }
}

/// Kubernetes' `defaultAttributes{user, groups, verb, resource, subresource, namespace, apiGroup}`.
fn attrs(
    name: &str,
    groups: &str,
    verb: &str,
    resource: &str,
    subresource: &str,
    namespace: &str,
    group: &str,
) -> Attributes {
    Attributes::resource(user(name, groups), verb, group, resource)
        .subresource(subresource)
        .in_namespace(namespace)
}

fn url(name: &str, groups: &str, verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(user(name, groups), verb, path)
}

struct Case {
    roles: Vec<Role>,
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    pass: Vec<Attributes>,
    fail: Vec<Attributes>,
}

fn run(case: Case) {
    let policy = RbacPolicy::new(
        case.roles,
        case.cluster_roles,
        case.role_bindings,
        case.cluster_role_bindings,
    );
    for a in &case.pass {
        assert!(policy.authorize(a).allowed, "should pass: {a:?}");
    }
    for a in &case.fail {
        assert!(!policy.authorize(a).allowed, "should fail: {a:?}");
    }
}

fn cluster_binding(role: &str, subject_specs: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding::new(role, RoleRef::cluster_role(role), subjects(subject_specs))
}

#[test]
fn kubernetes_authorizer_role_binding_to_cluster_role() {
    run(Case {
        roles: vec![],
        cluster_roles: vec![ClusterRole::new(
            "admin",
            vec![new_rule("*", "*", "*", "*")],
        )],
        role_bindings: vec![RoleBinding::new(
            "ns1",
            "admin",
            RoleRef::cluster_role("admin"),
            subjects(&["User:admin", "Group:admins"]),
        )],
        cluster_role_bindings: vec![],
        pass: vec![
            attrs("admin", "", "get", "Pods", "", "ns1", ""),
            attrs("admin", "", "watch", "Pods", "", "ns1", ""),
            attrs("admin", "group1", "watch", "Foobar", "", "ns1", ""),
            attrs("joe", "admins", "watch", "Foobar", "", "ns1", ""),
            attrs("joe", "group1,admins", "watch", "Foobar", "", "ns1", ""),
        ],
        fail: vec![
            attrs("admin", "", "GET", "Pods", "", "ns2", ""),
            attrs("admin", "", "GET", "Nodes", "", "", ""),
            attrs("admin", "admins", "GET", "Pods", "", "ns2", ""),
            attrs("admin", "admins", "GET", "Nodes", "", "", ""),
        ],
    });
}

#[test]
fn kubernetes_authorizer_non_resource_urls() {
    run(Case {
        roles: vec![],
        cluster_roles: vec![
            ClusterRole::new(
                "non-resource-url-getter",
                vec![new_rule("get", "", "", "/apis")],
            ),
            ClusterRole::new("non-resource-url", vec![new_rule("*", "", "", "/apis")]),
            ClusterRole::new(
                "non-resource-url-prefix",
                vec![new_rule("get", "", "", "/apis/*")],
            ),
        ],
        role_bindings: vec![],
        cluster_role_bindings: vec![
            cluster_binding("non-resource-url-getter", &["User:foo", "Group:bar"]),
            cluster_binding("non-resource-url", &["User:admin", "Group:admin"]),
            cluster_binding(
                "non-resource-url-prefix",
                &["User:prefixed", "Group:prefixed"],
            ),
        ],
        pass: vec![
            url("foo", "", "get", "/apis"),
            url("", "bar", "get", "/apis"),
            url("admin", "", "get", "/apis"),
            url("", "admin", "get", "/apis"),
            url("admin", "", "watch", "/apis"),
            url("", "admin", "watch", "/apis"),
            url("prefixed", "", "get", "/apis/v1"),
            url("", "prefixed", "get", "/apis/v1"),
            url("prefixed", "", "get", "/apis/v1/foobar"),
            url("", "prefixed", "get", "/apis/v1/foorbar"),
        ],
        fail: vec![
            // wrong verb
            url("foo", "", "watch", "/apis"),
            url("", "bar", "watch", "/apis"),
            // wrong path
            url("foo", "", "get", "/api/v1"),
            url("", "bar", "get", "/api/v1"),
            url("admin", "", "get", "/api/v1"),
            url("", "admin", "get", "/api/v1"),
            // not covered by prefix
            url("prefixed", "", "get", "/api/v1"),
            url("", "prefixed", "get", "/api/v1"),
        ],
    });
}

#[test]
fn kubernetes_authorizer_subresource_resolution() {
    let binding = || {
        vec![RoleBinding::new(
            "ns1",
            "admin",
            RoleRef::cluster_role("admin"),
            subjects(&["User:admin", "Group:admins"]),
        )]
    };
    run(Case {
        roles: vec![],
        cluster_roles: vec![ClusterRole::new(
            "admin",
            vec![new_rule("*", "*", "pods", "*")],
        )],
        role_bindings: binding(),
        cluster_role_bindings: vec![],
        pass: vec![attrs("admin", "", "get", "pods", "", "ns1", "")],
        fail: vec![attrs("admin", "", "get", "pods", "status", "ns1", "")],
    });
    run(Case {
        roles: vec![],
        cluster_roles: vec![ClusterRole::new(
            "admin",
            vec![
                new_rule("*", "*", "pods/status", "*"),
                new_rule("*", "*", "*/scale", "*"),
            ],
        )],
        role_bindings: binding(),
        cluster_role_bindings: vec![],
        pass: vec![
            attrs("admin", "", "get", "pods", "status", "ns1", ""),
            attrs("admin", "", "get", "pods", "scale", "ns1", ""),
            attrs("admin", "", "get", "deployments", "scale", "ns1", ""),
            attrs("admin", "", "get", "anything", "scale", "ns1", ""),
        ],
        fail: vec![attrs("admin", "", "get", "pods", "", "ns1", "")],
    });
}

#[test]
fn kubernetes_rule_matches() {
    let resource = |verb: &str, group: &str, res: &str, name: &str| {
        Attributes::resource(UserInfo::default(), verb, group, res).named(name)
    };
    let non_resource =
        |verb: &str, path: &str| Attributes::non_resource(UserInfo::default(), verb, path);
    type Expectations = Vec<(Attributes, bool)>;
    let table: Vec<(&str, PolicyRule, Expectations)> = vec![
        (
            "star verb, exact match other",
            PolicyRule::resources(&["*"], &["group1"], &["resource1"]),
            vec![
                (resource("verb1", "group1", "resource1", ""), true),
                (resource("verb1", "group2", "resource1", ""), false),
                (resource("verb1", "group1", "resource2", ""), false),
                (resource("verb1", "group2", "resource2", ""), false),
                (resource("verb2", "group1", "resource1", ""), true),
                (resource("verb2", "group2", "resource1", ""), false),
                (resource("verb2", "group1", "resource2", ""), false),
                (resource("verb2", "group2", "resource2", ""), false),
            ],
        ),
        (
            "star group, exact match other",
            PolicyRule::resources(&["verb1"], &["*"], &["resource1"]),
            vec![
                (resource("verb1", "group1", "resource1", ""), true),
                (resource("verb1", "group2", "resource1", ""), true),
                (resource("verb1", "group1", "resource2", ""), false),
                (resource("verb2", "group1", "resource1", ""), false),
            ],
        ),
        (
            "star resource, exact match other",
            PolicyRule::resources(&["verb1"], &["group1"], &["*"]),
            vec![
                (resource("verb1", "group1", "resource1", ""), true),
                (resource("verb1", "group2", "resource1", ""), false),
                (resource("verb1", "group1", "resource2", ""), true),
                (resource("verb2", "group1", "resource1", ""), false),
            ],
        ),
        (
            "tuple expansion",
            PolicyRule::resources(
                &["verb1", "verb2"],
                &["group1", "group2"],
                &["resource1", "resource2"],
            ),
            vec![
                (resource("verb1", "group1", "resource1", ""), true),
                (resource("verb1", "group2", "resource2", ""), true),
                (resource("verb2", "group2", "resource1", ""), true),
                (resource("verb3", "group1", "resource1", ""), false),
                (resource("verb1", "group3", "resource1", ""), false),
                (resource("verb1", "group1", "resource3", ""), false),
            ],
        ),
        (
            "resource names",
            PolicyRule::resources(&["*"], &["*"], &["*"]).named(&["foo", "bar"]),
            vec![
                (resource("verb1", "group1", "resource1", "foo"), true),
                (resource("verb1", "group1", "resource1", "bar"), true),
                (resource("verb1", "group1", "resource1", "baz"), false),
                (resource("verb1", "group1", "resource1", ""), false),
            ],
        ),
        (
            "non-resource urls",
            PolicyRule::urls(&["*"], &["/foo", "/foo/bar", "/foo/baz"]),
            vec![
                (non_resource("verb1", "/foo"), true),
                (non_resource("verb1", "/foo/bar"), true),
                (non_resource("verb1", "/foo/baz"), true),
                (non_resource("verb1", "/foo/bar/one"), false),
                (non_resource("verb1", "/foo/baz/one"), false),
                (non_resource("verb1", "/foo/bar/one/two"), false),
                (non_resource("verb1", "/bar"), false),
                (non_resource("verb1", "/bar/foo"), false),
            ],
        ),
        (
            "non-resource urls with *",
            PolicyRule::urls(&["*"], &["/foo/*", "/bar/*"]),
            vec![
                (non_resource("verb1", "/foo"), false),
                (non_resource("verb1", "/foo/"), true),
                (non_resource("verb1", "/foo/bar"), true),
                (non_resource("verb1", "/foo/bar/one"), true),
                (non_resource("verb1", "/bar/one"), true),
                (non_resource("verb1", "/baz"), false),
            ],
        ),
        (
            "resource rules do not match non-resource requests, and back",
            PolicyRule::resources(&["*"], &["*"], &["*"]),
            vec![(non_resource("get", "/healthz"), false)],
        ),
        (
            "verbs are case sensitive",
            PolicyRule::resources(&["get"], &["*"], &["*"]),
            vec![(resource("GET", "", "pods", ""), false)],
        ),
    ];
    for (name, rule, requests) in table {
        for (request, expected) in requests {
            assert_eq!(
                rule_allows(&request, &rule),
                expected,
                "{name}: {request:?}"
            );
        }
    }
    let url_rule = PolicyRule::urls(&["get"], &["*"]);
    assert!(!rule_allows(&resource("get", "", "pods", ""), &url_rule));
}

#[test]
fn kubernetes_applies_to() {
    let table: Vec<(&str, Vec<Subject>, UserInfo, &str, bool)> = vec![
        (
            "single subject that matches username",
            subjects(&["User:foobar"]),
            user("foobar", ""),
            "",
            true,
        ),
        (
            "single subject that does not match username",
            subjects(&["User:foobar"]),
            user("zimzam", ""),
            "",
            false,
        ),
        (
            "single subject that matches group",
            subjects(&["Group:foobar"]),
            user("zimzam", "group1,foobar"),
            "",
            true,
        ),
        (
            "single subject that does not match group",
            subjects(&["Group:foobar"]),
            user("zimzam", "group1,zimzam"),
            "",
            false,
        ),
        (
            "group does not match username",
            subjects(&["Group:foobar"]),
            user("foobar", ""),
            "",
            false,
        ),
        (
            "user does not match group",
            subjects(&["User:foobar"]),
            user("zimzam", "foobar"),
            "",
            false,
        ),
        (
            "service account with namespace",
            subjects(&["ServiceAccount:kube-system:default"]),
            user("system:serviceaccount:kube-system:default", ""),
            "",
            true,
        ),
        (
            "service account in another namespace",
            subjects(&["ServiceAccount:kube-system:default"]),
            user("system:serviceaccount:default:default", ""),
            "",
            false,
        ),
        (
            "service account without namespace uses the binding's",
            vec![Subject {
                namespace: None,
                ..Subject::service_account("x", "default")
            }],
            user("system:serviceaccount:default:default", ""),
            "default",
            true,
        ),
        (
            "service account without namespace at the cluster scope",
            vec![Subject {
                namespace: None,
                ..Subject::service_account("x", "default")
            }],
            user("system:serviceaccount::default", ""),
            "",
            false,
        ),
        (
            "unknown kind",
            vec![Subject {
                kind: "Robot".to_owned(),
                ..Subject::user("foobar")
            }],
            user("foobar", ""),
            "",
            false,
        ),
    ];
    for (name, subjects, user, namespace, expected) in table {
        let applies = subjects
            .iter()
            .any(|s| applies_to_user(&user, s, namespace));
        assert_eq!(applies, expected, "{name}");
    }
}

#[test]
fn kubernetes_forbidden_messages_and_status() {
    let u = user("NAME", "");
    let table: Vec<(Attributes, &str, serde_json::Value)> = vec![
        (
            Attributes::default(),
            "",
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"forbidden: User \"\" cannot  path \"\"","reason":"Forbidden","details":{},"code":403}),
        ),
        (
            Attributes::non_resource(u.clone(), "get", "/whatever"),
            "",
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"forbidden: User \"NAME\" cannot get path \"/whatever\"","reason":"Forbidden","details":{},"code":403}),
        ),
        (
            Attributes::resource(u.clone(), "get", "v1", "pod").in_namespace("test"),
            "",
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"pod.v1 is forbidden: User \"NAME\" cannot get resource \"pod\" in API group \"v1\" in the namespace \"test\"",
                   "reason":"Forbidden","details":{"group":"v1","kind":"pod"},"code":403}),
        ),
        (
            Attributes::resource(u.clone(), "get", "v1", "pod")
                .in_namespace("test")
                .named("mypod"),
            "",
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"pod.v1 \"mypod\" is forbidden: User \"NAME\" cannot get resource \"pod\" in API group \"v1\" in the namespace \"test\"",
                   "reason":"Forbidden","details":{"name":"mypod","group":"v1","kind":"pod"},"code":403}),
        ),
        (
            Attributes::resource(u.clone(), "get", "", "pods")
                .subresource("status")
                .in_namespace("test")
                .named("mypod"),
            "",
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"pods \"mypod\" is forbidden: User \"NAME\" cannot get resource \"pods/status\" in API group \"\" in the namespace \"test\"",
                   "reason":"Forbidden","details":{"name":"mypod","kind":"pods"},"code":403}),
        ),
        (
            Attributes::resource(u.clone(), "list", "storage.k8s.io", "storageclasses"),
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found",
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                   "message":"storageclasses.storage.k8s.io is forbidden: User \"NAME\" cannot list resource \"storageclasses\" in API group \"storage.k8s.io\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found",
                   "reason":"Forbidden","details":{"group":"storage.k8s.io","kind":"storageclasses"},"code":403}),
        ),
    ];
    for (attributes, reason, expected) in table {
        assert_eq!(Forbidden::new(&attributes, reason).status(), expected);
    }
}

#[test]
fn the_issue_example_message() {
    let a = Attributes::resource(user("u", ""), "create", "kubevirt.io", "virtualmachines")
        .in_namespace("default");
    let decision = RbacPolicy::bootstrap().authorize(&a);
    assert!(!decision.allowed);
    assert_eq!(
        Forbidden::new(&a, &decision.reason).message,
        "virtualmachines.kubevirt.io is forbidden: User \"u\" cannot create resource \"virtualmachines\" in API group \"kubevirt.io\" in the namespace \"default\""
    );
}

#[test]
fn role_bindings_scope_roles_and_cluster_roles_to_their_namespace() {
    let policy = RbacPolicy::new(
        vec![Role::new(
            "team-a",
            "vm-starter",
            vec![
                PolicyRule::resources(
                    &["update"],
                    &["subresources.kubevirt.io"],
                    &["virtualmachines/start"],
                )
                .named(&["db"]),
            ],
        )],
        bootstrap::cluster_roles(),
        vec![
            RoleBinding::new(
                "team-a",
                "starter",
                RoleRef::role("vm-starter"),
                subjects(&["User:ann"]),
            ),
            RoleBinding::new(
                "team-a",
                "viewers",
                RoleRef::cluster_role("view"),
                subjects(&["Group:auditors"]),
            ),
            RoleBinding::new(
                "team-a",
                "sa",
                RoleRef::cluster_role("edit"),
                vec![Subject {
                    namespace: None,
                    ..Subject::service_account("", "builder")
                }],
            ),
        ],
        bootstrap::cluster_role_bindings(),
    );
    let ann = user("ann", ALL_AUTHENTICATED);
    let start = |who: &UserInfo, ns: &str, name: &str| {
        Attributes::resource(
            who.clone(),
            "update",
            "subresources.kubevirt.io",
            "virtualmachines",
        )
        .subresource("start")
        .in_namespace(ns)
        .named(name)
    };
    let allowed = policy.authorize(&start(&ann, "team-a", "db"));
    assert!(allowed.allowed);
    assert_eq!(
        allowed.reason,
        "RBAC: allowed by RoleBinding \"starter/team-a\" of Role \"vm-starter\" to User \"ann\""
    );
    assert!(!policy.authorize(&start(&ann, "team-a", "web")).allowed);
    assert!(!policy.authorize(&start(&ann, "team-b", "db")).allowed);

    let auditor = user("al", &format!("auditors,{ALL_AUTHENTICATED}"));
    let list_vms = |who: &UserInfo, ns: &str| {
        Attributes::resource(who.clone(), "list", "kubevirt.io", "virtualmachines").in_namespace(ns)
    };
    assert!(policy.authorize(&list_vms(&auditor, "team-a")).allowed);
    assert!(!policy.authorize(&list_vms(&auditor, "team-b")).allowed);
    // A RoleBinding to a ClusterRole does not grant anything at the cluster scope.
    assert!(!policy.authorize(&list_vms(&auditor, "")).allowed);
    // view cannot open the console or start a VM.
    let console = Attributes::resource(
        auditor.clone(),
        "get",
        "subresources.kubevirt.io",
        "virtualmachineinstances",
    )
    .subresource("console")
    .in_namespace("team-a");
    assert!(!policy.authorize(&console).allowed);
    assert!(!policy.authorize(&start(&auditor, "team-a", "db")).allowed);

    let sa = user("system:serviceaccount:team-a:builder", ALL_AUTHENTICATED);
    assert!(policy.authorize(&start(&sa, "team-a", "x")).allowed);
    let sa_console = Attributes {
        user: sa.clone(),
        ..console.clone()
    };
    assert!(policy.authorize(&sa_console).allowed);
}

#[test]
fn missing_roles_are_the_reason_of_a_denial() {
    let policy = RbacPolicy::new(
        vec![],
        vec![],
        vec![RoleBinding::new(
            "ns",
            "b",
            RoleRef::role("nope"),
            subjects(&["User:u"]),
        )],
        vec![cluster_binding("gone", &["User:u"])],
    );
    let d = policy.authorize(&attrs("u", "", "get", "pods", "", "ns", ""));
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        "RBAC: [clusterrole.rbac.authorization.k8s.io \"gone\" not found, role.rbac.authorization.k8s.io \"nope\" not found]"
    );
    let d = policy.authorize(&attrs("u", "", "get", "pods", "", "", ""));
    assert_eq!(
        d.reason,
        "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
    );
}

#[test]
fn default_policy() {
    let policy = RbacPolicy::bootstrap();
    let admin = UserInfo::admin();
    let anyone = user("someone", ALL_AUTHENTICATED);
    let anonymous = UserInfo::anonymous();

    // system:masters may do anything, at any scope, on any path.
    assert!(
        policy
            .authorize(
                &Attributes::resource(admin.clone(), "delete", "kubevirt.io", "virtualmachines")
                    .in_namespace("x")
            )
            .allowed
    );
    assert!(
        policy
            .authorize(&Attributes::non_resource(admin, "post", "/anything"))
            .allowed
    );

    // Authenticated users: discovery, health, version, can-i; nothing else.
    for path in [
        "/api",
        "/apis/kubevirt.io/v1",
        "/version",
        "/healthz",
        "/openapi/v3",
    ] {
        assert!(
            policy
                .authorize(&Attributes::non_resource(anyone.clone(), "get", path))
                .allowed,
            "{path}"
        );
    }
    let ssar = Attributes::resource(
        anyone.clone(),
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
    );
    assert!(policy.authorize(&ssar).allowed);
    assert!(
        !policy
            .authorize(
                &Attributes::resource(anyone.clone(), "list", "kubevirt.io", "virtualmachines")
                    .in_namespace("default")
            )
            .allowed
    );
    let version =
        Attributes::resource(anyone.clone(), "get", "subresources.kubevirt.io", "version");
    assert!(policy.authorize(&version).allowed);
    // KubeVirt's instancetype.kubevirt.io:view: every authenticated user reads the cluster
    // instancetypes and preferences (to pick one), and writes none.
    for resource in [
        "virtualmachineclusterpreferences",
        "virtualmachineclusterinstancetypes",
    ] {
        let read =
            Attributes::resource(anyone.clone(), "list", "instancetype.kubevirt.io", resource);
        assert!(policy.authorize(&read).allowed, "{resource}");
        let write = Attributes::resource(
            anyone.clone(),
            "update",
            "instancetype.kubevirt.io",
            resource,
        );
        assert!(!policy.authorize(&write).allowed, "{resource}");
    }
    let namespaced = Attributes::resource(
        anyone.clone(),
        "list",
        "instancetype.kubevirt.io",
        "virtualmachinepreferences",
    )
    .in_namespace("default");
    assert!(!policy.authorize(&namespaced).allowed);

    // Anonymous: health and version only.
    assert!(
        policy
            .authorize(&Attributes::non_resource(
                anonymous.clone(),
                "get",
                "/healthz"
            ))
            .allowed
    );
    assert!(
        !policy
            .authorize(&Attributes::non_resource(anonymous.clone(), "get", "/api"))
            .allowed
    );
    assert!(
        !policy
            .authorize(&Attributes::resource(
                anonymous,
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews"
            ))
            .allowed
    );
}

#[test]
fn default_roles_aggregate_kubevirt_and_ferrovirt_rules() {
    let roles = bootstrap::cluster_roles();
    let get = |name: &str| roles.iter().find(|r| r.metadata.name == name).unwrap();
    let grants = |role: &str, verb: &str, group: &str, resource: &str, sub: &str| {
        let a = Attributes::resource(UserInfo::default(), verb, group, resource)
            .subresource(sub)
            .in_namespace("default");
        get(role).rules.iter().any(|r| rule_allows(&a, r))
    };
    for role in ["admin", "edit", "kubevirt.io:admin", "kubevirt.io:edit"] {
        assert!(
            grants(
                role,
                "update",
                "subresources.kubevirt.io",
                "virtualmachines",
                "start"
            ),
            "{role}"
        );
        assert!(
            grants(
                role,
                "get",
                "subresources.kubevirt.io",
                "virtualmachineinstances",
                "console"
            ),
            "{role}"
        );
        assert!(
            grants(role, "create", "kubevirt.io", "virtualmachines", ""),
            "{role}"
        );
    }
    // Issue 15: everyone who may read a VM may read its EK and UEFI variables; only edit and
    // admin may change the variables.
    for role in ["admin", "edit", "view"] {
        for sub in ["tpm", "efivars"] {
            assert!(
                grants(
                    role,
                    "get",
                    "subresources.kubevirt.io",
                    "virtualmachines",
                    sub
                ),
                "{role} {sub}"
            );
        }
        let writes = role != "view";
        for verb in ["update", "delete"] {
            assert_eq!(
                grants(
                    role,
                    verb,
                    "subresources.kubevirt.io",
                    "virtualmachines",
                    "efivars"
                ),
                writes,
                "{role} {verb}"
            );
        }
    }
    for role in ["admin", "edit"] {
        assert!(
            grants(
                role,
                "update",
                "subresources.kubevirt.io",
                "virtualmachines",
                "staterollback"
            ),
            "{role}"
        );
        assert!(
            grants(
                role,
                "update",
                "subresources.kubevirt.io",
                "virtualmachines",
                "staterekey"
            ),
            "{role}"
        );
        assert!(
            grants(
                role,
                "get",
                "subresources.kubevirt.io",
                "virtualmachines",
                "serial-log"
            ),
            "{role}"
        );
        assert!(
            grants(role, "create", "", "persistentvolumeclaims", ""),
            "{role}"
        );
        assert!(
            grants(
                role,
                "create",
                "harvesterhci.io",
                "virtualmachinetemplates",
                ""
            ),
            "{role}"
        );
    }
    assert!(grants(
        "admin",
        "deletecollection",
        "kubevirt.io",
        "virtualmachines",
        ""
    ));
    assert!(!grants(
        "edit",
        "deletecollection",
        "kubevirt.io",
        "virtualmachines",
        ""
    ));
    assert!(grants(
        "admin",
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        ""
    ));
    assert!(!grants(
        "edit",
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        ""
    ));
    for role in ["view", "kubevirt.io:view"] {
        assert!(
            grants(role, "watch", "kubevirt.io", "virtualmachines", ""),
            "{role}"
        );
        assert!(
            !grants(role, "create", "kubevirt.io", "virtualmachines", ""),
            "{role}"
        );
        assert!(
            !grants(
                role,
                "get",
                "subresources.kubevirt.io",
                "virtualmachineinstances",
                "console"
            ),
            "{role}"
        );
        assert!(
            !grants(
                role,
                "update",
                "subresources.kubevirt.io",
                "virtualmachines",
                "start"
            ),
            "{role}"
        );
    }
    assert!(!grants(
        "view",
        "get",
        "subresources.kubevirt.io",
        "virtualmachines",
        "serial-log"
    ));
    assert!(grants("view", "get", "", "namespaces", ""));
    // The labels KubeVirt's roles carry, and the aggregation rules of admin/edit/view.
    assert_eq!(
        get("kubevirt.io:admin")
            .metadata
            .labels
            .get(bootstrap::AGGREGATE_TO_ADMIN)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        get("kubevirt.io:edit")
            .metadata
            .labels
            .get(bootstrap::AGGREGATE_TO_EDIT)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        get("kubevirt.io:view")
            .metadata
            .labels
            .get(bootstrap::AGGREGATE_TO_VIEW)
            .map(String::as_str),
        Some("true")
    );
    assert!(get("admin").aggregation_rule.is_some());
    // Aggregation is already complete: running it again changes nothing.
    let mut again = roles.clone();
    assert!(aggregate_cluster_roles(&mut again).is_empty());
    // Every default role has a unique name.
    let mut names: Vec<_> = roles.iter().map(|r| r.metadata.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), roles.len());
}

#[test]
fn aggregation_follows_label_changes_and_expressions() {
    let mut selected = ClusterRole::new(
        "extra",
        vec![PolicyRule::resources(&["get"], &["x.io"], &["things"])],
    );
    selected
        .metadata
        .labels
        .insert("tier".to_owned(), "gold".to_owned());
    let mut aggregate = ClusterRole::new("agg", vec![]);
    aggregate.aggregation_rule = Some(AggregationRule {
        cluster_role_selectors: vec![LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "tier".to_owned(),
                operator: "In".to_owned(),
                values: vec!["gold".to_owned(), "silver".to_owned()],
            }],
        }],
    });
    let mut roles = vec![aggregate.clone(), selected.clone()];
    assert_eq!(aggregate_cluster_roles(&mut roles), vec!["agg".to_owned()]);
    assert_eq!(roles[0].rules, selected.rules);
    roles[1]
        .metadata
        .labels
        .insert("tier".to_owned(), "bronze".to_owned());
    aggregate_cluster_roles(&mut roles);
    assert!(roles[0].rules.is_empty());
}

#[test]
fn rbac_objects_round_trip_kubernetes_json() {
    let json = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "ns", "uid": "123", "resourceVersion": "7"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ann"},
                     {"kind": "ServiceAccount", "name": "default", "namespace": "ns"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    });
    let binding: RoleBinding = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(binding.subjects[1].kind, "ServiceAccount");
    assert_eq!(serde_json::to_value(&binding).unwrap(), json);

    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "r", "labels": {"a": "b"}},
        "rules": [{"verbs": ["get"], "nonResourceURLs": ["/x/*"]},
                  {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"]}],
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}
    });
    let parsed: ClusterRole = serde_json::from_value(role.clone()).unwrap();
    assert_eq!(parsed.rules[0].non_resource_urls, vec!["/x/*"]);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), role);
    let null_rules: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "n"}, "rules": null})).unwrap();
    assert!(null_rules.rules.is_empty());
    assert_eq!(null_rules.kind, "ClusterRole");
}

#[test]
fn verbs_from_http_methods() {
    assert_eq!(resource_verb("GET", true, false), "get");
    assert_eq!(resource_verb("GET", false, false), "list");
    assert_eq!(resource_verb("GET", false, true), "watch");
    assert_eq!(resource_verb("POST", false, false), "create");
    assert_eq!(resource_verb("PUT", true, false), "update");
    assert_eq!(resource_verb("PATCH", true, false), "patch");
    assert_eq!(resource_verb("DELETE", true, false), "delete");
    assert_eq!(resource_verb("DELETE", false, false), "deletecollection");
    assert_eq!(non_resource_verb("GET"), "get");
    let _ = ALL_UNAUTHENTICATED;
}
