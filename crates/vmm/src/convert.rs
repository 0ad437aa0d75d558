//! From a KubeVirt VirtualMachineInstance spec (already defaulted and admitted) to a [`VmPlan`]:
//! what KubeVirt's virt-launcher converter does, for one host. What cannot run here (a
//! `containerDisk` from a registry, multus, ...) is refused with the field path and
//! what to use instead.

use std::path::PathBuf;
use std::time::Duration;

use ferrovirt_api::kubevirt::vmi::{TpmMode, VirtualMachineInstanceSpec};
use ferrovirt_api::kubevirt::volume::Volume;
use ferrovirt_storage::VmUuid;

use crate::disks::{DiskPlan, DiskSource};
use crate::engine::VmPlan;
use crate::hyperv::Hyperv;
use crate::machine::{DiskBus, DiskMedia, Nic, NicModel};
use crate::state::{FirmwarePlan, TpmPlan};

/// A part of the spec this host cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Unsupported {
    pub field: String,
    pub message: String,
}

/// Where the VM's objects and volumes are, for the conversion.
pub struct ConvertContext<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `spec.template.spec` for a VM, `spec` for a VMI: prefixes field paths in errors.
    pub field_prefix: &'a str,
    /// The backend-storage volume and where older versions kept its generations
    /// (`<data>/state-generations/<volume>/`, moved into the VM's own store on first use), when
    /// the VM needs one.
    pub state_volume: Option<(PathBuf, PathBuf)>,
    /// Finds the directory of a `persistentVolumeClaim` volume (a local-path volume).
    pub claim_dir: &'a dyn Fn(&str) -> Option<PathBuf>,
    pub termination_grace_period_seconds: Option<u64>,
}

/// The default grace period of KubeVirt (`terminationGracePeriodSeconds`).
pub const DEFAULT_GRACE_SECONDS: u64 = 180;

