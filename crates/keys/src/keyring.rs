//! The configured KEK provider of a data dir (`serve --state-encryption none|local|exec:PLUGIN`,
//! recorded in `<data-dir>/state-encryption.json` so that every reader of the data dir, the
//! controllers, the API server and the CLI's `--data-dir` commands, uses the same one).

use std::path::{Path, PathBuf};

use crate::data_key::DataKey;
use crate::error::KeyError;
use crate::local::LocalKeks;
use crate::plugin::ExecPlugin;
use crate::record::{Provider, WrappedKey};
use crate::wrap;

/// The file in the data dir that records the setting.
pub const SETTING_FILE: &str = "state-encryption.json";

/// How new or plain state is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EncryptionSetting {
    /// Not at all (for comparison; state that is already encrypted is still opened with the
    /// local keys).
    None,
    /// Data keys wrapped by the local KEK file (the default).
    #[default]
    Local,
    /// Data keys wrapped by an external KMS through an exec plugin.
    Exec(PathBuf),
}

impl std::str::FromStr for EncryptionSetting {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Self::None),
            "local" => Ok(Self::Local),
            other => match other.strip_prefix("exec:") {
                Some(path) if Path::new(path).is_absolute() => Ok(Self::Exec(path.into())),
                Some(path) => Err(format!(
                    "--state-encryption exec:{path}: the plugin must be an absolute path"
                )),
                None => Err(format!(
                    "--state-encryption {other}: expected none, local or exec:/PATH/TO/PLUGIN"
                )),
            },
        }
    }
}

impl std::fmt::Display for EncryptionSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Local => f.write_str("local"),
            Self::Exec(path) => write!(f, "exec:{}", path.display()),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingRecord {
    state_encryption: String,
}

/// The keys of one data dir.
#[derive(Debug, Clone)]
pub struct Keyring {
    setting: EncryptionSetting,
    local: LocalKeks,
}

impl Keyring {
    /// The keyring of `data_dir` with `setting`.
    pub fn new(data_dir: &Path, setting: EncryptionSetting) -> Self {
        Self {
            setting,
            local: LocalKeks::of_data_dir(data_dir),
        }
    }

