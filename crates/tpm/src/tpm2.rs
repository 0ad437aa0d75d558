//! A minimal TPM 2.0 command client for swtpm's data channel (`--server type=unixio`), used
//! offline on a private copy of a state: TPM2_Startup, TPM2_NV_ReadPublic, TPM2_NV_Read (empty
//! password session) and TPM2_ReadPublic. Hand-marshalled, big-endian, as in TPM 2.0 Part 3.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_STARTUP: u32 = 0x0000_0144;
const TPM_CC_NV_READ: u32 = 0x0000_014E;
const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
const TPM_CC_READ_PUBLIC: u32 = 0x0000_0173;
const TPM_SU_CLEAR: u16 = 0x0000;
const TPM_RS_PW: u32 = 0x4000_0009;
/// Largest response we accept (a TPM response never gets near this).
const MAX_RESPONSE: usize = 64 * 1024;
/// NV read chunk: below every TPM's MAX_NV_BUFFER_SIZE (libtpms: 1024).
const NV_CHUNK: u16 = 512;

/// NV index of the RSA 2048 EK certificate (TCG EK Credential Profile).
pub const NV_INDEX_EK_CERT_RSA: u32 = 0x01C0_0002;
/// NV index of the ECC NIST P-256/P-384 EK certificate as swtpm_setup writes it.
pub const NV_INDEX_EK_CERT_ECC: u32 = 0x01C0_0016;
/// NV index of the platform certificate swtpm_setup writes.
pub const NV_INDEX_PLATFORM_CERT: u32 = 0x01C0_8000;
/// Persistent handle of the RSA EK.
pub const HANDLE_EK_RSA: u32 = 0x8101_0001;
/// Persistent handle of the ECC EK.
pub const HANDLE_EK_ECC: u32 = 0x8101_0016;

/// Errors of a TPM command.
#[derive(Debug, thiserror::Error)]
pub enum TpmCommandError {
    /// The socket failed.
    #[error("TPM command {command}: I/O error on the swtpm data socket: {source}")]
    Io {
        /// Command name.
        command: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TPM answered with an error code.
    #[error("TPM command {command} failed with TPM response code 0x{code:x}")]
    Tpm {
        /// Command name.
        command: &'static str,
        /// TPM_RC.
        code: u32,
    },
    /// The response could not be parsed.
    #[error("TPM command {command}: malformed response: {what}")]
    Malformed {
        /// Command name.
        command: &'static str,
        /// What was wrong.
        what: &'static str,
    },
}

/// The public area of an NV index (the parts we use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvPublic {
    /// TPMA_NV attributes.
    pub attributes: u32,
    /// Size of the index's data in bytes.
    pub data_size: u16,
}

/// An open TPM data channel.
#[derive(Debug)]
pub struct TpmChannel {
    stream: UnixStream,
}

