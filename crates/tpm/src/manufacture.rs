//! Manufacturing a persistent TPM 2.0 as libvirt does: `swtpm_setup --tpm2 --createek
//! --create-ek-cert --create-platform-cert --lock-nvram --not-overwrite --vmid NAME:UUID`, with
//! certificates signed by the VM's own local CA (see [`crate::localca`]).
//!
//! Crash safety: swtpm_setup writes into a private staging dir inside `state_dir`; the finished
//! `tpm2-00.permall` is fsynced and published with an atomic no-clobber link, after the CA files
//! are fsynced. A crash leaves either no state (manufacture runs again) or the complete state,
//! never a half-written one. An existing state is never touched (`AlreadyManufactured`).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::check::{STATE_FILE, Sha256Digest};
use crate::fsutil;
use crate::key::StateKey;
use crate::localca::{CaStatus, LocalCa, LocalCaError, PlatformInfo};
use crate::offline::DEFAULT_SWTPM;
use crate::process::{self, WaitOutcome};

/// Where swtpm_setup is installed on Debian.
pub const DEFAULT_SWTPM_SETUP: &str = "/usr/bin/swtpm_setup";
/// Default bound for one swtpm_setup run (measured: ~0.7-1.2 s; RSA key generation on a loaded
/// 2-core host can take several seconds).
pub const DEFAULT_MANUFACTURE_TIMEOUT: Duration = Duration::from_secs(60);
/// coreutils' nice, for a low-priority swtpm_setup.
const NICE: &str = "/usr/bin/nice";
/// Lock file in the local CA dir serialising manufactures of one volume.
pub const MANUFACTURE_LOCK: &str = ".manufacture.lock";
/// Prefix of the staging dirs inside a state dir.
pub(crate) const STAGING_PREFIX: &str = ".manufacture-";
/// Staging dirs older than this are leftovers of a crash and are removed.
const STALE_STAGING_AGE: Duration = Duration::from_secs(600);
/// Log lines shown in an error.
pub(crate) const LOG_TAIL_LINES: usize = 15;

/// The VM identity swtpm_setup writes into the EK certificate's subject (`--vmid NAME:UUID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmId(String);

impl VmId {
    /// `name:uuid`; both parts must be non-empty printable ASCII without spaces or ':' in the uuid.
    pub fn new(name: &str, uuid: &str) -> Result<Self, ManufactureError> {
        let bad = |reason: &str| ManufactureError::InvalidRequest {
            field: "vm_id",
            reason: format!("{name:?}:{uuid:?}: {reason}"),
        };
        let printable = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic());
        if !printable(name) || !printable(uuid) {
            return Err(bad(
                "name and uuid must be non-empty printable ASCII without spaces",
            ));
        }
        if uuid.contains(':') || name.len() + uuid.len() > 253 {
            return Err(bad(
                "uuid must not contain ':' and the id must stay under 254 chars",
            ));
        }
        Ok(Self(format!("{name}:{uuid}")))
    }

    /// Parses `name:uuid` (split at the last ':').
    pub fn parse(s: &str) -> Result<Self, ManufactureError> {
        match s.rsplit_once(':') {
            Some((name, uuid)) => Self::new(name, uuid),
            None => Err(ManufactureError::InvalidRequest {
                field: "vm_id",
                reason: format!("{s:?} is not of the form name:uuid"),
            }),
        }
    }

    /// The `name:uuid` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RSA EK key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaKeySize {
    /// 2048 bits (what libvirt and KubeVirt get by default).
    #[default]
    Bits2048,
    /// 3072 bits.
    Bits3072,
}

impl RsaKeySize {
    fn arg(self) -> &'static str {
        match self {
            RsaKeySize::Bits2048 => "2048",
            RsaKeySize::Bits3072 => "3072",
        }
    }
}

/// Options of a manufacture. Build with [`ManufactureOptions::default`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManufactureOptions {
    /// swtpm_setup binary.
    pub swtpm_setup: PathBuf,
    /// swtpm binary swtpm_setup runs.
    pub swtpm: PathBuf,
    /// Bound for the swtpm_setup run.
    pub timeout: Duration,
    /// PCR banks to activate (comma-separated, e.g. `sha256`).
    pub pcr_banks: String,
    /// RSA EK size.
    pub rsa_key_size: RsaKeySize,
    /// Fields of the platform certificate.
    pub platform: PlatformInfo,
    /// Encrypt the state at rest with this key (swtpm must then always get the same key).
    pub state_key: Option<StateKey>,
    /// If set, keep copies of the EK certificates (DER, 0600) in this dir.
    pub ek_cert_dir: Option<PathBuf>,
    /// `--lock-nvram`: write-lock the certificate indices (always, except for a pooled TPM,
    /// whose certificates are replaced when a VM claims it; see [`crate::pool`]).
    pub lock_nvram: bool,
    /// Run swtpm_setup at the lowest CPU priority (`nice -n 19`: the pool's background fill).
    pub low_priority: bool,
}

