//! Applying an instancetype and a preference to an instance spec, as KubeVirt's
//! `pkg/instancetype/apply` and `pkg/instancetype/preference/apply` do:
//! - the instancetype's fields are the VM's; a field the VM sets too is a conflict, refused with
//!   KubeVirt's message and the field's path (`VM field(s) spec.template.spec.domain.cpu.sockets
//!   conflicts with selected instance type`);
//! - a preference only fills what the VM leaves unset.
//!
//! Applied at VM admission (to find conflicts and check the resulting spec) and by the VM
//! controller when it builds the VMI; the stored VM keeps only the references.

use crate::kubevirt::{
    Bios, Bootloader, Cpu, Devices, DiskTarget, FeatureHyperv, Features, Firmware, Memory,
    VirtualMachineInstanceSpec,
};
use crate::status::{CauseType, StatusCause};

use super::{InstancetypeSpec, PreferenceSpec};

/// KubeVirt's conflict message (`pkg/instancetype/conflict`).
pub fn conflict_message(paths: &str) -> String {
    format!("VM field(s) {paths} conflicts with selected instance type")
}

/// One conflicting field: a `FieldValueInvalid` cause at `path`.
fn conflict(base: &str, rest: &[&str]) -> StatusCause {
    let path = std::iter::once(base)
        .chain(rest.iter().copied())
        .collect::<Vec<_>>()
        .join(".");
    StatusCause::new(CauseType::FieldValueInvalid, &path, conflict_message(&path))
}

/// Applies `instancetype` (when given) and then `preference` to `spec`, whose path is `base`
/// (`spec.template.spec` for a VM). Returns the conflicts; on conflicts nothing of the
/// preference is applied (KubeVirt's order).
pub fn apply_to_instance_spec(
    base: &str,
    instancetype: Option<&InstancetypeSpec>,
    preference: Option<&PreferenceSpec>,
    spec: &mut VirtualMachineInstanceSpec,
) -> Vec<StatusCause> {
    if let Some(instancetype) = instancetype {
        let mut conflicts = apply_cpu(base, instancetype, preference, spec);
        conflicts.extend(apply_memory(base, instancetype, spec));
        if !conflicts.is_empty() {
            return conflicts;
        }
    }
    if let Some(preference) = preference {
        apply_preference(preference, spec);
    }
    Vec::new()
}

fn apply_cpu(
    base: &str,
    instancetype: &InstancetypeSpec,
    preference: Option<&PreferenceSpec>,
    spec: &mut VirtualMachineInstanceSpec,
) -> Vec<StatusCause> {
    let domain = &mut spec.domain;
    let mut conflicts = Vec::new();
    if let Some(resources) = &domain.resources {
        if resources.request("cpu").is_some() {
            conflicts.push(conflict(base, &["domain", "resources", "requests", "cpu"]));
        }
        if resources.limit("cpu").is_some() {
            conflicts.push(conflict(base, &["domain", "resources", "limits", "cpu"]));
        }
    }
    let cpu = domain.cpu.get_or_insert_with(Cpu::default);
    for (value, name) in [
        (cpu.sockets, "sockets"),
        (cpu.cores, "cores"),
        (cpu.threads, "threads"),
    ] {
        if value.unwrap_or(0) != 0 {
            conflicts.push(conflict(base, &["domain", "cpu", name]));
        }
    }
    if cpu.model.as_deref().is_some_and(|m| !m.is_empty()) && instancetype.cpu.model.is_some() {
        conflicts.push(conflict(base, &["domain", "cpu", "model"]));
    }
    if !conflicts.is_empty() {
        return conflicts;
    }
    if let Some(model) = &instancetype.cpu.model {
        cpu.model = Some(model.clone());
    }
    let (sockets, cores, threads) = topology(instancetype.cpu.guest, preference);
    cpu.sockets = Some(sockets);
    cpu.cores = Some(cores);
    cpu.threads = Some(threads);
    Vec::new()
}

/// `(sockets, cores, threads)` for `vcpus` by the preference's `preferredCPUTopology` (KubeVirt's
/// default: sockets; `spread` uses KubeVirt's default ratio 2 across sockets and cores).
pub fn topology(vcpus: u32, preference: Option<&PreferenceSpec>) -> (u32, u32, u32) {
    let vcpus = vcpus.max(1);
    if vcpus == 1 {
        return (1, 1, 1);
    }
    let preferred = preference
        .and_then(|p| p.cpu.as_ref())
        .and_then(|c| c.preferred_cpu_topology.as_deref())
        .unwrap_or("sockets");
    match preferred {
        "cores" | "preferCores" => (1, vcpus, 1),
        "threads" | "preferThreads" => (1, 1, vcpus),
        "spread" | "preferSpread" => {
            const RATIO: u32 = 2;
            (vcpus / RATIO, RATIO, 1)
        }
        _ => (vcpus, 1, 1),
    }
}