impl TpmChannel {
    /// Connects to swtpm's `--server type=unixio` socket.
    pub fn connect(path: &Path, timeout: Duration) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream })
    }

    /// TPM2_Startup(TPM_SU_CLEAR).
    pub fn startup_clear(&mut self) -> Result<(), TpmCommandError> {
        let cmd = command(
            TPM_ST_NO_SESSIONS,
            TPM_CC_STARTUP,
            &TPM_SU_CLEAR.to_be_bytes(),
        );
        self.transact("TPM2_Startup", &cmd).map(|_| ())
    }

    /// TPM2_NV_ReadPublic; `None` if the index does not exist.
    pub fn nv_read_public(&mut self, index: u32) -> Result<Option<NvPublic>, TpmCommandError> {
        const NAME: &str = "TPM2_NV_ReadPublic";
        let cmd = command(
            TPM_ST_NO_SESSIONS,
            TPM_CC_NV_READ_PUBLIC,
            &index.to_be_bytes(),
        );
        let body = match self.transact(NAME, &cmd) {
            Ok(body) => body,
            Err(TpmCommandError::Tpm { code, .. }) if is_handle_error(code) => return Ok(None),
            Err(e) => return Err(e),
        };
        // TPM2B_NV_PUBLIC: size, nvIndex, nameAlg, attributes, authPolicy (TPM2B), dataSize.
        let mut r = Reader::new(NAME, &body);
        let _size = r.u16()?;
        let _index = r.u32()?;
        let _name_alg = r.u16()?;
        let attributes = r.u32()?;
        let policy_len = r.u16()?;
        r.skip(usize::from(policy_len))?;
        let data_size = r.u16()?;
        Ok(Some(NvPublic {
            attributes,
            data_size,
        }))
    }

    /// Reads the whole NV index (authorised by the index itself with an empty password).
    pub fn nv_read_all(&mut self, index: u32, size: u16) -> Result<Vec<u8>, TpmCommandError> {
        const NAME: &str = "TPM2_NV_Read";
        let mut data = Vec::with_capacity(usize::from(size));
        let mut offset: u16 = 0;
        while offset < size {
            let chunk = NV_CHUNK.min(size - offset);
            let mut params = Vec::new();
            params.extend_from_slice(&index.to_be_bytes()); // authHandle
            params.extend_from_slice(&index.to_be_bytes()); // nvIndex
            params.extend_from_slice(&password_session());
            params.extend_from_slice(&chunk.to_be_bytes());
            params.extend_from_slice(&offset.to_be_bytes());
            let cmd = command(TPM_ST_SESSIONS, TPM_CC_NV_READ, &params);
            let body = self.transact(NAME, &cmd)?;
            let mut r = Reader::new(NAME, &body);
            let _param_size = r.u32()?;
            let len = r.u16()?;
            let bytes = r.take(usize::from(len))?;
            if len == 0 {
                return Err(TpmCommandError::Malformed {
                    command: NAME,
                    what: "empty NV read",
                });
            }
            data.extend_from_slice(bytes);
            offset = offset.saturating_add(len);
        }
        Ok(data)
    }

    /// TPM2_ReadPublic: whether a (persistent) object exists at `handle`.
    pub fn object_exists(&mut self, handle: u32) -> Result<bool, TpmCommandError> {
        let cmd = command(
            TPM_ST_NO_SESSIONS,
            TPM_CC_READ_PUBLIC,
            &handle.to_be_bytes(),
        );
        match self.transact("TPM2_ReadPublic", &cmd) {
            Ok(_) => Ok(true),
            Err(TpmCommandError::Tpm { code, .. }) if is_handle_error(code) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `cmd`, returns the response body after the 10-byte header if the TPM_RC is 0.
    fn transact(&mut self, name: &'static str, cmd: &[u8]) -> Result<Vec<u8>, TpmCommandError> {
        let io = |source| TpmCommandError::Io {
            command: name,
            source,
        };
        self.stream.write_all(cmd).map_err(io)?;
        let mut header = [0u8; 10];
        self.stream.read_exact(&mut header).map_err(io)?;
        let mut r = Reader::new(name, &header);
        let _tag = r.u16()?;
        let size = r.u32()? as usize;
        let code = r.u32()?;
        if !(10..=MAX_RESPONSE).contains(&size) {
            return Err(TpmCommandError::Malformed {
                command: name,
                what: "response size out of range",
            });
        }
        let mut body = vec![0u8; size - 10];
        self.stream.read_exact(&mut body).map_err(io)?;
        if code != 0 {
            return Err(TpmCommandError::Tpm {
                command: name,
                code,
            });
        }
        Ok(body)
    }
}

/// A TPM_RC meaning "no such handle/index" (TPM_RC_HANDLE, format-one, any parameter number).
fn is_handle_error(code: u32) -> bool {
    code & 0x80 != 0 && code & 0x3F == 0x0B
}

/// Authorization area with one empty password session (TPM_RS_PW).
fn password_session() -> Vec<u8> {
    let mut s = Vec::with_capacity(13);
    s.extend_from_slice(&9u32.to_be_bytes()); // authorizationSize
    s.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    s.extend_from_slice(&0u16.to_be_bytes()); // nonce
    s.push(0); // sessionAttributes
    s.extend_from_slice(&0u16.to_be_bytes()); // hmac (empty password)
    s
}

/// A marshalled command: tag, size, code, parameters.
fn command(tag: u16, code: u32, params: &[u8]) -> Vec<u8> {
    let size = u32::try_from(10 + params.len()).unwrap_or(u32::MAX);
    let mut c = Vec::with_capacity(10 + params.len());
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&size.to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(params);
    c
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    command: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(command: &'static str, buf: &'a [u8]) -> Self {
        Self { command, buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmCommandError> {
        if self.buf.len() < n {
            return Err(TpmCommandError::Malformed {
                command: self.command,
                what: "response too short",
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), TpmCommandError> {
        self.take(n).map(|_| ())
    }

    fn u16(&mut self) -> Result<u16, TpmCommandError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TpmCommandError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_command_bytes() {
        let c = command(
            TPM_ST_NO_SESSIONS,
            TPM_CC_STARTUP,
            &TPM_SU_CLEAR.to_be_bytes(),
        );
        assert_eq!(c, [0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0]);
    }

    #[test]
    fn handle_error_detection() {
        assert!(is_handle_error(0x18B));
        assert!(is_handle_error(0x28B));
        assert!(!is_handle_error(0x101));
        assert!(!is_handle_error(0x0B));
    }

    proptest::proptest! {
        #[test]
        fn reader_never_panics(buf in proptest::collection::vec(0u8..=255, 0..16)) {
            let mut r = Reader::new("x", &buf);
            let _ = r.u16().and_then(|_| r.u32()).and_then(|n| r.skip(n as usize));
        }
    }
}
