//! The PCR guard (issue 15): BitLocker (and any TPM-sealed secret) asks for its recovery key when
//! the values measured into the TPM's PCRs at boot change. What decides them on our side is
//! recorded at every stop in the backend-storage volume (`meta/ferrovirt/boot-profile.json`,
//! crash-safe) and compared at the next start; a difference becomes the Warning Event
//! `PCRsWillChange` and a VMI/VM condition of that type, naming what changed, the PCRs it affects
//! and what to do.
//!
//! What is recorded ([`BootProfile`]) and the PCRs it feeds, after the TCG PC Client Platform
//! Firmware Profile (PCR0: platform firmware code; PCR1: platform configuration, e.g. the SMBIOS
//! tables the machine type decides; PCR7: the Secure Boot policy, i.e. the SecureBoot variable
//! and the PK, KEK, db and dbx contents):
//!
//! | change | PCRs |
//! |---|---|
//! | firmware CODE file (another OVMF build, Secure Boot firmware or not) | PCR0, and usually PCR7 |
//! | machine type / SMM | PCR1 |
//! | Secure Boot switched on or off | PCR7 |
//! | PK, KEK, db or dbx contents | PCR7 |
//! | TPM interface (tpm-tis <-> tpm-crb, which KubeVirt ties to `tpm.persistent`) | none of the PCRs as such, but the TPM device BitLocker sealed to moves (kubevirt#15701): Windows asks for the recovery key |
//!
//! The profile at start is kept in the run's runtime dir; the stop reads it back, refreshes the
//! Secure Boot digests from the VARS file (the guest itself may have updated db/dbx, which it
//! does knowing the consequences) and records it. A run that never stopped cleanly leaves the
//! previous record.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use ferrovirt_firmware::vars::{EFI_GLOBAL_VARIABLE_GUID, EFI_IMAGE_SECURITY_DATABASE_GUID};
use ferrovirt_firmware::{EfiGuid, list_variables};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::machine::{Firmware, MachineType, TpmModel};

/// The record in the volume, relative to its `meta/`.
pub const PROFILE_RECORD: &str = "ferrovirt/boot-profile.json";
/// The profile of the current run, in its runtime dir.
pub const RUN_PROFILE: &str = "boot-profile.json";
/// The Event reason and condition type.
pub const REASON: &str = "PCRsWillChange";

/// The Secure Boot variables' contents, SHA-256 of each variable's data (`None`: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureBootKeys {
    pub pk: Option<String>,
    pub kek: Option<String>,
    pub db: Option<String>,
    pub dbx: Option<String>,
}

/// What decides a boot's measurements, as far as the host decides them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootProfile {
    /// `bios`, or the SHA-256 of the OVMF CODE file.
    pub firmware: String,
    /// The CODE file's path (shown, not compared).
    #[serde(default)]
    pub firmware_path: Option<PathBuf>,
    /// e.g. `q35,smm=on`.
    pub machine: String,
    pub tpm_model: Option<TpmModel>,
    pub secure_boot: bool,
    /// `None` for BIOS or when the VARS could not be read.
    pub keys: Option<SecureBootKeys>,
}

/// One difference between the recorded and the coming boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChange {
    pub what: String,
    pub before: String,
    pub after: String,
    /// The PCRs it changes (empty: none of them as such, see the module docs).
    pub pcrs: &'static [u8],
}

/// Everything that differs; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrChange {
    pub changes: Vec<ProfileChange>,
}

impl PcrChange {
    /// The PCRs affected, sorted, without repeats.
    pub fn pcrs(&self) -> Vec<u8> {
        let mut pcrs: Vec<u8> = self
            .changes
            .iter()
            .flat_map(|c| c.pcrs.iter().copied())
            .collect();
        pcrs.sort_unstable();
        pcrs.dedup();
        pcrs
    }

