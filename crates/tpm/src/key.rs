//! Encryption at rest of the TPM state: the key swtpm encrypts it with (AES-256-CBC with
//! encrypt-then-MAC, swtpm's own `--key`). The key is held in memory only and handed to swtpm and
//! swtpm_setup through a pipe (`--key fd=N` / `--keyfile-fd N`), never through a file.
//!
//! swtpm fails closed: without the key, or with a wrong one, it refuses the state (CMD_INIT fails,
//! "SWTPM_NVRAM_GetDecryptedData rc = 9|33") and never rewrites it; it also refuses a plain state
//! when given a key (rc = 40), so converting a state goes through [`crate::reencrypt`].

use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::Command;

use command_fds::{CommandFdExt, FdMapping};
use zeroize::Zeroizing;

/// The fd number the key pipe gets in swtpm / swtpm_setup.
pub const KEY_FD: i32 = 3;
/// swtpm's name of the cipher.
pub const CIPHER: &str = "aes-256-cbc";

/// The cipher swtpm encrypts the state with (only AES-256-CBC is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateCipher {
    /// AES-256-CBC.
    #[default]
    Aes256Cbc,
}

/// A TPM state key: 32 bytes, zeroed on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

/// How the key reaches a child: in binary (swtpm) or hex (swtpm_setup's `--keyfile-fd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFormat {
    Binary,
    Hex,
}

impl StateKey {
    /// A key of 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// swtpm's `--key` value for the key on fd [`KEY_FD`].
    pub fn swtpm_key_arg() -> String {
        format!("fd={KEY_FD},mode={CIPHER},format=binary,remove=false")
    }

    /// swtpm_setup's options for the key on fd [`KEY_FD`].
    pub fn swtpm_setup_args() -> Vec<std::ffi::OsString> {
        vec![
            "--keyfile-fd".into(),
            KEY_FD.to_string().into(),
            "--cipher".into(),
            CIPHER.into(),
        ]
    }

    /// A pipe's read end holding the key (binary), for swtpm's `--key fd=`.
    pub fn pipe(&self) -> std::io::Result<OwnedFd> {
        self.pipe_as(KeyFormat::Binary)
    }

    fn pipe_as(&self, format: KeyFormat) -> std::io::Result<OwnedFd> {
        let (reader, mut writer) = std::io::pipe()?;
        let bytes: Zeroizing<Vec<u8>> = match format {
            KeyFormat::Binary => Zeroizing::new(self.0.to_vec()),
            KeyFormat::Hex => Zeroizing::new(
                self.0
                    .iter()
                    .flat_map(|b| format!("{b:02x}").into_bytes())
                    .collect(),
            ),
        };
        // 32 or 64 bytes: far below a pipe's buffer, so the write never blocks.
        writer.write_all(&bytes)?;
        drop(writer);
        Ok(reader.into())
    }

    /// Gives `cmd` the key on fd [`KEY_FD`] (binary) for swtpm.
    pub fn attach_to(&self, cmd: &mut Command) -> std::io::Result<()> {
        self.attach_as(cmd, KeyFormat::Binary)
    }

    /// Gives `cmd` the key on fd [`KEY_FD`] in hex, for swtpm_setup.
    pub fn attach_hex_to(&self, cmd: &mut Command) -> std::io::Result<()> {
        self.attach_as(cmd, KeyFormat::Hex)
    }

    fn attach_as(&self, cmd: &mut Command, format: KeyFormat) -> std::io::Result<()> {
        let fd = self.pipe_as(format)?;
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: KEY_FD,
        }])
        .map(|_| ())
        .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Whether a TPM state file (`tpm2-00.permall`) is encrypted: swtpm's blob header (version,
/// min version, header size, flags, ...) has flag bit 0 (`BLOB_FLAG_ENCRYPTED`) set.
pub fn is_encrypted_state(bytes: &[u8]) -> bool {
    match (bytes.first(), bytes.get(4..6)) {
        (Some(&version), Some(flags)) if version >= 2 => flags[1] & 0x01 != 0,
        _ => false,
    }
}
