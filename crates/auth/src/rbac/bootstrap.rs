//! The default RBAC objects: Kubernetes' bootstrap policy
//! (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`), restricted to the core resources
//! ferrovirt serves, KubeVirt's ClusterRoles as its operator installs them
//! (`pkg/virt-operator/resource/generate/rbac/cluster.go`), and ferrovirt's own roles for what
//! only ferrovirt serves (serial log, state generations and rollback, Harvester templates). All of
//! them are ordinary objects: the server seeds them into its store, `kubectl get clusterroles`
//! shows them, and an admin may change them.
//!
//! `admin`, `edit` and `view` are aggregated, as in Kubernetes: they gather the rules of every
//! ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-{admin,edit,view}: "true"`
//! (`kubevirt.io:*` and `ferrovirt.io:*` carry those labels).

use std::collections::BTreeMap;

use super::aggregate_cluster_roles;
use super::types::{
    AggregationRule, ClusterRole, ClusterRoleBinding, LabelSelector, PolicyRule, RoleRef, Subject,
};
use crate::user::{ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, SYSTEM_PRIVILEGED_GROUP};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// KubeVirt's verb lists (admin has `deletecollection`, edit does not).
const KV_ADMIN: &[&str] = &[
    "get",
    "delete",
    "create",
    "update",
    "patch",
    "list",
    "watch",
    "deletecollection",
];
const KV_EDIT: &[&str] = &[
    "get", "delete", "create", "update", "patch", "list", "watch",
];

pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const KUBEVIRT_APP_LABEL: &str = "kubevirt.io";
/// The label on ferrovirt's own default roles.
pub const FERROVIRT_APP_LABEL: &str = "ferrovirt.io";

