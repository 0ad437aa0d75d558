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
