//! The per-volume local CA that signs a VM's EK and platform certificates, as libvirt sets it up
//! for swtpm (swtpm_setup.conf -> swtpm_localca with swtpm-localca.conf/.options), but living in
//! the VM's backend-storage volume (`swtpm-localca/`) instead of the host-wide
//! /var/lib/swtpm-localca, so that the same CA keeps signing after the volume moves.
//!
//! What lives in the volume and is never regenerated: the CA material swtpm_localca creates on
//! first use (`swtpm-localca-rootca-privkey.pem`, `swtpm-localca-rootca-cert.pem`, `signkey.pem`,
//! `issuercert.pem`) and the `certserial` counter. What is rewritten at every manufacture: the
//! three configuration files, since they carry absolute paths that change when the volume is
//! mounted elsewhere.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// File name of the swtpm_setup configuration written into the local CA dir.
pub const SETUP_CONF: &str = "swtpm_setup.conf";
/// File name of the swtpm_localca configuration.
pub const LOCALCA_CONF: &str = "swtpm-localca.conf";
/// File name of the swtpm_localca options (passed on to swtpm_cert).
pub const LOCALCA_OPTIONS: &str = "swtpm-localca.options";
/// The intermediate CA's signing key (created by swtpm_localca).
pub const SIGNING_KEY: &str = "signkey.pem";
/// The intermediate CA's certificate (created by swtpm_localca).
pub const ISSUER_CERT: &str = "issuercert.pem";
/// The serial-number counter of issued certificates.
pub const CERT_SERIAL: &str = "certserial";
/// The root CA's key (created by swtpm_localca next to the signing key).
pub const ROOT_CA_KEY: &str = "swtpm-localca-rootca-privkey.pem";
/// The root CA's certificate.
pub const ROOT_CA_CERT: &str = "swtpm-localca-rootca-cert.pem";

/// The CA files that must all exist (non-empty) for the CA to be usable.
pub const CA_MATERIAL: [&str; 4] = [ROOT_CA_KEY, ROOT_CA_CERT, SIGNING_KEY, ISSUER_CERT];

/// Where swtpm_localca is installed on Debian.
pub const DEFAULT_SWTPM_LOCALCA: &str = "/usr/bin/swtpm_localca";

/// Errors of the local CA.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    /// A path cannot be written into swtpm's `key = value` configuration files.
    #[error(
        "local CA path {path:?} cannot be used in swtpm configuration files (it must be absolute \
         valid UTF-8 without newlines, '=' or leading/trailing spaces); mount the volume elsewhere"
    )]
    UnusablePath {
        /// The offending path.
        path: PathBuf,
    },
    /// A platform option value contains characters swtpm_localca cannot take.
    #[error("local CA option {name} = {value:?} must be non-empty printable text without spaces")]
    BadOption {
        /// Option name.
        name: &'static str,
        /// Rejected value.
        value: String,
    },
    /// A file system operation failed.
    #[error("local CA dir {dir}: cannot {action}: {source}")]
    Io {
        /// The local CA dir.
        dir: PathBuf,
        /// What was being done.
        action: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Platform-certificate fields passed to swtpm_cert via swtpm-localca.options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformInfo {
    /// `--platform-manufacturer`.
    pub manufacturer: String,
    /// `--platform-version`.
    pub version: String,
    /// `--platform-model`.
    pub model: String,
}

impl Default for PlatformInfo {
    fn default() -> Self {
        Self {
            manufacturer: "ferrovirt".to_owned(),
            version: "2.1".to_owned(),
            model: "QEMU".to_owned(),
        }
    }
}

/// What the CA dir holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaStatus {
    /// No CA material yet: swtpm_localca creates it on the first manufacture.
    Absent,
    /// All CA material present.
    Complete,
    /// Some CA material exists, some is missing or empty (an interrupted creation).
    Partial {
        /// The missing or empty files.
        missing: Vec<&'static str>,
    },
}

/// A local CA dir with its configuration files written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCa {
    /// The CA dir (`<volume>/swtpm-localca`).
    pub dir: PathBuf,
    /// The swtpm_setup configuration (`--config`).
    pub setup_conf: PathBuf,
    /// The swtpm_localca configuration.
    pub localca_conf: PathBuf,
    /// The swtpm_localca options file.
    pub localca_options: PathBuf,
}