    /// The Event's and condition's message.
    pub fn message(&self) -> String {
        let what: Vec<String> = self
            .changes
            .iter()
            .map(|c| format!("{} ({} -> {})", c.what, c.before, c.after))
            .collect();
        let pcrs = self.pcrs();
        let pcr_text = if pcrs.is_empty() {
            "the TPM device the guest sealed its keys to".to_owned()
        } else {
            pcrs.iter()
                .map(|p| format!("PCR{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "Since the last stop: {}. This boot measures different values into {pcr_text}: \
             secrets sealed to them (BitLocker, systemd-cryptenroll --tpm2-pcrs) will not unseal. \
             Suspend BitLocker (Suspend-BitLocker -RebootCount 1) before this start, or have the \
             recovery key ready; to go back, undo the change before starting.",
            what.join("; ")
        )
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

fn shown(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "unset".to_owned(), short)
}

/// What differs from `before` to `after` (pure).
pub fn compare(before: &BootProfile, after: &BootProfile) -> Option<PcrChange> {
    let mut changes = Vec::new();
    let mut push = |what: &str, b: String, a: String, pcrs: &'static [u8]| {
        changes.push(ProfileChange {
            what: what.to_owned(),
            before: b,
            after: a,
            pcrs,
        })
    };
    if before.firmware != after.firmware {
        push(
            "firmware code",
            short(&before.firmware),
            short(&after.firmware),
            &[0, 7],
        );
    }
    if before.machine != after.machine {
        push(
            "machine type",
            before.machine.clone(),
            after.machine.clone(),
            &[1],
        );
    }
    if before.secure_boot != after.secure_boot {
        let text = |on: bool| if on { "on" } else { "off" }.to_owned();
        push(
            "Secure Boot",
            text(before.secure_boot),
            text(after.secure_boot),
            &[7],
        );
    }
    if before.tpm_model != after.tpm_model {
        let text = |m: Option<TpmModel>| match m {
            Some(TpmModel::Crb) => "tpm-crb".to_owned(),
            Some(TpmModel::Tis) => "tpm-tis".to_owned(),
            None => "none".to_owned(),
        };
        push(
            "TPM interface",
            text(before.tpm_model),
            text(after.tpm_model),
            &[],
        );
    }
    if let (Some(b), Some(a)) = (&before.keys, &after.keys) {
        for (name, bv, av) in [
            ("PK", &b.pk, &a.pk),
            ("KEK", &b.kek, &a.kek),
            ("db", &b.db, &a.db),
            ("dbx", &b.dbx, &a.dbx),
        ] {
            if bv != av {
                push(
                    &format!("Secure Boot variable {name}"),
                    shown(bv),
                    shown(av),
                    &[7],
                );
            }
        }
    }
    Some(PcrChange { changes }).filter(|c| !c.changes.is_empty())
}

/// `q35,smm=on|off`.
pub fn machine_text(machine: &MachineType) -> String {
    match machine {
        MachineType::Q35 { smm } => format!("q35,smm={}", if *smm { "on" } else { "off" }),
    }
}

/// The profile of a boot with this firmware, machine and TPM model (reads the CODE file, cached
/// by path, size and mtime, and the VARS file).
pub fn profile_of(
    firmware: &Firmware,
    machine: &MachineType,
    tpm_model: Option<TpmModel>,
) -> BootProfile {
    let (firmware_digest, firmware_path, secure_boot, keys) = match firmware {
        Firmware::Bios => ("bios".to_owned(), None, false, None),
        Firmware::Uefi {
            code,
            vars,
            secure_boot,
        } => (
            code_digest(code),
            Some(code.clone()),
            *secure_boot,
            secure_boot_keys(vars),
        ),
    };
    BootProfile {
        firmware: firmware_digest,
        firmware_path,
        machine: machine_text(machine),
        tpm_model,
        secure_boot,
        keys,
    }
}

/// SHA-256 of the PK/KEK/db/dbx data in a VARS file; `None` if it cannot be read.
pub fn secure_boot_keys(vars: &Path) -> Option<SecureBootKeys> {
    let variables = list_variables(vars).ok()?;
    let digest = |name: &str, guid: EfiGuid| {
        variables
            .iter()
            .find(|v| v.name == name && v.vendor == guid)
            .map(|v| hex(&Sha256::digest(&v.data)))
    };
    Some(SecureBootKeys {
        pk: digest("PK", EFI_GLOBAL_VARIABLE_GUID),
        kek: digest("KEK", EFI_GLOBAL_VARIABLE_GUID),
        db: digest("db", EFI_IMAGE_SECURITY_DATABASE_GUID),
        dbx: digest("dbx", EFI_IMAGE_SECURITY_DATABASE_GUID),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type CodeKey = (PathBuf, u64, Option<SystemTime>);

/// SHA-256 of a firmware CODE file, remembered by path, size and mtime (it is read at each start;
/// a 4 MiB file costs a few ms to hash).
fn code_digest(path: &Path) -> String {
    static CACHE: OnceLock<Mutex<HashMap<CodeKey, String>>> = OnceLock::new();
    let Ok(meta) = fs::metadata(path) else {
        return format!("unreadable:{}", path.display());
    };
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return hit;
    }
    let digest = match fs::read(path) {
        Ok(bytes) => hex(&Sha256::digest(&bytes)),
        Err(_) => return format!("unreadable:{}", path.display()),
    };
    if let Ok(mut c) = cache.lock() {
        c.insert(key, digest.clone());
    }
    digest
}

fn record_path(volume: &Path) -> PathBuf {
    volume
        .join(ferrovirt_storage::backend::META_DIR)
        .join(PROFILE_RECORD)
}

/// The profile recorded at the last stop, if any (an unreadable record counts as none).
pub fn recorded(volume: &Path) -> Option<BootProfile> {
    let bytes = fs::read(record_path(volume)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// At a start: compares with the recorded profile and keeps the coming one in the runtime dir
/// for the stop. `None`: nothing recorded yet (first start) or nothing changed.
pub fn at_start(volume: &Path, runtime_dir: &Path, coming: &BootProfile) -> Option<PcrChange> {
    if let Ok(bytes) = serde_json::to_vec_pretty(coming)
        && let Err(e) =
            ferrovirt_storage::atomic::write_file(&runtime_dir.join(RUN_PROFILE), &bytes, 0o600)
    {
        tracing::warn!("cannot keep the boot profile of this run: {e}");
    }
    compare(&recorded(volume)?, coming)
}

/// At a stop: records the run's profile (with the Secure Boot digests as the VARS file holds
/// them now) in the volume, crash-safely.
pub fn at_stop(volume: &Path, runtime_dir: &Path) {
    let Some(mut profile) = fs::read(runtime_dir.join(RUN_PROFILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<BootProfile>(&b).ok())
    else {
        return;
    };
    // The run's plain copy when the VARS is sealed at rest (the engine sealed it back already).
    let runtime_vars = runtime_dir.join("VARS.fd");
    let vars = if runtime_vars.exists() {
        Some(runtime_vars)
    } else {
        vars_file(volume)
    };
    if profile.keys.is_some()
        && let Some(vars) = vars
    {
        profile.keys = secure_boot_keys(&vars).or(profile.keys);
    }
    let path = record_path(volume);
    let written = path
        .parent()
        .map_or(Ok(()), ferrovirt_storage::atomic::create_dir_private)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec_pretty(&profile).map_err(|e| e.to_string()))
        .and_then(|bytes| {
            // A record that says this already was written crash-safely before: left as it is.
            if fs::read(&path).is_ok_and(|recorded| recorded == bytes) {
                return Ok(());
            }
            ferrovirt_storage::atomic::write_file(&path, &bytes, 0o600).map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), "cannot record the boot profile: {e}");
    }
}

/// The one VARS file in the volume's `nvram/`.
fn vars_file(volume: &Path) -> Option<PathBuf> {
    let dir = volume.join(ferrovirt_storage::backend::NVRAM_DIR);
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(ferrovirt_storage::backend::NVRAM_SUFFIX))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> BootProfile {
        BootProfile {
            firmware: "aa".repeat(32),
            firmware_path: Some(PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd")),
            machine: "q35,smm=off".to_owned(),
            tpm_model: Some(TpmModel::Crb),
            secure_boot: false,
            keys: Some(SecureBootKeys::default()),
        }
    }

    /// A temp dir with an empty volume and an empty runtime dir in it.
    fn volume_and_run_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (volume, run) = (dir.path().join("vol"), dir.path().join("run"));
        fs::create_dir_all(&run).unwrap();
        fs::create_dir_all(&volume).unwrap();
        (dir, volume, run)
    }

    #[test]
    fn the_same_profile_changes_nothing() {
        assert_eq!(compare(&profile(), &profile()), None);
        let mut moved = profile();
        moved.firmware_path = Some(PathBuf::from("/elsewhere/same-bytes.fd"));
        assert_eq!(compare(&profile(), &moved), None, "only the bytes count");
    }

    #[test]
    fn each_change_names_its_pcrs() {
        let mut after = profile();
        after.firmware = "bb".repeat(32);
        let change = compare(&profile(), &after).unwrap();
        assert_eq!(change.pcrs(), [0, 7]);
        assert!(
            change
                .message()
                .contains("firmware code (aaaaaaaaaaaa -> bbbbbbbbbbbb)")
        );
        assert!(change.message().contains("Suspend BitLocker"));

        let mut after = profile();
        after.secure_boot = true;
        after.machine = "q35,smm=on".to_owned();
        after.keys = Some(SecureBootKeys {
            db: Some("cc".repeat(32)),
            ..SecureBootKeys::default()
        });
        let change = compare(&profile(), &after).unwrap();
        let what: Vec<&str> = change.changes.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            what,
            ["machine type", "Secure Boot", "Secure Boot variable db"]
        );
        assert_eq!(change.pcrs(), [1, 7]);
        assert!(change.message().contains("db (unset -> cccccccccccc)"));
    }

    #[test]
    fn a_tpm_interface_switch_is_flagged_without_a_pcr() {
        let mut after = profile();
        after.tpm_model = Some(TpmModel::Tis);
        let change = compare(&profile(), &after).unwrap();
        assert!(change.pcrs().is_empty());
        let message = change.message();
        assert!(
            message.contains("TPM interface (tpm-crb -> tpm-tis)"),
            "{message}"
        );
        assert!(message.contains("the TPM device the guest sealed its keys to"));
    }

    #[test]
    fn unreadable_keys_are_not_a_change() {
        let mut after = profile();
        after.keys = None;
        assert_eq!(compare(&profile(), &after), None);
    }

    #[test]
    fn record_round_trip_and_comparison_at_start() {
        let (_dir, volume, run) = volume_and_run_dir();
        // First start: nothing recorded, nothing to say.
        assert_eq!(at_start(&volume, &run, &profile()), None);
        at_stop(&volume, &run);
        assert_eq!(recorded(&volume), Some(profile()));
        // Next start with another firmware: flagged.
        let mut coming = profile();
        coming.firmware = "dd".repeat(32);
        let change = at_start(&volume, &run, &coming).unwrap();
        assert_eq!(change.changes[0].what, "firmware code");
    }

    #[test]
    fn a_stop_with_the_recorded_profile_leaves_the_record_alone() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, volume, run) = volume_and_run_dir();
        assert_eq!(at_start(&volume, &run, &profile()), None);
        at_stop(&volume, &run);
        let inode = || fs::metadata(record_path(&volume)).unwrap().ino();
        let first = inode();
        // The same run profile again: nothing to write.
        assert_eq!(at_start(&volume, &run, &profile()), None);
        at_stop(&volume, &run);
        assert_eq!(inode(), first, "the unchanged record was rewritten");
        // Another profile: written (a new file renamed over the old one).
        let mut coming = profile();
        coming.machine = "q35,smm=on".to_owned();
        assert!(at_start(&volume, &run, &coming).is_some());
        at_stop(&volume, &run);
        assert_ne!(inode(), first);
        assert_eq!(recorded(&volume), Some(coming));
    }
}