fn apply_memory(
    base: &str,
    instancetype: &InstancetypeSpec,
    spec: &mut VirtualMachineInstanceSpec,
) -> Vec<StatusCause> {
    let domain = &mut spec.domain;
    let memory = domain.memory.get_or_insert_with(Memory::default);
    if memory.guest.is_some() {
        return vec![conflict(base, &["domain", "memory", "guest"])];
    }
    if let Some(resources) = &domain.resources {
        if resources.request("memory").is_some() {
            return vec![conflict(
                base,
                &["domain", "resources", "requests", "memory"],
            )];
        }
        if resources.limit("memory").is_some() {
            return vec![conflict(base, &["domain", "resources", "limits", "memory"])];
        }
    }
    memory.guest = instancetype.memory.guest.clone();
    Vec::new()
}

/// KubeVirt's `SetDefaultNetworkInterface`, which its VM controller runs before applying the
/// instancetype and preference (so the default interface gets `preferredInterfaceModel`): with
/// neither interfaces nor networks and `autoattachPodInterface` not false, one `default`
/// interface (masquerade) on the pod network.
pub fn set_default_network_interface(spec: &mut VirtualMachineInstanceSpec) {
    let devices = &mut spec.domain.devices;
    let auto = devices
        .extra
        .get("autoattachPodInterface")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true);
    let has_networks = spec
        .extra
        .get("networks")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|n| !n.is_empty());
    if !auto || has_networks || devices.interfaces.as_ref().is_some_and(|i| !i.is_empty()) {
        return;
    }
    let mut interface = crate::kubevirt::Interface {
        name: "default".into(),
        ..Default::default()
    };
    interface
        .extra
        .insert("masquerade".into(), serde_json::json!({}));
    devices.interfaces = Some(vec![interface]);
    spec.extra.insert(
        "networks".into(),
        serde_json::json!([{"name": "default", "pod": {}}]),
    );
}

/// Sets `slot` to `preferred` when the VM left it unset.
fn fill<T: Clone>(slot: &mut Option<T>, preferred: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(preferred);
    }
}

/// Fills what the VM leaves unset from the preference (KubeVirt's preference applier, in its
/// order: devices, features, firmware, machine, clock, termination grace period).
pub fn apply_preference(preference: &PreferenceSpec, spec: &mut VirtualMachineInstanceSpec) {
    if let Some(devices) = &preference.devices {
        apply_devices(devices, &mut spec.domain.devices);
    }
    if let Some(features) = &preference.features {
        let vm_features = spec.domain.features.get_or_insert_with(Features::default);
        if features.preferred_acpi.is_some() {
            // KubeVirt overwrites acpi: it cannot tell an unset one from a set one.
            vm_features.acpi.clone_from(&features.preferred_acpi);
        }
        if let Some(apic) = &features.preferred_apic {
            vm_features
                .extra
                .entry("apic")
                .or_insert_with(|| apic.clone());
        }
        fill(&mut vm_features.smm, &features.preferred_smm);
        if let Some(hyperv) = &features.preferred_hyperv {
            apply_hyperv(
                hyperv,
                vm_features
                    .hyperv
                    .get_or_insert_with(FeatureHyperv::default),
            );
        }
    }
    if let Some(firmware) = &preference.firmware {
        let vm_firmware = spec.domain.firmware.get_or_insert_with(Firmware::default);
        let bootloader = vm_firmware
            .bootloader
            .get_or_insert_with(Bootloader::default);
        let unset = bootloader.efi.is_none() && bootloader.bios.is_none();
        if firmware.preferred_use_bios == Some(true) && unset {
            bootloader.bios = Some(Bios::default());
        }
        if bootloader.efi.is_none() && bootloader.bios.is_none() && firmware.preferred_efi.is_some()
        {
            bootloader.efi.clone_from(&firmware.preferred_efi);
        } else {
            if firmware.preferred_use_efi == Some(true)
                && bootloader.efi.is_none()
                && bootloader.bios.is_none()
            {
                bootloader.efi = Some(Default::default());
            }
            if let Some(efi) = bootloader.efi.as_mut() {
                fill(&mut efi.secure_boot, &firmware.preferred_use_secure_boot);
            }
        }
    }
    if let Some(machine_type) = preference
        .machine
        .as_ref()
        .and_then(|m| m.preferred_machine_type.as_ref())
    {
        let machine = spec.domain.machine.get_or_insert_with(Default::default);
        if machine.machine_type.as_deref().is_none_or(str::is_empty) {
            machine.machine_type = Some(machine_type.clone());
        }
    }
    if let Some(clock) = &preference.clock {
        let vm_clock = spec.domain.clock.get_or_insert_with(Default::default);
        if let Some(offset) = &clock.preferred_clock_offset
            && !vm_clock.extra.contains_key("utc")
            && !vm_clock.extra.contains_key("timezone")
        {
            for (key, value) in offset {
                vm_clock.extra.insert(key.clone(), value.clone());
            }
        }
        fill(&mut vm_clock.timer, &clock.preferred_timer);
    }
    if let Some(seconds) = preference.preferred_termination_grace_period_seconds {
        spec.extra
            .entry("terminationGracePeriodSeconds")
            .or_insert_with(|| seconds.into());
    }
}

