//! Rules that need the other stored objects: two VirtualMachines may not share a
//! `firmware.uuid` (it names the VM's TPM state directory, `swtpm/<uuid>/`, and its state
//! generations; a second VM with the same UUID would boot with the first VM's TPM identity).

use serde_json::Value;

use super::FieldPath;
use crate::kubevirt::VirtualMachineInstanceSpec;
use crate::status::{CauseType, StatusCause};

/// A stored VirtualMachine and its `firmware.uuid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareUuidOwner {
    pub namespace: String,
    pub name: String,
    pub uuid: String,
}

impl FirmwareUuidOwner {
    /// From a stored VirtualMachine (JSON); `None` when it has no `firmware.uuid`.
    pub fn from_vm_json(vm: &Value) -> Option<Self> {
        let text = |pointer: &str| vm.pointer(pointer).and_then(Value::as_str);
        Some(Self {
            namespace: text("/metadata/namespace").unwrap_or("default").to_owned(),
            name: text("/metadata/name")?.to_owned(),
            uuid: text("/spec/template/spec/domain/firmware/uuid")?.to_owned(),
        })
    }
}

/// Refuses `spec.firmware.uuid` of VM `namespace/name` when another VM in `in_use` has it.
pub fn validate_firmware_uuid_unique(
    spec_path: &str,
    namespace: &str,
    name: &str,
    spec: &VirtualMachineInstanceSpec,
    in_use: &[FirmwareUuidOwner],
) -> Vec<StatusCause> {
    let Some(uuid) = spec.firmware_uuid() else {
        return Vec::new();
    };
    in_use
        .iter()
        .filter(|other| !(other.namespace == namespace && other.name == name))
        .find(|other| other.uuid.eq_ignore_ascii_case(uuid))
        .map(|other| {
            StatusCause::new(
                CauseType::FieldValueDuplicate,
                FieldPath::new(spec_path)
                    .children(&["domain", "firmware", "uuid"])
                    .as_str(),
                format!(
                    "Duplicate value: {uuid:?}: VirtualMachine {}/{} already has this firmware \
                     UUID; it keys the VM's persistent TPM state, so two VMs cannot share it. \
                     Remove the field to get a generated UUID, or choose another one",
                    other.namespace, other.name
                ),
            )
        })
        .into_iter()
        .collect()
}
