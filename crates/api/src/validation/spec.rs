//! Rules for a VirtualMachineInstanceSpec (a VMI's `spec`, a VM's `spec.template.spec`), in the
//! order of KubeVirt's `ValidateVirtualMachineInstanceSpec`, with its messages.

use std::collections::{HashMap, HashSet};

use super::FieldPath;
use super::names::{dns1123_label_errors, dns1123_subdomain_errors};
use super::volumes::validate_volumes;
use crate::config::{ClusterConfig, VM_PERSISTENT_STATE_GATE};
use crate::kubevirt::{Disk, DomainSpec, VirtualMachineInstanceSpec};
use crate::quantity::Quantity;
use crate::status::{CauseType, StatusCause};

const NAME_NOT_FOUND: &str = "not found.";

/// All spec rules shared by VM templates and VMIs.
pub(crate) fn validate_instance_spec(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
    config: &ClusterConfig,
) -> Vec<StatusCause> {
    let mut causes = Vec::new();
    validate_hostname(field, spec, &mut causes);
    validate_quantities(field, &spec.domain, &mut causes);
    validate_memory_requests_and_limits(field, &spec.domain, &mut causes);
    validate_cpu_requests_and_limits(field, &spec.domain, &mut causes);
    validate_start_strategy(field, spec, &mut causes);
    validate_boot_order_and_disk_volumes(field, spec, &mut causes);
    validate_domain(&field.child("domain"), &spec.domain, &mut causes);
    super::inputs::validate_input_devices(field, spec.domain.devices.inputs(), &mut causes);
    causes.extend(validate_volumes(
        &field.child("volumes"),
        spec.volumes(),
        config,
    ));
    validate_persistent_state(field, spec, config, &mut causes);
    validate_architecture(field, spec, &mut causes);
    causes
}

/// KubeVirt's `ValidateVirtualMachineInstanceMandatoryFields`: some memory must be requested.
pub(crate) fn validate_memory_present(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
) -> Vec<StatusCause> {
    let domain = &spec.domain;
    let requested = domain
        .resources
        .as_ref()
        .and_then(|r| r.request("memory"))
        .and_then(|q| q.value().ok())
        .is_some_and(|v| v != 0);
    if requested {
        return Vec::new();
    }
    let memory_set = domain
        .memory
        .as_ref()
        .is_some_and(|m| m.guest.is_some() || m.hugepages.is_some());
    if memory_set {
        return Vec::new();
    }
    vec![StatusCause::new(
        CauseType::FieldValueRequired,
        "",
        format!(
            "no memory requested, at least one of '{}', '{}' or '{}' must be set",
            field.children(&["domain", "memory", "guest"]),
            field.children(&["domain", "memory", "hugepages", "pageSize"]),
            field.children(&["domain", "resources", "requests", "memory"]),
        ),
    )]
}

fn validate_hostname(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
    causes: &mut Vec<StatusCause>,
) {
    if let Some(hostname) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        let errors = dns1123_label_errors(hostname);
        if !errors.is_empty() {
            let path = field.child("hostname");
            causes.push(StatusCause::invalid(
                path.as_str(),
                format!(
                    "{path} does not conform to the kubernetes DNS_LABEL rules : {}",
                    errors.join(", ")
                ),
            ));
        }
    }
    if let Some(subdomain) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        let errors = dns1123_subdomain_errors(subdomain);
        if !errors.is_empty() {
            let path = field.child("subdomain");
            causes.push(StatusCause::invalid(
                path.as_str(),
                format!(
                    "{path} does not conform to the kubernetes DNS_SUBDOMAIN rules : {}",
                    errors.join(", ")
                ),
            ));
        }
    }
}

/// Malformed quantities: Kubernetes refuses them while decoding the request.
fn validate_quantities(field: &FieldPath, domain: &DomainSpec, causes: &mut Vec<StatusCause>) {
    let mut check = |path: FieldPath, quantity: &Quantity| {
        if let Err(err) = quantity
            .validate()
            .and_then(|()| quantity.milli_value().map(|_| ()))
        {
            causes.push(StatusCause::invalid(path.as_str(), err.to_string()));
        }
    };
    if let Some(resources) = &domain.resources {
        for (kind, list) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for (name, quantity) in list.iter().flatten() {
                check(
                    field.children(&["domain", "resources", kind, name]),
                    quantity,
                );
            }
        }
    }
    if let Some(guest) = domain.memory.as_ref().and_then(|m| m.guest.as_ref()) {
        check(field.children(&["domain", "memory", "guest"]), guest);
    }
}

