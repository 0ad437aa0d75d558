//! Turns a [`MachineConfig`] into QEMU's argument vector.
//!
//! Choices (documented here once):
//! - `-S`: QEMU starts paused; the launcher connects QMP first (so no early event is lost), then
//!   sends `cont`. libvirt does the same.
//! - No `-no-shutdown`: a guest poweroff makes QEMU exit (status 0), which is how the launcher
//!   learns the VM stopped; swtpm (`--terminate`) exits with it and flushes the TPM state.
//! - Block devices use JSON `-blockdev` nodes (no comma escaping of paths, like libvirt on 7.2);
//!   UEFI uses pflash nodes wired with `-machine pflash0=,pflash1=`.
//! - SMBIOS type 1 as KubeVirt emits it (manufacturer/family `KubeVirt`, product `None`, uuid).
//! - `-cpu host` with KVM; QEMU's default CPU model with TCG.
//! - `-display none` always (no window on the host); a VM with a display gets QEMU's VNC server
//!   on a unix socket in its runtime dir (`-vnc unix:`; never a TCP port), a second QMP monitor
//!   for screenshots, and the video device KubeVirt picks (`crate::display`). Tablets are
//!   `usb-tablet` on one `qemu-xhci` controller, or `virtio-tablet-pci`.
//! - Network cards are `-netdev stream` on an inherited socketpair fd whose other end is the card's
//!   passt (`crate::passt`); QEMU's user-mode networking (`-netdev user`) is never used.

use std::ffi::OsString;
use std::path::Path;

use serde_json::json;

use crate::machine::{
    Accel, DiskBus, DiskFormat, DiskMedia, Firmware, InputBus, MachineConfig, MachineType,
    NicModel, TpmModel, VideoModel,
};

/// Why a machine description cannot become a command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("{field}: path {path:?} is not valid UTF-8; use a UTF-8 path")]
    NonUtf8Path { field: String, path: OsString },
    #[error(
        "{field}: {value:?} is not a valid QEMU id (letters, digits, '-', '_', '.', starting with a letter)"
    )]
    InvalidId { field: String, value: String },
    #[error("firmware.secure_boot requires machine.smm = true (OVMF Secure Boot needs SMM)")]
    SecureBootNeedsSmm,
    #[error(
        "disk {disk}: SATA refuses read-only drives; use bus virtio or scsi, or make it writable"
    )]
    ReadOnlySata { disk: String },
    #[error("disk names must be unique: {disk} appears twice")]
    DuplicateDisk { disk: String },
    #[error("input names must be unique: {input} appears twice")]
    DuplicateInput { input: String },
    #[error("{field} must be at least 1")]
    Zero { field: String },
    #[error("disk {disk}: serial {serial:?} may only contain letters, digits, '-', '_', '.'")]
    InvalidSerial { disk: String, serial: String },
    #[error(
        "disk {disk}: the SATA controller has {ports} ports, all taken; put some disks or CD-ROMs on scsi or virtio"
    )]
    SataPortsFull { disk: String, ports: u32 },
    #[error(transparent)]
    Cdrom(#[from] crate::cdrom::CdromError),
    #[error(transparent)]
    Hyperv(#[from] crate::hyperv::HypervError),
}

fn utf8<'a>(field: &str, path: &'a Path) -> Result<&'a str, CmdlineError> {
    path.to_str().ok_or_else(|| CmdlineError::NonUtf8Path {
        field: field.to_string(),
        path: path.as_os_str().to_owned(),
    })
}

/// QEMU option values separate keys with commas; a literal comma is doubled.
fn opt_path(field: &str, path: &Path) -> Result<String, CmdlineError> {
    Ok(utf8(field, path)?.replace(',', ",,"))
}

fn valid_id(field: &str, value: &str) -> Result<(), CmdlineError> {
    let mut chars = value.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CmdlineError::InvalidId {
            field: field.to_string(),
            value: value.to_string(),
        })
    }
}

#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn flag(&mut self, flag: &str) {
        self.0.push(flag.to_string());
    }
    fn opt(&mut self, option: &str, value: String) {
        self.0.push(option.to_string());
        self.0.push(value);
    }
}