impl Default for ManufactureOptions {
    fn default() -> Self {
        Self {
            swtpm_setup: PathBuf::from(DEFAULT_SWTPM_SETUP),
            swtpm: PathBuf::from(DEFAULT_SWTPM),
            timeout: DEFAULT_MANUFACTURE_TIMEOUT,
            pcr_banks: "sha256".to_owned(),
            rsa_key_size: RsaKeySize::default(),
            platform: PlatformInfo::default(),
            state_key: None,
            ek_cert_dir: None,
            lock_nvram: true,
            low_priority: false,
        }
    }
}

/// What to manufacture, where.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManufactureRequest {
    /// The TPM state dir (`<volume>/swtpm/<uuid>/tpm2`).
    pub state_dir: PathBuf,
    /// The local CA dir (`<volume>/swtpm-localca`).
    pub localca_dir: PathBuf,
    /// `--vmid`.
    pub vm_id: VmId,
    /// Base dir for private temp files (swtpm_setup's TMPDIR, log); not in the volume.
    pub tmp_dir: PathBuf,
    /// Options.
    pub options: ManufactureOptions,
}

impl ManufactureRequest {
    /// A request with default options.
    pub fn new(
        state_dir: impl Into<PathBuf>,
        localca_dir: impl Into<PathBuf>,
        vm_id: VmId,
        tmp_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            state_dir: state_dir.into(),
            localca_dir: localca_dir.into(),
            vm_id,
            tmp_dir: tmp_dir.into(),
            options: ManufactureOptions::default(),
        }
    }
}

/// Whether anything was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManufactureOutcome {
    /// A new TPM state was created.
    Manufactured,
    /// A state already existed and was left untouched.
    AlreadyManufactured,
}

/// An EK certificate file swtpm_setup wrote (`--write-ek-cert-files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificateFile {
    /// swtpm_setup's file name, e.g. `ek-rsa2048.crt`, `ek-secp384r1.crt`.
    pub name: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Where it was kept, if [`ManufactureOptions::ek_cert_dir`] was set.
    pub kept_at: Option<PathBuf>,
}

/// What a manufacture did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManufactureReport {
    /// Whether a state was created.
    pub outcome: ManufactureOutcome,
    /// The state file.
    pub state_file: PathBuf,
    /// Its size in bytes.
    pub state_size: u64,
    /// Its SHA-256 right after manufacture (record it as the first known-good digest).
    pub state_sha256: Sha256Digest,
    /// Whether this run created the local CA.
    pub ca_created: bool,
    /// The EK certificates (empty for `AlreadyManufactured`).
    pub ek_certificates: Vec<EkCertificateFile>,
    /// Whether the TPM came out of the pool of TPMs manufactured ahead of need.
    pub from_pool: bool,
    /// Wall time of the whole call.
    pub duration: Duration,
}

/// Errors of a manufacture.
#[derive(Debug, thiserror::Error)]
pub enum ManufactureError {
    /// A request field is unusable.
    #[error("invalid TPM manufacture request: {field}: {reason}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The local CA could not be prepared.
    #[error(transparent)]
    LocalCa(#[from] LocalCaError),
    /// A file system step failed.
    #[error("TPM manufacture: cannot {action} ({path}): {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// swtpm_setup could not be started.
    #[error("cannot run {program}: {source}; is the swtpm-tools package installed?")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// swtpm_setup failed.
    #[error("swtpm_setup failed ({status}) for {vm_id}; last lines of its log:\n{log_tail}")]
    SetupFailed {
        /// Exit status.
        status: String,
        /// The VM.
        vm_id: String,
        /// Last lines of its log and stderr.
        log_tail: String,
    },
    /// swtpm_setup did not finish in time (it was killed).
    #[error(
        "swtpm_setup for {vm_id} did not finish within {after:?} and was killed; last lines of its log:\n{log_tail}"
    )]
    Timeout {
        /// The bound.
        after: Duration,
        /// The VM.
        vm_id: String,
        /// Last lines of its log and stderr.
        log_tail: String,
    },
    /// swtpm_setup reported success but left no state file.
    #[error(
        "swtpm_setup exited 0 for {vm_id} but wrote no {STATE_FILE}; last lines of its log:\n{log_tail}"
    )]
    NoState {
        /// The VM.
        vm_id: String,
        /// Last lines of its log.
        log_tail: String,
    },
}

