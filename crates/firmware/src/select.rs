//! Choosing the firmware for a VM from QEMU firmware descriptors, the way libvirt does it.
//!
//! UEFI: the first descriptor in priority order whose interface is `uefi`, whose mapping is a
//! split flash with a VARS template, whose target matches the architecture and machine type, and
//! whose features fit:
//! - Secure Boot on: needs `secure-boot`, `enrolled-keys` (Microsoft keys enrolled in the VARS
//!   template, as KubeVirt/libvirt pick) and `requires-smm`.
//! - Secure Boot off: must have neither `secure-boot` nor `requires-smm`.
//!
//! BIOS is SeaBIOS, QEMU's built-in default: no pflash, nothing to select ([`FirmwareChoice::Bios`]).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::descriptor::{
    DEFAULT_SEARCH_DIRS, Feature, FirmwareDescriptor, FlashMode, InterfaceType, Mapping, glob_match,
};

/// Guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    X86_64,
    Aarch64,
}

impl Architecture {
    /// The name used in descriptors (`targets[].architecture`).
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Aarch64 => "aarch64",
        }
    }
}

/// What the VM needs from its UEFI firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareRequest {
    pub secure_boot: bool,
    pub arch: Architecture,
    /// A versioned machine type (`pc-q35-7.2`) or an alias (`q35`, `pc`). An alias matches a
    /// target pattern that starts with its family (`pc-q35-`) or that matches any machine of the
    /// family (`pc-q35-*`, `*`).
    pub machine: String,
}

impl FirmwareRequest {
    /// Features the firmware must have.
    pub fn wanted_features(&self) -> Vec<Feature> {
        if self.secure_boot {
            vec![
                Feature::SecureBoot,
                Feature::EnrolledKeys,
                Feature::RequiresSmm,
            ]
        } else {
            Vec::new()
        }
    }

    /// Features the firmware must not have.
    pub fn unwanted_features(&self) -> Vec<Feature> {
        if self.secure_boot {
            Vec::new()
        } else {
            vec![Feature::SecureBoot, Feature::RequiresSmm]
        }
    }
}

/// The UEFI firmware chosen for a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedFirmware {
    /// Read-only code image (first pflash).
    pub code: PathBuf,
    /// Template to copy the VM's VARS file from (second pflash).
    pub vars_template: PathBuf,
    /// QEMU needs `-machine ...,smm=on` and `-global driver=cfi.pflash01,property=secure,value=on`.
    pub requires_smm: bool,
    pub secure_boot: bool,
    pub enrolled_keys: bool,
    /// The descriptor this came from.
    pub descriptor_path: PathBuf,
    pub description: String,
}

/// BIOS or UEFI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareChoice {
    /// SeaBIOS, QEMU's default: no pflash drives, no VARS.
    Bios,
    Uefi(SelectedFirmware),
}

/// Why a descriptor was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub descriptor_path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.descriptor_path.display(), self.reason)
    }
}

/// No firmware fits the request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SelectError {
    #[error(
        "no UEFI firmware for {request}: wanted features [{}], refused features [{}]; \
         considered {} descriptor(s):\n{}\nhow to fix: install the Debian package `ovmf` \
         (it ships /usr/share/OVMF/*.fd and the descriptors in /usr/share/qemu/firmware), or add a \
         matching descriptor in /etc/qemu/firmware{}",
        feature_list(wanted),
        feature_list(unwanted),
        considered.len(),
        considered_list(considered),
        if *secure_boot { "; or set secureBoot: false if the VM does not need Secure Boot" } else { "" }
    )]
    NoMatch {
        request: String,
        secure_boot: bool,
        wanted: Vec<Feature>,
        unwanted: Vec<Feature>,
        considered: Vec<Refusal>,
    },
}

fn feature_list(features: &[Feature]) -> String {
    let names: Vec<&str> = features.iter().map(Feature::as_str).collect();
    names.join(", ")
}

fn considered_list(considered: &[Refusal]) -> String {
    if considered.is_empty() {
        return format!(
            "  (none: no descriptors found in {})",
            DEFAULT_SEARCH_DIRS.join(", ")
        );
    }
    let lines: Vec<String> = considered.iter().map(|r| format!("  - {r}")).collect();
    lines.join("\n")
}

fn machine_family(alias: &str) -> Option<&'static str> {
    match alias {
        "q35" => Some("pc-q35-"),
        "pc" | "i440fx" => Some("pc-i440fx-"),
        _ => None,
    }
}

fn machine_matches(pattern: &str, machine: &str) -> bool {
    match machine_family(machine) {
        Some(family) => pattern.starts_with(family) || glob_match(pattern, &format!("{family}*")),
        None => glob_match(pattern, machine),
    }
}

