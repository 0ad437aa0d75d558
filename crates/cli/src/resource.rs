//! Resource names as kubectl accepts them (`vm`, `vms`, `virtualmachine`, `VirtualMachine`,
//! `virtualmachines.kubevirt.io`, `pvc`, `sc`, `ns`, `ev`, ...) resolved to the server's
//! [`ResourceDef`]s, and the REST paths and display names of objects.

use ferrovirt_resources::{ALL, ResourceDef};
use serde_json::Value;

use crate::client::ClientError;

/// The resource a kubectl-style type name means.
pub fn resolve(name: &str) -> Result<ResourceDef, ClientError> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((base, group)) => (base.to_owned(), Some(group.to_owned())),
        None => (lower.clone(), None),
    };
    ALL.into_iter()
        .find(|r| {
            group.as_deref().is_none_or(|g| g == r.group)
                && (r.plural == base
                    || r.singular == base
                    || r.kind.eq_ignore_ascii_case(&base)
                    || r.short_names.contains(&base.as_str()))
        })
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "the server doesn't have a resource type \"{name}\" (known: vm, vmi, pvc, sc, kubevirt, ns, events, vmsnapshot, vmsnapshotcontent, vmrestore, vmclone)"
            ))
        })
}

/// The resource of a manifest object, by its `apiVersion` and `kind`.
pub fn of_object(object: &Value) -> Result<ResourceDef, ClientError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    ALL.into_iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "resource mapping not found for kind \"{kind}\" in version \"{api_version}\": ferrovirt serves VirtualMachine, VirtualMachineInstance, KubeVirt (kubevirt.io/v1), PersistentVolumeClaim, Namespace, Event (v1), StorageClass (storage.k8s.io/v1)"
            ))
        })
}

/// `/api/v1` or `/apis/<group>/<version>`.
fn group_version_path(resource: &ResourceDef) -> String {
    if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    }
}

/// The collection path; `namespace: None` for cluster-scoped resources or across namespaces.
pub fn collection_path(resource: &ResourceDef, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!(
            "{}/namespaces/{ns}/{}",
            group_version_path(resource),
            resource.plural
        ),
        _ => format!("{}/{}", group_version_path(resource), resource.plural),
    }
}

/// The path of one object.
pub fn item_path(resource: &ResourceDef, namespace: &str, name: &str) -> String {
    format!(
        "{}/{name}",
        collection_path(resource, Some(namespace).filter(|_| resource.namespaced))
    )
}

/// `virtualmachine.kubevirt.io` / `persistentvolumeclaim`: how kubectl names a type in its output.
pub fn display_type(resource: &ResourceDef) -> String {
    if resource.group.is_empty() {
        resource.singular.to_owned()
    } else {
        format!("{}.{}", resource.singular, resource.group)
    }
}

/// `metadata.name` of an object.
pub fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_resources::{EVENTS, NAMESPACES, PVCS, STORAGE_CLASSES, VMIS, VMS};
    use serde_json::json;

    #[test]
    fn kubectl_names_resolve() {
        for name in [
            "vm",
            "vms",
            "virtualmachine",
            "virtualmachines",
            "VirtualMachine",
            "virtualmachines.kubevirt.io",
        ] {
            assert_eq!(resolve(name).unwrap(), VMS, "{name}");
        }
        assert_eq!(resolve("vmi").unwrap(), VMIS);
        assert_eq!(resolve("pvc").unwrap(), PVCS);
        assert_eq!(resolve("sc").unwrap(), STORAGE_CLASSES);
        assert_eq!(resolve("ns").unwrap(), NAMESPACES);
        assert_eq!(resolve("events").unwrap(), EVENTS);
        assert_eq!(resolve("kubevirt").unwrap().kind, "KubeVirt");
        assert!(resolve("pods").is_err());
        assert!(resolve("vm.apps").is_err());
    }

    #[test]
    fn paths_and_display_names() {
        assert_eq!(
            item_path(&VMS, "default", "demo"),
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/demo"
        );
        assert_eq!(
            item_path(&NAMESPACES, "default", "x"),
            "/api/v1/namespaces/x"
        );
        assert_eq!(
            collection_path(&VMS, None),
            "/apis/kubevirt.io/v1/virtualmachines"
        );
        assert_eq!(
            collection_path(&STORAGE_CLASSES, Some("default")),
            "/apis/storage.k8s.io/v1/storageclasses"
        );
        assert_eq!(display_type(&VMS), "virtualmachine.kubevirt.io");
        assert_eq!(display_type(&PVCS), "persistentvolumeclaim");
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine"});
        assert_eq!(of_object(&vm).unwrap(), VMS);
        assert!(of_object(&json!({"apiVersion": "v1", "kind": "Pod"})).is_err());
    }
}
