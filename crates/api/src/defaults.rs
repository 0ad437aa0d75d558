//! KubeVirt's defaults. For a VirtualMachine (its mutating webhook, on create): a stable
//! `firmware.uuid` and `firmware.serial` assigned once, `architecture: amd64`, `machine.type: q35`.
//! For a VirtualMachineInstance (its defaulters): also guest memory from requests/limits, the CPU
//! topology, disk targets and buses (a CD-ROM read-only with its tray closed),
//! `features.smm.enabled: true` when `smm` is present, `secureBoot: true` made explicit when `efi`
//! is present, and the Hyper-V enlightenments' switches and dependencies
//! (`crate::hyperv_dependencies`). Every volume without a disk or filesystem of its name gets a
//! default disk (KubeVirt's `SetDefaultVolumeDisk`), so no volume is silently left out.

use crate::hyperv_dependencies;
use crate::kubevirt::{
    Cpu, Disk, DiskTarget, Firmware, Machine, Memory, VirtualMachine, VirtualMachineInstance,
    VirtualMachineInstanceSpec,
};

/// The only architecture ferrovirt runs.
pub const DEFAULT_ARCHITECTURE: &str = "amd64";
/// The machine type KubeVirt defaults to on amd64.
pub const DEFAULT_MACHINE_TYPE: &str = "q35";
/// KubeVirt's default disk bus on amd64 when a disk names none.
pub const DEFAULT_DISK_BUS: &str = "sata";

/// A fresh random UUID (v4), as KubeVirt assigns to `firmware.uuid` and `firmware.serial`.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Defaults of a VirtualMachine being created. Idempotent: a set `firmware.uuid` is never changed.
pub fn apply_vm_defaults(vm: &mut VirtualMachine) {
    let Some(template) = vm.spec.template.as_mut() else {
        return;
    };
    let spec = &mut template.spec;
    let firmware = spec.domain.firmware.get_or_insert_with(Firmware::default);
    if firmware.uuid.as_deref().is_none_or(str::is_empty) {
        firmware.uuid = Some(new_uuid());
    }
    if firmware.serial.as_deref().is_none_or(str::is_empty) {
        firmware.serial = Some(new_uuid());
    }
    set_architecture_and_machine(spec);
}

/// On update: keeps the stored `firmware.uuid` (and serial) when the new manifest omits them, so a
/// re-applied manifest does not orphan the VM's persistent TPM state.
pub fn carry_over_firmware_identity(new: &mut VirtualMachine, old: &VirtualMachine) {
    let old_firmware = old
        .spec
        .template
        .as_ref()
        .and_then(|t| t.spec.domain.firmware.as_ref());
    let (Some(old_firmware), Some(template)) = (old_firmware, new.spec.template.as_mut()) else {
        return;
    };
    let firmware = template
        .spec
        .domain
        .firmware
        .get_or_insert_with(Firmware::default);
    if firmware.uuid.is_none() {
        firmware.uuid = old_firmware.uuid.clone();
    }
    if firmware.serial.is_none() {
        firmware.serial = old_firmware.serial.clone();
    }
}

/// Defaults of a VirtualMachineInstance (what KubeVirt's VMI defaulters write).
pub fn apply_vmi_defaults(vmi: &mut VirtualMachineInstance) {
    apply_instance_spec_defaults(&mut vmi.spec);
}

