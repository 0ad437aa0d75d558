//! The resources the API serves: one [`ResourceDef`] per Kubernetes resource (group, version,
//! plural, kind, short names, scope), used by routing, discovery, the store and table output.

use ferrovirt_store::ResourceKind;

/// The verbs every served resource supports (what `kubectl api-resources -o wide` prints).
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group, `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural lower-case name used in URLs, e.g. `virtualmachines`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub categories: &'static [&'static str],
}

impl ResourceDef {
    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store's key for this resource.
    pub fn store_kind(&self) -> ResourceKind {
        ResourceKind::new(self.group, self.plural, self.namespaced)
    }

    /// `virtualmachines.kubevirt.io` / `persistentvolumeclaims` as Kubernetes prints it.
    pub fn qualified(&self) -> String {
        self.store_kind().qualified_name()
    }

    /// The kind of a list of these objects.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

pub const NAMESPACES: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    short_names: &["ns"],
    namespaced: false,
    categories: &[],
};
pub const PVCS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    kind: "PersistentVolumeClaim",
    short_names: &["pvc"],
    namespaced: true,
    categories: &[],
};
/// `v1` Secret: export tokens (`tokenSecretRef`), the header Secrets and `secretRef`s CDI reads.
pub const SECRETS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    short_names: &[],
    namespaced: true,
    categories: &[],
};
/// `v1` ConfigMap: the export's CA certificate (`export-ca-cm-<export>`) and any `certConfigMap`
/// CDI verifies with.
pub const CONFIG_MAPS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    short_names: &["cm"],
    namespaced: true,
    categories: &[],
};
pub const EVENTS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    short_names: &["ev"],
    namespaced: true,
    categories: &[],
};
pub const VMS: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    version: "v1",
    plural: "virtualmachines",
    singular: "virtualmachine",
    kind: "VirtualMachine",
    short_names: &["vm", "vms"],
    namespaced: true,
    categories: &["all"],
};
pub const VMIS: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    version: "v1",
    plural: "virtualmachineinstances",
    singular: "virtualmachineinstance",
    kind: "VirtualMachineInstance",
    short_names: &["vmi", "vmis"],
    namespaced: true,
    categories: &["all"],
};
/// `kubevirt.io/v1` VirtualMachineInstanceMigration: a live migration; here only KubeVirt's
/// decentralized kind (`spec.sendTo` on the source host, `spec.receive` on the destination).
pub const VMIMS: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    version: "v1",
    plural: "virtualmachineinstancemigrations",
    singular: "virtualmachineinstancemigration",
    kind: "VirtualMachineInstanceMigration",
    short_names: &["vmim", "vmims"],
    namespaced: true,
    categories: &["all"],
};
pub const KUBEVIRTS: ResourceDef = ResourceDef {
    group: "kubevirt.io",
    version: "v1",
    plural: "kubevirts",
    singular: "kubevirt",
    kind: "KubeVirt",
    short_names: &["kv", "kvs"],
    namespaced: true,
    categories: &["all"],
};
pub const STORAGE_CLASSES: ResourceDef = ResourceDef {
    group: "storage.k8s.io",
    version: "v1",
    plural: "storageclasses",
    singular: "storageclass",
    kind: "StorageClass",
    short_names: &["sc"],
    namespaced: false,
    categories: &[],
};

/// Harvester's VM template (`harvesterhci.io/v1beta1`, short names as Harvester's CRD).
pub const TEMPLATES: ResourceDef = ResourceDef {
    group: "harvesterhci.io",
    version: "v1beta1",
    plural: "virtualmachinetemplates",
    singular: "virtualmachinetemplate",
    kind: "VirtualMachineTemplate",
    short_names: &["vmtemplate", "vmtemplates"],
    namespaced: true,
    categories: &[],
};
/// Harvester's VM template version: `spec.vm` holds the VM; the server numbers versions.
pub const TEMPLATE_VERSIONS: ResourceDef = ResourceDef {
    group: "harvesterhci.io",
    version: "v1beta1",
    plural: "virtualmachinetemplateversions",
    singular: "virtualmachinetemplateversion",
    kind: "VirtualMachineTemplateVersion",
    short_names: &["vmtemplateversion", "vmtemplateversions"],
    namespaced: true,
    categories: &[],
};

/// KubeVirt's snapshot group (`snapshot.kubevirt.io/v1beta1`, short names as KubeVirt's CRDs).
pub const SNAPSHOT_GROUP: &str = "snapshot.kubevirt.io";
pub const VM_SNAPSHOTS: ResourceDef = ResourceDef {
    group: SNAPSHOT_GROUP,
    version: "v1beta1",
    plural: "virtualmachinesnapshots",
    singular: "virtualmachinesnapshot",
    kind: "VirtualMachineSnapshot",
    short_names: &["vmsnapshot", "vmsnapshots"],
    namespaced: true,
    categories: &["all"],
};
pub const VM_SNAPSHOT_CONTENTS: ResourceDef = ResourceDef {
    group: SNAPSHOT_GROUP,
    version: "v1beta1",
    plural: "virtualmachinesnapshotcontents",
    singular: "virtualmachinesnapshotcontent",
    kind: "VirtualMachineSnapshotContent",
    short_names: &["vmsnapshotcontent", "vmsnapshotcontents"],
    namespaced: true,
    categories: &["all"],
};
pub const VM_RESTORES: ResourceDef = ResourceDef {
    group: SNAPSHOT_GROUP,
    version: "v1beta1",
    plural: "virtualmachinerestores",
    singular: "virtualmachinerestore",
    kind: "VirtualMachineRestore",
    short_names: &["vmrestore", "vmrestores"],
    namespaced: true,
    categories: &["all"],
};
/// KubeVirt's clone group (`clone.kubevirt.io/v1beta1`).
pub const CLONE_GROUP: &str = "clone.kubevirt.io";
pub const VM_CLONES: ResourceDef = ResourceDef {
    group: CLONE_GROUP,
    version: "v1beta1",
    plural: "virtualmachineclones",
    singular: "virtualmachineclone",
    kind: "VirtualMachineClone",
    short_names: &["vmclone", "vmclones"],
    namespaced: true,
    categories: &["all"],
};
/// CDI's group (`cdi.kubevirt.io/v1beta1`): DataVolumes, short names and categories as CDI's CRD.
pub const CDI_GROUP: &str = "cdi.kubevirt.io";
pub const DATA_VOLUMES: ResourceDef = ResourceDef {
    group: CDI_GROUP,
    version: "v1beta1",
    plural: "datavolumes",
    singular: "datavolume",
    kind: "DataVolume",
    short_names: &["dv", "dvs"],
    namespaced: true,
    categories: &["all"],
};
/// CDI's upload group (`upload.cdi.kubevirt.io/v1beta1`): UploadTokenRequests are answered, never
/// stored (only `create`, as CDI's aggregated API server serves them).
pub const UPLOAD_GROUP: &str = "upload.cdi.kubevirt.io";
pub const UPLOAD_TOKEN_REQUESTS: ResourceDef = ResourceDef {
    group: UPLOAD_GROUP,
    version: "v1beta1",
    plural: "uploadtokenrequests",
    singular: "uploadtokenrequest",
    kind: "UploadTokenRequest",
    short_names: &["utr", "utrs"],
    namespaced: true,
    categories: &[],
};
/// KubeVirt's export group (`export.kubevirt.io/v1beta1`, short names as KubeVirt's CRD).
pub const EXPORT_GROUP: &str = "export.kubevirt.io";
pub const VM_EXPORTS: ResourceDef = ResourceDef {
    group: EXPORT_GROUP,
    version: "v1beta1",
    plural: "virtualmachineexports",
    singular: "virtualmachineexport",
    kind: "VirtualMachineExport",
    short_names: &["vmexport", "vmexports"],
    namespaced: true,
    categories: &["all"],
};
/// KubeVirt's instancetype group (`instancetype.kubevirt.io/v1beta1`); short names as KubeVirt's
/// CRDs (`virt-operator`'s `crds.go`), no extra printer columns (NAME, AGE).
pub const INSTANCETYPE_GROUP: &str = "instancetype.kubevirt.io";
pub const INSTANCETYPES: ResourceDef = ResourceDef {
    group: INSTANCETYPE_GROUP,
    version: "v1beta1",
    plural: "virtualmachineinstancetypes",
    singular: "virtualmachineinstancetype",
    kind: "VirtualMachineInstancetype",
    short_names: &["vminstancetype", "vminstancetypes", "vmf", "vmfs"],
    namespaced: true,
    categories: &["all"],
};
pub const CLUSTER_INSTANCETYPES: ResourceDef = ResourceDef {
    group: INSTANCETYPE_GROUP,
    version: "v1beta1",
    plural: "virtualmachineclusterinstancetypes",
    singular: "virtualmachineclusterinstancetype",
    kind: "VirtualMachineClusterInstancetype",
    short_names: &[
        "vmclusterinstancetype",
        "vmclusterinstancetypes",
        "vmcf",
        "vmcfs",
    ],
    namespaced: false,
    categories: &[],
};
pub const PREFERENCES: ResourceDef = ResourceDef {
    group: INSTANCETYPE_GROUP,
    version: "v1beta1",
    plural: "virtualmachinepreferences",
    singular: "virtualmachinepreference",
    kind: "VirtualMachinePreference",
    short_names: &["vmpref", "vmprefs", "vmp", "vmps"],
    namespaced: true,
    categories: &["all"],
};
pub const CLUSTER_PREFERENCES: ResourceDef = ResourceDef {
    group: INSTANCETYPE_GROUP,
    version: "v1beta1",
    plural: "virtualmachineclusterpreferences",
    singular: "virtualmachineclusterpreference",
    kind: "VirtualMachineClusterPreference",
    short_names: &["vmcp", "vmcps"],
    namespaced: false,
    categories: &[],
};
/// `apps/v1` ControllerRevision: the VM controller keeps the instancetype and preference a VM
/// uses in one, owned by the VM (KubeVirt's revisions).
pub const CONTROLLER_REVISIONS: ResourceDef = ResourceDef {
    group: "apps",
    version: "v1",
    plural: "controllerrevisions",
    singular: "controllerrevision",
    kind: "ControllerRevision",
    short_names: &[],
    namespaced: true,
    categories: &[],
};

/// The RBAC group: `rbac.authorization.k8s.io/v1`.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub const ROLES: ResourceDef = ResourceDef {
    group: RBAC_GROUP,
    version: "v1",
    plural: "roles",
    singular: "role",
    kind: "Role",
    short_names: &[],
    namespaced: true,
    categories: &[],
};
pub const CLUSTER_ROLES: ResourceDef = ResourceDef {
    group: RBAC_GROUP,
    version: "v1",
    plural: "clusterroles",
    singular: "clusterrole",
    kind: "ClusterRole",
    short_names: &[],
    namespaced: false,
    categories: &[],
};
pub const ROLE_BINDINGS: ResourceDef = ResourceDef {
    group: RBAC_GROUP,
    version: "v1",
    plural: "rolebindings",
    singular: "rolebinding",
    kind: "RoleBinding",
    short_names: &[],
    namespaced: true,
    categories: &[],
};
pub const CLUSTER_ROLE_BINDINGS: ResourceDef = ResourceDef {
    group: RBAC_GROUP,
    version: "v1",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    kind: "ClusterRoleBinding",
    short_names: &[],
    namespaced: false,
    categories: &[],
};

/// The four RBAC resources, whose objects make the authorization policy.
pub const RBAC: [ResourceDef; 4] = [ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS];

/// Every served resource.
pub const ALL: [ResourceDef; 28] = [
    NAMESPACES,
    PVCS,
    SECRETS,
    CONFIG_MAPS,
    EVENTS,
    VMS,
    VMIS,
    VMIMS,
    KUBEVIRTS,
    STORAGE_CLASSES,
    TEMPLATES,
    TEMPLATE_VERSIONS,
    VM_SNAPSHOTS,
    VM_SNAPSHOT_CONTENTS,
    VM_RESTORES,
    VM_CLONES,
    VM_EXPORTS,
    ROLES,
    CLUSTER_ROLES,
    ROLE_BINDINGS,
    CLUSTER_ROLE_BINDINGS,
    INSTANCETYPES,
    CLUSTER_INSTANCETYPES,
    PREFERENCES,
    CLUSTER_PREFERENCES,
    CONTROLLER_REVISIONS,
    DATA_VOLUMES,
    UPLOAD_TOKEN_REQUESTS,
];

/// The API group of the VM subresources (`start`, `stop`, `restart`, `console`).
pub const SUBRESOURCES_GROUP: &str = "subresources.kubevirt.io";

/// The group/versions served, in discovery order.
pub const GROUP_VERSIONS: [(&str, &str); 12] = [
    ("kubevirt.io", "v1"),
    (INSTANCETYPE_GROUP, "v1beta1"),
    ("apps", "v1"),
    (RBAC_GROUP, "v1"),
    ("storage.k8s.io", "v1"),
    (SUBRESOURCES_GROUP, "v1"),
    ("harvesterhci.io", "v1beta1"),
    (SNAPSHOT_GROUP, "v1beta1"),
    (CLONE_GROUP, "v1beta1"),
    (CDI_GROUP, "v1beta1"),
    (UPLOAD_GROUP, "v1beta1"),
    (EXPORT_GROUP, "v1beta1"),
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
    ALL.into_iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The store's key for a resource named by group and plural (what `list_dependents` returns);
/// a resource not served here is taken as namespaced.
pub fn store_kind_of(group: &str, plural: &str) -> ResourceKind {
    let namespaced = ALL
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .is_none_or(|r| r.namespaced);
    ResourceKind::new(group, plural, namespaced)
}

/// The resources of one group/version.
pub fn in_group_version(group: &str, version: &str) -> Vec<ResourceDef> {
    ALL.into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_resources_by_url_parts() {
        assert_eq!(find("kubevirt.io", "v1", "virtualmachines"), Some(VMS));
        assert_eq!(find("", "v1", "persistentvolumeclaims"), Some(PVCS));
        assert_eq!(find("kubevirt.io", "v2", "virtualmachines"), None);
        assert_eq!(VMS.qualified(), "virtualmachines.kubevirt.io");
        assert_eq!(PVCS.api_version(), "v1");
        assert_eq!(in_group_version("kubevirt.io", "v1").len(), 4);
        assert_eq!(
            find(
                "harvesterhci.io",
                "v1beta1",
                "virtualmachinetemplateversions"
            ),
            Some(TEMPLATE_VERSIONS)
        );
        assert_eq!(in_group_version("harvesterhci.io", "v1beta1").len(), 2);
        assert_eq!(in_group_version(SNAPSHOT_GROUP, "v1beta1").len(), 3);
        assert_eq!(
            find(CLONE_GROUP, "v1beta1", "virtualmachineclones"),
            Some(VM_CLONES)
        );
        assert_eq!(in_group_version(INSTANCETYPE_GROUP, "v1beta1").len(), 4);
        assert_eq!(
            CLUSTER_PREFERENCES.qualified(),
            "virtualmachineclusterpreferences.instancetype.kubevirt.io"
        );
    }
}