    /// The keyring `serve` recorded for `data_dir` (the default, local, when none was).
    pub fn for_data_dir(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join(SETTING_FILE);
        let setting = match std::fs::read(&path) {
            Ok(bytes) => {
                let record: SettingRecord =
                    serde_json::from_slice(&bytes).map_err(|e| KeyError::Malformed {
                        path: path.clone(),
                        reason: format!("{e}; start serve again to rewrite it"),
                    })?;
                record
                    .state_encryption
                    .parse()
                    .map_err(|reason| KeyError::Malformed {
                        path: path.clone(),
                        reason,
                    })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EncryptionSetting::default(),
            Err(e) => {
                return Err(KeyError::Io {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self::new(data_dir, setting))
    }

    /// Records `setting` for `data_dir` (crash-safe) and returns its keyring.
    pub fn record(data_dir: &Path, setting: EncryptionSetting) -> Result<Self, KeyError> {
        let path = data_dir.join(SETTING_FILE);
        let json = serde_json::to_vec(&SettingRecord {
            state_encryption: setting.to_string(),
        })
        .map_err(|e| KeyError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        ferrovirt_storage::atomic::write_file(&path, &json, 0o600).map_err(|e| KeyError::Io {
            path,
            reason: e.to_string(),
        })?;
        Ok(Self::new(data_dir, setting))
    }

    /// The setting.
    pub fn setting(&self) -> &EncryptionSetting {
        &self.setting
    }

    /// Whether new and plain state gets encrypted.
    pub fn encrypts(&self) -> bool {
        self.setting != EncryptionSetting::None
    }

    /// The local KEKs.
    pub fn local(&self) -> &LocalKeks {
        &self.local
    }

    /// A new data key and its wrapped record.
    pub fn new_data_key(&self) -> Result<(DataKey, WrappedKey), KeyError> {
        let dek = DataKey::generate()?;
        let record = self.wrap(&dek)?;
        Ok((dek, record))
    }

    /// `dek` wrapped by the configured provider's current KEK (`local` when the setting is
    /// `none`).
    pub fn wrap(&self, dek: &DataKey) -> Result<WrappedKey, KeyError> {
        match &self.setting {
            EncryptionSetting::Exec(command) => {
                let (kek_id, wrapped) = ExecPlugin::new(command).encrypt(dek.as_bytes())?;
                Ok(WrappedKey::new(Provider::Exec, kek_id, dek.id(), &wrapped))
            }
            EncryptionSetting::Local | EncryptionSetting::None => {
                let (version, kek) = self.local.current()?;
                let wrapped = wrap::wrap(&kek, dek)?;
                Ok(WrappedKey::new(
                    Provider::Local,
                    LocalKeks::id(version),
                    dek.id(),
                    &wrapped,
                ))
            }
        }
    }

    /// The data key in `record` (read from `path`, named in errors). Fails closed: a missing or
    /// wrong KEK is an error that says which and how to fix it.
    pub fn unwrap(&self, record: &WrappedKey, path: &Path) -> Result<DataKey, KeyError> {
        let wrapped = record.wrapped_bytes(path)?;
        let unwrap_failed = |source_desc: String| KeyError::UnwrapFailed {
            kek_id: record.kek_id.clone(),
            source_desc,
            record: path.to_path_buf(),
        };
        let dek = match record.provider {
            Provider::Local => {
                let version =
                    LocalKeks::version_of(&record.kek_id).ok_or_else(|| KeyError::Malformed {
                        path: path.to_path_buf(),
                        reason: format!(
                            "kekID {:?} is not a local key id (local-N); restore the record",
                            record.kek_id
                        ),
                    })?;
                let kek = self.local.get(version)?;
                wrap::unwrap(&kek, &wrapped)
                    .ok_or_else(|| unwrap_failed(self.local.file(version).display().to_string()))?
            }
            Provider::Exec => {
                let EncryptionSetting::Exec(command) = &self.setting else {
                    return Err(KeyError::ProviderMismatch {
                        record: path.to_path_buf(),
                        wanted: "exec".into(),
                        wanted_flag: "exec:/PATH/TO/PLUGIN".into(),
                        configured: self.setting.to_string(),
                    });
                };
                let plain = ExecPlugin::new(command).decrypt(&record.kek_id, &wrapped)?;
                DataKey::from_bytes(&plain)
                    .map_err(|_| unwrap_failed(format!("KMS plugin {}", command.display())))?
            }
        };
        if dek.id() != record.data_key_id {
            return Err(unwrap_failed(
                "the unwrapped key is not the recorded data key".to_owned(),
            ));
        }
        Ok(dek)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_record() {
        assert_eq!("none".parse(), Ok(EncryptionSetting::None));
        assert_eq!("local".parse(), Ok(EncryptionSetting::Local));
        assert_eq!(
            "exec:/usr/bin/kms".parse(),
            Ok(EncryptionSetting::Exec("/usr/bin/kms".into()))
        );
        assert!("exec:kms".parse::<EncryptionSetting>().is_err());
        assert!("vault".parse::<EncryptionSetting>().is_err());
        let data = tempfile::tempdir().unwrap();
        assert_eq!(
            Keyring::for_data_dir(data.path()).unwrap().setting(),
            &EncryptionSetting::Local
        );
        Keyring::record(data.path(), EncryptionSetting::None).unwrap();
        assert_eq!(
            Keyring::for_data_dir(data.path()).unwrap().setting(),
            &EncryptionSetting::None
        );
    }

    #[test]
    fn local_wrap_unwrap_and_fail_closed() {
        let data = tempfile::tempdir().unwrap();
        let keyring = Keyring::new(data.path(), EncryptionSetting::Local);
        let (dek, record) = keyring.new_data_key().unwrap();
        let path = data.path().join("state-key.json");
        record.write(&path).unwrap();
        let read = WrappedKey::read(&path).unwrap().unwrap();
        assert_eq!(read, record);
        assert_eq!(
            keyring.unwrap(&read, &path).unwrap().as_bytes(),
            dek.as_bytes()
        );

        // Another KEK in the same file: refused, named.
        let kek_file = keyring.local().file(1);
        std::fs::write(&kek_file, [9u8; 32]).unwrap();
        let err = keyring.unwrap(&read, &path).unwrap_err();
        assert!(matches!(err, KeyError::UnwrapFailed { .. }), "{err}");
        assert!(err.to_string().contains("not changed"), "{err}");
        // No KEK file at all.
        std::fs::remove_file(&kek_file).unwrap();
        let err = keyring.unwrap(&read, &path).unwrap_err();
        assert!(matches!(err, KeyError::KekMissing { .. }), "{err}");
        assert!(err.to_string().contains("kek-1.key"), "{err}");
        // An exec record on a local server.
        let mut exec = read.clone();
        exec.provider = Provider::Exec;
        assert!(matches!(
            keyring.unwrap(&exec, &path),
            Err(KeyError::ProviderMismatch { .. })
        ));
    }

    #[test]
    fn rewrap_under_a_new_local_kek() {
        let data = tempfile::tempdir().unwrap();
        let keyring = Keyring::new(data.path(), EncryptionSetting::Local);
        let path = data.path().join("k.json");
        let (dek, old) = keyring.new_data_key().unwrap();
        keyring.local().create_next().unwrap();
        let new = keyring.wrap(&dek).unwrap();
        assert_eq!(old.kek_id, "local-1");
        assert_eq!(new.kek_id, "local-2");
        assert_eq!(new.data_key_id, old.data_key_id);
        assert_eq!(
            keyring.unwrap(&new, &path).unwrap().as_bytes(),
            dek.as_bytes()
        );
        assert_eq!(
            keyring.unwrap(&old, &path).unwrap().as_bytes(),
            dek.as_bytes()
        );
    }
}