/// The VMI defaults applied to a spec (also usable on a VM's template when building its VMI).
pub fn apply_instance_spec_defaults(spec: &mut VirtualMachineInstanceSpec) {
    set_architecture_and_machine(spec);
    let domain = &mut spec.domain;
    let firmware = domain.firmware.get_or_insert_with(Firmware::default);
    if firmware.uuid.as_deref().is_none_or(str::is_empty) {
        firmware.uuid = Some(new_uuid());
    }
    if let Some(efi) = firmware.bootloader.as_mut().and_then(|b| b.efi.as_mut())
        && efi.secure_boot.is_none()
    {
        efi.secure_boot = Some(true);
    }
    if let Some(smm) = domain.features.as_mut().and_then(|f| f.smm.as_mut())
        && smm.enabled.is_none()
    {
        smm.enabled = Some(true);
    }
    // Guest memory from requests, else limits.
    let guest_missing = domain.memory.as_ref().is_none_or(|m| m.guest.is_none());
    if guest_missing {
        let from_resources = domain.resources.as_ref().and_then(|r| {
            r.request("memory")
                .filter(|q| !q.is_zero())
                .or_else(|| r.limit("memory").filter(|q| !q.is_zero()))
                .cloned()
        });
        if let Some(guest) = from_resources {
            domain.memory.get_or_insert_with(Memory::default).guest = Some(guest);
        }
    }
    // CPU topology: sockets from the CPU limit (else request, else 1), one core, one thread.
    let topology_missing = domain.cpu.as_ref().is_none_or(|c| {
        c.cores.unwrap_or(0) == 0 && c.sockets.unwrap_or(0) == 0 && c.threads.unwrap_or(0) == 0
    });
    if topology_missing {
        let sockets = domain
            .resources
            .as_ref()
            .and_then(|r| r.limit("cpu").or_else(|| r.request("cpu")))
            .and_then(|q| q.value().ok())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(1);
        let cpu = domain.cpu.get_or_insert_with(Cpu::default);
        cpu.sockets = Some(sockets);
        cpu.cores = Some(1);
        cpu.threads = Some(1);
    }
    set_default_volume_disks(spec);
    let domain = &mut spec.domain;
    for disk in domain.devices.disks.iter_mut().flatten() {
        if disk.disk.is_none() && disk.cdrom.is_none() && disk.lun.is_none() {
            disk.disk = Some(DiskTarget::default());
        }
        for target in [&mut disk.disk, &mut disk.cdrom, &mut disk.lun]
            .into_iter()
            .flatten()
        {
            if target.bus.as_deref().is_none_or(str::is_empty) {
                target.bus = Some(DEFAULT_DISK_BUS.to_owned());
            }
        }
        if let Some(cdrom) = disk.cdrom.as_mut() {
            cdrom.read_only.get_or_insert(true);
            cdrom.tray.get_or_insert_with(|| "closed".to_owned());
        }
    }
    if let Some(hyperv) = domain.features.as_mut().and_then(|f| f.hyperv.as_mut()) {
        hyperv.apply_defaults();
        hyperv_dependencies::set_requirements(hyperv);
    }
    let evmcs = domain
        .features
        .as_ref()
        .and_then(|f| f.hyperv.as_ref())
        .and_then(|h| h.evmcs.as_ref())
        .is_some_and(|evmcs| evmcs.is_enabled());
    if evmcs {
        hyperv_dependencies::require_vmx(domain.cpu.get_or_insert_with(Cpu::default));
    }
    if let Some(timer) = domain
        .clock
        .as_mut()
        .and_then(|c| c.timer.as_mut())
        .and_then(|t| t.hyperv.as_mut())
    {
        timer.present.get_or_insert(true);
    }
}