const SUBRESOURCES: &str = "subresources.kubevirt.io";
const INSTANCETYPE_RESOURCES: &[&str] = &[
    "virtualmachineinstancetypes",
    "virtualmachineclusterinstancetypes",
    "virtualmachinepreferences",
    "virtualmachineclusterpreferences",
];
const VM_RESOURCES: &[&str] = &[
    "virtualmachines",
    "virtualmachineinstances",
    "virtualmachineinstancepresets",
    "virtualmachineinstancereplicasets",
    "virtualmachineinstancemigrations",
];
const SNAPSHOT_RESOURCES: &[&str] = &[
    "virtualmachinesnapshots",
    "virtualmachinesnapshotcontents",
    "virtualmachinerestores",
];

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule::resources(verbs, &[group], resources)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A Kubernetes bootstrap ClusterRole (labelled `kubernetes.io/bootstrapping: rbac-defaults`,
/// annotated `autoupdate: "true"`), with extra labels.
fn kube_role(name: &str, extra_labels: &[(&str, &str)], rules: Vec<PolicyRule>) -> ClusterRole {
    let mut role = ClusterRole::new(name, rules);
    role.metadata.labels = labels(extra_labels);
    role.metadata
        .labels
        .insert(BOOTSTRAPPING.to_owned(), "rbac-defaults".to_owned());
    role.metadata
        .annotations
        .insert(AUTOUPDATE.to_owned(), "true".to_owned());
    role
}

fn aggregated(name: &str, extra_labels: &[(&str, &str)], selector_label: &str) -> ClusterRole {
    let mut role = kube_role(name, extra_labels, Vec::new());
    role.aggregation_rule = Some(AggregationRule {
        cluster_role_selectors: vec![LabelSelector {
            match_labels: labels(&[(selector_label, "true")]),
            match_expressions: Vec::new(),
        }],
    });
    role
}

fn kubevirt_role(name: &str, aggregate_to: Option<&str>, rules: Vec<PolicyRule>) -> ClusterRole {
    let mut role = ClusterRole::new(name, rules);
    role.metadata
        .labels
        .insert(KUBEVIRT_APP_LABEL.to_owned(), String::new());
    if let Some(label) = aggregate_to {
        role.metadata
            .labels
            .insert(label.to_owned(), "true".to_owned());
    }
    role
}

fn ferrovirt_role(name: &str, aggregate_to: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    let mut role = ClusterRole::new(name, rules);
    role.metadata.labels = labels(&[(FERROVIRT_APP_LABEL, ""), (aggregate_to, "true")]);
    role
}

/// Kubernetes' bootstrap ClusterRoles, for the core resources ferrovirt serves.
fn kubernetes_roles() -> Vec<ClusterRole> {
    vec![
        kube_role(
            "cluster-admin",
            &[],
            vec![
                PolicyRule::resources(&["*"], &["*"], &["*"]),
                PolicyRule::urls(&["*"], &["*"]),
            ],
        ),
        kube_role(
            "system:discovery",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        // Kubernetes' role for scrapers: bind it to Prometheus' user to read `/metrics`.
        kube_role(
            "system:monitoring",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        kube_role(
            "system:public-info-viewer",
            &[],
            vec![PolicyRule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        kube_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    "authentication.k8s.io",
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        aggregated("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        kube_role(
            "system:aggregate-to-admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            vec![
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, super::RBAC_GROUP, &["roles", "rolebindings"]),
            ],
        ),
        kube_role(
            "system:aggregate-to-edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            vec![rule(
                WRITE,
                "",
                &["persistentvolumeclaims", "events", "configmaps", "secrets"],
            )],
        ),
        kube_role(
            "system:aggregate-to-view",
            &[(AGGREGATE_TO_VIEW, "true")],
            vec![
                rule(
                    READ,
                    "",
                    &["persistentvolumeclaims", "persistentvolumeclaims/status"],
                ),
                rule(READ, "", &["events", "namespaces/status"]),
                rule(READ, "", &["namespaces", "configmaps"]),
            ],
        ),
    ]
}

/// KubeVirt's ClusterRoles, as virt-operator installs them.
fn kubevirt_roles() -> Vec<ClusterRole> {
    let console_get = rule(
        &["get"],
        SUBRESOURCES,
        &[
            "virtualmachineinstances/console",
            "virtualmachineinstances/vnc",
            "virtualmachineinstances/vnc/screenshot",
            "virtualmachineinstances/portforward",
            "virtualmachineinstances/guestosinfo",
            "virtualmachineinstances/filesystemlist",
            "virtualmachineinstances/userlist",
            "virtualmachineinstances/sev/fetchcertchain",
            "virtualmachineinstances/sev/querylaunchmeasurement",
            // ferrovirt's: the destination's end of a live migration between two hosts.
            "virtualmachineinstances/migrationtunnel",
        ],
    );
    let vmi_update = rule(
        &["update"],
        SUBRESOURCES,
        &[
            "virtualmachineinstances/pause",
            "virtualmachineinstances/unpause",
            "virtualmachineinstances/addvolume",
            "virtualmachineinstances/removevolume",
            "virtualmachineinstances/freeze",
            "virtualmachineinstances/unfreeze",
            "virtualmachineinstances/softreboot",
            "virtualmachineinstances/sev/setupsession",
            "virtualmachineinstances/sev/injectlaunchsecret",
        ],
    );
    let vm_get = rule(
        &["get"],
        SUBRESOURCES,
        &["virtualmachines/expand-spec", "virtualmachines/portforward"],
    );
    let vm_update = rule(
        &["update"],
        SUBRESOURCES,
        &[
            "virtualmachines/start",
            "virtualmachines/stop",
            "virtualmachines/restart",
            "virtualmachines/addvolume",
            "virtualmachines/removevolume",
            "virtualmachines/migrate",
            "virtualmachines/memorydump",
        ],
    );
    let expand = rule(&["update"], SUBRESOURCES, &["expand-vm-spec"]);
    let migration_policies = rule(READ, "migrations.kubevirt.io", &["migrationpolicies"]);
    let workloads = |verbs: &[&str]| {
        vec![
            rule(verbs, "kubevirt.io", VM_RESOURCES),
            rule(verbs, "snapshot.kubevirt.io", SNAPSHOT_RESOURCES),
            rule(verbs, "export.kubevirt.io", &["virtualmachineexports"]),
            rule(verbs, "clone.kubevirt.io", &["virtualmachineclones"]),
            rule(verbs, "instancetype.kubevirt.io", INSTANCETYPE_RESOURCES),
            rule(verbs, "pool.kubevirt.io", &["virtualmachinepools"]),
        ]
    };

    let mut admin = vec![
        console_get.clone(),
        vmi_update.clone(),
        vm_get.clone(),
        vm_update.clone(),
        expand.clone(),
    ];
    admin.extend(workloads(KV_ADMIN));
    admin.push(migration_policies.clone());

    let mut edit = vec![console_get, vmi_update, vm_get, vm_update, expand.clone()];
    edit.extend(workloads(KV_EDIT));
    edit.push(rule(&["get", "list"], "kubevirt.io", &["kubevirts"]));
    edit.push(migration_policies.clone());

    let mut view = vec![
        rule(
            &["get"],
            SUBRESOURCES,
            &[
                "virtualmachines/expand-spec",
                "virtualmachineinstances/guestosinfo",
                "virtualmachineinstances/filesystemlist",
                "virtualmachineinstances/userlist",
                "virtualmachineinstances/sev/fetchcertchain",
                "virtualmachineinstances/sev/querylaunchmeasurement",
            ],
        ),
        expand,
    ];
    view.extend(workloads(READ));
    view.push(migration_policies);

    let mut default = kubevirt_role(
        "kubevirt.io:default",
        None,
        vec![rule(
            &["get", "list"],
            SUBRESOURCES,
            &["version", "guestfs"],
        )],
    );
    default
        .metadata
        .labels
        .insert(BOOTSTRAPPING.to_owned(), "rbac-defaults".to_owned());
    default
        .metadata
        .annotations
        .insert(AUTOUPDATE.to_owned(), "true".to_owned());

    vec![
        default,
        kubevirt_role("kubevirt.io:admin", Some(AGGREGATE_TO_ADMIN), admin),
        kubevirt_role("kubevirt.io:edit", Some(AGGREGATE_TO_EDIT), edit),
        kubevirt_role("kubevirt.io:view", Some(AGGREGATE_TO_VIEW), view),
        ClusterRole::new(
            "instancetype.kubevirt.io:view",
            vec![rule(
                READ,
                "instancetype.kubevirt.io",
                &[
                    "virtualmachineclusterinstancetypes",
                    "virtualmachineclusterpreferences",
                ],
            )],
        ),
    ]
}

/// ferrovirt's own roles for the endpoints only ferrovirt serves. The serial log shows what the
/// console shows, so it goes with `virtualmachineinstances/console` (admin, edit); rolling back
/// TPM/EFI state is a write (admin, edit); listing state generations and reading the TPM's EK
/// certificates (`virtualmachines/tpm`, the subresource of `tpm/ek`) and the UEFI variables
/// (`virtualmachines/efivars`) are reads (view); changing variables is a write (admin, edit).
fn ferrovirt_roles() -> Vec<ClusterRole> {
    let templates = ["virtualmachinetemplates", "virtualmachinetemplateversions"];
    let write_side = |verbs: &[&str]| {
        vec![
            rule(
                &["get"],
                SUBRESOURCES,
                &[
                    "virtualmachines/serial-log",
                    "virtualmachines/stategenerations",
                    "virtualmachines/tpm",
                    "virtualmachines/efivars",
                ],
            ),
            rule(
                &["update"],
                SUBRESOURCES,
                &[
                    "virtualmachines/staterollback",
                    "virtualmachines/staterekey",
                ],
            ),
            rule(
                &["update", "delete"],
                SUBRESOURCES,
                &["virtualmachines/efivars"],
            ),
            rule(verbs, "harvesterhci.io", &templates),
        ]
    };
    vec![
        ferrovirt_role(
            "ferrovirt.io:admin",
            AGGREGATE_TO_ADMIN,
            write_side(READ_WRITE),
        ),
        ferrovirt_role(
            "ferrovirt.io:edit",
            AGGREGATE_TO_EDIT,
            write_side(&[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]),
        ),
        ferrovirt_role(
            "ferrovirt.io:view",
            AGGREGATE_TO_VIEW,
            vec![
                rule(
                    &["get"],
                    SUBRESOURCES,
                    &[
                        "virtualmachines/stategenerations",
                        "virtualmachines/tpm",
                        "virtualmachines/efivars",
                    ],
                ),
                rule(READ, "harvesterhci.io", &templates),
            ],
        ),
    ]
}

/// CDI's ClusterRoles (`cdi.kubevirt.io:admin|edit|view`, aggregated into Kubernetes'
/// `admin`, `edit`, `view`): DataVolumes, and `create uploadtokenrequests` (who may upload).
fn cdi_roles() -> Vec<ClusterRole> {
    let write = |verbs: &'static [&'static str]| {
        vec![
            rule(verbs, "cdi.kubevirt.io", &["datavolumes"]),
            rule(&["create"], "cdi.kubevirt.io", &["datavolumes/source"]),
            rule(&["*"], "upload.cdi.kubevirt.io", &["uploadtokenrequests"]),
        ]
    };
    vec![
        kube_role(
            "cdi.kubevirt.io:admin",
            &[(AGGREGATE_TO_ADMIN, "true")],
            write(KV_ADMIN),
        ),
        kube_role(
            "cdi.kubevirt.io:edit",
            &[(AGGREGATE_TO_EDIT, "true")],
            write(KV_EDIT),
        ),
        kube_role(
            "cdi.kubevirt.io:view",
            &[(AGGREGATE_TO_VIEW, "true")],
            vec![rule(READ, "cdi.kubevirt.io", &["datavolumes"])],
        ),
    ]
}