impl LocalCa {
    /// Paths of the CA in `dir` (nothing is written).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            setup_conf: dir.join(SETUP_CONF),
            localca_conf: dir.join(LOCALCA_CONF),
            localca_options: dir.join(LOCALCA_OPTIONS),
            dir,
        }
    }

    /// Creates `dir` (0700) and (re)writes the three configuration files (0600, crash-safe),
    /// all pointing into `dir`. CA material already in `dir` is kept as is.
    pub fn prepare(
        dir: impl Into<PathBuf>,
        platform: &PlatformInfo,
        pcr_banks: &str,
    ) -> Result<Self, LocalCaError> {
        let ca = Self::at(dir);
        let dir_str = config_path(&ca.dir)?;
        fsutil::create_private_dir(&ca.dir).map_err(|e| ca.io("create the directory", e))?;
        let files = [
            (&ca.localca_conf, localca_conf_text(dir_str)),
            (&ca.localca_options, localca_options_text(platform)?),
            (
                &ca.setup_conf,
                setup_conf_text(
                    DEFAULT_SWTPM_LOCALCA,
                    config_path(&ca.localca_conf)?,
                    config_path(&ca.localca_options)?,
                    pcr_banks,
                ),
            ),
        ];
        for (path, text) in files {
            fsutil::write_private_file_atomic(path, text.as_bytes())
                .map_err(|e| ca.io(&format!("write {}", path.display()), e))?;
        }
        Ok(ca)
    }

    /// Which CA material the dir holds.
    pub fn status(&self) -> CaStatus {
        let missing: Vec<&'static str> = CA_MATERIAL
            .into_iter()
            .filter(|name| {
                fs::metadata(self.dir.join(name))
                    .map(|m| m.len() == 0)
                    .unwrap_or(true)
            })
            .collect();
        if missing.is_empty() {
            CaStatus::Complete
        } else if missing.len() == CA_MATERIAL.len() {
            CaStatus::Absent
        } else {
            CaStatus::Partial { missing }
        }
    }

    /// Moves the CA material of an interrupted creation into `.partial-<unix-time>/` (kept for
    /// inspection, never deleted) so swtpm_localca can create a fresh CA. Only call this when no
    /// TPM state signed by this CA exists.
    pub fn quarantine_partial(&self) -> Result<PathBuf, LocalCaError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let target = self.dir.join(format!(".partial-{stamp}"));
        fsutil::create_private_dir(&target)
            .map_err(|e| self.io("create the quarantine directory", e))?;
        for name in CA_MATERIAL.into_iter().chain([CERT_SERIAL]) {
            let from = self.dir.join(name);
            match fs::rename(&from, target.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&format!("move {name} aside"), e)),
            }
        }
        fsutil::sync_dir(&self.dir).map_err(|e| self.io("fsync", e))?;
        Ok(target)
    }

    /// Sets 0600 on everything swtpm_localca wrote (it creates files 0640/0644/0755) and fsyncs
    /// them, so the CA is durable before the TPM state signed by it is published.
    pub fn seal(&self) -> Result<(), LocalCaError> {
        fsutil::tighten_and_sync_files(&self.dir).map_err(|e| self.io("tighten permissions", e))
    }

    fn io(&self, action: &str, source: std::io::Error) -> LocalCaError {
        LocalCaError::Io {
            dir: self.dir.clone(),
            action: action.to_owned(),
            source,
        }
    }
}

/// The swtpm-localca.conf text for a CA in `dir`.
pub fn localca_conf_text(dir: &str) -> String {
    format!(
        "# Written by ferrovirt; rewritten at every TPM manufacture.\n\
         statedir = {dir}\n\
         signingkey = {dir}/{SIGNING_KEY}\n\
         issuercert = {dir}/{ISSUER_CERT}\n\
         certserial = {dir}/{CERT_SERIAL}\n"
    )
}

/// The swtpm-localca.options text.
pub fn localca_options_text(platform: &PlatformInfo) -> Result<String, LocalCaError> {
    for (name, value) in [
        ("platform-manufacturer", &platform.manufacturer),
        ("platform-version", &platform.version),
        ("platform-model", &platform.model),
    ] {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(LocalCaError::BadOption {
                name,
                value: value.clone(),
            });
        }
    }
    Ok(format!(
        "--platform-manufacturer {}\n--platform-version {}\n--platform-model {}\n",
        platform.manufacturer, platform.version, platform.model
    ))
}

