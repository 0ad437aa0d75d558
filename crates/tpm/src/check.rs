//! Checking, offline and without modifying it, that swtpm can read a TPM state: the state is
//! read once into memory (size, SHA-256), written to a private temp copy, and an offline swtpm
//! loads the copy (CMD_INIT), starts the TPM and looks up the EK and its certificates.
//!
//! Limits, measured on swtpm 0.7.1: an unencrypted state has no checksum; swtpm/libtpms detect
//! damage to the headers, magic numbers, versions and structure sizes, but a flipped byte inside
//! key material or NV data can go unnoticed. The returned `sha256` lets a caller compare with the
//! digest it recorded when the state was last known good; an encrypted state (see
//! [`crate::StateKey`]) is HMAC-protected and every change is detected.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::fsutil;
use crate::key::StateKey;
use crate::offline::{DEFAULT_SWTPM, OfflineError, OfflineSwtpm};
use crate::tpm2::{
    HANDLE_EK_ECC, HANDLE_EK_RSA, NV_INDEX_EK_CERT_ECC, NV_INDEX_EK_CERT_RSA,
    NV_INDEX_PLATFORM_CERT, NvPublic, TpmChannel, TpmCommandError,
};

/// The file holding a TPM 2.0's permanent state in swtpm's dir backend.
pub const STATE_FILE: &str = "tpm2-00.permall";
/// The file holding a TPM 2.0's volatile state (only after a suspend / migration).
pub const VOLATILE_STATE_FILE: &str = "tpm2-00.volatilestate";
/// Default bound for a whole check.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// Which EK an EK certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkKind {
    /// RSA 2048 EK (NV 0x01C00002, handle 0x81010001).
    Rsa,
    /// ECC EK (NV 0x01C00016, handle 0x81010016).
    Ecc,
}

/// An EK certificate read from the TPM's NV memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificate {
    /// The EK it certifies.
    pub kind: EkKind,
    /// The NV index it was read from.
    pub nv_index: u32,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// Options of a check. Build with [`CheckOptions::default`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckOptions {
    /// The swtpm binary.
    pub swtpm: PathBuf,
    /// Bound for the whole check.
    pub timeout: Duration,
    /// The key of an encrypted state.
    pub state_key: Option<StateKey>,
    /// Base dir for the private temp copy (default: the system temp dir).
    pub tmp_dir: Option<PathBuf>,
    /// Also read the EK certificates out of NV memory (into [`StateInfo::ek_certificates`]).
    pub read_ek_certificates: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            swtpm: PathBuf::from(DEFAULT_SWTPM),
            timeout: DEFAULT_CHECK_TIMEOUT,
            state_key: None,
            tmp_dir: None,
            read_ek_certificates: false,
        }
    }
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateInfo {
    /// The checked state file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 (of exactly the bytes that were checked).
    pub sha256: Sha256Digest,
    /// The RSA EK exists as persistent object 0x81010001.
    pub has_ek: bool,
    /// An EK certificate exists in NV 0x01C00002 (RSA).
    pub has_ek_cert: bool,
    /// A platform certificate exists in NV 0x01C08000.
    pub has_platform_cert: bool,
    /// The EK certificates, if [`CheckOptions::read_ek_certificates`] was set.
    pub ek_certificates: Vec<EkCertificate>,
    /// The public areas of the certificate indices that exist (RSA EK, ECC EK, platform), if
    /// [`CheckOptions::read_ek_certificates`] was set: attributes show whether they are locked.
    pub certificate_indices: Vec<(u32, NvPublic)>,
    /// How long the check took.
    pub duration: Duration,
}

