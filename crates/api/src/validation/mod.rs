//! Admission validation with KubeVirt's rules, messages and field paths (its validating webhooks'
//! `StatusCause`s), plus the Kubernetes API server's object-metadata checks.
//!
//! Entry point: [`admit`]. Submodules: `names` (RFC 1123), `metadata`, `spec` (the instance spec
//! shared by VMs and VMIs: memory, CPU, firmware, devices, TPM/EFI persistence), `volumes`, `vm`
//! (run strategy, template), `cluster` (KubeVirt, StorageClass, PVC, Namespace), `harvester`
//! (VM templates; a version's VM spec gets the VM rules under `spec.vm.spec`).

mod cdi;
mod cluster;
mod export;
mod harvester;
pub mod host_paths;
mod hyperv;
mod inputs;
mod instancetype;
mod metadata;
pub mod names;
mod snapshot;
mod spec;
pub mod uniqueness;
mod vm;
mod volumes;

pub use host_paths::{AllowedRoot, HostPathPolicy};
pub use uniqueness::FirmwareUuidOwner;

use crate::config::ClusterConfig;
use crate::instancetype::ReferencedSpecs;
use crate::parse::Object;
use crate::status::{CauseType, Invalid, StatusCause};

/// What admission needs besides the object: the cluster configuration and, for an update, the
/// stored object.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionContext<'a> {
    /// The cluster configuration (feature gates).
    pub cluster: &'a ClusterConfig,
    /// The object being replaced, for updates.
    pub old_object: Option<&'a Object>,
    /// Where `hostDisk` paths may lie; `None` skips the check (offline `ferrovirt validate`).
    pub host_paths: Option<&'a HostPathPolicy>,
    /// The `firmware.uuid` of every other stored VirtualMachine (the object itself may be among
    /// them: it is skipped by namespace and name); empty skips the check.
    pub firmware_uuids_in_use: &'a [FirmwareUuidOwner],
    /// The instancetype and preference a VM refers to, as found in the store; `None` (offline
    /// `ferrovirt validate`) checks the VM's template as written.
    pub references: Option<&'a ReferencedSpecs>,
}

impl<'a> AdmissionContext<'a> {
    /// Context for a create.
    pub fn create(cluster: &'a ClusterConfig) -> Self {
        Self {
            cluster,
            old_object: None,
            host_paths: None,
            firmware_uuids_in_use: &[],
            references: None,
        }
    }

    /// Context for an update replacing `old_object`.
    pub fn update(cluster: &'a ClusterConfig, old_object: &'a Object) -> Self {
        Self {
            cluster,
            old_object: Some(old_object),
            host_paths: None,
            firmware_uuids_in_use: &[],
            references: None,
        }
    }

    /// Also checks `hostDisk` paths against the allowed roots.
    pub fn with_host_paths(mut self, policy: &'a HostPathPolicy) -> Self {
        self.host_paths = Some(policy);
        self
    }

    /// Also applies the instancetype and preference a VM refers to (conflicts are refused, the
    /// resulting template is validated).
    pub fn with_references(mut self, references: &'a ReferencedSpecs) -> Self {
        self.references = Some(references);
        self
    }

    /// Also refuses a `firmware.uuid` that another VirtualMachine has.
    pub fn with_firmware_uuids_in_use(mut self, owners: &'a [FirmwareUuidOwner]) -> Self {
        self.firmware_uuids_in_use = owners;
        self
    }
}

/// A field path as Kubernetes prints it: `spec.template.spec.domain.devices.disks[0].name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    pub(crate) fn new(root: &str) -> Self {
        Self(root.to_owned())
    }

    pub(crate) fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub(crate) fn children(&self, names: &[&str]) -> Self {
        names
            .iter()
            .fold(self.clone(), |path, name| path.child(name))
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Admits an object: `Ok(())` when KubeVirt (and the Kubernetes API server) would accept it,
/// otherwise every cause found, in KubeVirt's order. Validates the object as given: apply the
/// defaults (`crate::defaults`) first, as the server does.
pub fn admit(object: &Object, ctx: &AdmissionContext<'_>) -> Result<(), Invalid> {
    let causes = match object {
        Object::VirtualMachine(vm) => vm::validate_vm(vm, ctx),
        Object::VirtualMachineInstance(vmi) => vm::validate_vmi(vmi, ctx),
        Object::KubeVirt(kv) => cluster::validate_kubevirt(kv),
        Object::StorageClass(sc) => cluster::validate_storage_class(sc),
        Object::PersistentVolumeClaim(pvc) => {
            let mut causes = cluster::validate_pvc(pvc);
            if let Some(Object::PersistentVolumeClaim(old)) = ctx.old_object {
                causes.extend(cluster::validate_pvc_update(pvc, old));
            }
            causes
        }
        Object::Namespace(ns) => cluster::validate_namespace(ns),
        Object::ConfigMap(cm) => {
            metadata::validate_object_meta(&cm.metadata, metadata::NameRule::Subdomain, true)
        }
        Object::Secret(secret) => cdi::validate_secret(secret),
        Object::VirtualMachineTemplate(t) => harvester::validate_template(t),
        Object::VirtualMachineTemplateVersion(v) => harvester::validate_template_version(v, ctx),
        Object::VirtualMachineSnapshot(s) => snapshot::validate_snapshot(s, ctx),
        Object::VirtualMachineSnapshotContent(c) => snapshot::validate_snapshot_content(c, ctx),
        Object::VirtualMachineRestore(r) => snapshot::validate_restore(r, ctx),
        Object::VirtualMachineClone(c) => snapshot::validate_clone(c, ctx),
        Object::DataVolume(dv) => cdi::validate_data_volume(dv, ctx),
        Object::UploadTokenRequest(r) => cdi::validate_upload_token_request(r),
        Object::VirtualMachineExport(e) => export::validate_export(e, ctx),
        Object::Instancetype(o) => instancetype::validate_instancetype(o),
        Object::Preference(o) => instancetype::validate_preference(o),
        Object::Unknown(unknown) => vec![StatusCause::new(
            CauseType::FieldValueNotSupported,
            "kind",
            format!(
                "ferrovirt does not serve {}/{}; it serves kubevirt.io/v1 VirtualMachine, \
                 VirtualMachineInstance and KubeVirt, storage.k8s.io/v1 StorageClass, \
                 v1 PersistentVolumeClaim, v1 Namespace, v1 ConfigMap, v1 Secret, snapshot.kubevirt.io/v1beta1 \
                 VirtualMachineSnapshot, VirtualMachineSnapshotContent and VirtualMachineRestore, \
                 clone.kubevirt.io/v1beta1 VirtualMachineClone, cdi.kubevirt.io/v1beta1 DataVolume, \
                 upload.cdi.kubevirt.io/v1beta1 UploadTokenRequest, export.kubevirt.io/v1beta1 \
                 VirtualMachineExport, harvesterhci.io/v1beta1 \
                 VirtualMachineTemplate and VirtualMachineTemplateVersion, and \
                 instancetype.kubevirt.io/v1beta1 VirtualMachine(Cluster)Instancetype and \
                 VirtualMachine(Cluster)Preference",
                unknown.api_version, unknown.kind
            ),
        )],
    };
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Invalid {
            kind: object.kind().to_owned(),
            group: object.group().to_owned(),
            name: object.name().to_owned(),
            causes,
        })
    }
}
