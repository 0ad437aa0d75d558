//! The controller's side effects for backend storage: create the VM's PVC, bind it to its
//! local-path volume, retire it when persistence is switched off (the pure rules are in
//! [`crate::storage`]).

use ferrovirt_api::core::StorageClass;
use ferrovirt_resources::kubevirt::meta_str;
use ferrovirt_resources::{KUBEVIRTS, PVCS, STORAGE_CLASSES};
use ferrovirt_storage::backend::{PVC_LABEL_KEY, PVC_SIZE, pvc_generate_name};
use serde_json::{Value, json};

use super::Controller;
use crate::client::ClientError;
use crate::events::{EventType, record};
use crate::storage::{BackendStorageError, PVC_PROTECTION, choose_storage_class};

impl Controller {
    /// The backend-storage PVC of a VM, if any (by label).
    pub(crate) fn backend_pvc(
        &self,
        ns: &str,
        vm_name: &str,
    ) -> Result<Option<Value>, ClientError> {
        let selector = ferrovirt_resources::cluster::backend_pvc_selector_text(vm_name);
        Ok(self
            .client
            .list(&PVCS, Some(ns), Some(&selector))?
            .into_iter()
            .find(|p| p.pointer("/metadata/deletionTimestamp").is_none()))
    }

    /// Creates (if needed) and binds the VM's backend-storage PVC.
    pub(crate) fn ensure_backend_pvc(&self, vm: &Value) -> Result<Value, BackendStorageError> {
        let (ns, name) = (meta_str(vm, "namespace"), meta_str(vm, "name"));
        let pvc = match self.backend_pvc(ns, name)? {
            Some(pvc) => pvc,
            None => {
                let cluster = ferrovirt_resources::cluster::config_of(
                    self.client.list(&KUBEVIRTS, None, None)?.first(),
                );
                let classes: Vec<StorageClass> = self
                    .client
                    .list(&STORAGE_CLASSES, None, None)?
                    .into_iter()
                    .filter_map(|c| serde_json::from_value(c).ok())
                    .collect();
                let class =
                    choose_storage_class(cluster.vm_state_storage_class.as_deref(), &classes)?;
                let pvc = json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "generateName": pvc_generate_name(name),
                        "namespace": ns,
                        "labels": {PVC_LABEL_KEY: name},
                        "ownerReferences": [{
                            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": name,
                            "uid": meta_str(vm, "uid"), "controller": true, "blockOwnerDeletion": true,
                        }],
                        "finalizers": [PVC_PROTECTION],
                    },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": PVC_SIZE}},
                        "storageClassName": class,
                        "volumeMode": "Filesystem",
                    },
                    "status": {"phase": "Pending"},
                });
                let created = self.client.create(&PVCS, pvc)?;
                record(
                    &*self.client,
                    vm,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!(
                        "Created backend storage PVC {} for the VM's persistent TPM/EFI state",
                        meta_str(&created, "name")
                    ),
                );
                created
            }
        };
        self.bind(pvc)
    }

    /// Binds a PVC to its local-path volume `pvc-<uid>` (idempotent).
    fn bind(&self, pvc: Value) -> Result<Value, BackendStorageError> {
        let volume = format!("pvc-{}", meta_str(&pvc, "uid"));
        self.provisioner
            .create_volume(&volume)
            .map_err(|e| BackendStorageError::Volume(e.to_string()))?;
        let mut pvc = pvc;
        if pvc.pointer("/spec/volumeName").and_then(Value::as_str) != Some(volume.as_str()) {
            pvc["spec"]["volumeName"] = json!(volume);
            pvc = self.client.update(&PVCS, pvc)?;
        }
        if pvc.pointer("/status/phase").and_then(Value::as_str) != Some("Bound") {
            let capacity = pvc
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or(json!(PVC_SIZE));
            pvc["status"] = json!({
                "phase": "Bound",
                "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                "capacity": {"storage": capacity},
            });
            pvc = self.client.update_status(&PVCS, pvc)?;
        }
        Ok(pvc)
    }

    /// Persistence switched off: archive the volume under `<data>/retired/`, delete the PVC.
    pub(crate) fn retire_backend_pvc(&self, vm: &Value) -> Result<(), BackendStorageError> {
        let (ns, name) = (meta_str(vm, "namespace"), meta_str(vm, "name"));
        let Some(pvc) = self.backend_pvc(ns, name)? else {
            return Ok(());
        };
        if let Some(volume) = pvc.pointer("/spec/volumeName").and_then(Value::as_str)
            && let Ok(path) = self.provisioner.volume_path(volume)
            && path.exists()
        {
            let archive = self.data_dir.join("retired");
            std::fs::create_dir_all(&archive)
                .map_err(|e| BackendStorageError::Volume(format!("{}: {e}", archive.display())))?;
            let retired = ferrovirt_storage::generations::retire(&path, &archive)
                .map_err(|e| BackendStorageError::Volume(e.to_string()))?;
            record(
                &*self.client,
                vm,
                EventType::Normal,
                "RetiredBackendStorage",
                &format!(
                    "Persistent TPM/EFI state is no longer requested: the volume of PVC {} was moved to {} (recoverable) and the PVC is deleted",
                    meta_str(&pvc, "name"),
                    retired.display()
                ),
            );
        }
        match self.client.delete(&PVCS, Some(ns), meta_str(&pvc, "name")) {
            Ok(_) | Err(ClientError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
