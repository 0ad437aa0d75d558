//! The fields of a VMI spec that ferrovirt accepts (they are valid KubeVirt) but does not act on
//! when it starts the VM: scheduling (`nodeSelector`, `affinity`, ...), probes, CPU models,
//! `kernelBoot`, disk cache modes, and everything else [`plan_from_spec`](crate::convert) does
//! not read. The controllers list them in a VM condition and a Warning Event, so nothing is
//! dropped silently. What the converter refuses (a `containerDisk`, multus, ...) is not listed
//! here: it is an error at start instead.
//!
//! The list of what is acted on ([`ACTED_ON`]) is kept next to the converter it describes; a
//! field the converter starts to read belongs here too.

use ferrovirt_api::kubevirt::vmi::VirtualMachineInstanceSpec;
use serde_json::Value;

/// The spec paths ferrovirt acts on (or refuses at start), relative to a VMI spec. `[]` stands
/// for any list index; a path ending in `.*` covers everything below it.
pub const ACTED_ON: &[&str] = &[
    "architecture",
    "terminationGracePeriodSeconds",
    // CPU topology and memory (`convert`), requests/limits read by the defaulter.
    "domain.cpu.cores",
    "domain.cpu.sockets",
    "domain.cpu.threads",
    "domain.memory.guest",
    "domain.resources.requests.memory",
    "domain.resources.requests.cpu",
    "domain.resources.limits.memory",
    "domain.resources.limits.cpu",
    "domain.machine.type",
    // Firmware: the UUID keys the state and is QEMU's `-uuid`; `serial` is the SMBIOS serial.
    "domain.firmware.uuid",
    "domain.firmware.serial",
    "domain.firmware.bootloader.bios",
    "domain.firmware.bootloader.efi.secureBoot",
    "domain.firmware.bootloader.efi.persistent",
    "domain.features.smm.enabled",
    "domain.features.hyperv.*",
    // ACPI is always on (the q35 default); `acpi: {}` asks for nothing else.
    "domain.features.acpi",
    "domain.clock.timer.hyperv.present",
    // QEMU's RTC is UTC by default.
    "domain.clock.utc",
    "domain.devices.disks[].name",
    "domain.devices.disks[].bootOrder",
    "domain.devices.disks[].serial",
    "domain.devices.disks[].disk.bus",
    "domain.devices.disks[].disk.readonly",
    "domain.devices.disks[].cdrom.bus",
    "domain.devices.disks[].cdrom.readonly",
    "domain.devices.disks[].cdrom.tray",
    "domain.devices.disks[].lun.*",
    "domain.devices.interfaces[].name",
    "domain.devices.interfaces[].model",
    "domain.devices.interfaces[].macAddress",
    "domain.devices.interfaces[].bootOrder",
    "domain.devices.interfaces[].masquerade",
    "domain.devices.interfaces[].bridge",
    "domain.devices.interfaces[].slirp",
    "domain.devices.interfaces[].ports.*",
    "domain.devices.interfaces[].sriov.*",
    "domain.devices.interfaces[].macvtap.*",
    "domain.devices.interfaces[].passt.*",
    "domain.devices.interfaces[].binding.*",
    "domain.devices.tpm.enabled",
    "domain.devices.tpm.persistent",
    "domain.devices.autoattachGraphicsDevice",
    "domain.devices.autoattachPodInterface",
    "domain.devices.inputs[].name",
    "domain.devices.inputs[].type",
    "domain.devices.inputs[].bus",
    "networks[].name",
    "networks[].pod",
    "networks[].multus.*",
    "volumes[].name",
    "volumes[].hostDisk.path",
    "volumes[].hostDisk.type",
    "volumes[].hostDisk.capacity",
    "volumes[].emptyDisk.capacity",
    "volumes[].persistentVolumeClaim.claimName",
    "volumes[].cloudInitNoCloud.userData",
    "volumes[].cloudInitNoCloud.networkData",
    // Refused at start with their field path and what to use instead.
    "volumes[].cloudInitNoCloud.userDataBase64",
    "volumes[].cloudInitNoCloud.networkDataBase64",
    "volumes[].cloudInitNoCloud.secretRef.*",
    "volumes[].cloudInitNoCloud.networkDataSecretRef.*",
    "volumes[].containerDisk.*",
    "volumes[].dataVolume.*",
    "volumes[].cloudInitConfigDrive.*",
    "volumes[].ephemeral.*",
    "volumes[].configMap.*",
    "volumes[].secret.*",
    "volumes[].serviceAccount.*",
    "volumes[].downwardAPI.*",
    "volumes[].downwardMetrics.*",
    "volumes[].memoryDump.*",
    "volumes[].sysprep.*",
    "volumes[].containerPath.*",
];

