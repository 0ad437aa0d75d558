//! TPMs manufactured ahead of need, so that a VM's first start does not wait for swtpm_setup
//! (~1.2 s here: a new local CA, EK key generation, and swtpm_setup 0.7's ~0.55 s wait for a
//! swtpm it has not reaped yet).
//!
//! A pool entry is a whole manufacture (EK keys, a local CA of its own, the certificates,
//! the PCR banks) made in the background with a placeholder identity and *without* locking
//! the certificate indices. A VM's first start claims one and personalizes it: it issues the
//! EK and platform certificates for this VM (`CN=name:uuid`, signed by the VM's local CA),
//! replaces the placeholder certificates in NV memory with them and write-locks the indices,
//! exactly as swtpm_setup does (same NV attributes, same certificate tool and options), so the
//! result cannot be told from a state manufactured at start.
//!
//! Layout of the pool dir (private, 0700):
//! - `filling/<id>/` an entry being manufactured; what a crash leaves here is removed at open.
//! - `ready/<id>/` complete entries: `tpm2/tpm2-00.permall`, `localca/` (the CA material),
//!   `profile` (what shaped it: PCR banks, RSA size, plain or sealed) and, for a sealed entry,
//!   `key-record` (the wrapped data key its state is encrypted with, opaque to this crate).
//! - `claimed/<id>/` an entry a start took. The claim is a `rename` out of `ready/`, so two
//!   starts can never get the same TPM; the entry is removed once its state is published into
//!   the VM's volume (a crash in between leaves a copy that the next open removes: the VM's
//!   own state is only ever the published file).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::check::{STATE_FILE, Sha256Digest};
use crate::ctrl::{INFO_TPM_ATTRIBUTES, INFO_TPM_SPECIFICATION};
use crate::fsutil;
use crate::key::StateKey;
use crate::localca::{CA_MATERIAL, CERT_SERIAL, CaStatus, DEFAULT_SWTPM_LOCALCA, LocalCa};
use crate::manufacture::{
    self, MANUFACTURE_LOCK, ManufactureError, ManufactureOptions, ManufactureOutcome,
    ManufactureReport, ManufactureRequest, RsaKeySize, STAGING_PREFIX, VmId, io,
};
use crate::offline::OfflineSwtpm;
use crate::process;
use crate::tpm2::{
    CERT_NV_ATTRIBUTES, EkPublicKey, HANDLE_EK_ECC, HANDLE_EK_RSA, HANDLE_EK_RSA3072,
    NV_INDEX_EK_CERT_ECC, NV_INDEX_EK_CERT_RSA, NV_INDEX_EK_CERT_RSA3072, NV_INDEX_PLATFORM_CERT,
    TpmChannel, TpmCommandError,
};

const READY: &str = "ready";
const FILLING: &str = "filling";
const CLAIMED: &str = "claimed";
const ENTRY_TPM: &str = "tpm2";
const ENTRY_CA: &str = "localca";
const ENTRY_PROFILE: &str = "profile";
const ENTRY_KEY_RECORD: &str = "key-record";
/// The placeholder VM name in a pooled TPM's certificates (replaced at claim).
const POOL_VM_NAME: &str = "ferrovirt-tpm-pool";
/// Bound of one personalization (measured: ~40-80 ms; a loaded host can take much longer).
const PERSONALIZE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether an entry's state is encrypted at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// A plain state (ephemeral TPMs; persistent ones when encryption at rest is off).
    Plain,
    /// A state encrypted with a data key of its own, whose wrapped record the entry keeps.
    Sealed,
}

impl PoolKind {
    fn as_str(self) -> &'static str {
        match self {
            PoolKind::Plain => "plain",
            PoolKind::Sealed => "sealed",
        }
    }
}

