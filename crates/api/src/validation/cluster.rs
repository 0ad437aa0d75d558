//! Admission of the cluster-level objects: KubeVirt, StorageClass, PersistentVolumeClaim, Namespace.

use super::FieldPath;
use super::metadata::{NameRule, validate_object_meta};
use crate::core::{Namespace, PersistentVolumeClaim, StorageClass};
use crate::kubevirt::KubeVirt;
use crate::status::{CauseType, StatusCause};

pub(crate) fn validate_kubevirt(kv: &KubeVirt) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&kv.metadata, NameRule::Subdomain, true);
    let class = kv
        .spec
        .configuration
        .as_ref()
        .and_then(|c| c.vm_state_storage_class.as_deref())
        .filter(|c| !c.is_empty());
    if let Some(class) = class {
        for err in super::names::dns1123_subdomain_errors(class) {
            causes.push(StatusCause::invalid(
                "spec.configuration.vmStateStorageClass",
                super::names::invalid_value(class, &err),
            ));
        }
    }
    causes
}

pub(crate) fn validate_storage_class(sc: &StorageClass) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&sc.metadata, NameRule::Subdomain, false);
    if sc.provisioner.is_empty() {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            "provisioner",
            "Required value",
        ));
    }
    causes
}

pub(crate) fn validate_pvc(pvc: &PersistentVolumeClaim) -> Vec<StatusCause> {
    let mut causes = validate_object_meta(&pvc.metadata, NameRule::Subdomain, true);
    let spec = FieldPath::new("spec");
    if pvc.spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
        causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            spec.child("accessModes").as_str(),
            "Required value: at least 1 access mode is required",
        ));
    }
    let storage = pvc
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.request("storage"));
    match storage {
        None => causes.push(StatusCause::new(
            CauseType::FieldValueRequired,
            spec.children(&["resources", "requests", "storage"])
                .as_str(),
            "Required value",
        )),
        Some(q) => match q.value() {
            Ok(v) if v > 0 => {}
            Ok(_) => causes.push(StatusCause::invalid(
                spec.children(&["resources", "requests", "storage"])
                    .as_str(),
                format!("Invalid value: {:?}: must be greater than zero", q.as_str()),
            )),
            Err(err) => causes.push(StatusCause::invalid(
                spec.children(&["resources", "requests", "storage"])
                    .as_str(),
                err.to_string(),
            )),
        },
    }
    causes
}

pub(crate) fn validate_namespace(ns: &Namespace) -> Vec<StatusCause> {
    validate_object_meta(&ns.metadata, NameRule::Label, false)
}

/// Kubernetes' `ValidatePersistentVolumeClaimUpdate`: the spec of a claim is immutable after
/// creation except `resources.requests` and `volumeAttributesClassName`; `volumeName` may be set
/// once (binding) while it is empty, and never changed afterwards. The changed fields follow the
/// message, as Kubernetes appends its diff.
pub(crate) fn validate_pvc_update(
    new: &PersistentVolumeClaim,
    old: &PersistentVolumeClaim,
) -> Vec<StatusCause> {
    let comparable = |pvc: &PersistentVolumeClaim, volume_name: Option<&str>| {
        let mut spec = serde_json::to_value(&pvc.spec).unwrap_or_default();
        if let Some(object) = spec.as_object_mut() {
            object.remove("volumeAttributesClassName");
            match volume_name {
                Some(name) => {
                    object.insert("volumeName".into(), name.into());
                }
                None => {
                    object.remove("volumeName");
                }
            }
            if let Some(resources) = object.get_mut("resources").and_then(|r| r.as_object_mut()) {
                resources.remove("requests");
            }
        }
        spec
    };
    let old_volume = old.spec.volume_name.as_deref().filter(|v| !v.is_empty());
    // Binding sets volumeName once; a bound claim keeps it.
    let (old_spec, new_spec) = match old_volume {
        None => (comparable(old, None), comparable(new, None)),
        Some(_) => (
            comparable(old, old_volume),
            comparable(new, Some(new.spec.volume_name.as_deref().unwrap_or(""))),
        ),
    };
    if old_spec == new_spec {
        return Vec::new();
    }
    let mut changed = Vec::new();
    let (empty, keys) = (serde_json::Map::new(), |v: &serde_json::Value| {
        v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
    });
    let mut names: Vec<String> = keys(&old_spec).unwrap_or_default();
    names.extend(keys(&new_spec).unwrap_or_default());
    names.sort();
    names.dedup();
    for name in names {
        let before = old_spec.as_object().unwrap_or(&empty).get(&name);
        let after = new_spec.as_object().unwrap_or(&empty).get(&name);
        if before != after {
            let show = |v: Option<&serde_json::Value>| {
                v.map_or_else(|| "<unset>".to_owned(), |v| v.to_string())
            };
            changed.push(format!("spec.{name}: {} -> {}", show(before), show(after)));
        }
    }
    vec![StatusCause::new(
        CauseType::FieldValueForbidden,
        "spec",
        format!(
            "Forbidden: spec is immutable after creation except resources.requests and \
             volumeAttributesClassName for bound claims\n  changed: {}",
            changed.join(", ")
        ),
    )]
}