/// The fields of `spec` that are set but not acted on, as full field paths (`field_prefix`:
/// `spec.template.spec` for a VM, `spec` for a VMI), sorted, each reported at the
/// highest level that is wholly ignored (`spec.nodeSelector`, not its keys).
pub fn ignored_fields(spec: &VirtualMachineInstanceSpec, field_prefix: &str) -> Vec<String> {
    let Ok(value) = serde_json::to_value(spec) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    walk(&value, "", field_prefix, &mut found);
    found.sort();
    found
}

/// `pattern` is the path with list indexes replaced by `[]`; `shown` the path with its indexes.
fn walk(value: &Value, pattern: &str, shown: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, child) in map {
                let child_pattern = join(pattern, key);
                let child_shown = format!("{shown}.{key}");
                match coverage(&child_pattern) {
                    Coverage::Whole => {}
                    Coverage::Part => walk(child, &child_pattern, &child_shown, found),
                    Coverage::None if is_empty(child) => {}
                    Coverage::None => found.push(child_shown),
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(
                    item,
                    &format!("{pattern}[]"),
                    &format!("{shown}[{index}]"),
                    found,
                );
            }
        }
        // A scalar is reached only through a `Part` path: a list of scalars under a handled
        // list is handled.
        _ => {}
    }
}

fn join(pattern: &str, key: &str) -> String {
    if pattern.is_empty() {
        key.to_owned()
    } else {
        format!("{pattern}.{key}")
    }
}

/// A value that sets nothing: `null` or `[]` (an empty object is a switch, as `rng: {}`).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

enum Coverage {
    /// The path and everything below it is acted on.
    Whole,
    /// Some paths below it are acted on: look deeper.
    Part,
    /// Nothing at or below it is acted on.
    None,
}

fn coverage(pattern: &str) -> Coverage {
    let mut part = false;
    for acted in ACTED_ON {
        let (base, subtree) = match acted.strip_suffix(".*") {
            Some(base) => (base, true),
            None => (*acted, false),
        };
        if base == pattern {
            // A leaf pattern covers the value at the path (an object there, like
            // `masquerade: {}`, counts as a switch).
            return Coverage::Whole;
        }
        // (No `format!` here: this runs for every ACTED_ON path at every key of every spec a
        // controller reconciles, and those allocations were ~18% of `serve`'s CPU while the
        // controllers wrote the status of 10,000 new VMs.)
        if subtree
            && pattern
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            return Coverage::Whole;
        }
        if base
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
        {
            part = true;
        }
    }
    if part { Coverage::Part } else { Coverage::None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> VirtualMachineInstanceSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn what_is_acted_on_is_not_listed() {
        let spec = spec(serde_json::json!({
            "architecture": "amd64",
            "terminationGracePeriodSeconds": 0,
            "domain": {
                "cpu": {"cores": 1, "sockets": 1, "threads": 1},
                "memory": {"guest": "128Mi"},
                "resources": {"requests": {"memory": "128Mi"}},
                "machine": {"type": "q35"},
                "firmware": {"uuid": "5e2f3a7c-4b8d-4c1e-9f60-2a1b3c4d5e6f", "serial": "x",
                             "bootloader": {"efi": {"secureBoot": true, "persistent": true}}},
                "features": {"smm": {"enabled": true}, "acpi": {}},
                "devices": {
                    "disks": [{"name": "c", "disk": {"bus": "sata"}}],
                    "interfaces": [{"name": "default", "masquerade": {}}],
                    "tpm": {"persistent": true},
                },
            },
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "c", "containerDisk": {"image": "x"}}],
        }));
        assert_eq!(ignored_fields(&spec, "spec"), Vec::<String>::new());
    }

    #[test]
    fn what_is_not_acted_on_is_listed_at_its_highest_level() {
        let spec = spec(serde_json::json!({
            "nodeSelector": {"kubernetes.io/hostname": "node01"},
            "evictionStrategy": "LiveMigrate",
            "domain": {
                "cpu": {"cores": 2, "model": "host-passthrough", "dedicatedCpuPlacement": true},
                "firmware": {"kernelBoot": {"container": {"image": "k"}}},
                "devices": {
                    "disks": [{"name": "a", "disk": {"bus": "virtio"}, "cache": "none"}],
                    "rng": {},
                    "watchdog": {"name": "w", "i6300esb": {"action": "poweroff"}},
                },
            },
            "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "a", "readOnly": true}}],
        }));
        assert_eq!(
            ignored_fields(&spec, "spec.template.spec"),
            [
                "spec.template.spec.domain.cpu.dedicatedCpuPlacement",
                "spec.template.spec.domain.cpu.model",
                "spec.template.spec.domain.devices.disks[0].cache",
                "spec.template.spec.domain.devices.rng",
                "spec.template.spec.domain.devices.watchdog",
                "spec.template.spec.domain.firmware.kernelBoot",
                "spec.template.spec.evictionStrategy",
                "spec.template.spec.nodeSelector",
                "spec.template.spec.volumes[0].persistentVolumeClaim.readOnly",
            ]
        );
    }
}