/// A quantity's value, 0 when absent or malformed (malformed ones are reported separately).
fn value_of(quantity: Option<&Quantity>, milli: bool) -> i128 {
    quantity
        .and_then(|q| {
            if milli {
                q.milli_value().ok()
            } else {
                q.value().ok()
            }
        })
        .unwrap_or(0)
}

fn validate_memory_requests_and_limits(
    field: &FieldPath,
    domain: &DomainSpec,
    causes: &mut Vec<StatusCause>,
) {
    let Some(resources) = &domain.resources else {
        return;
    };
    let request = resources.request("memory");
    let limit = resources.limit("memory");
    let request_value = value_of(request, false);
    let limit_value = value_of(limit, false);
    let request_path = field.children(&["domain", "resources", "requests", "memory"]);
    let limit_path = field.children(&["domain", "resources", "limits", "memory"]);
    let shown = |q: Option<&Quantity>| q.map(Quantity::to_string).unwrap_or_else(|| "0".into());
    if request_value < 0 {
        causes.push(StatusCause::invalid(
            request_path.as_str(),
            format!(
                "{request_path} '{}': must be greater than or equal to 0.",
                shown(request)
            ),
        ));
    } else if request_value > 0 && request_value < 1_000_000 {
        causes.push(StatusCause::invalid(
            request_path.as_str(),
            format!(
                "{request_path} '{}': must be greater than or equal to 1M.",
                shown(request)
            ),
        ));
    }
    if limit_value < 0 {
        causes.push(StatusCause::invalid(
            limit_path.as_str(),
            format!(
                "{limit_path} '{}': must be greater than or equal to 0.",
                shown(limit)
            ),
        ));
    }
    if limit_value > 0 && request_value > limit_value {
        causes.push(StatusCause::invalid(
            request_path.as_str(),
            format!(
                "{request_path} '{}' is greater than {limit_path} '{}'",
                shown(request),
                shown(limit)
            ),
        ));
    }
}

fn validate_cpu_requests_and_limits(
    field: &FieldPath,
    domain: &DomainSpec,
    causes: &mut Vec<StatusCause>,
) {
    let Some(resources) = &domain.resources else {
        return;
    };
    let request = resources.request("cpu");
    let limit = resources.limit("cpu");
    let request_milli = value_of(request, true);
    let limit_milli = value_of(limit, true);
    let request_path = field.children(&["domain", "resources", "requests", "cpu"]);
    let limit_path = field.children(&["domain", "resources", "limits", "cpu"]);
    let shown = |q: Option<&Quantity>| q.map(Quantity::to_string).unwrap_or_else(|| "0".into());
    if request_milli < 0 {
        causes.push(StatusCause::invalid(
            request_path.as_str(),
            format!(
                "{request_path} '{}': must be greater than or equal to 0.",
                shown(request)
            ),
        ));
    }
    if limit_milli < 0 {
        causes.push(StatusCause::invalid(
            limit_path.as_str(),
            format!(
                "{limit_path} '{}': must be greater than or equal to 0.",
                shown(limit)
            ),
        ));
    }
    if limit_milli > 0 && request_milli > limit_milli {
        causes.push(StatusCause::invalid(
            request_path.as_str(),
            format!(
                "{request_path} '{}' is greater than {limit_path} '{}'",
                shown(request),
                shown(limit)
            ),
        ));
    }
}

fn validate_start_strategy(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
    causes: &mut Vec<StatusCause>,
) {
    if let Some(strategy) = &spec.start_strategy
        && strategy != "Paused"
    {
        let path = field.child("startStrategy");
        causes.push(StatusCause::invalid(
            path.as_str(),
            format!("{path} is set with an unrecognized option: {strategy}"),
        ));
    }
}

