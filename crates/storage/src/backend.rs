//! The per-VM backend-storage ("state") volume, laid out exactly as KubeVirt lays out its
//! `persistent-state-for-<vm>` PVC, so a volume can move between KubeVirt and ferrovirt.
//!
//! KubeVirt (pkg/virt-controller/services/rendervolumes.go) mounts sub-paths of the PVC into
//! virt-launcher, and libvirt inside it writes the files:
//!
//! | in the volume                         | mounted at (virt-launcher)                  | written by |
//! |---------------------------------------|---------------------------------------------|------------|
//! | `meta/` (e.g. `meta/migrated`)        | `/run/kubevirt-private/backend-storage-meta`| KubeVirt   |
//! | `swtpm/<vm-uuid>/tpm2/tpm2-00.permall`| `/var/lib/libvirt/swtpm`                    | swtpm      |
//! | `swtpm-localca/`                      | `/var/lib/swtpm-localca`                    | swtpm_localca |
//! | `nvram/<vm-name>_VARS.fd`             | `/var/lib/libvirt/qemu/nvram`               | QEMU (OVMF)|
//!
//! Modes follow libvirt (src/qemu/qemu_tpm.c): `swtpm/<uuid>/` is 0711 ("allow others to cd into
//! this dir"), `swtpm/<uuid>/tpm2/` is 0700, swtpm's state file is 0600 (libvirt passes
//! `--tpmstate dir=...,mode=0600`), and the VARS file is 0600. The top-level sub-directories are
//! created by kubelet with the mode of the volume root; ferrovirt makes the root and them 0700.
//! The `<vm-uuid>` is the VM's `spec.template.spec.domain.firmware.uuid`, formatted in lowercase
//! as libvirt formats UUIDs.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic::{self, AtomicError};
use crate::names::{NameError, validate_dns1123_subdomain};

/// KubeVirt's PVC name prefix and label key (pkg/storage/backend-storage: `PVCPrefix`).
pub const PVC_LABEL_KEY: &str = "persistent-state-for";
/// Size KubeVirt requests for the backend-storage PVC (`PVCSize`).
pub const PVC_SIZE: &str = "10Mi";
/// Sub-directory for KubeVirt's metadata (e.g. the `migrated` marker).
pub const META_DIR: &str = "meta";
/// Sub-directory holding swtpm state, one `<vm-uuid>/tpm2/` per VM.
pub const SWTPM_DIR: &str = "swtpm";
/// Sub-directory holding the per-volume swtpm local CA.
pub const SWTPM_LOCALCA_DIR: &str = "swtpm-localca";
/// Sub-directory holding the VARS file.
pub const NVRAM_DIR: &str = "nvram";
/// swtpm's TPM 2.0 state directory name under `swtpm/<vm-uuid>/` (libvirt: "tpm2").
pub const TPM2_DIR: &str = "tpm2";
/// swtpm's TPM 2.0 permanent state file name.
pub const TPM2_STATE_FILE: &str = "tpm2-00.permall";
/// The marker KubeVirt writes into `meta/` after a migration.
pub const MIGRATED_MARKER: &str = "migrated";
/// Suffix of the VARS file name: `<vm>_VARS.fd` (KubeVirt's converter/compute/os.go).
pub const NVRAM_SUFFIX: &str = "_VARS.fd";

/// Mode libvirt gives `swtpm/<uuid>/`.
pub const SWTPM_UUID_DIR_MODE: u32 = 0o711;

/// `metadata.generateName` of a VM's backend-storage PVC: `persistent-state-for-<vm>-`.
pub fn pvc_generate_name(vm_name: &str) -> String {
    format!("{PVC_LABEL_KEY}-{vm_name}-")
}

/// The name older KubeVirt releases used for the PVC (no random suffix):
/// `persistent-state-for-<vm>`; still recognised by KubeVirt as a fallback.
pub fn legacy_pvc_name(vm_name: &str) -> String {
    format!("{PVC_LABEL_KEY}-{vm_name}")
}