/// Converts a VMI spec into a plan.
pub fn plan_from_spec(
    spec: &VirtualMachineInstanceSpec,
    ctx: &ConvertContext<'_>,
) -> Result<VmPlan, Unsupported> {
    let field = |rest: &str| format!("{}.{rest}", ctx.field_prefix);
    let unsupported = |rest: &str, message: &str| Unsupported {
        field: field(rest),
        message: message.to_string(),
    };
    let uuid_text = spec.firmware_uuid().ok_or_else(|| {
        unsupported(
            "domain.firmware.uuid",
            "the VM has no firmware UUID; it is assigned at create time (apply the VM again)",
        )
    })?;
    let uuid = VmUuid::parse(uuid_text)
        .map_err(|e| unsupported("domain.firmware.uuid", &e.to_string()))?;

    let cpu = spec.domain.cpu.as_ref();
    let vcpus = cpu
        .map(|c| c.cores.unwrap_or(1) * c.sockets.unwrap_or(1) * c.threads.unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    let memory = spec
        .domain
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .or_else(|| {
            spec.domain
                .resources
                .as_ref()
                .and_then(|r| r.request("memory"))
        })
        .ok_or_else(|| {
            unsupported(
                "domain.memory.guest",
                "no memory requested; set domain.memory.guest or domain.resources.requests.memory",
            )
        })?;
    let memory_bytes = memory
        .to_bytes()
        .map_err(|e| unsupported("domain.memory.guest", &e.to_string()))?;
    let memory_mib = memory_bytes.div_ceil(1024 * 1024).max(16);

    let firmware = match spec.efi_mode() {
        Some(efi) => FirmwarePlan::Uefi {
            secure_boot: efi.secure_boot,
            persistent: efi.persistent,
        },
        None => FirmwarePlan::Bios,
    };
    let tpm = match spec.tpm_mode() {
        TpmMode::None => TpmPlan::None,
        TpmMode::Ephemeral => TpmPlan::Ephemeral,
        TpmMode::Persistent => TpmPlan::Persistent,
    };

    let mut disks = Vec::new();
    for (index, disk) in spec.domain.devices.disks().iter().enumerate() {
        let disk_field = format!("domain.devices.disks[{index}]");
        let (volume_index, volume) = spec
            .volumes()
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == disk.name)
            .ok_or_else(|| {
                unsupported(
                    &format!("{disk_field}.name"),
                    &format!("disk {:?} has no volume of that name", disk.name),
                )
            })?;
        let (bus, read_only, media) = match (&disk.disk, &disk.cdrom, &disk.lun) {
            (Some(target), None, None) => (
                disk_bus(target.bus.as_deref())
                    .map_err(|message| unsupported(&format!("{disk_field}.disk.bus"), &message))?,
                target.read_only.unwrap_or(false),
                DiskMedia::Disk,
            ),
            (None, None, None) => (DiskBus::Virtio, false, DiskMedia::Disk),
            // A CD-ROM: sata unless set (KubeVirt's default on amd64), always read-only.
            (None, Some(target), None) => {
                let bus_field = format!("{disk_field}.cdrom.bus");
                let bus = match target.bus.as_deref() {
                    None | Some("") => DiskBus::Sata,
                    Some("virtio") => {
                        return Err(unsupported(
                            &bus_field,
                            "Bus type virtio is invalid for CD-ROM device; use sata or scsi",
                        ));
                    }
                    other => {
                        disk_bus(other).map_err(|message| unsupported(&bus_field, &message))?
                    }
                };
                (bus, true, DiskMedia::Cdrom)
            }
            (_, _, Some(_)) => {
                return Err(unsupported(
                    &format!("{disk_field}.lun"),
                    "LUN passthrough is not supported on ferrovirt; attach the image as a disk",
                ));
            }
            _ => {
                return Err(unsupported(
                    &disk_field,
                    "a disk can only have a single target type defined (disk, cdrom or lun)",
                ));
            }
        };
        let source = disk_source(volume, &format!("volumes[{volume_index}]"), ctx)
            .map_err(|(rest, message)| unsupported(&rest, &message))?;
        disks.push(DiskPlan {
            name: disk.name.clone(),
            source,
            bus,
            read_only,
            boot_order: disk.boot_order,
            serial: disk.serial.clone(),
            media,
        });
    }

    let nics = plan_nics(spec, ctx)?;
    let display = crate::display::plan_display(spec, &firmware, ctx.field_prefix)?;

    let (state_volume, legacy_generations_dir) = match &ctx.state_volume {
        Some((volume, generations)) => (Some(volume.clone()), Some(generations.clone())),
        None => (None, None),
    };
    Ok(VmPlan {
        namespace: ctx.namespace.to_string(),
        name: ctx.name.to_string(),
        vm_uid: None,
        uuid,
        smbios_serial: spec.domain.firmware.as_ref().and_then(|f| f.serial.clone()),
        vcpus,
        memory_mib,
        firmware,
        smm: spec.smm_enabled(),
        hyperv: hyperv_from_spec(spec),
        tpm,
        disks,
        nics,
        display,
        state_volume,
        legacy_generations_dir,
        grace: Duration::from_secs(
            ctx.termination_grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECONDS),
        ),
    })
}

/// A disk's bus (`virtio` when unset); `Err` names what is supported.
fn disk_bus(bus: Option<&str>) -> Result<DiskBus, String> {
    match bus.unwrap_or("virtio") {
        "" | "virtio" => Ok(DiskBus::Virtio),
        "sata" => Ok(DiskBus::Sata),
        "scsi" => Ok(DiskBus::Scsi),
        other => Err(format!(
            "bus {other:?} is not supported by ferrovirt; use virtio, sata or scsi"
        )),
    }
}