/// KubeVirt's `validateBootOrder`: every disk has a volume of its name; boot orders unique.
fn validate_boot_order_and_disk_volumes(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
    causes: &mut Vec<StatusCause>,
) {
    let volume_names: HashSet<&str> = spec.volumes().iter().map(|v| v.name.as_str()).collect();
    let disks_path = field.children(&["domain", "devices", "disks"]);
    let mut boot_orders: HashSet<u32> = HashSet::new();
    for (idx, disk) in spec.domain.devices.disks().iter().enumerate() {
        let disk_path = disks_path.index(idx);
        if !volume_names.contains(disk.name.as_str()) {
            if disk.cdrom.is_none() {
                causes.push(StatusCause::invalid(
                    disk_path.child("name").as_str(),
                    format!(
                        "{} '{}' {NAME_NOT_FOUND}",
                        disk_path.child("Name"),
                        disk.name
                    ),
                ));
            } else {
                causes.push(StatusCause::invalid(
                    disk_path.child("name").as_str(),
                    "DeclarativeHotplugVolumes feature gate not enabled, cannot define an empty CD-ROM disk",
                ));
            }
        }
        if let Some(order) = disk.boot_order {
            if boot_orders.contains(&order) {
                let path = disk_path.child("bootOrder");
                causes.push(StatusCause::invalid(
                    path.as_str(),
                    format!("Boot order for {path} already set for a different device."),
                ));
            }
            boot_orders.insert(order);
        }
    }
    let interfaces_path = field.children(&["domain", "devices", "interfaces"]);
    for (idx, iface) in spec.domain.devices.interfaces().iter().enumerate() {
        if let Some(order) = iface.boot_order {
            let path = interfaces_path.index(idx);
            if order < 1 {
                causes.push(StatusCause::invalid(
                    path.child("bootOrder").as_str(),
                    format!("{path} must have a boot order > 0, if supplied"),
                ));
            } else if boot_orders.contains(&order) {
                causes.push(StatusCause::invalid(
                    path.child("bootOrder").as_str(),
                    format!(
                        "Boot order for {} already set for a different device.",
                        path.child("bootOrder")
                    ),
                ));
            }
            boot_orders.insert(order);
        }
    }
}

fn validate_domain(field: &FieldPath, domain: &DomainSpec, causes: &mut Vec<StatusCause>) {
    validate_disks(
        &field.children(&["devices", "disks"]),
        domain.devices.disks(),
        causes,
    );
    super::hyperv::validate_hyperv(field, domain, causes);
    if let Some(bootloader) = domain.firmware.as_ref().and_then(|f| f.bootloader.as_ref())
        && bootloader.efi.is_some()
        && bootloader.bios.is_some()
    {
        let path = field.children(&["firmware", "bootloader"]);
        causes.push(StatusCause::invalid(
            path.as_str(),
            format!("{path} has both EFI and BIOS configured, but they are mutually exclusive."),
        ));
    }
    let secure_boot = domain
        .firmware
        .as_ref()
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.efi.as_ref())
        .is_some_and(|efi| efi.secure_boot.unwrap_or(true));
    let smm = domain
        .features
        .as_ref()
        .and_then(|f| f.smm.as_ref())
        .is_some_and(|smm| smm.is_enabled());
    if secure_boot && !smm {
        causes.push(StatusCause::invalid(
            field.as_str(),
            format!("{field} has EFI SecureBoot enabled. SecureBoot requires SMM, which is currently disabled."),
        ));
    }
}

const SUPPORTED_BUSES: &str = "[virtio scsi sata usb]";