/// Errors of the pool itself (a failed claim is a miss, not an error: the caller manufactures).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A file system step failed.
    #[error("TPM pool {dir}: cannot {action}: {source}")]
    Io {
        /// The pool dir or entry.
        dir: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Manufacturing an entry failed.
    #[error("TPM pool: manufacturing an entry failed: {0}")]
    Manufacture(#[from] ManufactureError),
}

/// A pool of TPMs manufactured ahead of need (see the module docs).
#[derive(Debug, Clone)]
pub struct TpmPool {
    dir: PathBuf,
    tmp_dir: PathBuf,
    options: ManufactureOptions,
}

impl TpmPool {
    /// Opens (creating) the pool in `dir`; `tmp_dir` holds swtpm_setup's scratch files.
    /// `options` shape every entry (PCR banks, RSA key size, tools); entries made with other
    /// options are never handed out. Leftovers of a crash (`filling/`, `claimed/`) are removed.
    pub fn open(
        dir: impl Into<PathBuf>,
        tmp_dir: impl Into<PathBuf>,
        options: ManufactureOptions,
    ) -> Result<Self, PoolError> {
        let pool = Self {
            dir: dir.into(),
            tmp_dir: tmp_dir.into(),
            options,
        };
        for sub in [READY, FILLING, CLAIMED] {
            let path = pool.dir.join(sub);
            fsutil::create_private_dir(&path).map_err(pool.io("create", &path))?;
        }
        for sub in [FILLING, CLAIMED] {
            let path = pool.dir.join(sub);
            for entry in fs::read_dir(&path)
                .map_err(pool.io("list", &path))?
                .flatten()
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(pool)
    }

    /// The pool dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The profile an entry of `kind` must have to be handed out.
    fn profile(&self, kind: PoolKind) -> String {
        let rsa = match self.options.rsa_key_size {
            RsaKeySize::Bits2048 => "2048",
            RsaKeySize::Bits3072 => "3072",
        };
        format!(
            "pcr-banks={} rsa={rsa} kind={}\n",
            self.options.pcr_banks,
            kind.as_str()
        )
    }

    /// How many entries of `kind` are ready.
    pub fn ready(&self, kind: PoolKind) -> usize {
        let want = self.profile(kind);
        self.ready_entries()
            .iter()
            .filter(|dir| fs::read_to_string(dir.join(ENTRY_PROFILE)).is_ok_and(|p| p == want))
            .count()
    }

    fn ready_entries(&self) -> Vec<PathBuf> {
        let mut entries: Vec<PathBuf> = fs::read_dir(self.dir.join(READY))
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        entries
    }

    /// Manufactures one entry (at low CPU priority) and publishes it in `ready/`. A sealed
    /// entry gets `seal`: the key its state is encrypted with and the wrapped record of that key
    /// (kept as given, returned at claim). Returns how long it took.
    pub fn fill_one(&self, seal: Option<(StateKey, Vec<u8>)>) -> Result<Duration, PoolError> {
        let started = Instant::now();
        let kind = if seal.is_some() {
            PoolKind::Sealed
        } else {
            PoolKind::Plain
        };
        let id = entry_id();
        let staging = self.dir.join(FILLING).join(&id);
        fsutil::create_private_dir(&staging).map_err(self.io("create", &staging))?;
        let vm_id = VmId::new(POOL_VM_NAME, &id)?;
        let mut request = ManufactureRequest::new(
            staging.join(ENTRY_TPM),
            staging.join(ENTRY_CA),
            vm_id,
            &self.tmp_dir,
        );
        request.options = self.options.clone();
        request.options.lock_nvram = false;
        request.options.low_priority = true;
        request.options.ek_cert_dir = None;
        let (key, record) = match seal {
            Some((key, record)) => (Some(key), Some(record)),
            None => (None, None),
        };
        request.options.state_key = key;
        let result = manufacture::manufacture(&request)
            .map_err(PoolError::from)
            .and_then(|_| {
                if let Some(record) = &record {
                    let path = staging.join(ENTRY_KEY_RECORD);
                    fsutil::write_private_file_atomic(&path, record)
                        .map_err(self.io("write the key record", &path))?;
                }
                let path = staging.join(ENTRY_PROFILE);
                fsutil::write_private_file_atomic(&path, self.profile(kind).as_bytes())
                    .map_err(self.io("write the profile", &path))?;
                fsutil::sync_dir(&staging).map_err(self.io("fsync", &staging))?;
                let ready = self.dir.join(READY).join(&id);
                fs::rename(&staging, &ready).map_err(self.io("publish", &ready))?;
                let ready_dir = self.dir.join(READY);
                fsutil::sync_dir(&ready_dir).map_err(self.io("fsync", &ready_dir))
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result.map(|()| started.elapsed())
    }

    /// Takes one ready entry of `kind` (`None` if there is none). Entries of another profile
    /// stay; unreadable ones are removed.
    pub fn claim(&self, kind: PoolKind) -> Option<ClaimedTpm> {
        let want = self.profile(kind);
        for entry in self.ready_entries() {
            match fs::read_to_string(entry.join(ENTRY_PROFILE)) {
                Ok(profile) if profile == want => {}
                Ok(_) => continue,
                Err(_) => {
                    let _ = fs::remove_dir_all(&entry);
                    continue;
                }
            }
            let Some(name) = entry.file_name() else {
                continue;
            };
            let claimed = self.dir.join(CLAIMED).join(name);
            // One rename wins: an entry is never handed to two starts.
            if fs::rename(&entry, &claimed).is_ok() {
                return Some(ClaimedTpm {
                    dir: claimed,
                    options: self.options.clone(),
                });
            }
        }
        None
    }

    fn io(&self, action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PoolError {
        let dir = path.to_path_buf();
        move |source| PoolError::Io {
            dir,
            action,
            source,
        }
    }
}

/// Ready entries in the pool at `dir` (of any profile), plain and sealed: what a scrape shows.
pub fn ready_in(dir: &Path) -> (usize, usize) {
    let mut counts = (0, 0);
    for entry in fs::read_dir(dir.join(READY))
        .into_iter()
        .flatten()
        .flatten()
    {
        match fs::read_to_string(entry.path().join(ENTRY_PROFILE)) {
            Ok(p) if p.contains("kind=plain") => counts.0 += 1,
            Ok(p) if p.contains("kind=sealed") => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// A unique entry name: time, process and a counter.
fn entry_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An entry taken out of the pool; removed when dropped (its state is copied out first).
#[derive(Debug)]
pub struct ClaimedTpm {
    dir: PathBuf,
    options: ManufactureOptions,
}

impl Drop for ClaimedTpm {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl ClaimedTpm {
    /// The wrapped data-key record of a sealed entry.
    pub fn key_record(&self) -> Option<Vec<u8>> {
        fs::read(self.dir.join(ENTRY_KEY_RECORD)).ok()
    }

    /// Makes this entry the TPM of `req` (see the module docs): the VM's CA (the entry's CA
    /// material if the volume has none yet), certificates for `req.vm_id`, NV indices replaced
    /// and locked, the state published at `req.state_dir` without ever replacing an existing
    /// one. A sealed entry needs its own key in `req.options.state_key`. On any error nothing
    /// is published (the caller then manufactures as usual).
    pub fn personalize_into(
        self,
        req: &ManufactureRequest,
    ) -> Result<ManufactureReport, ManufactureError> {
        let started = Instant::now();
        failpoint("tpm.pool.after-claim", &self.dir)?;
        manufacture::validate(req)?;
        let state_file = req.state_dir.join(STATE_FILE);
        if let Some(report) = manufacture::existing(&state_file, started)? {
            return Ok(report);
        }
        fsutil::create_private_dir(&req.localca_dir)
            .map_err(io("create the local CA dir", &req.localca_dir))?;
        let lock_path = req.localca_dir.join(MANUFACTURE_LOCK);
        let _lock = fsutil::lock_exclusive(&lock_path).map_err(io("lock", &lock_path))?;
        if let Some(report) = manufacture::existing(&state_file, started)? {
            return Ok(report);
        }
        fsutil::create_private_dir(&req.state_dir)
            .map_err(io("create the state dir", &req.state_dir))?;
        manufacture::remove_stale_staging(&req.state_dir);

        let opts = &req.options;
        let ca = LocalCa::prepare(&req.localca_dir, &opts.platform, &opts.pcr_banks)?;
        let ca_created = match ca.status() {
            CaStatus::Complete => false,
            CaStatus::Absent => {
                self.copy_ca_material_to(&ca)?;
                true
            }
            CaStatus::Partial { missing } => {
                let aside = ca.quarantine_partial()?;
                tracing::warn!(?missing, aside = %aside.display(), "moved an incomplete local CA aside");
                self.copy_ca_material_to(&ca)?;
                true
            }
        };
        ca.seal()?;

        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&req.state_dir)
            .map_err(io("create a staging dir", &req.state_dir))?;
        let staged = staging.path().join(STATE_FILE);
        let entry_state = self.dir.join(ENTRY_TPM).join(STATE_FILE);
        fs::copy(&entry_state, &staged).map_err(io("copy the pooled state", &entry_state))?;
        // Sockets need a short path: the system temp dir, as the state check does.
        let work = tempfile::Builder::new()
            .prefix("ferrovirt-tpm-claim-")
            .tempdir()
            .map_err(io("create a private temp dir", Path::new("/tmp")))?;
        let certificates = self.certify(req, &ca, staging.path(), work.path())?;

        fsutil::tighten_and_sync_files(staging.path()).map_err(io("fsync", staging.path()))?;
        let state = fs::read(&staged).map_err(io("read the personalized state", &staged))?;
        let ek_certificates =
            manufacture::keep_ek_certificates(certificates, opts.ek_cert_dir.as_deref())?;
        failpoint("tpm.pool.before-publish", &staged)?;
        if let Some(won) = manufacture::publish_state(&staged, &state_file, started)? {
            return Ok(won);
        }
        Ok(ManufactureReport {
            outcome: ManufactureOutcome::Manufactured,
            state_size: state.len() as u64,
            state_sha256: Sha256Digest::of(&state),
            state_file,
            ca_created,
            ek_certificates,
            from_pool: true,
            duration: started.elapsed(),
        })
    }

    /// Copies the entry's CA material into an empty CA dir (the counter last: a crash before
    /// it leaves a partial CA, which the next start sets aside).
    fn copy_ca_material_to(&self, ca: &LocalCa) -> Result<(), ManufactureError> {
        for name in CA_MATERIAL.into_iter().chain([CERT_SERIAL]) {
            let from = self.dir.join(ENTRY_CA).join(name);
            let bytes = fs::read(&from).map_err(io("read the pooled CA", &from))?;
            let to = ca.dir.join(name);
            fsutil::write_private_file_atomic(&to, &bytes).map_err(io("write the CA", &to))?;
        }
        Ok(())
    }

    /// Runs swtpm on the staged state: certificates for the VM, written into NV and locked.
    fn certify(
        &self,
        req: &ManufactureRequest,
        ca: &LocalCa,
        state_dir: &Path,
        work: &Path,
    ) -> Result<Vec<(String, Vec<u8>)>, ManufactureError> {
        let opts = &req.options;
        let vm_id = req.vm_id.as_str().to_owned();
        let deadline = Instant::now() + PERSONALIZE_TIMEOUT;
        let failed = |what: String, log: String| ManufactureError::SetupFailed {
            status: what,
            vm_id: vm_id.clone(),
            log_tail: process::last_lines(&log, manufacture::LOG_TAIL_LINES),
        };
        let mut swtpm = OfflineSwtpm::start_on(
            &opts.swtpm,
            work,
            state_dir,
            opts.state_key.as_ref(),
            deadline,
        )
        .map_err(|e| failed(format!("pooled TPM: {e}"), String::new()))?;
        let init = swtpm
            .init()
            .map_err(|e| failed(format!("pooled TPM: {e}"), swtpm.log()))?;
        if !init.is_success() {
            return Err(failed(
                format!("pooled TPM: CMD_INIT answered {init}"),
                swtpm.log(),
            ));
        }
        let (info_rc, info) = swtpm
            .get_info(INFO_TPM_SPECIFICATION | INFO_TPM_ATTRIBUTES)
            .map_err(|e| failed(format!("pooled TPM: {e}"), swtpm.log()))?;
        let tpm_params = tpm_parameters(&info).ok_or_else(|| {
            failed(
                format!("pooled TPM: CMD_GET_INFO answered {info_rc} with {info:?}"),
                swtpm.log(),
            )
        })?;
        let mut tpm = swtpm
            .data_channel()
            .map_err(|e| failed(format!("pooled TPM: {e}"), swtpm.log()))?;
        let tpm_failed = |e: TpmCommandError, log: String| failed(format!("pooled TPM: {e}"), log);
        tpm.startup_clear()
            .map_err(|e| tpm_failed(e, swtpm.log()))?;
        let (rsa_handle, rsa_index, rsa_name) = match self.options.rsa_key_size {
            RsaKeySize::Bits2048 => (HANDLE_EK_RSA, NV_INDEX_EK_CERT_RSA, "ek-rsa2048.crt"),
            RsaKeySize::Bits3072 => (
                HANDLE_EK_RSA3072,
                NV_INDEX_EK_CERT_RSA3072,
                "ek-rsa3072.crt",
            ),
        };
        let rsa = read_key(&mut tpm, rsa_handle).map_err(|e| tpm_failed(e, swtpm.log()))?;
        let ecc = read_key(&mut tpm, HANDLE_EK_ECC).map_err(|e| tpm_failed(e, swtpm.log()))?;

        // The three certificates at once (swtpm_localca serialises its serial counter).
        let issue = |kind: &str, key: &EkPublicKey, dir: &str| -> Result<Child, ManufactureError> {
            let out = work.join(dir);
            fsutil::create_private_dir(&out).map_err(io("create a certificate dir", &out))?;
            let mut cmd = Command::new(DEFAULT_SWTPM_LOCALCA);
            cmd.args(["--type", kind, "--ek"])
                .arg(key.localca_arg())
                .arg("--dir")
                .arg(&out)
                .arg("--logfile")
                .arg(work.join(format!("{dir}.log")))
                .arg("--vmid")
                .arg(&vm_id)
                .args(&tpm_params)
                .arg("--tpm2")
                .arg("--configfile")
                .arg(&ca.localca_conf)
                .arg("--optsfile")
                .arg(&ca.localca_options);
            process::private_env(&mut cmd, work);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd.spawn().map_err(|source| ManufactureError::Spawn {
                program: PathBuf::from(DEFAULT_SWTPM_LOCALCA),
                source,
            })
        };
        let jobs = [
            ("ek", &rsa, "rsa", rsa_index, Some(rsa_name)),
            ("platform", &rsa, "platform", NV_INDEX_PLATFORM_CERT, None),
            (
                "ek",
                &ecc,
                "ecc",
                NV_INDEX_EK_CERT_ECC,
                Some("ek-secp384r1.crt"),
            ),
        ];
        let mut children = Vec::new();
        for (kind, key, dir, _, _) in &jobs {
            children.push(issue(kind, key, dir)?);
        }
        let mut certificates = Vec::new();
        let mut nv = Vec::new();
        for ((kind, _, dir, index, ek_name), mut child) in jobs.into_iter().zip(children) {
            let outcome = process::wait_bounded(
                &mut child,
                deadline.saturating_duration_since(Instant::now()),
            )
            .map_err(io("wait for", Path::new(DEFAULT_SWTPM_LOCALCA)))?;
            let log = process::read_lossy(&work.join(format!("{dir}.log")));
            if !matches!(outcome, process::WaitOutcome::Exited(s) if s.success()) {
                return Err(failed(
                    format!("swtpm_localca --type {kind}: {outcome:?}"),
                    log,
                ));
            }
            let file = work.join(dir).join(format!("{kind}.cert"));
            let der = fs::read(&file).map_err(io("read a certificate", &file))?;
            if let Some(name) = ek_name {
                certificates.push((name.to_owned(), der.clone()));
            }
            nv.push((index, der));
        }

        for (index, der) in &nv {
            let size = u16::try_from(der.len()).map_err(|_| {
                failed(
                    format!(
                        "a certificate of {} bytes does not fit an NV index",
                        der.len()
                    ),
                    String::new(),
                )
            })?;
            let write = |tpm: &mut TpmChannel| -> Result<(), TpmCommandError> {
                tpm.nv_undefine_space(*index)?;
                tpm.nv_define_space(*index, CERT_NV_ATTRIBUTES, size)?;
                tpm.nv_write(*index, der)?;
                if opts.lock_nvram {
                    tpm.nv_write_lock(*index)?;
                }
                Ok(())
            };
            write(&mut tpm).map_err(|e| tpm_failed(e, swtpm.log()))?;
        }
        tpm.shutdown_clear()
            .map_err(|e| tpm_failed(e, swtpm.log()))?;
        drop(tpm);
        let log = swtpm.log();
        if !swtpm.shutdown_clean() {
            return Err(failed(
                "pooled TPM: swtpm did not shut down cleanly".into(),
                log,
            ));
        }
        Ok(certificates)
    }
}

fn read_key(tpm: &mut TpmChannel, handle: u32) -> Result<EkPublicKey, TpmCommandError> {
    tpm.read_public_key(handle)?
        .ok_or(TpmCommandError::Malformed {
            command: "TPM2_ReadPublic",
            what: "the pooled TPM has no EK at its persistent handle",
        })
}

/// swtpm_localca's TPM arguments out of swtpm's GET_INFO JSON, as swtpm_setup passes them.
fn tpm_parameters(info: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    let spec = v.get("TPMSpecification")?;
    let attrs = v.get("TPMAttributes")?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Some(vec![
        "--tpm-spec-family".into(),
        text(spec.get("family")?)?,
        "--tpm-spec-level".into(),
        text(spec.get("level")?)?,
        "--tpm-spec-revision".into(),
        text(spec.get("revision")?)?,
        "--tpm-manufacturer".into(),
        text(attrs.get("manufacturer")?)?,
        "--tpm-model".into(),
        text(attrs.get("model")?)?,
        "--tpm-version".into(),
        text(attrs.get("version")?)?,
    ])
}

/// A named fault point of the reliability tests (nothing without the `failpoints` feature).
fn failpoint(name: &'static str, path: &Path) -> Result<(), ManufactureError> {
    ferrovirt_storage::failpoints::hit(name).map_err(io(name, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_parameters_as_swtpm_setup_passes_them() {
        let info = r#"{ "TPMSpecification":{ "family": "2.0", "level": 0, "revision": 164 }, "TPMAttributes":{ "manufacturer": "id:00001014", "version": "id:20191023", "model": "swtpm" } }"#;
        assert_eq!(
            tpm_parameters(info).unwrap().join(" "),
            "--tpm-spec-family 2.0 --tpm-spec-level 0 --tpm-spec-revision 164 \
             --tpm-manufacturer id:00001014 --tpm-model swtpm --tpm-version id:20191023"
        );
        assert!(tpm_parameters("{}").is_none());
        assert!(tpm_parameters("not json").is_none());
    }

    #[test]
    fn entry_ids_are_unique() {
        let a = entry_id();
        let b = entry_id();
        assert_ne!(a, b);
        assert!(VmId::new(POOL_VM_NAME, &a).is_ok());
    }
}