fn refuse(
    d: &FirmwareDescriptor,
    req: &FirmwareRequest,
    file_exists: &dyn Fn(&Path) -> bool,
) -> Result<SelectedFirmware, String> {
    if !d.has_interface(&InterfaceType::Uefi) {
        return Err("interface is not uefi".into());
    }
    let (code, template) = match &d.mapping {
        Mapping::Flash {
            mode: FlashMode::Split,
            executable,
            nvram_template: Some(template),
        } => (executable, template),
        Mapping::Flash {
            mode: FlashMode::Split,
            ..
        } => {
            return Err("flash mapping has no nvram-template (no VARS to persist)".into());
        }
        Mapping::Flash { mode, .. } => {
            return Err(format!(
                "flash mode {mode:?} (only split code/VARS is supported)"
            ));
        }
        other => return Err(format!("mapping is not pflash ({other:?})")),
    };
    if code.format != "raw" || template.format != "raw" {
        return Err(format!(
            "flash format {}/{} (only raw is supported)",
            code.format, template.format
        ));
    }
    let arch = req.arch.as_str();
    let arch_targets: Vec<_> = d
        .targets
        .iter()
        .filter(|t| t.architecture == arch)
        .collect();
    if arch_targets.is_empty() {
        let archs: Vec<&str> = d.targets.iter().map(|t| t.architecture.as_str()).collect();
        return Err(format!(
            "architecture {arch} not among [{}]",
            archs.join(", ")
        ));
    }
    let machine_ok = arch_targets
        .iter()
        .any(|t| t.machines.iter().any(|p| machine_matches(p, &req.machine)));
    if !machine_ok {
        let patterns: Vec<&str> = arch_targets
            .iter()
            .flat_map(|t| t.machines.iter().map(String::as_str))
            .collect();
        return Err(format!(
            "machine {} does not match [{}]",
            req.machine,
            patterns.join(", ")
        ));
    }
    let missing: Vec<Feature> = req
        .wanted_features()
        .into_iter()
        .filter(|f| !d.has_feature(f))
        .collect();
    if !missing.is_empty() {
        return Err(format!("lacks feature(s) {}", feature_list(&missing)));
    }
    let unwanted: Vec<Feature> = req
        .unwanted_features()
        .into_iter()
        .filter(|f| d.has_feature(f))
        .collect();
    if !unwanted.is_empty() {
        return Err(format!(
            "has unwanted feature(s) {}",
            feature_list(&unwanted)
        ));
    }
    for file in [&code.filename, &template.filename] {
        if !file_exists(file) {
            return Err(format!("file {} does not exist", file.display()));
        }
    }
    Ok(SelectedFirmware {
        code: code.filename.clone(),
        vars_template: template.filename.clone(),
        requires_smm: d.has_feature(&Feature::RequiresSmm),
        secure_boot: d.has_feature(&Feature::SecureBoot),
        enrolled_keys: d.has_feature(&Feature::EnrolledKeys),
        descriptor_path: d.path.clone(),
        description: d.description.clone(),
    })
}

/// Picks the first fitting UEFI firmware (descriptors in priority order, as from
/// [`crate::load_descriptors`]). Firmware files must exist.
pub fn select_uefi(
    descriptors: &[FirmwareDescriptor],
    request: &FirmwareRequest,
) -> Result<SelectedFirmware, SelectError> {
    select_uefi_with(descriptors, request, &|p: &Path| p.is_file())
}

/// As [`select_uefi`], with a custom check that a firmware file exists (for tests).
pub fn select_uefi_with(
    descriptors: &[FirmwareDescriptor],
    request: &FirmwareRequest,
    file_exists: &dyn Fn(&Path) -> bool,
) -> Result<SelectedFirmware, SelectError> {
    let mut considered = Vec::new();
    for d in descriptors {
        match refuse(d, request, file_exists) {
            Ok(selected) => return Ok(selected),
            Err(reason) => considered.push(Refusal {
                descriptor_path: d.path.clone(),
                reason,
            }),
        }
    }
    Err(SelectError::NoMatch {
        request: format!(
            "{} machine {} (secure boot {})",
            request.arch.as_str(),
            request.machine,
            if request.secure_boot { "on" } else { "off" }
        ),
        secure_boot: request.secure_boot,
        wanted: request.wanted_features(),
        unwanted: request.unwanted_features(),
        considered,
    })
}