/// Every default ClusterRole, aggregated (`admin`, `edit`, `view` hold their gathered rules).
pub fn cluster_roles() -> Vec<ClusterRole> {
    let mut roles = kubernetes_roles();
    roles.extend(kubevirt_roles());
    roles.extend(ferrovirt_roles());
    roles.extend(cdi_roles());
    aggregate_cluster_roles(&mut roles);
    roles
}

fn kube_binding(name: &str, groups: &[&str]) -> ClusterRoleBinding {
    let mut binding = ClusterRoleBinding::new(
        name,
        RoleRef::cluster_role(name),
        groups.iter().map(|g| Subject::group(g)).collect(),
    );
    binding.metadata.labels = labels(&[(BOOTSTRAPPING, "rbac-defaults")]);
    binding
        .metadata
        .annotations
        .insert(AUTOUPDATE.to_owned(), "true".to_owned());
    binding
}

/// The default ClusterRoleBindings: `cluster-admin` to `system:masters`; discovery and
/// `system:basic-user` to authenticated users; public info (health, version) and KubeVirt's
/// `kubevirt.io:default` to everyone; KubeVirt's `instancetype.kubevirt.io:view` (reading the
/// cluster instancetypes and preferences) to authenticated users.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let mut kubevirt_default = ClusterRoleBinding::new(
        "kubevirt.io:default",
        RoleRef::cluster_role("kubevirt.io:default"),
        vec![
            Subject::group(ALL_AUTHENTICATED),
            Subject::group(ALL_UNAUTHENTICATED),
        ],
    );
    kubevirt_default
        .metadata
        .labels
        .insert(KUBEVIRT_APP_LABEL.to_owned(), String::new());
    kubevirt_default
        .metadata
        .annotations
        .insert(AUTOUPDATE.to_owned(), "true".to_owned());
    // virt-operator's `newInstancetypeViewClusterRoleBinding`.
    let mut instancetype_view = ClusterRoleBinding::new(
        "instancetype.kubevirt.io:view",
        RoleRef::cluster_role("instancetype.kubevirt.io:view"),
        vec![Subject::group(ALL_AUTHENTICATED)],
    );
    instancetype_view
        .metadata
        .labels
        .insert(KUBEVIRT_APP_LABEL.to_owned(), String::new());
    instancetype_view
        .metadata
        .annotations
        .insert(AUTOUPDATE.to_owned(), "true".to_owned());
    vec![
        kube_binding("cluster-admin", &[SYSTEM_PRIVILEGED_GROUP]),
        kube_binding("system:discovery", &[ALL_AUTHENTICATED]),
        kube_binding("system:basic-user", &[ALL_AUTHENTICATED]),
        kube_binding(
            "system:public-info-viewer",
            &[ALL_AUTHENTICATED, ALL_UNAUTHENTICATED],
        ),
        kubevirt_default,
        instancetype_view,
    ]
}
