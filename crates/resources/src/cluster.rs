//! The cluster-wide objects: the KubeVirt configuration read from the stored `KubeVirt` object,
//! the defaults a fresh store is seeded with (namespaces `default` and `kubevirt`, the KubeVirt
//! CR, the `local-path` StorageClass, KubeVirt's common cluster preferences and instancetypes), and the lookup of a VM's backend-storage PVC by KubeVirt's
//! label.

use ferrovirt_api::ClusterConfig;
use ferrovirt_api::config::{default_kubevirt, default_storage_class};
use ferrovirt_api::kubevirt::KubeVirt;
use ferrovirt_storage::backend::PVC_LABEL_KEY;
use ferrovirt_store::{ListOptions, Selector, Store, StoreError};
use serde_json::{Value, json};

use crate::catalogue::{
    CLUSTER_INSTANCETYPES, CLUSTER_PREFERENCES, KUBEVIRTS, NAMESPACES, PVCS, STORAGE_CLASSES,
};

/// The cluster preferences and instancetypes of KubeVirt's common-instancetypes a fresh store gets
/// (the file says where each value comes from).
const COMMON_INSTANCETYPES: &str = include_str!("common-instancetypes.yaml");

/// The annotation on namespace `kubevirt` recording that the defaults were created once.
const DEFAULTS_CREATED: &str = "ferrovirt.io/defaults-created";
/// The same for the common instancetypes and preferences (added later than the other defaults, so
/// a store seeded before them gets them once too).
const COMMON_INSTANCETYPES_CREATED: &str = "ferrovirt.io/common-instancetypes-created";

/// The seeded cluster preferences and instancetypes, as objects to store.
pub fn common_instancetypes() -> Vec<(ferrovirt_store::ResourceKind, Value)> {
    let Ok(objects) = ferrovirt_api::parse_documents(
        COMMON_INSTANCETYPES.as_bytes(),
        "common-instancetypes.yaml",
    ) else {
        return Vec::new();
    };
    objects
        .iter()
        .filter_map(|object| {
            let kind = match object.kind() {
                "VirtualMachineClusterPreference" => CLUSTER_PREFERENCES.store_kind(),
                "VirtualMachineClusterInstancetype" => CLUSTER_INSTANCETYPES.store_kind(),
                _ => return None,
            };
            object.to_json().ok().map(|json| (kind, json))
        })
        .collect()
}

/// The cluster configuration of a stored KubeVirt object (none: no feature gates).
pub fn config_of(kubevirt: Option<&Value>) -> ClusterConfig {
    kubevirt
        .and_then(|kv| serde_json::from_value::<KubeVirt>(kv.clone()).ok())
        .map(|kv| ClusterConfig::from_kubevirt(&kv))
        .unwrap_or_default()
}

/// The cluster configuration from the stored KubeVirt object (none stored: no feature gates).
pub fn cluster_config(store: &Store) -> ClusterConfig {
    let list = store.list(&KUBEVIRTS.store_kind(), &ListOptions::default());
    config_of(list.ok().and_then(|l| l.items.into_iter().next()).as_ref())
}

/// The label selector of a VM's backend-storage PVC (`persistent-state-for=<vm>`).
pub fn backend_pvc_selector_text(vm_name: &str) -> String {
    format!("{PVC_LABEL_KEY}={vm_name}")
}

/// [`backend_pvc_selector_text`], parsed.
pub fn backend_pvc_selector(vm_name: &str) -> Selector {
    Selector::parse(&backend_pvc_selector_text(vm_name)).unwrap_or_else(|_| Selector::everything())
}

/// The backend-storage PVC of a VM, if any (by KubeVirt's label; one being deleted is not it).
pub fn find_backend_pvc(
    store: &Store,
    ns: &str,
    vm_name: &str,
) -> Result<Option<Value>, StoreError> {
    let list = store.list(
        &PVCS.store_kind(),
        &ListOptions {
            namespace: Some(ns.to_owned()),
            label_selector: backend_pvc_selector(vm_name),
            ..ListOptions::default()
        },
    )?;
    Ok(list
        .items
        .into_iter()
        .find(|p| p.pointer("/metadata/deletionTimestamp").is_none()))
}

/// Creates the embedded defaults on first run: the KubeVirt CR (VMPersistentState and HostDisk
/// gates), the `local-path` StorageClass, namespaces `default` and `kubevirt`, and the cluster
/// preferences and instancetypes of KubeVirt's common-instancetypes. They are created once (an
/// annotation on namespace `kubevirt` records it): an admin may edit or delete them afterwards.
pub fn seed_defaults(store: &Store) -> Result<(), StoreError> {
    let create_if_missing =
        |kind: &ferrovirt_store::ResourceKind, object: Value| match store.create(kind, object) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        };
    for ns in ["default", "kubevirt"] {
        create_if_missing(
            &NAMESPACES.store_kind(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
        )?;
    }
    let marked = |annotation: &str| {
        store
            .get(&NAMESPACES.store_kind(), None, "kubevirt")
            .ok()
            .and_then(|ns| {
                ns.pointer("/metadata/annotations")
                    .and_then(|a| a.get(annotation))
                    .cloned()
            })
            .is_some()
    };
    let mark = |annotation: &str| -> Result<(), StoreError> {
        let mut ns = store.get(&NAMESPACES.store_kind(), None, "kubevirt")?;
        let annotations = ns["metadata"]
            .as_object_mut()
            .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
        if let Some(annotations) = annotations {
            annotations[annotation] = json!("true");
        }
        store.update(&NAMESPACES.store_kind(), ns)?;
        Ok(())
    };
    if !marked(DEFAULTS_CREATED) {
        if let Ok(kv) = serde_json::to_value(default_kubevirt()) {
            create_if_missing(&KUBEVIRTS.store_kind(), kv)?;
        }
        if let Ok(sc) = serde_json::to_value(default_storage_class()) {
            create_if_missing(&STORAGE_CLASSES.store_kind(), sc)?;
        }
        mark(DEFAULTS_CREATED)?;
    }
    if !marked(COMMON_INSTANCETYPES_CREATED) {
        for (kind, object) in common_instancetypes() {
            create_if_missing(&kind, object)?;
        }
        mark(COMMON_INSTANCETYPES_CREATED)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_instancetypes_parse_and_pass_admission() {
        let objects = ferrovirt_api::parse_documents(
            COMMON_INSTANCETYPES.as_bytes(),
            "common-instancetypes.yaml",
        )
        .unwrap_or_default();
        assert_eq!(objects.len(), common_instancetypes().len());
        let config = ClusterConfig::embedded_default();
        for object in &objects {
            let verdict =
                ferrovirt_api::admit(object, &ferrovirt_api::AdmissionContext::create(&config));
            assert!(verdict.is_ok(), "{}: {verdict:?}", object.name());
        }
        let names: Vec<&str> = objects.iter().map(|o| o.name()).collect();
        for wanted in [
            "windows.11",
            "windows.2k22",
            "fedora",
            "ubuntu",
            "debian",
            "u1.small",
        ] {
            assert!(names.contains(&wanted), "{wanted} in {names:?}");
        }
    }
}