/// Manufactures the TPM state in `req.state_dir` unless one exists.
pub fn manufacture(req: &ManufactureRequest) -> Result<ManufactureReport, ManufactureError> {
    let started = Instant::now();
    validate(req)?;
    let state_file = req.state_dir.join(STATE_FILE);
    if let Some(report) = existing(&state_file, started)? {
        remove_stale_staging(&req.state_dir);
        return Ok(report);
    }
    // One manufacture per volume at a time; then look again, another one may just have finished.
    fsutil::create_private_dir(&req.localca_dir)
        .map_err(io("create the local CA dir", &req.localca_dir))?;
    let lock_path = req.localca_dir.join(MANUFACTURE_LOCK);
    let _lock = fsutil::lock_exclusive(&lock_path).map_err(io("lock", &lock_path))?;
    if let Some(report) = existing(&state_file, started)? {
        return Ok(report);
    }
    fsutil::create_private_dir(&req.state_dir)
        .map_err(io("create the state dir", &req.state_dir))?;
    remove_stale_staging(&req.state_dir);

    let opts = &req.options;
    let ca = LocalCa::prepare(&req.localca_dir, &opts.platform, &opts.pcr_banks)?;
    let ca_created = match ca.status() {
        CaStatus::Complete => false,
        CaStatus::Absent => true,
        CaStatus::Partial { missing } => {
            // No TPM state exists, so nothing was signed by this half-created CA yet.
            let aside = ca.quarantine_partial()?;
            tracing::warn!(?missing, aside = %aside.display(), "moved an incomplete local CA aside");
            true
        }
    };

    fsutil::create_private_dir(&req.tmp_dir).map_err(io("create the temp dir", &req.tmp_dir))?;
    let work = tempfile::Builder::new()
        .prefix("ferrovirt-swtpm-setup-")
        .tempdir_in(&req.tmp_dir)
        .map_err(io("create a private temp dir", &req.tmp_dir))?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&req.state_dir)
        .map_err(io("create a staging dir", &req.state_dir))?;
    let ek_dir = work.path().join("ek");
    fsutil::create_private_dir(&ek_dir).map_err(io("create the EK cert dir", &ek_dir))?;
    let log_file = work.path().join("swtpm_setup.log");
    let out_file = work.path().join("swtpm_setup.out");

    let mut cmd = if opts.low_priority {
        let mut nice = Command::new(NICE);
        nice.args(["-n", "19"]).arg(&opts.swtpm_setup);
        nice
    } else {
        Command::new(&opts.swtpm_setup)
    };
    cmd.args(setup_args(
        req,
        &ca,
        staging.path(),
        &log_file,
        &ek_dir,
        &opts.swtpm,
    ));
    process::private_env(&mut cmd, work.path());
    if let Some(key) = &opts.state_key {
        key.attach_hex_to(&mut cmd)
            .map_err(io("pass the state key to swtpm_setup", &opts.swtpm_setup))?;
    }
    let out = fs::File::create(&out_file).map_err(io("create the output file", &out_file))?;
    let err = out
        .try_clone()
        .map_err(io("create the output file", &out_file))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = cmd.spawn().map_err(|source| ManufactureError::Spawn {
        program: opts.swtpm_setup.clone(),
        source,
    })?;
    let outcome = process::wait_bounded(&mut child, opts.timeout)
        .map_err(io("wait for", &opts.swtpm_setup))?;
    let log_tail = || {
        process::last_lines(
            &(process::read_lossy(&log_file) + &process::read_lossy(&out_file)),
            LOG_TAIL_LINES,
        )
    };
    let vm_id = req.vm_id.as_str().to_owned();
    match outcome {
        WaitOutcome::TimedOut => {
            return Err(ManufactureError::Timeout {
                after: opts.timeout,
                vm_id,
                log_tail: log_tail(),
            });
        }
        WaitOutcome::Exited(status) if !status.success() => {
            return Err(ManufactureError::SetupFailed {
                status: status.to_string(),
                vm_id,
                log_tail: log_tail(),
            });
        }
        WaitOutcome::Exited(_) => {}
    }

    let staged = staging.path().join(STATE_FILE);
    let state = match fs::read(&staged) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        _ => {
            return Err(ManufactureError::NoState {
                vm_id,
                log_tail: log_tail(),
            });
        }
    };
    fsutil::tighten_and_sync_files(staging.path()).map_err(io("fsync", staging.path()))?;
    ca.seal()?;
    let ek_certificates = collect_ek_certs(&ek_dir, opts.ek_cert_dir.as_deref())?;
    if let Some(won) = publish_state(&staged, &state_file, started)? {
        return Ok(won);
    }
    Ok(ManufactureReport {
        outcome: ManufactureOutcome::Manufactured,
        state_size: state.len() as u64,
        state_sha256: Sha256Digest::of(&state),
        state_file,
        ca_created,
        ek_certificates,
        from_pool: false,
        duration: started.elapsed(),
    })
}

