//! Backend storage, with KubeVirt's semantics: a VM whose TPM or EFI is persistent gets a PVC
//! (`generateName: persistent-state-for-<vm>-`, label `persistent-state-for: <vm>`, owner reference
//! to the VM, 10Mi, volumeMode Filesystem) in the storage class `vmStateStorageClass`, else the
//! default-virt class, else the default class. Every PVC is bound to a local-path volume named
//! `pvc-<uid>` (status Bound). A PVC carries `kubernetes.io/pvc-protection`: its volume is deleted
//! only once no running VM uses it. When persistence is switched off, the next start moves the
//! volume to `<data>/retired/` (recoverable) and deletes the PVC.

use std::collections::HashSet;

use crate::client::ClientError;
use ferrovirt_api::core::StorageClass;
use ferrovirt_storage::backend::PVC_SIZE;
use serde_json::{Value, json};

use crate::action::Action;
use ferrovirt_resources::PVCS;
use ferrovirt_resources::kubevirt::meta_str;

/// The finalizer that keeps a PVC (and its volume) while a VM uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// Why backend storage could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum BackendStorageError {
    #[error("no default storage class found")]
    NoStorageClass,
    #[error("the storage class {0:?} configured as vmStateStorageClass does not exist")]
    MissingStorageClass(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("backend storage volume: {0}")]
    Volume(String),
}

/// Picks the storage class for backend storage (KubeVirt's order).
pub fn choose_storage_class(
    configured: Option<&str>,
    classes: &[StorageClass],
) -> Result<String, BackendStorageError> {
    if let Some(name) = configured.filter(|n| !n.is_empty()) {
        return if classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name))
        {
            Ok(name.to_owned())
        } else {
            Err(BackendStorageError::MissingStorageClass(name.to_owned()))
        };
    }
    classes
        .iter()
        .find(|c| c.is_default_virt_class())
        .or_else(|| classes.iter().find(|c| c.is_default_class()))
        .and_then(|c| c.metadata.name.clone())
        .ok_or(BackendStorageError::NoStorageClass)
}

/// What the PVC reconciler sees besides the PVC.
#[derive(Debug, Clone, Default)]
pub struct PvcWorld {
    /// Volumes a running VM uses (a deleted PVC keeps its volume until the VM stops).
    pub volumes_in_use: HashSet<String>,
}

/// The local-path volume of a PVC: `pvc-<uid>`.
pub fn volume_name(pvc: &Value) -> String {
    format!("pvc-{}", meta_str(pvc, "uid"))
}

fn has_protection(pvc: &Value) -> bool {
    pvc.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|f| f.as_str() == Some(PVC_PROTECTION)))
}

/// The PVC reconciler: a pending PVC gets `kubernetes.io/pvc-protection` and its volume
/// `pvc-<uid>` (`spec.volumeName`), then, once that is stored, `status.phase: Bound`; a deleted
/// PVC's volume is deleted once no running VM uses it, then the finalizer is removed.
pub fn reconcile_pvc(pvc: &Value, world: &PvcWorld) -> Vec<Action> {
    let volume = pvc
        .pointer("/spec/volumeName")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    if pvc.pointer("/metadata/deletionTimestamp").is_some() {
        if volume
            .as_ref()
            .is_some_and(|v| world.volumes_in_use.contains(v))
        {
            return Vec::new(); // looked at again when the VM stops
        }
        let mut actions: Vec<Action> = volume
            .into_iter()
            .map(|volume| Action::DeleteVolume { volume })
            .collect();
        if has_protection(pvc) {
            let mut released = pvc.clone();
            if let Some(finalizers) = released
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                finalizers.retain(|f| f.as_str() != Some(PVC_PROTECTION));
            }
            actions.push(Action::Update {
                resource: PVCS,
                object: released,
            });
        }
        return actions;
    }
    if pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound") {
        return Vec::new();
    }
    let wanted = volume_name(pvc);
    let mut actions = vec![Action::ProvisionVolume {
        volume: wanted.clone(),
    }];
    if !has_protection(pvc) || volume.as_deref() != Some(wanted.as_str()) {
        let mut claimed = pvc.clone();
        if !has_protection(pvc) {
            let mut list = pvc
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            list.push(json!(PVC_PROTECTION));
            claimed["metadata"]["finalizers"] = Value::Array(list);
        }
        claimed["spec"]["volumeName"] = json!(wanted);
        actions.push(Action::Update {
            resource: PVCS,
            object: claimed,
        });
        return actions; // Bound once this is stored (the next reconcile)
    }
    let mut bound = pvc.clone();
    bound["status"] = bound_status(pvc);
    actions.push(Action::UpdateStatus {
        resource: PVCS,
        object: bound,
    });
    actions
}