/// The swtpm_setup.conf text.
pub fn setup_conf_text(tool: &str, localca_conf: &str, options: &str, pcr_banks: &str) -> String {
    format!(
        "# Written by ferrovirt; rewritten at every TPM manufacture.\n\
         create_certs_tool = {tool}\n\
         create_certs_tool_config = {localca_conf}\n\
         create_certs_tool_options = {options}\n\
         active_pcr_banks = {pcr_banks}\n"
    )
}

/// A path as it may appear in a `key = value` line of swtpm's configuration files.
fn config_path(path: &Path) -> Result<&str, LocalCaError> {
    let unusable = || LocalCaError::UnusablePath {
        path: path.to_path_buf(),
    };
    let s = path.to_str().ok_or_else(unusable)?;
    let ok = path.is_absolute()
        && !s.contains(['\n', '\r', '=', '#'])
        && s.trim() == s
        && !s.chars().any(char::is_control);
    if ok { Ok(s) } else { Err(unusable()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn config_texts_snapshot() {
        insta::assert_snapshot!(localca_conf_text("/vol/swtpm-localca"), @r"
        # Written by ferrovirt; rewritten at every TPM manufacture.
        statedir = /vol/swtpm-localca
        signingkey = /vol/swtpm-localca/signkey.pem
        issuercert = /vol/swtpm-localca/issuercert.pem
        certserial = /vol/swtpm-localca/certserial
        ");
        insta::assert_snapshot!(localca_options_text(&PlatformInfo::default()).unwrap(), @r"
        --platform-manufacturer ferrovirt
        --platform-version 2.1
        --platform-model QEMU
        ");
        insta::assert_snapshot!(setup_conf_text(
            DEFAULT_SWTPM_LOCALCA,
            "/vol/swtpm-localca/swtpm-localca.conf",
            "/vol/swtpm-localca/swtpm-localca.options",
            "sha256"
        ), @r"
        # Written by ferrovirt; rewritten at every TPM manufacture.
        create_certs_tool = /usr/bin/swtpm_localca
        create_certs_tool_config = /vol/swtpm-localca/swtpm-localca.conf
        create_certs_tool_options = /vol/swtpm-localca/swtpm-localca.options
        active_pcr_banks = sha256
        ");
    }

    #[test]
    fn prepare_writes_private_files_into_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("swtpm-localca");
        let ca = LocalCa::prepare(&dir, &PlatformInfo::default(), "sha256").unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for f in [&ca.setup_conf, &ca.localca_conf, &ca.localca_options] {
            assert_eq!(fs::metadata(f).unwrap().mode() & 0o777, 0o600, "{f:?}");
        }
        let conf = fs::read_to_string(&ca.localca_conf).unwrap();
        assert!(conf.contains(&format!("signingkey = {}/signkey.pem", dir.display())));
        assert!(!conf.contains("/var/lib/swtpm-localca"));
        assert_eq!(ca.status(), CaStatus::Absent);
    }

    #[test]
    fn rejects_relative_and_weird_paths() {
        for bad in ["rel/dir", "/a=b", "/a\nb", "/x#y"] {
            let err = LocalCa::prepare(bad, &PlatformInfo::default(), "sha256").unwrap_err();
            assert!(matches!(err, LocalCaError::UnusablePath { .. }), "{bad}");
        }
    }

    #[test]
    fn rejects_options_with_spaces() {
        let p = PlatformInfo {
            model: "Q EMU".into(),
            ..Default::default()
        };
        assert!(matches!(
            localca_options_text(&p),
            Err(LocalCaError::BadOption { .. })
        ));
    }

    #[test]
    fn partial_ca_is_detected_and_quarantined() {
        let tmp = tempfile::tempdir().unwrap();
        let ca =
            LocalCa::prepare(tmp.path().join("ca"), &PlatformInfo::default(), "sha256").unwrap();
        fs::write(ca.dir.join(ROOT_CA_KEY), b"key").unwrap();
        fs::write(ca.dir.join(SIGNING_KEY), b"").unwrap();
        assert!(matches!(ca.status(), CaStatus::Partial { .. }));
        let aside = ca.quarantine_partial().unwrap();
        assert_eq!(ca.status(), CaStatus::Absent);
        assert_eq!(fs::read(aside.join(ROOT_CA_KEY)).unwrap(), b"key");
    }
}