/// Publishes the staged state at `state_file`, never replacing one: `Some` (the report of the
/// state that stays) when another manufacture published first, `None` when ours is published.
pub(crate) fn publish_state(
    staged: &Path,
    state_file: &Path,
    started: Instant,
) -> Result<Option<ManufactureReport>, ManufactureError> {
    match fsutil::publish_no_clobber(staged, state_file) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another manufacture won the race; its state stays, ours is discarded.
            existing(state_file, started)?
                .ok_or(ManufactureError::Io {
                    action: "publish the state",
                    path: state_file.to_path_buf(),
                    source: e,
                })
                .map(Some)
        }
        Err(source) => Err(ManufactureError::Io {
            action: "publish the state",
            path: state_file.to_path_buf(),
            source,
        }),
    }
}

/// The report for an existing state, or `None` if there is none.
pub(crate) fn existing(
    state_file: &Path,
    started: Instant,
) -> Result<Option<ManufactureReport>, ManufactureError> {
    match fs::read(state_file) {
        Ok(state) => Ok(Some(ManufactureReport {
            outcome: ManufactureOutcome::AlreadyManufactured,
            state_file: state_file.to_path_buf(),
            state_size: state.len() as u64,
            state_sha256: Sha256Digest::of(&state),
            ca_created: false,
            ek_certificates: Vec::new(),
            from_pool: false,
            duration: started.elapsed(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ManufactureError::Io {
            action: "read the existing state",
            path: state_file.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn validate(req: &ManufactureRequest) -> Result<(), ManufactureError> {
    let invalid =
        |field: &'static str, reason: String| ManufactureError::InvalidRequest { field, reason };
    for (field, path) in [
        ("state_dir", &req.state_dir),
        ("localca_dir", &req.localca_dir),
        ("tmp_dir", &req.tmp_dir),
    ] {
        if !path.is_absolute() {
            return Err(invalid(
                field,
                format!("{} must be absolute", path.display()),
            ));
        }
    }
    let swtpm = req.options.swtpm.to_string_lossy();
    if swtpm.chars().any(char::is_whitespace) {
        return Err(invalid(
            "options.swtpm",
            format!("{swtpm} must not contain whitespace (swtpm_setup splits --tpm on spaces)"),
        ));
    }
    let banks = &req.options.pcr_banks;
    if banks.is_empty()
        || !banks
            .split(',')
            .all(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(invalid(
            "options.pcr_banks",
            format!("{banks:?} must be a comma-separated list like sha256 or sha1,sha256"),
        ));
    }
    Ok(())
}

/// swtpm_setup's arguments.
fn setup_args(
    req: &ManufactureRequest,
    ca: &LocalCa,
    staging: &Path,
    log_file: &Path,
    ek_dir: &Path,
    swtpm: &Path,
) -> Vec<OsString> {
    let opts = &req.options;
    let mut tpm = swtpm.as_os_str().to_owned();
    tpm.push(" socket");
    let mut args: Vec<OsString> = vec![
        "--tpm2".into(),
        "--tpm".into(),
        tpm,
        "--tpmstate".into(),
        staging.into(),
        "--config".into(),
        ca.setup_conf.clone().into(),
        "--vmid".into(),
        req.vm_id.as_str().into(),
        "--logfile".into(),
        log_file.into(),
        "--createek".into(),
        "--create-ek-cert".into(),
        "--create-platform-cert".into(),
    ];
    if opts.lock_nvram {
        args.push("--lock-nvram".into());
    }
    let rest: [OsString; 7] = [
        "--not-overwrite".into(),
        "--pcr-banks".into(),
        opts.pcr_banks.clone().into(),
        "--rsa-keysize".into(),
        opts.rsa_key_size.arg().into(),
        "--write-ek-cert-files".into(),
        ek_dir.into(),
    ];
    args.extend(rest);
    if opts.state_key.is_some() {
        args.extend(StateKey::swtpm_setup_args());
    }
    args
}

/// Reads the EK certificate files and optionally keeps copies in `keep_dir`.
fn collect_ek_certs(
    ek_dir: &Path,
    keep_dir: Option<&Path>,
) -> Result<Vec<EkCertificateFile>, ManufactureError> {
    let mut certs = Vec::new();
    let entries = fs::read_dir(ek_dir).map_err(io("list the EK certificates", ek_dir))?;
    for entry in entries {
        let path = entry
            .map_err(io("list the EK certificates", ek_dir))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(".crt") {
            continue;
        }
        let der = fs::read(&path).map_err(io("read an EK certificate", &path))?;
        certs.push((name, der));
    }
    keep_ek_certificates(certs, keep_dir)
}

/// The EK certificates (file name, DER) as a manufacture reports them, sorted by name, with
/// copies kept (0600, crash-safe) in `keep_dir` if set.
pub(crate) fn keep_ek_certificates(
    certificates: Vec<(String, Vec<u8>)>,
    keep_dir: Option<&Path>,
) -> Result<Vec<EkCertificateFile>, ManufactureError> {
    let mut out = Vec::new();
    for (name, der) in certificates {
        let kept_at = match keep_dir {
            Some(dir) => {
                fsutil::create_private_dir(dir).map_err(io("create the EK cert dir", dir))?;
                let target = dir.join(&name);
                fsutil::write_private_file_atomic(&target, &der)
                    .map_err(io("keep an EK certificate", &target))?;
                Some(target)
            }
            None => None,
        };
        out.push(EkCertificateFile { name, der, kept_at });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// An I/O error of a manufacture step.
pub(crate) fn io(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ManufactureError {
    let path = path.to_path_buf();
    move |source| ManufactureError::Io {
        action,
        path,
        source,
    }
}

/// Removes staging dirs a crashed manufacture left behind (best effort).
pub(crate) fn remove_stale_staging(state_dir: &Path) {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_staging = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(STAGING_PREFIX));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_STAGING_AGE);
        if is_staging && old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_id_validation() {
        assert_eq!(VmId::new("vm1", "1234-5").unwrap().as_str(), "vm1:1234-5");
        assert!(VmId::new("", "u").is_err());
        assert!(VmId::new("a b", "u").is_err());
        assert!(VmId::new("a", "u:v").is_err());
        assert!(VmId::new("a\n", "u").is_err());
        assert_eq!(VmId::parse("ns:vm:u1").unwrap().as_str(), "ns:vm:u1");
        assert!(VmId::parse("nouuid").is_err());
    }

    #[test]
    fn setup_command_line_snapshot() {
        let mut req = ManufactureRequest::new(
            "/vol/swtpm/u1/tpm2",
            "/vol/swtpm-localca",
            VmId::new("vm1", "u1").unwrap(),
            "/run/tmp",
        );
        req.options.state_key = Some(StateKey::new([7; 32]));
        let ca = LocalCa::at("/vol/swtpm-localca");
        let args = setup_args(
            &req,
            &ca,
            Path::new("/vol/swtpm/u1/tpm2/.manufacture-x"),
            Path::new("/run/tmp/w/swtpm_setup.log"),
            Path::new("/run/tmp/w/ek"),
            Path::new("/usr/bin/swtpm"),
        );
        let line = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(line, @r"
        --tpm2
        --tpm
        /usr/bin/swtpm socket
        --tpmstate
        /vol/swtpm/u1/tpm2/.manufacture-x
        --config
        /vol/swtpm-localca/swtpm_setup.conf
        --vmid
        vm1:u1
        --logfile
        /run/tmp/w/swtpm_setup.log
        --createek
        --create-ek-cert
        --create-platform-cert
        --lock-nvram
        --not-overwrite
        --pcr-banks
        sha256
        --rsa-keysize
        2048
        --write-ek-cert-files
        /run/tmp/w/ek
        --keyfile-fd
        3
        --cipher
        aes-256-cbc
        ");
    }

    #[test]
    fn rejects_relative_paths_and_bad_banks() {
        let id = VmId::new("vm", "u").unwrap();
        let req = ManufactureRequest::new("rel", "/ca", id.clone(), "/tmp");
        assert!(matches!(
            validate(&req),
            Err(ManufactureError::InvalidRequest {
                field: "state_dir",
                ..
            })
        ));
        let mut req = ManufactureRequest::new("/s", "/ca", id, "/tmp");
        req.options.pcr_banks = "sha256;rm".into();
        assert!(matches!(
            validate(&req),
            Err(ManufactureError::InvalidRequest {
                field: "options.pcr_banks",
                ..
            })
        ));
    }
}