/// KubeVirt's `SetDefaultVolumeDisk`: every volume that no disk and no filesystem names gets a
/// disk of its name (then a `disk` target with the default bus, below), so no volume is dropped.
pub fn set_default_volume_disks(spec: &mut VirtualMachineInstanceSpec) {
    let filesystems: Vec<String> = spec
        .domain
        .devices
        .extra
        .get("filesystems")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .collect();
    let Some(volumes) = spec.volumes.as_ref() else {
        return;
    };
    let missing: Vec<String> = volumes
        .iter()
        .map(|v| v.name.clone())
        .filter(|name| {
            !spec.domain.devices.disks().iter().any(|d| &d.name == name)
                && !filesystems.contains(name)
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let disks = spec.domain.devices.disks.get_or_insert_with(Vec::new);
    disks.extend(missing.into_iter().map(|name| Disk {
        name,
        ..Default::default()
    }));
}

fn set_architecture_and_machine(spec: &mut VirtualMachineInstanceSpec) {
    if spec.architecture.as_deref().is_none_or(str::is_empty) {
        spec.architecture = Some(DEFAULT_ARCHITECTURE.to_owned());
    }
    let machine = spec.domain.machine.get_or_insert_with(Machine::default);
    if machine.machine_type.as_deref().is_none_or(str::is_empty) {
        machine.machine_type = Some(DEFAULT_MACHINE_TYPE.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubevirt::{
        Bootloader, Efi, FeatureState, Features, VirtualMachineInstanceTemplateSpec,
    };

    #[test]
    fn vm_defaults_assign_uuid_once() {
        let mut vm = VirtualMachine::default();
        vm.spec.template = Some(VirtualMachineInstanceTemplateSpec::default());
        apply_vm_defaults(&mut vm);
        let first = vm
            .spec
            .template
            .as_ref()
            .unwrap()
            .spec
            .firmware_uuid()
            .unwrap()
            .to_owned();
        assert_eq!(first.len(), 36);
        apply_vm_defaults(&mut vm);
        assert_eq!(
            vm.spec.template.as_ref().unwrap().spec.firmware_uuid(),
            Some(first.as_str())
        );
        let spec = &vm.spec.template.as_ref().unwrap().spec;
        assert_eq!(spec.architecture.as_deref(), Some("amd64"));
        assert_eq!(
            spec.domain
                .machine
                .as_ref()
                .unwrap()
                .machine_type
                .as_deref(),
            Some("q35")
        );
    }

    #[test]
    fn update_keeps_stored_uuid() {
        let mut old = VirtualMachine::default();
        old.spec.template = Some(VirtualMachineInstanceTemplateSpec::default());
        apply_vm_defaults(&mut old);
        let mut new = VirtualMachine::default();
        new.spec.template = Some(VirtualMachineInstanceTemplateSpec::default());
        carry_over_firmware_identity(&mut new, &old);
        assert_eq!(
            new.spec.template.unwrap().spec.firmware_uuid(),
            old.spec.template.unwrap().spec.firmware_uuid()
        );
    }

    #[test]
    fn vmi_defaults_secure_boot_smm_memory_cpu() {
        let mut vmi = VirtualMachineInstance::default();
        vmi.spec.domain.firmware = Some(Firmware {
            bootloader: Some(Bootloader {
                efi: Some(Efi::default()),
                ..Default::default()
            }),
            ..Default::default()
        });
        vmi.spec.domain.features = Some(Features {
            smm: Some(FeatureState::default()),
            ..Default::default()
        });
        vmi.spec.domain.resources = Some(crate::kubevirt::ResourceRequirements {
            requests: Some([("memory".to_owned(), "1Gi".into())].into_iter().collect()),
            ..Default::default()
        });
        apply_vmi_defaults(&mut vmi);
        let efi = vmi.spec.efi_mode().unwrap();
        assert!(efi.secure_boot);
        assert_eq!(
            vmi.spec
                .domain
                .firmware
                .as_ref()
                .unwrap()
                .bootloader
                .as_ref()
                .unwrap()
                .efi
                .as_ref()
                .unwrap()
                .secure_boot,
            Some(true)
        );
        assert_eq!(
            vmi.spec
                .domain
                .features
                .as_ref()
                .unwrap()
                .smm
                .as_ref()
                .unwrap()
                .enabled,
            Some(true)
        );
        assert_eq!(
            vmi.spec
                .domain
                .memory
                .as_ref()
                .unwrap()
                .guest
                .as_ref()
                .unwrap()
                .as_str(),
            "1Gi"
        );
        assert_eq!(vmi.spec.domain.cpu.as_ref().unwrap().sockets, Some(1));
    }

    #[test]
    fn explicit_smm_disabled_is_kept() {
        let mut vmi = VirtualMachineInstance::default();
        vmi.spec.domain.features = Some(Features {
            smm: Some(FeatureState {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        apply_vmi_defaults(&mut vmi);
        assert!(!vmi.spec.smm_enabled());
    }

    #[test]
    fn volumes_without_a_disk_get_a_default_disk_as_in_kubevirt() {
        let mut vmi: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "spec": {
                "domain": {"devices": {
                    "disks": [{"name": "root", "cdrom": {}}],
                    "filesystems": [{"name": "shared", "virtiofs": {}}],
                }},
                "volumes": [
                    {"name": "root", "hostDisk": {"path": "/x.iso", "type": "Disk"}},
                    {"name": "containerdisk", "containerDisk": {"image": "x"}},
                    {"name": "shared", "persistentVolumeClaim": {"claimName": "s"}},
                    {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#!/bin/sh"}},
                ],
            }
        }))
        .unwrap();
        apply_vmi_defaults(&mut vmi);
        let disks = vmi.spec.domain.devices.disks();
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["root", "containerdisk", "cloudinitdisk"]);
        assert!(disks[0].cdrom.is_some() && disks[0].disk.is_none());
        for added in &disks[1..] {
            assert_eq!(added.disk.as_ref().unwrap().bus.as_deref(), Some("sata"));
        }
    }
}