/// Why a state is not usable (or could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// There is no state: never treat this as a fresh TPM silently.
    #[error(
        "TPM state {path} does not exist; if this VM's TPM was never started, manufacture it; \
         otherwise restore the state from the last good generation"
    )]
    Missing {
        /// The expected state file.
        path: PathBuf,
    },
    /// swtpm cannot use the state.
    #[error("TPM state {path} is corrupt: {reason}; swtpm said:\n{swtpm_log}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What failed.
        reason: String,
        /// swtpm's last log lines.
        swtpm_log: String,
    },
    /// An encrypted state could not be decrypted/verified with the given key.
    #[error(
        "TPM state {path} cannot be decrypted with the VM's data key: wrong key or damaged \
         state; swtpm said:\n{swtpm_log}"
    )]
    Undecryptable {
        /// The state file.
        path: PathBuf,
        /// swtpm's last log lines.
        swtpm_log: String,
    },
    /// The state file exists but could not be read.
    #[error("TPM state {path}: cannot read: {source}")]
    Unreadable {
        /// The state file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The check itself could not run (temp dir, swtpm failed to start, timeout).
    #[error("cannot check TPM state {path}: {detail}")]
    CheckFailed {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Checks the state in `state_dir` with default options.
pub fn check_state(state_dir: &Path) -> Result<StateInfo, StateError> {
    check_state_with(state_dir, &CheckOptions::default())
}

/// Reads the EK certificates of a stopped TPM, offline (a check with
/// [`CheckOptions::read_ek_certificates`] set).
pub fn read_ek_certificates(
    state_dir: &Path,
    state_key: Option<StateKey>,
) -> Result<Vec<EkCertificate>, StateError> {
    let opts = CheckOptions {
        state_key,
        read_ek_certificates: true,
        ..CheckOptions::default()
    };
    check_state_with(state_dir, &opts).map(|info| info.ek_certificates)
}

/// Checks the state in `state_dir`; the original files are only read. Meant for a stopped VM;
/// on a running one it checks the last state swtpm stored.
pub fn check_state_with(state_dir: &Path, opts: &CheckOptions) -> Result<StateInfo, StateError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let path = state_dir.join(STATE_FILE);
    let failed = |detail: String| StateError::CheckFailed {
        path: path.clone(),
        detail,
    };
    let state = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::Missing { path });
        }
        Err(source) => return Err(StateError::Unreadable { path, source }),
    };
    let volatile = match fs::read(state_dir.join(VOLATILE_STATE_FILE)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(StateError::Unreadable {
                path: state_dir.join(VOLATILE_STATE_FILE),
                source,
            });
        }
    };
    let size = state.len() as u64;
    let sha256 = Sha256Digest::of(&state);
    let corrupt = |reason: &str, swtpm_log: String| StateError::Corrupt {
        path: path.clone(),
        reason: reason.to_owned(),
        swtpm_log,
    };
    if state.is_empty() {
        return Err(corrupt("the file is empty", String::new()));
    }

    let tmp_base = opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    if tmp_base.to_string_lossy().contains(',') {
        return Err(failed(format!(
            "temp dir {} contains ',' which swtpm cannot take in options",
            tmp_base.display()
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("ferrovirt-tpm-check-")
        .tempdir_in(&tmp_base)
        .map_err(|e| failed(format!("create a temp dir in {}: {e}", tmp_base.display())))?;
    let copy_dir = OfflineSwtpm::state_dir(work.path());
    fsutil::create_private_dir(&copy_dir).map_err(|e| failed(format!("create temp copy: {e}")))?;
    // A scratch copy, deleted after the check: no fsync needed (it is on the stop path).
    fsutil::write_private_scratch_file(&copy_dir.join(STATE_FILE), &state)
        .map_err(|e| failed(format!("write temp copy: {e}")))?;
    if let Some(volatile) = &volatile {
        fsutil::write_private_scratch_file(&copy_dir.join(VOLATILE_STATE_FILE), volatile)
            .map_err(|e| failed(format!("write temp copy: {e}")))?;
    }

    let mut swtpm =
        OfflineSwtpm::start(&opts.swtpm, work.path(), opts.state_key.as_ref(), deadline)
            .map_err(|e: OfflineError| failed(e.to_string()))?;
    let init = match swtpm.init() {
        Ok(init) => init,
        Err(e) => {
            // swtpm dying while it loads the state is a verdict on the state, not on the check.
            if let Some(status) = swtpm.exited_within(Duration::from_millis(500)) {
                let log = crate::process::last_lines(&swtpm.log(), 12);
                return Err(corrupt(
                    &format!("swtpm exited ({status}) while loading it"),
                    log,
                ));
            }
            return Err(failed(e.to_string()));
        }
    };
    if !init.is_success() {
        let log = crate::process::last_lines(&swtpm.log(), 12);
        swtpm.shutdown();
        return Err(classify_init_failure(path, opts, init, log));
    }

    let probe = probe_tpm(&swtpm, opts.read_ek_certificates);
    let log = swtpm.log();
    swtpm.shutdown();
    let probe = match probe {
        Ok(probe) => probe,
        Err(ProbeError::Offline(e)) => return Err(failed(e.to_string())),
        Err(ProbeError::Command(TpmCommandError::Io { command, source })) => {
            return Err(failed(format!("{command}: {source}")));
        }
        Err(ProbeError::Command(e)) => {
            return Err(corrupt(
                &format!("the TPM does not work after loading it: {e}"),
                crate::process::last_lines(&log, 12),
            ));
        }
        Err(ProbeError::BadCertificate(index)) => {
            return Err(corrupt(
                &format!("the certificate in NV index 0x{index:08x} is not well-formed DER"),
                String::new(),
            ));
        }
    };
    Ok(StateInfo {
        path,
        size,
        sha256,
        has_ek: probe.has_ek,
        has_ek_cert: probe.has_ek_cert,
        has_platform_cert: probe.has_platform_cert,
        certificate_indices: probe.certificate_indices,
        ek_certificates: probe.ek_certificates,
        duration: started.elapsed(),
    })
}

fn classify_init_failure(
    path: PathBuf,
    opts: &CheckOptions,
    init: crate::ctrl::TpmResult,
    swtpm_log: String,
) -> StateError {
    match &opts.state_key {
        Some(_)
            if swtpm_log.contains("HMAC")
                || swtpm_log.contains("plain data")
                || swtpm_log.contains("GetDecryptedData") =>
        {
            StateError::Undecryptable { path, swtpm_log }
        }
        _ => {
            let hint = if swtpm_log.contains("plain data") {
                " (if this state is encrypted, its StateKey is needed)"
            } else {
                ""
            };
            StateError::Corrupt {
                path,
                reason: format!("swtpm refused it at CMD_INIT with TPM result {init}{hint}"),
                swtpm_log,
            }
        }
    }
}

struct Probe {
    has_ek: bool,
    has_ek_cert: bool,
    has_platform_cert: bool,
    ek_certificates: Vec<EkCertificate>,
    certificate_indices: Vec<(u32, NvPublic)>,
}

enum ProbeError {
    Offline(OfflineError),
    Command(TpmCommandError),
    BadCertificate(u32),
}

impl From<TpmCommandError> for ProbeError {
    fn from(e: TpmCommandError) -> Self {
        ProbeError::Command(e)
    }
}

/// Starts the TPM and looks for the EK, its certificates and the platform certificate.
fn probe_tpm(swtpm: &OfflineSwtpm, read_certs: bool) -> Result<Probe, ProbeError> {
    let mut tpm: TpmChannel = swtpm.data_channel().map_err(ProbeError::Offline)?;
    tpm.startup_clear()?;
    let has_ek = tpm.object_exists(HANDLE_EK_RSA)?;
    let _has_ecc_ek = tpm.object_exists(HANDLE_EK_ECC)?;
    let platform = tpm.nv_read_public(NV_INDEX_PLATFORM_CERT)?;
    let has_platform_cert = platform.is_some();
    let mut certificate_indices = Vec::new();
    let mut has_ek_cert = false;
    let mut ek_certificates = Vec::new();
    for (kind, index) in [
        (EkKind::Rsa, NV_INDEX_EK_CERT_RSA),
        (EkKind::Ecc, NV_INDEX_EK_CERT_ECC),
    ] {
        let Some(public) = tpm.nv_read_public(index)? else {
            continue;
        };
        if kind == EkKind::Rsa {
            has_ek_cert = true;
        }
        if read_certs {
            certificate_indices.push((index, public));
            let der = tpm.nv_read_all(index, public.data_size)?;
            if !is_der_sequence(&der) {
                return Err(ProbeError::BadCertificate(index));
            }
            ek_certificates.push(EkCertificate {
                kind,
                nv_index: index,
                der,
            });
        }
    }
    if let (true, Some(public)) = (read_certs, platform) {
        certificate_indices.push((NV_INDEX_PLATFORM_CERT, public));
    }
    Ok(Probe {
        has_ek,
        has_ek_cert,
        has_platform_cert,
        ek_certificates,
        certificate_indices,
    })
}

/// Whether `der` is exactly one DER SEQUENCE (a certificate's outer shape) with nothing after.
pub fn is_der_sequence(der: &[u8]) -> bool {
    let (Some(&0x30), Some(&len0)) = (der.first(), der.get(1)) else {
        return false;
    };
    let (header, len) = if len0 < 0x80 {
        (2usize, usize::from(len0))
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || der.len() < 2 + n {
            return false;
        }
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    header.checked_add(len) == Some(der.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_sequence_shapes() {
        assert!(is_der_sequence(&[0x30, 0x00]));
        assert!(is_der_sequence(&[0x30, 0x02, 1, 2]));
        assert!(!is_der_sequence(&[0x30, 0x03, 1, 2]));
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0u8, 256));
        assert!(is_der_sequence(&long));
        long.push(0);
        assert!(!is_der_sequence(&long));
        assert!(!is_der_sequence(&[]));
        assert!(!is_der_sequence(&[0x31, 0x00]));
    }

    #[test]
    fn digest_hex() {
        assert_eq!(
            Sha256Digest::of(b"").to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest::proptest! {
        #[test]
        fn der_check_never_panics(buf in proptest::collection::vec(0u8..=255, 0..64)) {
            let _ = is_der_sequence(&buf);
        }
    }
}