/// KubeVirt's `ValidateDisks`. (KubeVirt reports the `io` and DNS-label name causes under a doubled
/// path, `...disks.domain.devices.disks[i]`; ferrovirt uses the disk's real path.)
fn validate_disks(field: &FieldPath, disks: &[Disk], causes: &mut Vec<StatusCause>) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (idx, disk) in disks.iter().enumerate() {
        let path = field.index(idx);
        // Duplicate names: reported against every earlier disk of the same name.
        for (other_idx, other) in disks.iter().enumerate().take(idx) {
            if other.name == disk.name {
                causes.push(StatusCause::invalid(
                    path.child("name").as_str(),
                    format!(
                        "{path} and {} must not have the same Name.",
                        field.index(other_idx)
                    ),
                ));
            }
        }
        first_index.entry(disk.name.as_str()).or_insert(idx);
        let targets = [
            disk.disk.is_some(),
            disk.lun.is_some(),
            disk.cdrom.is_some(),
        ]
        .into_iter()
        .filter(|t| *t)
        .count();
        if targets > 1 {
            causes.push(StatusCause::invalid(
                path.as_str(),
                format!("{path} can only have a single target type defined"),
            ));
        }
        if disk.boot_order == Some(0) {
            causes.push(StatusCause::invalid(
                path.child("bootOrder").as_str(),
                format!("{path} must have a boot order > 0, if supplied"),
            ));
        }
        if let Some((target_kind, target)) = disk.target()
            && let Some(bus) = target.bus.as_deref().filter(|b| !b.is_empty())
        {
            let bus_path = path.children(&[target_kind, "bus"]);
            match bus {
                "ide" => causes.push(StatusCause::invalid(bus_path.as_str(), "IDE bus is not supported")),
                "virtio" if target_kind == "cdrom" => causes.push(StatusCause::invalid(
                    path.children(&["cdrom", "bus"]).as_str(),
                    format!("Bus type {bus} is invalid for CD-ROM device"),
                )),
                "sata" if target_kind == "disk" && target.read_only == Some(true) => {
                    causes.push(StatusCause::invalid(
                        path.children(&["disk", "bus"]).as_str(),
                        format!("{bus} hard-disks do not support read-only."),
                    ))
                }
                "virtio" | "sata" | "scsi" | "usb" => {}
                other => causes.push(StatusCause::invalid(
                    bus_path.as_str(),
                    format!("{path} is set with an unrecognized bus {other}, must be one of: {SUPPORTED_BUSES}"),
                )),
            }
        }
        if let Some(tray) = disk.cdrom.as_ref().and_then(|c| c.tray.as_deref())
            && !matches!(tray, "" | "open" | "closed")
        {
            causes.push(StatusCause::new(
                CauseType::FieldValueNotSupported,
                path.children(&["cdrom", "tray"]).as_str(),
                format!("Unsupported value: \"{tray}\": supported values: \"closed\", \"open\""),
            ));
        }
        if let Some(serial) = disk.serial.as_deref().filter(|s| !s.is_empty()) {
            let valid_chars = serial
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'));
            if !valid_chars {
                causes.push(StatusCause::invalid(
                    path.child("serial").as_str(),
                    format!("{path} must be made up of the following characters [A-Za-z0-9_.+-], if specified"),
                ));
            }
            if serial.chars().count() > 36 {
                causes.push(StatusCause::invalid(
                    path.child("serial").as_str(),
                    format!("{path} must be less than or equal to 36 in length, if specified"),
                ));
            }
        }
        if let Some(cache) = disk.cache.as_deref().filter(|c| !c.is_empty())
            && !matches!(cache, "none" | "writethrough" | "writeback")
        {
            let cache_path = path.child("cache");
            causes.push(StatusCause::invalid(
                cache_path.as_str(),
                format!("{cache_path} has invalid value {cache}"),
            ));
        }
        if let Some(io) = disk.io.as_deref().filter(|c| !c.is_empty())
            && !matches!(io, "native" | "threads")
        {
            causes.push(StatusCause::new(
                CauseType::FieldValueNotSupported,
                path.child("io").as_str(),
                format!("Disk IO mode for {field} is not supported. Supported modes are: native, threads."),
            ));
        }
        for err in dns1123_label_errors(&disk.name) {
            causes.push(StatusCause::invalid(path.child("name").as_str(), err));
        }
    }
}

/// TPM and EFI persistence: the `VMPersistentState` gate, and `persistent` on a disabled TPM.
fn validate_persistent_state(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
    config: &ClusterConfig,
    causes: &mut Vec<StatusCause>,
) {
    let gate_message =
        format!("{VM_PERSISTENT_STATE_GATE} feature gate is not enabled in kubevirt-config");
    if let Some(tpm) = &spec.domain.devices.tpm
        && tpm.persistent == Some(true)
    {
        let path = field.children(&["domain", "devices", "tpm", "persistent"]);
        if tpm.enabled == Some(false) {
            causes.push(StatusCause::invalid(
                path.as_str(),
                format!(
                    "{path} is true but {} is false: a disabled TPM has no state to persist; \
                     remove persistent or enable the TPM",
                    field.children(&["domain", "devices", "tpm", "enabled"])
                ),
            ));
        } else if !config.vm_persistent_state_enabled() {
            causes.push(StatusCause::invalid(path.as_str(), gate_message.clone()));
        }
    }
    let efi_persistent = spec
        .domain
        .firmware
        .as_ref()
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.efi.as_ref())
        .is_some_and(|efi| efi.persistent == Some(true));
    if efi_persistent && !config.vm_persistent_state_enabled() {
        causes.push(StatusCause::invalid(
            field
                .children(&["domain", "firmware", "bootloader", "efi", "persistent"])
                .as_str(),
            gate_message,
        ));
    }
}

fn validate_architecture(
    field: &FieldPath,
    spec: &VirtualMachineInstanceSpec,
    causes: &mut Vec<StatusCause>,
) {
    match spec.architecture.as_deref() {
        None | Some("") | Some("amd64") => {}
        Some(arch) => causes.push(StatusCause::invalid(
            field.child("architecture").as_str(),
            format!("unsupported architecture: {arch}; ferrovirt runs amd64 guests only"),
        )),
    }
}