/// `status` of a bound PVC.
fn bound_status(pvc: &Value) -> Value {
    let capacity = pvc
        .pointer("/spec/resources/requests/storage")
        .cloned()
        .unwrap_or(json!(PVC_SIZE));
    json!({
        "phase": "Bound",
        "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
        "capacity": {"storage": capacity},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_api::core::{DEFAULT_CLASS_ANNOTATION, DEFAULT_VIRT_CLASS_ANNOTATION};

    fn class(name: &str, annotation: Option<&str>) -> StorageClass {
        let mut c = StorageClass::default();
        c.metadata.name = Some(name.into());
        if let Some(a) = annotation {
            c.metadata.annotations = Some([(a.to_owned(), "true".to_owned())].into());
        }
        c
    }

    #[test]
    fn storage_class_order() {
        let classes = vec![
            class("plain", None),
            class("default", Some(DEFAULT_CLASS_ANNOTATION)),
            class("virt", Some(DEFAULT_VIRT_CLASS_ANNOTATION)),
        ];
        assert_eq!(
            choose_storage_class(Some("plain"), &classes).unwrap(),
            "plain"
        );
        assert_eq!(choose_storage_class(None, &classes).unwrap(), "virt");
        assert_eq!(
            choose_storage_class(None, &classes[..2]).unwrap(),
            "default"
        );
        assert_eq!(
            choose_storage_class(None, &classes[..1])
                .unwrap_err()
                .to_string(),
            "no default storage class found"
        );
        assert!(choose_storage_class(Some("nope"), &classes).is_err());
    }

    fn pvc(extra: Value) -> Value {
        let mut pvc = json!({
            "metadata": {"name": "persistent-state-for-vm-abcde", "namespace": "d", "uid": "u1", "resourceVersion": "7"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}},
            "status": {"phase": "Pending"},
        });
        if let (Some(base), Some(extra)) = (pvc.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                match (base.get_mut(k), v) {
                    (Some(Value::Object(b)), Value::Object(e)) => b.extend(e.clone()),
                    _ => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        pvc
    }

    fn in_use(volumes: &[&str]) -> PvcWorld {
        PvcWorld {
            volumes_in_use: volumes.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// Given a PVC and the volumes in use -> the actions.
    #[test]
    fn pvc_reconcile_table() {
        let provision = Action::ProvisionVolume {
            volume: "pvc-u1".into(),
        };
        let pending = pvc(json!({}));
        let mut claimed = pending.clone();
        claimed["metadata"]["finalizers"] = json!([PVC_PROTECTION]);
        claimed["spec"]["volumeName"] = json!("pvc-u1");
        let mut bound = claimed.clone();
        bound["status"] = json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Mi"}});
        let mut deleting = bound.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut released = deleting.clone();
        released["metadata"]["finalizers"] = json!([]);
        let cases: Vec<(&str, Value, PvcWorld, Vec<Action>)> = vec![
            (
                "pending: protect and claim its volume",
                pending,
                in_use(&[]),
                vec![
                    provision.clone(),
                    Action::Update {
                        resource: PVCS,
                        object: claimed.clone(),
                    },
                ],
            ),
            (
                "claimed: bound",
                claimed,
                in_use(&[]),
                vec![
                    provision,
                    Action::UpdateStatus {
                        resource: PVCS,
                        object: bound.clone(),
                    },
                ],
            ),
            ("bound: nothing", bound, in_use(&["pvc-u1"]), vec![]),
            (
                "deleted while a VM uses it: wait",
                deleting.clone(),
                in_use(&["pvc-u1"]),
                vec![],
            ),
            (
                "deleted: volume, then finalizer",
                deleting,
                in_use(&["pvc-other"]),
                vec![
                    Action::DeleteVolume {
                        volume: "pvc-u1".into(),
                    },
                    Action::Update {
                        resource: PVCS,
                        object: released.clone(),
                    },
                ],
            ),
            (
                "released: nothing left",
                {
                    let mut gone = released;
                    gone["spec"]["volumeName"] = Value::Null;
                    gone
                },
                in_use(&[]),
                vec![],
            ),
        ];
        for (what, pvc, world, expected) in cases {
            assert_eq!(reconcile_pvc(&pvc, &world), expected, "{what}");
        }
    }
}