/// BIOS when `uefi` is `None`, else the UEFI firmware for the request.
pub fn select_firmware(
    descriptors: &[FirmwareDescriptor],
    uefi: Option<&FirmwareRequest>,
) -> Result<FirmwareChoice, SelectError> {
    match uefi {
        None => Ok(FirmwareChoice::Bios),
        Some(request) => select_uefi(descriptors, request).map(FirmwareChoice::Uefi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{load_descriptors, parse_descriptor};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/descriptors");

    fn fixtures() -> Vec<FirmwareDescriptor> {
        let loaded = load_descriptors(&[FIXTURES]).unwrap();
        assert!(loaded.rejected.is_empty());
        loaded.descriptors
    }

    fn req(secure_boot: bool, machine: &str) -> FirmwareRequest {
        FirmwareRequest {
            secure_boot,
            arch: Architecture::X86_64,
            machine: machine.into(),
        }
    }

    fn always(_: &Path) -> bool {
        true
    }

    #[test]
    fn secure_boot_picks_ms_enrolled() {
        let s = select_uefi_with(&fixtures(), &req(true, "pc-q35-7.2"), &always).unwrap();
        assert_eq!(s.code, PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"));
        assert_eq!(
            s.vars_template,
            PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        assert!(s.requires_smm && s.secure_boot && s.enrolled_keys);
        assert!(
            s.descriptor_path
                .ends_with("40-edk2-x86_64-secure-enrolled.json")
        );
    }

    #[test]
    fn no_secure_boot_picks_plain_without_smm() {
        for machine in ["pc-q35-7.2", "q35", "pc-i440fx-7.2", "pc"] {
            let s = select_uefi_with(&fixtures(), &req(false, machine), &always).unwrap();
            assert_eq!(
                s.code,
                PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
                "{machine}"
            );
            assert_eq!(
                s.vars_template,
                PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd")
            );
            assert!(!s.requires_smm && !s.secure_boot);
            assert!(s.descriptor_path.ends_with("60-edk2-x86_64.json"));
        }
    }

    #[test]
    fn q35_alias_matches_secure_boot_too() {
        let s = select_uefi_with(&fixtures(), &req(true, "q35"), &always).unwrap();
        assert!(
            s.descriptor_path
                .ends_with("40-edk2-x86_64-secure-enrolled.json")
        );
    }

    #[test]
    fn secure_boot_on_i440fx_fails_with_reasons() {
        let err = select_uefi_with(&fixtures(), &req(true, "pc-i440fx-7.2"), &always).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("wanted features [secure-boot, enrolled-keys, requires-smm]"),
            "{msg}"
        );
        assert!(msg.contains("considered 3 descriptor(s)"), "{msg}");
        assert!(msg.contains("40-edk2-x86_64-secure-enrolled.json: machine pc-i440fx-7.2 does not match [pc-q35-*]"), "{msg}");
        assert!(
            msg.contains(
                "60-edk2-x86_64.json: lacks feature(s) secure-boot, enrolled-keys, requires-smm"
            ),
            "{msg}"
        );
        assert!(msg.contains("install the Debian package `ovmf`"), "{msg}");
        assert!(msg.contains("secureBoot: false"), "{msg}");
    }

    #[test]
    fn only_secure_firmware_installed_refuses_plain_request() {
        let only_secure: Vec<_> = fixtures()
            .into_iter()
            .filter(|d| d.has_feature(&Feature::RequiresSmm))
            .collect();
        let err = select_uefi_with(&only_secure, &req(false, "q35"), &always).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("refused features [secure-boot, requires-smm]"),
            "{msg}"
        );
        assert!(
            msg.contains("has unwanted feature(s) requires-smm, secure-boot")
                || msg.contains("has unwanted feature(s) secure-boot, requires-smm"),
            "{msg}"
        );
    }

    #[test]
    fn missing_files_and_empty_list_are_explained() {
        let err = select_uefi_with(&fixtures(), &req(false, "q35"), &|_| false).unwrap_err();
        assert!(
            err.to_string().contains("OVMF_CODE_4M.fd does not exist"),
            "{err}"
        );
        let err = select_uefi(&[], &req(false, "q35")).unwrap_err();
        assert!(
            err.to_string().contains("none: no descriptors found"),
            "{err}"
        );
        let SelectError::NoMatch { considered, .. } = err;
        assert!(considered.is_empty());
    }

    #[test]
    fn other_architectures_and_bios_descriptors_are_refused() {
        let json = br#"{"interface-types": ["bios"], "mapping": {"device": "memory", "filename": "/b.bin"},
                        "targets": [{"architecture": "i386", "machines": ["pc-*"]}], "features": []}"#;
        let bios = parse_descriptor(Path::new("/d/10-bios.json"), json).unwrap();
        let err = select_uefi_with(&[bios], &req(false, "q35"), &always).unwrap_err();
        assert!(
            err.to_string()
                .contains("10-bios.json: interface is not uefi"),
            "{err}"
        );
        let mut aarch = req(false, "virt");
        aarch.arch = Architecture::Aarch64;
        let err = select_uefi_with(&fixtures(), &aarch, &always).unwrap_err();
        assert!(
            err.to_string()
                .contains("architecture aarch64 not among [x86_64]"),
            "{err}"
        );
    }

    #[test]
    fn bios_choice_needs_no_descriptor() {
        assert_eq!(select_firmware(&[], None).unwrap(), FirmwareChoice::Bios);
    }

    #[test]
    fn real_system_selection() {
        let loaded = load_descriptors(&DEFAULT_SEARCH_DIRS).unwrap();
        let sb = select_uefi(&loaded.descriptors, &req(true, "pc-q35-7.2")).unwrap();
        assert!(sb.vars_template.ends_with("OVMF_VARS_4M.ms.fd"));
        assert!(sb.code.is_file());
        let plain = select_firmware(&loaded.descriptors, Some(&req(false, "q35"))).unwrap();
        let FirmwareChoice::Uefi(plain) = plain else {
            panic!("expected UEFI")
        };
        assert!(plain.code.ends_with("OVMF_CODE_4M.fd"));
        assert!(!plain.requires_smm);
    }
}