fn apply_devices(preferred: &super::DevicePreferences, devices: &mut Devices) {
    fill(&mut devices.tpm, &preferred.preferred_tpm);
    fill(
        &mut devices.autoattach_graphics_device,
        &preferred.preferred_autoattach_graphics_device,
    );
    if let Some(input) = preferred.preferred_autoattach_input_device {
        devices
            .extra
            .entry("autoattachInputDevice")
            .or_insert_with(|| input.into());
    }
    for disk in devices.disks.iter_mut().flatten() {
        if disk.disk.is_none() && disk.cdrom.is_none() && disk.lun.is_none() {
            disk.disk = Some(DiskTarget::default());
        }
        let (target, bus) = match (&mut disk.disk, &mut disk.cdrom) {
            (Some(target), _) => (target, &preferred.preferred_disk_bus),
            (None, Some(target)) => (target, &preferred.preferred_cdrom_bus),
            _ => continue,
        };
        if target.bus.as_deref().is_none_or(str::is_empty) {
            target.bus.clone_from(bus);
        }
    }
    for interface in devices.interfaces.iter_mut().flatten() {
        if interface.model.as_deref().is_none_or(str::is_empty) {
            interface
                .model
                .clone_from(&preferred.preferred_interface_model);
        }
    }
}

fn apply_hyperv(preferred: &FeatureHyperv, hyperv: &mut FeatureHyperv) {
    fill(&mut hyperv.evmcs, &preferred.evmcs);
    fill(&mut hyperv.frequencies, &preferred.frequencies);
    fill(&mut hyperv.ipi, &preferred.ipi);
    fill(&mut hyperv.reenlightenment, &preferred.reenlightenment);
    fill(&mut hyperv.relaxed, &preferred.relaxed);
    fill(&mut hyperv.reset, &preferred.reset);
    fill(&mut hyperv.runtime, &preferred.runtime);
    fill(&mut hyperv.spinlocks, &preferred.spinlocks);
    fill(&mut hyperv.synic, &preferred.synic);
    fill(&mut hyperv.synictimer, &preferred.synictimer);
    fill(&mut hyperv.tlbflush, &preferred.tlbflush);
    fill(&mut hyperv.vapic, &preferred.vapic);
    fill(&mut hyperv.vpindex, &preferred.vpindex);
    fill(&mut hyperv.vendorid, &preferred.vendorid);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instancetype::CpuPreferences;

    fn preferring(topology: &str) -> PreferenceSpec {
        PreferenceSpec {
            cpu: Some(CpuPreferences {
                preferred_cpu_topology: Some(topology.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn topology_follows_the_preferred_cpu_topology() {
        assert_eq!(topology(4, None), (4, 1, 1));
        assert_eq!(topology(4, Some(&preferring("cores"))), (1, 4, 1));
        assert_eq!(topology(4, Some(&preferring("threads"))), (1, 1, 4));
        assert_eq!(topology(4, Some(&preferring("spread"))), (2, 2, 1));
        assert_eq!(topology(1, Some(&preferring("cores"))), (1, 1, 1));
    }

    #[test]
    fn every_conflict_is_named() {
        let instancetype: InstancetypeSpec = serde_json::from_value(
            serde_json::json!({"cpu": {"guest": 2}, "memory": {"guest": "1Gi"}}),
        )
        .unwrap_or_default();
        let mut spec: VirtualMachineInstanceSpec = serde_json::from_value(serde_json::json!({
            "domain": {"cpu": {"sockets": 2, "cores": 2}, "resources": {"requests": {"cpu": "1"}},
                "devices": {}}
        }))
        .unwrap_or_default();
        let fields: Vec<String> =
            apply_to_instance_spec("spec.template.spec", Some(&instancetype), None, &mut spec)
                .into_iter()
                .map(|c| c.field)
                .collect();
        assert_eq!(
            fields,
            [
                "spec.template.spec.domain.resources.requests.cpu",
                "spec.template.spec.domain.cpu.sockets",
                "spec.template.spec.domain.cpu.cores",
            ]
        );
    }
}