/// `domain.features.hyperv` and `clock.timer.hyperv` as KubeVirt's converter passes them on:
/// each present switch not `enabled: false` (the defaulter has already added the requirements
/// admission checked); spinlocks with KubeVirt's default 4096 retries.
fn hyperv_from_spec(spec: &VirtualMachineInstanceSpec) -> Option<Hyperv> {
    use ferrovirt_api::kubevirt::FeatureState;
    let domain = &spec.domain;
    let time = domain
        .clock
        .as_ref()
        .and_then(|c| c.timer.as_ref())
        .and_then(|t| t.hyperv.as_ref())
        .is_some_and(|timer| timer.present.unwrap_or(true));
    let features = domain.features.as_ref().and_then(|f| f.hyperv.as_ref());
    if features.is_none() && !time {
        return None;
    }
    let Some(h) = features else {
        return Some(Hyperv {
            time,
            ..Default::default()
        });
    };
    let on = |s: &Option<FeatureState>| s.as_ref().is_some_and(FeatureState::is_enabled);
    let enabled = |present: bool, e: Option<bool>| present && e.unwrap_or(true);
    let stimer = h.synictimer.as_ref();
    let tlbflush = h.tlbflush.as_ref();
    Some(Hyperv {
        time,
        relaxed: on(&h.relaxed),
        vapic: on(&h.vapic),
        spinlocks: h
            .spinlocks
            .as_ref()
            .filter(|s| s.enabled.unwrap_or(true))
            .map(|s| {
                s.spinlocks
                    .unwrap_or(ferrovirt_api::kubevirt::hyperv::DEFAULT_SPINLOCK_RETRIES)
            }),
        vpindex: on(&h.vpindex),
        runtime: on(&h.runtime),
        synic: on(&h.synic),
        stimer: enabled(stimer.is_some(), stimer.and_then(|t| t.enabled)),
        stimer_direct: stimer.is_some_and(|t| on(&t.direct)),
        reset: on(&h.reset),
        vendor_id: h
            .vendorid
            .as_ref()
            .filter(|v| v.enabled.unwrap_or(true))
            .and_then(|v| v.vendorid.clone()),
        frequencies: on(&h.frequencies),
        reenlightenment: on(&h.reenlightenment),
        tlbflush: enabled(tlbflush.is_some(), tlbflush.and_then(|t| t.enabled)),
        tlbflush_direct: tlbflush.is_some_and(|t| on(&t.direct)),
        tlbflush_extended: tlbflush.is_some_and(|t| on(&t.extended)),
        ipi: on(&h.ipi),
        evmcs: on(&h.evmcs),
    })
}

