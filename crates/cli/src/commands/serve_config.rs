//! The configuration file of `ferrovirt serve` (YAML): the settings its flags take, for the
//! installed service (`/etc/ferrovirt/config.yaml`, read when present, or `--config FILE`). A
//! flag given on the command line overrides the file's key; a key the file leaves out keeps the
//! flag's default. Unknown keys are errors (a typo must not silently become a default), and
//! paths must be absolute (the service's working directory is `/`).
//!
//! ```yaml
//! dataDir: /var/lib/ferrovirt
//! runtimeDir: /run/ferrovirt
//! adminKubeconfig: /etc/ferrovirt/admin.kubeconfig
//! listen: 127.0.0.1:8080
//! tlsSANs: [vmhost.example.org]
//! tokenAuthFile: /etc/ferrovirt/tokens.csv
//! hostDiskRoots: [/srv/images]
//! stateRetention: 7d
//! maxWatchesPerClient: 64
//! tpmPoolSize: 2
//! maxConcurrentStarts: 32
//! insecureHTTP: false
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/ferrovirt/config.yaml";

/// The keys of the configuration file (all optional).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeFile {
    pub data_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub admin_kubeconfig: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    #[serde(rename = "tlsSANs")]
    pub tls_sans: Option<Vec<String>>,
    #[serde(rename = "insecureHTTP")]
    pub insecure_http: Option<bool>,
    pub token_auth_file: Option<PathBuf>,
    pub host_disk_roots: Option<Vec<PathBuf>>,
    /// Parsed with the flag's syntax (`7d`, `36h`, `90m`, `1d12h`): see [`ServeFile::retention`].
    pub state_retention: Option<String>,
    pub max_watches_per_client: Option<usize>,
    pub tpm_pool_size: Option<usize>,
    pub max_concurrent_starts: Option<usize>,
    /// `none`, `local` or `exec:/PATH` (the flag's syntax).
    pub state_encryption: Option<String>,
}

/// Why the configuration file cannot be used: the file, and what is wrong (with the key, and
/// the line and column where the YAML parser knows them).
#[derive(Debug, thiserror::Error)]
#[error("the configuration file {path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl ServeFile {
    /// The file named by `--config`, which must exist; without it `/etc/ferrovirt/config.yaml`
    /// when it exists; else no file (every setting from the flags and their defaults).
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.exists() {
                    return Ok((Self::default(), None));
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: path.clone(),
            message: format!("cannot be read: {e}"),
        })?;
        let file = Self::parse(&text).map_err(|message| ConfigError {
            path: path.clone(),
            message,
        })?;
        Ok((file, Some(path)))
    }

    /// Parses the YAML text (an empty file, or one with only comments, sets nothing).
    pub fn parse(text: &str) -> Result<Self, String> {
        let meaningful = text
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with('#') && l != "---");
        if !meaningful {
            return Ok(Self::default());
        }
        // The parser's message names the line, the column and, for an unknown key, the known ones.
        let file: Self = serde_saphyr::from_str(text)
            .map_err(|e| e.to_string().trim_start_matches("error: ").to_owned())?;
        file.check_paths()?;
        file.retention()?;
        Ok(file)
    }

    /// `stateRetention`, parsed.
    pub fn retention(&self) -> Result<Option<Duration>, String> {
        self.state_retention
            .as_deref()
            .map(|text| {
                ferrovirt_storage::vm_store::parse_duration(text)
                    .map_err(|e| format!("stateRetention: {e}"))
            })
            .transpose()
    }

    fn check_paths(&self) -> Result<(), String> {
        let single = [
            ("dataDir", &self.data_dir),
            ("runtimeDir", &self.runtime_dir),
            ("adminKubeconfig", &self.admin_kubeconfig),
            ("tokenAuthFile", &self.token_auth_file),
        ];
        for (key, path) in single {
            if let Some(path) = path {
                absolute(key, path)?;
            }
        }
        for (i, path) in self.host_disk_roots.iter().flatten().enumerate() {
            absolute(&format!("hostDiskRoots[{i}]"), path)?;
        }
        Ok(())
    }
}

