//! A minimal TPM 2.0 command client for swtpm's data channel (`--server type=unixio`), used
//! offline: TPM2_Startup, TPM2_NV_ReadPublic, TPM2_NV_Read (empty password session) and
//! TPM2_ReadPublic on private copies of a state; and, for a pooled TPM's personalization
//! ([`crate::pool`]), what swtpm_setup does to store certificates: TPM2_NV_DefineSpace,
//! TPM2_NV_Write and TPM2_NV_WriteLock with the platform hierarchy's empty password,
//! TPM2_NV_UndefineSpace and TPM2_Shutdown. Hand-marshalled, big-endian, as in TPM 2.0 Part 3.

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
const TPM_CC_NV_UNDEFINE_SPACE: u32 = 0x0000_0122;
const TPM_CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
const TPM_CC_NV_WRITE: u32 = 0x0000_0137;
const TPM_CC_NV_WRITE_LOCK: u32 = 0x0000_0138;
const TPM_CC_SHUTDOWN: u32 = 0x0000_0145;
const TPM_RH_PLATFORM: u32 = 0x4000_000C;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ECC_NIST_P384: u16 = 0x0004;
/// NV write chunk (swtpm_setup writes 1024 bytes at a time; libtpms' MAX_NV_BUFFER_SIZE).
const NV_WRITE_CHUNK: usize = 1024;
const TPM_SU_CLEAR: u16 = 0x0000;
const TPM_RS_PW: u32 = 0x4000_0009;
/// Largest response we accept (a TPM response never gets near this).
const MAX_RESPONSE: usize = 64 * 1024;
/// NV read chunk: below every TPM's MAX_NV_BUFFER_SIZE (libtpms: 1024).
const NV_CHUNK: u16 = 512;

/// NV index of the RSA 2048 EK certificate (TCG EK Credential Profile).
pub const NV_INDEX_EK_CERT_RSA: u32 = 0x01C0_0002;
/// NV index of the RSA 3072 EK certificate (high range, as swtpm_setup writes it).
pub const NV_INDEX_EK_CERT_RSA3072: u32 = 0x01C0_001C;
/// NV index of the ECC NIST P-256/P-384 EK certificate as swtpm_setup writes it.
pub const NV_INDEX_EK_CERT_ECC: u32 = 0x01C0_0016;
/// NV index of the platform certificate swtpm_setup writes.
pub const NV_INDEX_PLATFORM_CERT: u32 = 0x01C0_8000;
/// Persistent handle of the RSA EK.
pub const HANDLE_EK_RSA: u32 = 0x8101_0001;
/// Persistent handle of the ECC EK.
pub const HANDLE_EK_ECC: u32 = 0x8101_0016;
/// Persistent handle of the RSA 3072 EK (swtpm_setup's `TPM2_EK_RSA3072_HANDLE`).
pub const HANDLE_EK_RSA3072: u32 = 0x8101_001C;

/// The attributes swtpm_setup gives the NV indices of the EK and platform certificates:
/// PLATFORMCREATE | AUTHREAD | OWNERREAD | PPREAD | PPWRITE | NO_DA | WRITEDEFINE (a write lock
/// stays until the index is undefined).
pub const CERT_NV_ATTRIBUTES: u32 =
    0x4000_0000 | 0x0004_0000 | 0x0002_0000 | 0x0001_0000 | 0x0000_0001 | 0x0200_0000 | 0x0000_2000;
/// TPMA_NV_WRITELOCKED.
pub const NV_WRITELOCKED: u32 = 0x0000_0800;
/// TPMA_NV_WRITTEN.
pub const NV_WRITTEN: u32 = 0x2000_0000;

/// An EK's public key as swtpm_localca takes it (`--ek`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkPublicKey {
    /// An RSA key: its modulus (the exponent is the default 65537).
    Rsa {
        /// The modulus, big-endian.
        modulus: Vec<u8>,
    },
    /// An ECC NIST P-384 key.
    EccP384 {
        /// The point's x coordinate.
        x: Vec<u8>,
        /// The point's y coordinate.
        y: Vec<u8>,
    },
}