/// Errors of the backend-storage volume.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "state volume root {root} does not exist or is not a directory; provision the volume first"
    )]
    MissingRoot { root: PathBuf },
    #[error(
        "invalid VM UUID {value:?}: expected the form 8-4-4-4-12 hexadecimal digits \
         (e.g. 5f1f8a3c-2b6e-4c7d-9a0b-1c2d3e4f5a6b), as in spec.template.spec.domain.firmware.uuid"
    )]
    InvalidUuid { value: String },
    #[error(transparent)]
    InvalidVmName(#[from] NameError),
    #[error("state volume: {0}")]
    Fs(#[from] AtomicError),
}

/// A VM's firmware UUID, canonical lowercase `8-4-4-4-12` form (safe as a path component).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmUuid(String);

impl VmUuid {
    /// Parses a UUID in the hyphenated form (any case); stores it in lowercase.
    pub fn parse(value: &str) -> Result<Self, BackendError> {
        let groups: Vec<&str> = value.split('-').collect();
        let lengths = [8, 4, 4, 4, 12];
        let ok = groups.len() == lengths.len()
            && groups
                .iter()
                .zip(lengths)
                .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(BackendError::InvalidUuid {
                value: value.to_owned(),
            });
        }
        Ok(VmUuid(value.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opened state volume (its root directory).
#[derive(Debug, Clone)]
pub struct StateVolume {
    root: PathBuf,
}

impl StateVolume {
    /// Opens the volume at `root`, which must be an existing directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BackendError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(BackendError::MissingRoot { root });
        }
        Ok(StateVolume { root })
    }

    /// Creates every directory of the layout that does not exist yet (idempotent; existing files
    /// are never touched): `meta/`, `swtpm/<uuid>/tpm2/`, `swtpm-localca/`, `nvram/`.
    pub fn ensure_layout(&self, vm_name: &str, vm_uuid: &VmUuid) -> Result<(), BackendError> {
        validate_dns1123_subdomain("VM name", vm_name)?;
        atomic::create_dir_private(&self.meta_dir())?;
        atomic::create_dir_private(&self.swtpm_dir())?;
        atomic::create_dir_with_mode(&self.swtpm_uuid_dir(vm_uuid), SWTPM_UUID_DIR_MODE)?;
        atomic::create_dir_private(&self.tpm_state_dir(vm_uuid))?;
        atomic::create_dir_private(&self.localca_dir())?;
        atomic::create_dir_private(&self.nvram_dir())?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `meta/`
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    /// `meta/migrated`: present after KubeVirt migrated the VM away from this volume.
    pub fn migrated_marker(&self) -> PathBuf {
        self.meta_dir().join(MIGRATED_MARKER)
    }

    /// `swtpm/` (mounted at /var/lib/libvirt/swtpm by KubeVirt).
    pub fn swtpm_dir(&self) -> PathBuf {
        self.root.join(SWTPM_DIR)
    }

    /// `swtpm/<uuid>/`
    pub fn swtpm_uuid_dir(&self, vm_uuid: &VmUuid) -> PathBuf {
        self.swtpm_dir().join(vm_uuid.as_str())
    }

    /// `swtpm/<uuid>/tpm2/`: the directory given to swtpm as `--tpmstate dir=`.
    pub fn tpm_state_dir(&self, vm_uuid: &VmUuid) -> PathBuf {
        self.swtpm_uuid_dir(vm_uuid).join(TPM2_DIR)
    }

    /// `swtpm/<uuid>/tpm2/tpm2-00.permall`
    pub fn tpm_state_file(&self, vm_uuid: &VmUuid) -> PathBuf {
        self.tpm_state_dir(vm_uuid).join(TPM2_STATE_FILE)
    }

    /// True when swtpm has written permanent state for this VM (the TPM is manufactured).
    pub fn has_tpm_state(&self, vm_uuid: &VmUuid) -> bool {
        self.tpm_state_file(vm_uuid).is_file()
    }

    /// `swtpm-localca/` (mounted at /var/lib/swtpm-localca by KubeVirt).
    pub fn localca_dir(&self) -> PathBuf {
        self.root.join(SWTPM_LOCALCA_DIR)
    }

    /// `nvram/`
    pub fn nvram_dir(&self) -> PathBuf {
        self.root.join(NVRAM_DIR)
    }

    /// `nvram/<vm>_VARS.fd`
    pub fn nvram_file(&self, vm_name: &str) -> Result<PathBuf, BackendError> {
        validate_dns1123_subdomain("VM name", vm_name)?;
        Ok(self.nvram_dir().join(format!("{vm_name}{NVRAM_SUFFIX}")))
    }

    /// UUIDs that have a `swtpm/<uuid>/` directory in this volume, sorted.
    pub fn tpm_uuids(&self) -> Result<Vec<VmUuid>, BackendError> {
        let dir = self.swtpm_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AtomicError::io("list directory", &dir, e).into()),
        };
        let mut uuids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(atomic::ctx("list directory", &dir))?;
            if let Some(uuid) = entry
                .file_name()
                .to_str()
                .and_then(|n| VmUuid::parse(n).ok())
            {
                uuids.push(uuid);
            }
        }
        uuids.sort();
        Ok(uuids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const UUID: &str = "5F1F8A3C-2B6E-4C7D-9A0B-1C2D3E4F5A6B";

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn naming_helpers_match_kubevirt() {
        assert_eq!(pvc_generate_name("win11"), "persistent-state-for-win11-");
        assert_eq!(legacy_pvc_name("win11"), "persistent-state-for-win11");
        assert_eq!(PVC_LABEL_KEY, "persistent-state-for");
        assert_eq!(PVC_SIZE, "10Mi");
    }

    #[test]
    fn uuid_is_validated_and_lowercased() {
        let u = VmUuid::parse(UUID).unwrap();
        assert_eq!(u.as_str(), "5f1f8a3c-2b6e-4c7d-9a0b-1c2d3e4f5a6b");
        for bad in [
            "",
            "../../etc",
            "5f1f8a3c2b6e4c7d9a0b1c2d3e4f5a6b",
            "zf1f8a3c-2b6e-4c7d-9a0b-1c2d3e4f5a6b",
        ] {
            assert!(matches!(
                VmUuid::parse(bad),
                Err(BackendError::InvalidUuid { .. })
            ));
        }
    }

    #[test]
    fn layout_paths_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let vol = StateVolume::open(dir.path()).unwrap();
        let uuid = VmUuid::parse(UUID).unwrap();
        vol.ensure_layout("win11", &uuid).unwrap();
        vol.ensure_layout("win11", &uuid).unwrap();
        let root = dir.path();
        assert_eq!(vol.meta_dir(), root.join("meta"));
        assert_eq!(
            vol.tpm_state_file(&uuid),
            root.join("swtpm/5f1f8a3c-2b6e-4c7d-9a0b-1c2d3e4f5a6b/tpm2/tpm2-00.permall")
        );
        assert_eq!(vol.localca_dir(), root.join("swtpm-localca"));
        assert_eq!(
            vol.nvram_file("win11").unwrap(),
            root.join("nvram/win11_VARS.fd")
        );
        assert_eq!(vol.migrated_marker(), root.join("meta/migrated"));
        for d in ["meta", "swtpm", "swtpm-localca", "nvram"] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&vol.swtpm_uuid_dir(&uuid)), 0o711);
        assert_eq!(mode(&vol.tpm_state_dir(&uuid)), 0o700);
        assert!(!vol.has_tpm_state(&uuid));
        fs::write(vol.tpm_state_file(&uuid), b"state").unwrap();
        assert!(vol.has_tpm_state(&uuid));
        assert_eq!(vol.tpm_uuids().unwrap(), vec![uuid]);
    }

    #[test]
    fn bad_names_and_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            StateVolume::open(dir.path().join("nope")),
            Err(BackendError::MissingRoot { .. })
        ));
        let vol = StateVolume::open(dir.path()).unwrap();
        assert!(vol.nvram_file("../x").is_err());
        let uuid = VmUuid::parse(UUID).unwrap();
        assert!(vol.ensure_layout("Bad_Name", &uuid).is_err());
    }
}