fn disk_source(
    volume: &Volume,
    field: &str,
    ctx: &ConvertContext<'_>,
) -> Result<DiskSource, (String, String)> {
    if let Some(host_disk) = &volume.host_disk {
        let capacity = match &host_disk.capacity {
            Some(q) => Some(
                q.to_bytes()
                    .map_err(|e| (format!("{field}.hostDisk.capacity"), e.to_string()))?,
            ),
            None => None,
        };
        return Ok(DiskSource::HostFile {
            path: PathBuf::from(&host_disk.path),
            create_with_capacity: (host_disk.disk_type == "DiskOrCreate")
                .then_some(capacity)
                .flatten(),
        });
    }
    if let Some(empty) = &volume.empty_disk {
        let capacity_bytes = empty
            .capacity
            .to_bytes()
            .map_err(|e| (format!("{field}.emptyDisk.capacity"), e.to_string()))?;
        return Ok(DiskSource::Empty { capacity_bytes });
    }
    if let Some(cloud_init) = &volume.cloud_init_no_cloud {
        let text = |key: &str| {
            cloud_init
                .get(key)
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        for key in [
            "userDataBase64",
            "networkDataBase64",
            "secretRef",
            "networkDataSecretRef",
        ] {
            if cloud_init.get(key).is_some() {
                return Err((
                    format!("{field}.cloudInitNoCloud.{key}"),
                    format!(
                        "{key} is not supported by ferrovirt yet; put the data in userData / networkData"
                    ),
                ));
            }
        }
        return Ok(DiskSource::CloudInitNoCloud {
            user_data: text("userData"),
            network_data: text("networkData"),
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let dir = (ctx.claim_dir)(&claim.claim_name).ok_or_else(|| {
            (
                format!("{field}.persistentVolumeClaim.claimName"),
                format!(
                    "persistentvolumeclaims {:?} not found, or not bound to a local-path volume; \
                     create the PVC first",
                    claim.claim_name
                ),
            )
        })?;
        // KubeVirt's convention for a filesystem PVC: the image is `disk.img` inside it.
        return Ok(DiskSource::ClaimImage {
            path: dir.join("disk.img"),
        });
    }
    // A DataVolume's PVC has the DataVolume's name (CDI); its image is `disk.img` too.
    if let Some(name) = volume
        .data_volume
        .as_ref()
        .and_then(|d| d.get("name"))
        .and_then(|n| n.as_str())
    {
        let dir = (ctx.claim_dir)(name).ok_or_else(|| {
            (
                format!("{field}.dataVolume.name"),
                format!(
                    "the PVC of DataVolume {name:?} is not found or not bound yet; create the \
                     DataVolume (or list it in spec.dataVolumeTemplates) and wait for it to succeed"
                ),
            )
        })?;
        return Ok(DiskSource::ClaimImage {
            path: dir.join("disk.img"),
        });
    }
    let (kind, hint) = if volume.container_disk.is_some() {
        (
            "containerDisk",
            "container disks are pulled from a registry, which a single ferrovirt host does not \
             use; put the image on the host and use a hostDisk volume (path: /path/to/image.qcow2, \
             type: Disk) instead",
        )
    } else if volume.data_volume.is_some() {
        (
            "dataVolume",
            "a dataVolume volume needs the DataVolume's name",
        )
    } else if volume.cloud_init_config_drive.is_some() {
        (
            "cloudInitConfigDrive",
            "config drives are not supported by ferrovirt yet; use cloudInitNoCloud instead",
        )
    } else if volume.ephemeral.is_some() {
        (
            "ephemeral",
            "ephemeral volumes are not supported by ferrovirt yet; use a hostDisk instead",
        )
    } else {
        (
            "",
            "this volume type cannot be attached as a disk on ferrovirt; use a hostDisk, \
             emptyDisk, cloudInitNoCloud or persistentVolumeClaim volume",
        )
    };
    let field = if kind.is_empty() {
        field.to_string()
    } else {
        format!("{field}.{kind}")
    };
    Err((field, hint.to_string()))
}

/// KubeVirt's `interfaces[].ports` (`{name, protocol, port}`, protocol TCP by default): the
/// guest ports `portforward` reaches. UDP (and SCTP) ports are refused with their field path:
/// ferrovirt forwards TCP only.
fn declared_tcp_ports(
    interface: &ferrovirt_api::kubevirt::domain::Interface,
    field: &str,
) -> Result<Vec<u16>, (String, String)> {
    let Some(ports) = interface.extra.get("ports").and_then(|p| p.as_array()) else {
        return Ok(Vec::new());
    };
    let mut tcp = Vec::new();
    for (i, entry) in ports.iter().enumerate() {
        let protocol = entry
            .get("protocol")
            .and_then(|p| p.as_str())
            .unwrap_or("TCP");
        if !protocol.eq_ignore_ascii_case("TCP") {
            return Err((
                format!("{field}.ports[{i}].protocol"),
                format!(
                    "protocol {protocol:?} is not forwarded by ferrovirt (portforward is TCP only); \
                     remove the port or use TCP"
                ),
            ));
        }
        let port = entry
            .get("port")
            .and_then(|p| p.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                (
                    format!("{field}.ports[{i}].port"),
                    "a port between 1 and 65535 is required".to_owned(),
                )
            })?;
        tcp.push(port);
    }
    Ok(tcp)
}

/// Interfaces on the pod network become NAT cards backed by passt (`crate::passt`; KubeVirt's
/// masquerade; `bridge` and `slirp` bindings get the same NAT here, there being no pod to bridge into). With neither
/// interfaces nor networks, KubeVirt attaches one pod interface (`autoattachPodInterface`), and so
/// do we. Anything else is refused with its field path.
fn plan_nics(
    spec: &VirtualMachineInstanceSpec,
    ctx: &ConvertContext<'_>,
) -> Result<Vec<Nic>, Unsupported> {
    let unsupported = |rest: String, message: String| Unsupported {
        field: format!("{}.{rest}", ctx.field_prefix),
        message,
    };
    let networks: Vec<serde_json::Value> = spec
        .extra
        .get("networks")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default();
    let interfaces = spec.domain.devices.interfaces();
    if interfaces.is_empty() && networks.is_empty() {
        let auto = spec
            .domain
            .devices
            .extra
            .get("autoattachPodInterface")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        return Ok(if auto {
            vec![Nic {
                name: "default".into(),
                model: NicModel::Virtio,
                mac: None,
                boot_order: None,
                forwarded_tcp_ports: Vec::new(),
            }]
        } else {
            Vec::new()
        });
    }
    let mut nics = Vec::new();
    for (index, interface) in interfaces.iter().enumerate() {
        let field = format!("domain.devices.interfaces[{index}]");
        let network = networks
            .iter()
            .enumerate()
            .find(|(_, n)| n.get("name").and_then(|v| v.as_str()) == Some(&interface.name));
        match network {
            Some((_, n)) if n.get("pod").is_some() => {}
            Some((i, n)) => {
                let kind = n
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                    .unwrap_or_default();
                return Err(unsupported(
                    format!("networks[{i}].{kind}"),
                    "only the pod network is available on a ferrovirt host (NAT through passt); \
                     multus and other secondary networks are not supported"
                        .into(),
                ));
            }
            None => {
                return Err(unsupported(
                    format!("{field}.name"),
                    format!(
                        "interface {:?} has no network of that name; add `networks: [{{name: {}, pod: {{}}}}]`",
                        interface.name, interface.name
                    ),
                ));
            }
        }
        let binding = ["masquerade", "bridge", "slirp"]
            .iter()
            .find(|b| interface.extra.contains_key(**b));
        if binding.is_none() {
            let other = ["sriov", "macvtap", "passt", "binding"]
                .iter()
                .find(|b| interface.extra.contains_key(**b))
                .copied()
                .unwrap_or("binding");
            return Err(unsupported(
                format!("{field}.{other}"),
                "ferrovirt connects interfaces with NAT through passt: use `masquerade: {}`".into(),
            ));
        }
        let model = match interface.model.as_deref().unwrap_or("virtio") {
            "virtio" => NicModel::Virtio,
            "e1000e" => NicModel::E1000e,
            other => {
                return Err(unsupported(
                    format!("{field}.model"),
                    format!("model {other:?} is not supported by ferrovirt; use virtio or e1000e"),
                ));
            }
        };
        let forwarded_tcp_ports = declared_tcp_ports(interface, &field)
            .map_err(|(rest, message)| unsupported(rest, message))?;
        nics.push(Nic {
            name: interface.name.clone(),
            model,
            mac: interface.mac_address.clone(),
            boot_order: interface.boot_order,
            forwarded_tcp_ports,
        });
    }
    Ok(nics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_api::Object;
    use ferrovirt_api::parse::parse_documents;

    fn spec(yaml: &str) -> VirtualMachineInstanceSpec {
        let text = format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: vm1}}\nspec:\n  template:\n    spec:\n{}",
            yaml.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        );
        let objects = parse_documents(text.as_bytes(), "test.yaml").unwrap();
        let Object::VirtualMachine(vm) = &objects[0] else {
            panic!("not a VM")
        };
        vm.spec.template.clone().unwrap().spec
    }

    fn convert(spec: &VirtualMachineInstanceSpec) -> Result<VmPlan, Unsupported> {
        let claims = |name: &str| (name == "data").then(|| PathBuf::from("/vols/pvc-1"));
        plan_from_spec(
            spec,
            &ConvertContext {
                namespace: "default",
                name: "vm1",
                field_prefix: "spec.template.spec",
                state_volume: None,
                claim_dir: &claims,
                termination_grace_period_seconds: Some(5),
            },
        )
    }

    const BASE: &str = "domain:\n  firmware: {uuid: 0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d}\n  cpu: {cores: 2, sockets: 2}\n  memory: {guest: 1Gi}\n";

    #[test]
    fn resources_firmware_tpm_and_disks() {
        let spec = spec(&format!(
            "{}  firmware:\n    uuid: 0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d\n    bootloader: {{efi: {{persistent: true}}}}\n  features: {{smm: {{}}}}\n  devices:\n    tpm: {{persistent: true}}\n    disks:\n    - {{name: root, disk: {{bus: sata}}, bootOrder: 1}}\n    - {{name: data}}\n    - {{name: scratch}}\n    - {{name: ci}}\nvolumes:\n- {{name: root, hostDisk: {{path: /img/root.qcow2, type: Disk}}}}\n- {{name: data, persistentVolumeClaim: {{claimName: data}}}}\n- {{name: scratch, emptyDisk: {{capacity: 1Gi}}}}\n- {{name: ci, cloudInitNoCloud: {{userData: \"#cloud-config\"}}}}\n",
            BASE.replace(
                "  firmware: {uuid: 0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d}\n",
                ""
            )
        ));
        let plan = convert(&spec).unwrap();
        assert_eq!(plan.vcpus, 4);
        assert_eq!(plan.memory_mib, 1024);
        assert_eq!(
            plan.firmware,
            FirmwarePlan::Uefi {
                secure_boot: true,
                persistent: true
            }
        );
        assert_eq!(plan.tpm, TpmPlan::Persistent);
        assert!(plan.smm);
        assert_eq!(plan.grace, Duration::from_secs(5));
        assert_eq!(plan.disks[0].bus, DiskBus::Sata);
        assert_eq!(plan.disks[0].boot_order, Some(1));
        assert_eq!(
            plan.disks[1].source,
            DiskSource::ClaimImage {
                path: "/vols/pvc-1/disk.img".into(),
            }
        );
        assert_eq!(
            plan.disks[2].source,
            DiskSource::Empty {
                capacity_bytes: 1 << 30
            }
        );
        assert!(matches!(
            plan.disks[3].source,
            DiskSource::CloudInitNoCloud { .. }
        ));
        // No interfaces and no networks: one pod interface, as KubeVirt's autoattachPodInterface.
        assert_eq!(plan.nics.len(), 1);
        assert_eq!(plan.nics[0].name, "default");
    }

    #[test]
    fn container_disks_are_refused_with_the_field_and_an_alternative() {
        let spec = spec(&format!(
            "{BASE}  devices:\n    disks: [{{name: c, disk: {{}}}}]\nvolumes:\n- {{name: c, containerDisk: {{image: quay.io/x/y}}}}\n"
        ));
        let error = convert(&spec).unwrap_err();
        assert_eq!(error.field, "spec.template.spec.volumes[0].containerDisk");
        assert!(error.message.contains("hostDisk"), "{}", error.message);
    }

    #[test]
    fn unknown_claims_and_luns_are_refused() {
        let spec1 = spec(&format!(
            "{BASE}  devices:\n    disks: [{{name: d}}]\nvolumes:\n- {{name: d, persistentVolumeClaim: {{claimName: nope}}}}\n"
        ));
        let error = convert(&spec1).unwrap_err();
        assert_eq!(
            error.field,
            "spec.template.spec.volumes[0].persistentVolumeClaim.claimName"
        );
        let spec2 = spec(&format!(
            "{BASE}  devices:\n    disks: [{{name: d, lun: {{}}}}]\nvolumes:\n- {{name: d, emptyDisk: {{capacity: 1Mi}}}}\n"
        ));
        assert_eq!(
            convert(&spec2).unwrap_err().field,
            "spec.template.spec.domain.devices.disks[0].lun"
        );
    }

    #[test]
    fn cdroms_are_read_only_sata_or_scsi_drives_with_their_boot_order() {
        let spec1 = spec(&format!(
            "{BASE}  devices:\n    disks:\n    - {{name: iso, cdrom: {{readonly: false}}, bootOrder: 1}}\n    - {{name: drivers, cdrom: {{bus: scsi}}}}\n    - {{name: data, disk: {{}}, bootOrder: 2}}\nvolumes:\n- {{name: iso, hostDisk: {{path: /img/install.iso, type: Disk}}}}\n- {{name: drivers, persistentVolumeClaim: {{claimName: data}}}}\n- {{name: data, emptyDisk: {{capacity: 1Mi}}}}\n"
        ));
        let plan = convert(&spec1).unwrap();
        let iso = &plan.disks[0];
        assert_eq!(iso.media, DiskMedia::Cdrom);
        assert_eq!(iso.bus, DiskBus::Sata);
        assert!(
            iso.read_only,
            "a CD-ROM is read-only whatever readonly says"
        );
        assert_eq!(iso.boot_order, Some(1));
        assert_eq!(
            iso.source,
            DiskSource::HostFile {
                path: "/img/install.iso".into(),
                create_with_capacity: None
            }
        );
        assert_eq!(plan.disks[1].media, DiskMedia::Cdrom);
        assert_eq!(plan.disks[1].bus, DiskBus::Scsi);
        assert_eq!(plan.disks[2].media, DiskMedia::Disk);

        let virtio = spec(&format!(
            "{BASE}  devices:\n    disks: [{{name: iso, cdrom: {{bus: virtio}}}}]\nvolumes:\n- {{name: iso, hostDisk: {{path: /img/install.iso, type: Disk}}}}\n"
        ));
        let error = convert(&virtio).unwrap_err();
        assert_eq!(
            error.field,
            "spec.template.spec.domain.devices.disks[0].cdrom.bus"
        );
        assert!(
            error
                .message
                .contains("Bus type virtio is invalid for CD-ROM device")
        );
    }

    #[test]
    fn hyperv_switches_follow_kubevirt() {
        let spec1 = spec(&format!(
            "{BASE}  features:\n    hyperv:\n      relaxed: {{}}\n      vapic: {{enabled: false}}\n      spinlocks: {{}}\n      synictimer: {{direct: {{}}}}\n      vendorid: {{vendorid: KVMKVMKVM}}\n  clock:\n    utc: {{}}\n    timer: {{hyperv: {{}}}}\n"
        ));
        let hyperv = convert(&spec1).unwrap().hyperv.unwrap();
        assert!(hyperv.time && hyperv.relaxed && hyperv.stimer && hyperv.stimer_direct);
        assert!(!hyperv.vapic);
        assert_eq!(hyperv.spinlocks, Some(4096));
        assert_eq!(hyperv.vendor_id.as_deref(), Some("KVMKVMKVM"));
        let none = spec(BASE);
        assert_eq!(convert(&none).unwrap().hyperv, None);
    }

    #[test]
    fn interfaces_on_the_pod_network_become_nat_cards() {
        let spec1 = spec(&format!(
            "{BASE}  devices:\n    interfaces:\n    - {{name: default, masquerade: {{}}, macAddress: \"52:54:00:aa:bb:cc\"}}\nnetworks:\n- {{name: default, pod: {{}}}}\n"
        ));
        let plan = convert(&spec1).unwrap();
        assert_eq!(plan.nics.len(), 1);
        assert_eq!(plan.nics[0].mac.as_deref(), Some("52:54:00:aa:bb:cc"));

        let multus = spec(&format!(
            "{BASE}  devices:\n    interfaces: [{{name: m, bridge: {{}}}}]\nnetworks:\n- {{name: m, multus: {{networkName: x}}}}\n"
        ));
        assert_eq!(
            convert(&multus).unwrap_err().field,
            "spec.template.spec.networks[0].multus"
        );
        let sriov = spec(&format!(
            "{BASE}  devices:\n    interfaces: [{{name: s, sriov: {{}}}}]\nnetworks:\n- {{name: s, pod: {{}}}}\n"
        ));
        assert_eq!(
            convert(&sriov).unwrap_err().field,
            "spec.template.spec.domain.devices.interfaces[0].sriov"
        );
        let off = spec(&format!(
            "{BASE}  devices: {{autoattachPodInterface: false}}\n"
        ));
        assert!(convert(&off).unwrap().nics.is_empty());
    }
}