impl EkPublicKey {
    /// swtpm_localca's `--ek` argument: the modulus in hex, or `x=..,y=..,id=secp384r1`.
    pub fn localca_arg(&self) -> String {
        match self {
            EkPublicKey::Rsa { modulus } => hex(modulus),
            EkPublicKey::EccP384 { x, y } => format!("x={},y={},id=secp384r1", hex(x), hex(y)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

    /// TPM2_ReadPublic of a key: its public key (RSA modulus or ECC P-384 point); `None` if
    /// no object is at `handle`.
    pub fn read_public_key(&mut self, handle: u32) -> Result<Option<EkPublicKey>, TpmCommandError> {
        const NAME: &str = "TPM2_ReadPublic";
        let cmd = command(
            TPM_ST_NO_SESSIONS,
            TPM_CC_READ_PUBLIC,
            &handle.to_be_bytes(),
        );
        let body = match self.transact(NAME, &cmd) {
            Ok(body) => body,
            Err(TpmCommandError::Tpm { code, .. }) if is_handle_error(code) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_public_key(&body).map(Some)
    }

    /// TPM2_NV_DefineSpace under the platform hierarchy (empty password, no index password or
    /// policy, name algorithm SHA-256), as swtpm_setup defines certificate indices.
    pub fn nv_define_space(
        &mut self,
        index: u32,
        attributes: u32,
        size: u16,
    ) -> Result<(), TpmCommandError> {
        let mut public = Vec::with_capacity(14);
        public.extend_from_slice(&index.to_be_bytes());
        public.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        public.extend_from_slice(&attributes.to_be_bytes());
        public.extend_from_slice(&0u16.to_be_bytes()); // authPolicy
        public.extend_from_slice(&size.to_be_bytes());
        let mut params = Vec::new();
        params.extend_from_slice(&TPM_RH_PLATFORM.to_be_bytes());
        params.extend_from_slice(&password_session());
        params.extend_from_slice(&0u16.to_be_bytes()); // auth
        params.extend_from_slice(&(public.len() as u16).to_be_bytes());
        params.extend_from_slice(&public);
        let cmd = command(TPM_ST_SESSIONS, TPM_CC_NV_DEFINE_SPACE, &params);
        self.transact("TPM2_NV_DefineSpace", &cmd).map(|_| ())
    }

    /// TPM2_NV_UndefineSpace under the platform hierarchy; `false` if the index did not exist.
    pub fn nv_undefine_space(&mut self, index: u32) -> Result<bool, TpmCommandError> {
        let mut params = Vec::new();
        params.extend_from_slice(&TPM_RH_PLATFORM.to_be_bytes());
        params.extend_from_slice(&index.to_be_bytes());
        params.extend_from_slice(&password_session());
        let cmd = command(TPM_ST_SESSIONS, TPM_CC_NV_UNDEFINE_SPACE, &params);
        match self.transact("TPM2_NV_UndefineSpace", &cmd) {
            Ok(_) => Ok(true),
            Err(TpmCommandError::Tpm { code, .. }) if is_handle_error(code) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// TPM2_NV_Write of `data` from offset 0, in chunks, authorised by the platform hierarchy.
    pub fn nv_write(&mut self, index: u32, data: &[u8]) -> Result<(), TpmCommandError> {
        for (n, chunk) in data.chunks(NV_WRITE_CHUNK).enumerate() {
            let offset =
                u16::try_from(n * NV_WRITE_CHUNK).map_err(|_| TpmCommandError::Malformed {
                    command: "TPM2_NV_Write",
                    what: "data larger than an NV index can hold",
                })?;
            let mut params = Vec::new();
            params.extend_from_slice(&TPM_RH_PLATFORM.to_be_bytes());
            params.extend_from_slice(&index.to_be_bytes());
            params.extend_from_slice(&password_session());
            params.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            params.extend_from_slice(chunk);
            params.extend_from_slice(&offset.to_be_bytes());
            let cmd = command(TPM_ST_SESSIONS, TPM_CC_NV_WRITE, &params);
            self.transact("TPM2_NV_Write", &cmd)?;
        }
        Ok(())
    }

    /// TPM2_NV_WriteLock, authorised by the platform hierarchy.
    pub fn nv_write_lock(&mut self, index: u32) -> Result<(), TpmCommandError> {
        let mut params = Vec::new();
        params.extend_from_slice(&TPM_RH_PLATFORM.to_be_bytes());
        params.extend_from_slice(&index.to_be_bytes());
        params.extend_from_slice(&password_session());
        let cmd = command(TPM_ST_SESSIONS, TPM_CC_NV_WRITE_LOCK, &params);
        self.transact("TPM2_NV_WriteLock", &cmd).map(|_| ())
    }

    /// TPM2_Shutdown(TPM_SU_CLEAR), as swtpm_setup ends a manufacture.
    pub fn shutdown_clear(&mut self) -> Result<(), TpmCommandError> {
        let cmd = command(
            TPM_ST_NO_SESSIONS,
            TPM_CC_SHUTDOWN,
            &TPM_SU_CLEAR.to_be_bytes(),
        );
        self.transact("TPM2_Shutdown", &cmd).map(|_| ())
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

/// The public key out of a TPM2_ReadPublic response (TPM2B_PUBLIC first: TPMT_PUBLIC's type,
/// nameAlg, objectAttributes, authPolicy, the key's parameters, then `unique`).
fn parse_public_key(body: &[u8]) -> Result<EkPublicKey, TpmCommandError> {
    const NAME: &str = "TPM2_ReadPublic";
    let mut r = Reader::new(NAME, body);
    let _size = r.u16()?;
    let kind = r.u16()?;
    let _name_alg = r.u16()?;
    let _attributes = r.u32()?;
    let policy = r.u16()?;
    r.skip(usize::from(policy))?;
    // TPMT_SYM_DEF_OBJECT: algorithm, then key bits and mode unless it is TPM_ALG_NULL.
    if r.u16()? != TPM_ALG_NULL {
        r.skip(4)?;
    }
    // The scheme: algorithm, then its hash unless it is TPM_ALG_NULL.
    if r.u16()? != TPM_ALG_NULL {
        r.skip(2)?;
    }
    match kind {
        TPM_ALG_RSA => {
            let _key_bits = r.u16()?;
            let _exponent = r.u32()?;
            let len = r.u16()?;
            let modulus = r.take(usize::from(len))?.to_vec();
            Ok(EkPublicKey::Rsa { modulus })
        }
        TPM_ALG_ECC => {
            let curve = r.u16()?;
            if r.u16()? != TPM_ALG_NULL {
                r.skip(2)?;
            }
            if curve != TPM_ECC_NIST_P384 {
                return Err(TpmCommandError::Malformed {
                    command: NAME,
                    what: "ECC key on a curve other than NIST P-384",
                });
            }
            let x_len = r.u16()?;
            let x = r.take(usize::from(x_len))?.to_vec();
            let y_len = r.u16()?;
            let y = r.take(usize::from(y_len))?.to_vec();
            Ok(EkPublicKey::EccP384 { x, y })
        }
        _ => Err(TpmCommandError::Malformed {
            command: NAME,
            what: "key of a type other than RSA or ECC",
        }),
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

    #[test]
    fn cert_attributes_are_swtpm_setups() {
        assert_eq!(CERT_NV_ATTRIBUTES, 0x4207_2001);
    }

    #[test]
    fn define_space_bytes() {
        // The command swtpm_setup sends for a 1000-byte certificate index (TPM 2.0 Part 3, 31.3).
        let mut public = Vec::new();
        public.extend_from_slice(&NV_INDEX_EK_CERT_RSA.to_be_bytes());
        public.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        public.extend_from_slice(&CERT_NV_ATTRIBUTES.to_be_bytes());
        public.extend_from_slice(&[0, 0, 0x03, 0xE8]);
        assert_eq!(public.len(), 14);
    }

    #[test]
    fn rsa_and_ecc_public_keys_parse() {
        // TPM2B_PUBLIC of an RSA 2048 EK (template L-1): AES-128-CFB, scheme NULL.
        let mut rsa = vec![
            0, 0, 0x00, 0x01, 0x00, 0x0B, 0, 0x03, 0, 0xB2, 0, 2, 0xAA, 0xBB,
        ];
        rsa.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // symmetric
        rsa.extend_from_slice(&[0x00, 0x10]); // scheme NULL
        rsa.extend_from_slice(&[0x08, 0x00, 0, 0, 0, 0]); // bits, exponent
        rsa.extend_from_slice(&[0, 3, 1, 2, 3]);
        assert_eq!(
            parse_public_key(&rsa).unwrap(),
            EkPublicKey::Rsa {
                modulus: vec![1, 2, 3]
            }
        );
        let mut ecc = vec![0, 0, 0x00, 0x23, 0x00, 0x0C, 0, 0x03, 0, 0xB2, 0, 0];
        ecc.extend_from_slice(&[0x00, 0x06, 0x01, 0x00, 0x00, 0x43]); // AES-256-CFB
        ecc.extend_from_slice(&[0x00, 0x10, 0x00, 0x04, 0x00, 0x10]); // scheme, curve, kdf
        ecc.extend_from_slice(&[0, 1, 9, 0, 2, 7, 8]);
        let key = parse_public_key(&ecc).unwrap();
        assert_eq!(key.localca_arg(), "x=09,y=0708,id=secp384r1");
    }

    proptest::proptest! {
        #[test]
        fn public_key_parser_never_panics(buf in proptest::collection::vec(0u8..=255, 0..64)) {
            let _ = parse_public_key(&buf);
        }

        #[test]
        fn reader_never_panics(buf in proptest::collection::vec(0u8..=255, 0..16)) {
            let mut r = Reader::new("x", &buf);
            let _ = r.u16().and_then(|_| r.u32()).and_then(|n| r.skip(n as usize));
        }
    }
}
