//! The exec plugin: an external KMS wraps and unwraps data keys, in the shape of Kubernetes' KMS
//! v2 (`Encrypt`/`Decrypt` with a `keyID`) and client-go's exec credential plugins (a program,
//! JSON on standard input and output).
//!
//! ferrovirt runs `PLUGIN encrypt` or `PLUGIN decrypt` (no shell, an empty environment except
//! `PATH`), writes one JSON request to its standard input and closes it, and reads one JSON
//! response from its standard output; exit status 0 means success, anything else is an error
//! whose standard error ferrovirt reports. It must answer within 10 s.
//!
//! ```text
//! encrypt <- {"apiVersion":"keys.ferrovirt.io/v1","kind":"EncryptRequest","plaintext":"<base64>"}
//!         -> {"apiVersion":"keys.ferrovirt.io/v1","kind":"EncryptResponse","keyID":"<KMS key>",
//!             "ciphertext":"<base64>"}
//! decrypt <- {"apiVersion":"keys.ferrovirt.io/v1","kind":"DecryptRequest","keyID":"<from encrypt>",
//!             "ciphertext":"<base64>"}
//!         -> {"apiVersion":"keys.ferrovirt.io/v1","kind":"DecryptResponse","plaintext":"<base64>"}
//! ```
//!
//! `plaintext` is a 32-byte data key; `keyID` names the KMS key that encrypted it and is kept in
//! the VM's wrapped-key record (so a KMS can rotate keys and still decrypt old records).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use wait_timeout::ChildExt;
use zeroize::Zeroizing;

/// The protocol's apiVersion.
pub const API_VERSION: &str = "keys.ferrovirt.io/v1";
/// How long a plugin may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// It could not be run.
    #[error("KMS plugin {plugin}: cannot run it: {reason}; check --state-encryption exec:PATH")]
    Spawn {
        /// The plugin.
        plugin: PathBuf,
        /// Why.
        reason: String,
    },
    /// It exited with an error.
    #[error("KMS plugin {plugin} {op} failed ({status}): {stderr}")]
    Failed {
        /// The plugin.
        plugin: PathBuf,
        /// encrypt or decrypt.
        op: &'static str,
        /// Its exit status.
        status: String,
        /// Its standard error (last lines).
        stderr: String,
    },
    /// It did not answer in time.
    #[error("KMS plugin {plugin} {op} did not answer within {}s; it was killed", TIMEOUT.as_secs())]
    Timeout {
        /// The plugin.
        plugin: PathBuf,
        /// encrypt or decrypt.
        op: &'static str,
    },
    /// Its answer is not the protocol's.
    #[error(
        "KMS plugin {plugin} {op}: bad response: {reason} (see the keys.ferrovirt.io/v1 protocol in the README)"
    )]
    BadResponse {
        /// The plugin.
        plugin: PathBuf,
        /// encrypt or decrypt.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    api_version: &'static str,
    kind: &'static str,
    #[serde(rename = "keyID", skip_serializing_if = "Option::is_none")]
    key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    api_version: String,
    kind: String,
    #[serde(rename = "keyID", default)]
    key_id: Option<String>,
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
}

/// An exec KMS plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlugin {
    command: PathBuf,
}

impl ExecPlugin {
    /// The plugin at `command` (an absolute path).
    pub fn new(command: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
        }
    }

    /// The plugin's path.
    pub fn command(&self) -> &Path {
        &self.command
    }

    /// Encrypts a data key: `(keyID, ciphertext)`.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<(String, Vec<u8>), PluginError> {
        let op = "encrypt";
        let request = Request {
            api_version: API_VERSION,
            kind: "EncryptRequest",
            key_id: None,
            plaintext: Some(STANDARD.encode(plaintext)),
            ciphertext: None,
        };
        let response = self.call(op, &request, "EncryptResponse")?;
        let bad = |reason: &str| self.bad(op, reason);
        let key_id = response
            .key_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad("no keyID"))?;
        let ciphertext = response.ciphertext.ok_or_else(|| bad("no ciphertext"))?;
        let ciphertext = STANDARD
            .decode(ciphertext.trim())
            .map_err(|e| bad(&format!("ciphertext is not base64: {e}")))?;
        Ok((key_id, ciphertext))
    }

    /// Decrypts a data key.
    pub fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, PluginError> {
        let op = "decrypt";
        let request = Request {
            api_version: API_VERSION,
            kind: "DecryptRequest",
            key_id: Some(key_id),
            plaintext: None,
            ciphertext: Some(STANDARD.encode(ciphertext)),
        };
        let response = self.call(op, &request, "DecryptResponse")?;
        let plaintext = Zeroizing::new(
            response
                .plaintext
                .ok_or_else(|| self.bad(op, "no plaintext"))?,
        );
        STANDARD
            .decode(plaintext.trim())
            .map(Zeroizing::new)
            .map_err(|e| self.bad(op, &format!("plaintext is not base64: {e}")))
    }

    fn bad(&self, op: &'static str, reason: &str) -> PluginError {
        PluginError::BadResponse {
            plugin: self.command.clone(),
            op,
            reason: reason.to_owned(),
        }
    }

    fn call(
        &self,
        op: &'static str,
        request: &Request<'_>,
        kind: &str,
    ) -> Result<Response, PluginError> {
        let spawn_error = |reason: String| PluginError::Spawn {
            plugin: self.command.clone(),
            reason,
        };
        let input =
            Zeroizing::new(serde_json::to_vec(request).map_err(|e| spawn_error(e.to_string()))?);
        let mut child = Command::new(&self.command)
            .arg(op)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(e.to_string()))?;
        // The request is small (under a pipe's buffer): write it all, then close stdin. A plugin
        // that exits without reading it (it refuses, or fails first) closes the pipe: its exit
        // status and standard error below say why, not the broken pipe.
        if let Some(mut stdin) = child.stdin.take()
            && let Err(e) = stdin.write_all(&input)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(format!("write its standard input: {e}")));
        }
        let mut stdout_pipe = child.stdout.take();
        let mut stderr_pipe = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            if let Some(pipe) = stdout_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut out);
            }
            if let Some(pipe) = stderr_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut err);
            }
            (out, err)
        });
        let status = match child.wait_timeout(TIMEOUT) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PluginError::Timeout {
                    plugin: self.command.clone(),
                    op,
                });
            }
            Err(e) => return Err(spawn_error(format!("wait for it: {e}"))),
        };
        let (stdout, stderr) = reader
            .join()
            .map_err(|_| spawn_error("read its output".into()))?;
        let stdout = Zeroizing::new(stdout);
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(PluginError::Failed {
                plugin: self.command.clone(),
                op,
                status: status.to_string(),
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        let response: Response = serde_json::from_slice(&stdout)
            .map_err(|e| self.bad(op, &format!("not JSON of the protocol: {e}")))?;
        if response.api_version != API_VERSION || response.kind != kind {
            return Err(self.bad(
                op,
                &format!(
                    "expected apiVersion {API_VERSION} kind {kind}, got {} {}",
                    response.api_version, response.kind
                ),
            ));
        }
        Ok(response)
    }
}