fn absolute(key: &str, path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{key}: {:?} is not an absolute path; write it from / (e.g. /var/lib/ferrovirt)",
            path.display().to_string()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_read() {
        let file = ServeFile::parse(
            "# the service's settings
dataDir: /var/lib/ferrovirt
runtimeDir: /run/ferrovirt
adminKubeconfig: /etc/ferrovirt/admin.kubeconfig
listen: 0.0.0.0:8443
tlsSANs: [vmhost.example.org, 192.0.2.7]
insecureHTTP: false
tokenAuthFile: /etc/ferrovirt/tokens.csv
hostDiskRoots:
  - /srv/images
stateRetention: 1d12h
maxWatchesPerClient: 16
tpmPoolSize: 4
maxConcurrentStarts: 8
",
        )
        .unwrap();
        assert_eq!(
            file.data_dir.as_deref(),
            Some(Path::new("/var/lib/ferrovirt"))
        );
        assert_eq!(
            file.runtime_dir.as_deref(),
            Some(Path::new("/run/ferrovirt"))
        );
        assert_eq!(
            file.admin_kubeconfig.as_deref(),
            Some(Path::new("/etc/ferrovirt/admin.kubeconfig"))
        );
        assert_eq!(file.listen, Some("0.0.0.0:8443".parse().unwrap()));
        assert_eq!(
            file.tls_sans,
            Some(vec![
                "vmhost.example.org".to_owned(),
                "192.0.2.7".to_owned()
            ])
        );
        assert_eq!(file.insecure_http, Some(false));
        assert_eq!(
            file.token_auth_file.as_deref(),
            Some(Path::new("/etc/ferrovirt/tokens.csv"))
        );
        assert_eq!(
            file.host_disk_roots,
            Some(vec![PathBuf::from("/srv/images")])
        );
        assert_eq!(
            file.retention().unwrap(),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(file.max_watches_per_client, Some(16));
        assert_eq!(file.tpm_pool_size, Some(4));
        assert_eq!(file.max_concurrent_starts, Some(8));
    }

    #[test]
    fn an_empty_or_comment_only_file_sets_nothing() {
        assert_eq!(ServeFile::parse("").unwrap(), ServeFile::default());
        assert_eq!(
            ServeFile::parse("# nothing yet\n---\n").unwrap(),
            ServeFile::default()
        );
    }

    #[test]
    fn mistakes_name_the_key_and_how_to_fix_them() {
        let err = ServeFile::parse("dataDir: /var/lib/ferrovirt\nlisten_address: 1.2.3.4:1\n")
            .unwrap_err();
        assert!(
            err.contains("listen_address")
                && err.contains("line 2 column 1")
                && err.contains("expected one of dataDir"),
            "{err}"
        );
        let err = ServeFile::parse("dataDir: var/lib/ferrovirt\n").unwrap_err();
        assert!(err.contains("dataDir") && err.contains("absolute"), "{err}");
        let err = ServeFile::parse("hostDiskRoots: [/srv, images]\n").unwrap_err();
        assert!(err.contains("hostDiskRoots[1]"), "{err}");
        let err = ServeFile::parse("stateRetention: 7 days\n").unwrap_err();
        assert!(
            err.contains("stateRetention") && err.contains("7d"),
            "{err}"
        );
        let err = ServeFile::parse("listen: localhost\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn an_explicit_file_must_exist_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.yaml");
        let err = ServeFile::load(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("cannot be read"),
            "{err}"
        );
        std::fs::write(&missing, "maxWatchesPerClient: many\n").unwrap();
        let err = ServeFile::load(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("maxWatchesPerClient"),
            "{err}"
        );
    }

    #[test]
    fn the_packaged_configuration_parses() {
        let text = include_str!("../../../../packaging/config.yaml");
        let file = ServeFile::parse(text).unwrap();
        assert_eq!(
            file.data_dir.as_deref(),
            Some(Path::new("/var/lib/ferrovirt"))
        );
        assert_eq!(
            file.runtime_dir.as_deref(),
            Some(Path::new("/run/ferrovirt"))
        );
        assert_eq!(
            file.admin_kubeconfig.as_deref(),
            Some(Path::new(crate::connection::SERVICE_ADMIN_KUBECONFIG))
        );
    }
}