/// `-cpu`: `host` with KVM, QEMU's default model (`qemu64`) with TCG; followed by the Hyper-V
/// enlightenments (`crate::hyperv`; under TCG without those that need KVM). `None`: no `-cpu`.
fn cpu_option(config: &MachineConfig) -> Result<Option<String>, CmdlineError> {
    let kvm = config.accel == Accel::Kvm;
    let flags = match &config.hyperv {
        Some(hyperv) => {
            hyperv.check()?;
            hyperv.flags(kvm)
        }
        None => Vec::new(),
    };
    let model = match (kvm, flags.is_empty()) {
        (true, _) => "host",
        (false, true) => return Ok(None),
        (false, false) => "qemu64",
    };
    Ok(Some(
        std::iter::once(model.to_string())
            .chain(flags)
            .collect::<Vec<_>>()
            .join(","),
    ))
}

/// The full QEMU argument vector (without the binary itself).
pub fn qemu_args(config: &MachineConfig) -> Result<Vec<OsString>, CmdlineError> {
    let mut args = Args::default();
    if config.vcpus == 0 {
        return Err(CmdlineError::Zero {
            field: "vcpus".into(),
        });
    }
    if config.memory_mib == 0 {
        return Err(CmdlineError::Zero {
            field: "memory_mib".into(),
        });
    }
    let uuid = &config.uuid;
    valid_id("uuid", &format!("u{uuid}"))?;
    // Guest name goes into an option value: escape commas.
    args.opt(
        "-name",
        format!("guest={},debug-threads=on", config.name.replace(',', ",,")),
    );
    args.flag("-S");
    args.flag("-nodefaults");
    args.flag("-no-user-config");
    args.opt("-msg", "timestamp=on".into());
    args.opt("-display", "none".into());
    args.opt("-accel", config.accel.as_qemu().into());
    if let Some(cpu) = cpu_option(config)? {
        args.opt("-cpu", cpu);
    }

    let MachineType::Q35 { smm } = config.machine;
    let mut machine = String::from("q35");
    if smm {
        machine.push_str(",smm=on");
    }
    match &config.firmware {
        Firmware::Bios => {}
        Firmware::Uefi {
            code,
            vars,
            secure_boot,
        } => {
            if *secure_boot && !smm {
                return Err(CmdlineError::SecureBootNeedsSmm);
            }
            for (node, path, read_only, field) in [
                ("pflash0", code, true, "firmware.code"),
                ("pflash1", vars, false, "firmware.vars"),
            ] {
                args.opt(
                    "-blockdev",
                    json!({"driver": "file", "filename": utf8(field, path)?, "node-name": format!("{node}-storage"),
                           "read-only": read_only})
                    .to_string(),
                );
                args.opt(
                    "-blockdev",
                    json!({"driver": "raw", "file": format!("{node}-storage"), "node-name": format!("{node}-format"),
                           "read-only": read_only})
                    .to_string(),
                );
            }
            machine.push_str(",pflash0=pflash0-format,pflash1=pflash1-format");
            if *secure_boot {
                args.opt(
                    "-global",
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                );
            }
        }
    }
    args.opt("-machine", machine);
    args.opt("-smp", config.vcpus.to_string());
    args.opt("-m", format!("{}M", config.memory_mib));
    args.opt("-uuid", uuid.clone());
    // KubeVirt's sysinfo: `firmware.serial` is the system serial the guest reads (QEMU's option
    // syntax doubles a comma inside a value).
    let serial = config
        .smbios_serial
        .as_deref()
        .map(|s| format!(",serial={}", s.replace(',', ",,")))
        .unwrap_or_default();
    args.opt(
        "-smbios",
        format!("type=1,manufacturer=KubeVirt,product=None,family=KubeVirt,uuid={uuid}{serial}"),
    );

    args.opt(
        "-chardev",
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            opt_path("qmp_socket", &config.qmp_socket)?
        ),
    );
    args.opt("-mon", "chardev=qmp,mode=control".into());
    args.opt("-pidfile", utf8("pid_file", &config.pid_file)?.to_string());

    args.opt(
        "-chardev",
        format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            opt_path("serial.socket", &config.serial.socket)?,
            opt_path("serial.log_file", &config.serial.log_file)?
        ),
    );
    args.opt("-serial", "chardev:serial0".into());

    if let Some(socket) = &config.guest_agent_socket {
        // KubeVirt's guest agent channel: a virtio-serial port named org.qemu.guest_agent.0.
        args.opt(
            "-chardev",
            format!(
                "socket,id=charchannel0,path={},server=on,wait=off",
                opt_path("guest_agent_socket", socket)?
            ),
        );
        args.opt("-device", "virtio-serial-pci,id=virtio-serial0".into());
        args.opt(
            "-device",
            "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charchannel0,id=channel0,name=org.qemu.guest_agent.0".into(),
        );
    }

    if let Some(graphics) = &config.graphics {
        args.opt(
            "-vnc",
            format!(
                "unix:{}",
                opt_path("graphics.vnc_socket", &graphics.vnc_socket)?
            ),
        );
        args.opt(
            "-chardev",
            format!(
                "socket,id=qmp-screen,path={},server=on,wait=off",
                opt_path("graphics.screen_qmp_socket", &graphics.screen_qmp_socket)?
            ),
        );
        args.opt("-mon", "chardev=qmp-screen,mode=control".into());
        let video = match graphics.video {
            VideoModel::Vga => "VGA,id=video0,vgamem_mb=16",
            VideoModel::Bochs => "bochs-display,id=video0",
        };
        args.opt("-device", video.into());
    }

    if let Some(tpm) = &config.tpm {
        args.opt(
            "-chardev",
            format!(
                "socket,id=chrtpm,path={}",
                opt_path("tpm.ctrl_socket", &tpm.ctrl_socket)?
            ),
        );
        args.opt("-tpmdev", "emulator,id=tpm0,chardev=chrtpm".into());
        let device = match tpm.model {
            TpmModel::Crb => "tpm-crb",
            TpmModel::Tis => "tpm-tis",
        };
        args.opt("-device", format!("{device},tpmdev=tpm0,id=tpm0-dev"));
    }

    for entry in &config.fd_sets {
        valid_id("fd_sets.opaque", &entry.opaque)?;
        args.opt(
            "-add-fd",
            format!(
                "fd={},set={},opaque={}",
                entry.child_fd, entry.set, entry.opaque
            ),
        );
    }

    let mut seen = std::collections::BTreeSet::new();
    if config.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
        args.opt("-device", "virtio-scsi-pci,id=scsi0".into());
    }
    let mut sata_port = 0u32;
    for disk in &config.disks {
        valid_id("disk.name", &disk.name)?;
        if !seen.insert(disk.name.as_str()) {
            return Err(CmdlineError::DuplicateDisk {
                disk: disk.name.clone(),
            });
        }
        if disk.bus == DiskBus::Sata && disk.read_only && disk.media == DiskMedia::Disk {
            return Err(CmdlineError::ReadOnlySata {
                disk: disk.name.clone(),
            });
        }
        let node = format!("disk-{}", disk.name);
        // A CD-ROM is read-only whatever its `readonly` says (libvirt forces it too).
        let read_only = disk.read_only || disk.media == DiskMedia::Cdrom;
        args.opt(
            "-blockdev",
            json!({"driver": "file", "filename": utf8(&format!("disk {}", disk.name), &disk.path)?,
                   "node-name": format!("{node}-storage"), "read-only": read_only})
            .to_string(),
        );
        let format = match disk.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        args.opt(
            "-blockdev",
            json!({"driver": format, "file": format!("{node}-storage"), "node-name": format!("{node}-format"),
                   "read-only": read_only})
            .to_string(),
        );
        if disk.bus == DiskBus::Sata && sata_port >= crate::cdrom::SATA_PORTS {
            return Err(CmdlineError::SataPortsFull {
                disk: disk.name.clone(),
                ports: crate::cdrom::SATA_PORTS,
            });
        }
        let mut device = match (disk.media, disk.bus) {
            (DiskMedia::Cdrom, bus) => crate::cdrom::device(&disk.name, bus, &node, sata_port)?,
            (DiskMedia::Disk, DiskBus::Virtio) => {
                format!("virtio-blk-pci,drive={node}-format,id={node}")
            }
            (DiskMedia::Disk, DiskBus::Sata) => {
                format!("ide-hd,bus=ide.{sata_port},drive={node}-format,id={node}")
            }
            (DiskMedia::Disk, DiskBus::Scsi) => {
                format!("scsi-hd,bus=scsi0.0,drive={node}-format,id={node}")
            }
        };
        if disk.bus == DiskBus::Sata {
            sata_port += 1;
        }
        if let Some(serial) = &disk.serial {
            if serial.is_empty()
                || !serial
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(CmdlineError::InvalidSerial {
                    disk: disk.name.clone(),
                    serial: serial.clone(),
                });
            }
            device.push_str(&format!(",serial={serial}"));
        }
        if let Some(order) = disk.boot_order {
            device.push_str(&format!(",bootindex={order}"));
        }
        args.opt("-device", device);
    }
    for (index, nic) in config.nics.iter().enumerate() {
        valid_id("nic.name", &nic.name)?;
        if !seen.insert(nic.name.as_str()) {
            return Err(CmdlineError::DuplicateDisk {
                disk: nic.name.clone(),
            });
        }
        let netdev = format!("net-{}", nic.name);
        // passt holds the other end of this socketpair (crate::passt); never `-netdev user`.
        args.opt(
            "-netdev",
            format!(
                "stream,id={netdev},server=off,addr.type=fd,addr.str={}",
                crate::passt::nic_fd(index)
            ),
        );
        let model = match nic.model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
        };
        let mut device = format!("{model},netdev={netdev},id={}", nic.name);
        if let Some(mac) = &nic.mac {
            let valid = mac.len() == 17
                && mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
            if !valid {
                return Err(CmdlineError::InvalidId {
                    field: "nic.mac".into(),
                    value: mac.clone(),
                });
            }
            device.push_str(&format!(",mac={mac}"));
        }
        match nic.boot_order {
            Some(order) => device.push_str(&format!(",bootindex={order}")),
            None => device.push_str(",romfile="),
        }
        args.opt("-device", device);
    }
    if config.inputs.iter().any(|i| i.bus == InputBus::Usb) {
        args.opt("-device", "qemu-xhci,id=usb0".into());
    }
    let mut inputs_seen = std::collections::BTreeSet::new();
    for input in &config.inputs {
        valid_id("input.name", &input.name)?;
        if !inputs_seen.insert(input.name.as_str()) {
            return Err(CmdlineError::DuplicateInput {
                input: input.name.clone(),
            });
        }
        let device = match input.bus {
            InputBus::Usb => format!("usb-tablet,id=input-{},bus=usb0.0", input.name),
            InputBus::Virtio => format!("virtio-tablet-pci,id=input-{}", input.name),
        };
        args.opt("-device", device);
    }
    Ok(args.0.into_iter().map(OsString::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Disk, Graphics, InputDevice, Nic, SerialConsole, TpmAttachment};
    use std::path::PathBuf;

    fn base(firmware: Firmware, smm: bool, tpm: Option<TpmModel>) -> MachineConfig {
        let run = PathBuf::from("/run/ferrovirt/vms/ns_vm/run-1");
        let video = match firmware {
            Firmware::Bios => VideoModel::Vga,
            Firmware::Uefi { .. } => VideoModel::Bochs,
        };
        MachineConfig {
            name: "default_testvm".into(),
            uuid: "5e2f3a7c-4b8d-4c1e-9f60-2a1b3c4d5e6f".into(),
            smbios_serial: None,
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 1024,
            machine: MachineType::Q35 { smm },
            firmware,
            tpm: tpm.map(|model| TpmAttachment {
                ctrl_socket: run.join("swtpm-ctrl.sock"),
                model,
            }),
            hyperv: None,
            disks: vec![],
            nics: vec![],
            serial: SerialConsole {
                socket: run.join("serial.sock"),
                log_file: run.join("serial.log"),
            },
            graphics: Some(Graphics {
                video,
                vnc_socket: run.join("vnc.sock"),
                screen_qmp_socket: run.join("qmp-screen.sock"),
            }),
            inputs: vec![InputDevice {
                name: "tablet".into(),
                bus: InputBus::Usb,
            }],
            qmp_socket: run.join("qmp.sock"),
            guest_agent_socket: Some(run.join("qga.sock")),
            pid_file: run.join("qemu.pid"),
            qemu_binary: None,
            fd_sets: Vec::new(),
        }
    }

    fn uefi(secure_boot: bool) -> Firmware {
        Firmware::Uefi {
            code: if secure_boot {
                "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
            } else {
                "/usr/share/OVMF/OVMF_CODE_4M.fd"
            }
            .into(),
            vars: "/var/lib/ferrovirt/volumes/persistent-state-for-testvm/nvram/testvm_VARS.fd"
                .into(),
            secure_boot,
        }
    }

    fn render(config: &MachineConfig) -> String {
        qemu_args(config)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// KubeVirt's `firmware.serial` reaches SMBIOS type 1; a comma in it cannot end the value.
    #[test]
    fn firmware_serial_is_the_smbios_serial() {
        let mut config = base(Firmware::Bios, false, None);
        config.smbios_serial = Some("abc,def".into());
        let rendered = render(&config);
        let smbios = rendered
            .lines()
            .skip_while(|l| *l != "-smbios")
            .nth(1)
            .unwrap();
        assert!(smbios.ends_with(",serial=abc,,def"), "{smbios}");
    }

    #[test]
    fn bios_with_ephemeral_tpm_tis() {
        insta::assert_snapshot!(render(&base(Firmware::Bios, false, Some(TpmModel::Tis))));
    }

    #[test]
    fn uefi_with_persistent_tpm_crb() {
        insta::assert_snapshot!(render(&base(uefi(false), false, Some(TpmModel::Crb))));
    }

    #[test]
    fn uefi_secure_boot_smm_tpm_crb_two_disks() {
        let mut config = base(uefi(true), true, Some(TpmModel::Crb));
        config.disks = vec![
            Disk {
                name: "rootdisk".into(),
                path: "/var/lib/ferrovirt/disks/root,1.qcow2".into(),
                format: DiskFormat::Qcow2,
                bus: DiskBus::Virtio,
                read_only: false,
                boot_order: Some(1),
                serial: Some("root-0001".into()),
                media: DiskMedia::Disk,
            },
            Disk {
                name: "cloudinit".into(),
                path: "/var/lib/ferrovirt/disks/seed.img".into(),
                format: DiskFormat::Raw,
                bus: DiskBus::Scsi,
                read_only: true,
                boot_order: None,
                serial: None,
                media: DiskMedia::Disk,
            },
        ];
        insta::assert_snapshot!(render(&config));
    }

    #[test]
    fn passt_nics_without_and_with_pxe() {
        let mut config = base(uefi(false), false, None);
        config.nics = vec![
            Nic {
                name: "default".into(),
                model: NicModel::Virtio,
                mac: Some("52:54:00:12:34:56".into()),
                boot_order: None,
                forwarded_tcp_ports: Vec::new(),
            },
            Nic {
                name: "pxe".into(),
                model: NicModel::E1000e,
                mac: None,
                boot_order: Some(2),
                forwarded_tcp_ports: Vec::new(),
            },
        ];
        insta::assert_snapshot!(render(&config));
    }

    #[test]
    fn bad_mac_is_refused() {
        let mut config = base(Firmware::Bios, false, None);
        config.nics = vec![Nic {
            name: "default".into(),
            model: NicModel::Virtio,
            mac: Some("52:54:00:12:34".into()),
            boot_order: None,
            forwarded_tcp_ports: Vec::new(),
        }];
        let error = qemu_args(&config).unwrap_err();
        assert!(error.to_string().contains("52:54:00:12:34"), "{error}");
    }

    #[test]
    fn headless_without_display_and_a_virtio_tablet() {
        let mut config = base(uefi(false), false, None);
        config.graphics = None;
        config.inputs = vec![InputDevice {
            name: "tablet1".into(),
            bus: InputBus::Virtio,
        }];
        insta::assert_snapshot!(render(&config));
    }

    #[test]
    fn input_names_must_be_unique() {
        let mut config = base(Firmware::Bios, false, None);
        config.inputs.push(config.inputs[0].clone());
        assert!(matches!(
            qemu_args(&config),
            Err(CmdlineError::DuplicateInput { .. })
        ));
    }

    #[test]
    fn no_tpm() {
        let mut config = base(uefi(false), false, None);
        config.disks = vec![Disk {
            name: "data".into(),
            path: "/d/data.raw".into(),
            format: DiskFormat::Raw,
            bus: DiskBus::Sata,
            read_only: false,
            boot_order: Some(2),
            serial: None,
            media: DiskMedia::Disk,
        }];
        insta::assert_snapshot!(render(&config));
    }

    fn cdrom(name: &str, bus: DiskBus, boot_order: Option<u32>) -> Disk {
        Disk {
            name: name.into(),
            path: "/dev/fdset/1".into(),
            format: DiskFormat::Raw,
            bus,
            read_only: true,
            boot_order,
            serial: None,
            media: DiskMedia::Cdrom,
        }
    }

    #[test]
    fn cdroms_on_sata_and_scsi_boot_first() {
        let mut config = base(uefi(false), false, None);
        config.disks = vec![
            cdrom("install", DiskBus::Sata, Some(1)),
            Disk {
                name: "rootdisk".into(),
                path: "/d/root.qcow2".into(),
                format: DiskFormat::Qcow2,
                bus: DiskBus::Sata,
                read_only: false,
                boot_order: Some(2),
                serial: None,
                media: DiskMedia::Disk,
            },
            cdrom("drivers", DiskBus::Scsi, None),
        ];
        insta::assert_snapshot!(render(&config));
    }

    #[test]
    fn cdrom_on_virtio_and_a_seventh_sata_device_are_refused() {
        let mut config = base(Firmware::Bios, false, None);
        config.disks = vec![cdrom("iso", DiskBus::Virtio, None)];
        let error = qemu_args(&config).unwrap_err();
        assert!(error.to_string().contains("virtio"), "{error}");
        config.disks = (0..7)
            .map(|i| cdrom(&format!("cd{i}"), DiskBus::Sata, None))
            .collect();
        let error = qemu_args(&config).unwrap_err();
        assert!(error.to_string().contains("cd6"), "{error}");
    }

    /// The Hyper-V set of KubeVirt's common-instancetypes Windows preferences (windows.11):
    /// relaxed, vapic, vpindex, spinlocks 8191, synic, synictimer with direct, tlbflush,
    /// frequencies, reenlightenment, ipi, runtime, reset, and the hyperv clock.
    pub(crate) fn windows_hyperv() -> crate::hyperv::Hyperv {
        crate::hyperv::Hyperv {
            time: true,
            relaxed: true,
            vapic: true,
            spinlocks: Some(8191),
            vpindex: true,
            runtime: true,
            synic: true,
            stimer: true,
            stimer_direct: true,
            reset: true,
            vendor_id: None,
            frequencies: true,
            reenlightenment: true,
            tlbflush: true,
            tlbflush_direct: false,
            tlbflush_extended: false,
            ipi: true,
            evmcs: false,
        }
    }

    #[test]
    fn windows_11_hyperv_with_kvm() {
        let mut config = base(uefi(true), true, Some(TpmModel::Crb));
        config.accel = Accel::Kvm;
        config.hyperv = Some(windows_hyperv());
        insta::assert_snapshot!(render(&config));
    }

    #[test]
    fn windows_11_hyperv_with_tcg() {
        let mut config = base(uefi(true), true, Some(TpmModel::Crb));
        config.hyperv = Some(windows_hyperv());
        let args = render(&config);
        let cpu = args
            .lines()
            .skip_while(|l| *l != "-cpu")
            .nth(1)
            .unwrap()
            .to_string();
        insta::assert_snapshot!(cpu);
    }

    #[test]
    fn secure_boot_without_smm_is_refused() {
        assert!(matches!(
            qemu_args(&base(uefi(true), false, None)),
            Err(CmdlineError::SecureBootNeedsSmm)
        ));
    }

    #[test]
    fn read_only_sata_is_refused() {
        let mut config = base(Firmware::Bios, false, None);
        config.disks = vec![Disk {
            name: "ro".into(),
            path: "/x".into(),
            format: DiskFormat::Raw,
            bus: DiskBus::Sata,
            read_only: true,
            boot_order: None,
            serial: None,
            media: DiskMedia::Disk,
        }];
        let err = qemu_args(&config).unwrap_err();
        assert!(err.to_string().contains("SATA refuses read-only"), "{err}");
    }

    #[test]
    fn bad_ids_are_refused() {
        let mut config = base(Firmware::Bios, false, None);
        config.uuid = "x,y".into();
        assert!(matches!(
            qemu_args(&config),
            Err(CmdlineError::InvalidId { .. })
        ));
        let mut config = base(Firmware::Bios, false, None);
        config.disks = vec![Disk {
            name: "1bad".into(),
            path: "/x".into(),
            format: DiskFormat::Raw,
            bus: DiskBus::Virtio,
            read_only: false,
            boot_order: None,
            serial: None,
            media: DiskMedia::Disk,
        }];
        assert!(matches!(
            qemu_args(&config),
            Err(CmdlineError::InvalidId { .. })
        ));
    }
}
