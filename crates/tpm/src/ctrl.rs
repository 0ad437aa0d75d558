//! A client for swtpm's control channel (`--ctrl type=unixio`): big-endian 32-bit command
//! codes followed by the command's payload; every response starts with a 32-bit TPM result.
//! Only the commands this crate needs are implemented (see swtpm's tpm_ioctl.h / swtpm_ioctls(3)).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// CMD_INIT: initialise the TPM (loads the state); payload: 32-bit init flags.
pub const CMD_INIT: u32 = 2;
/// CMD_SHUTDOWN: shut the TPM down; swtpm then exits.
pub const CMD_SHUTDOWN: u32 = 3;
/// CMD_GET_INFO: a JSON document about the TPM (swtpm's `ptm_getinfo`).
pub const CMD_GET_INFO: u32 = 0x12;
/// GET_INFO flag: the TPM specification (family, level, revision).
pub const INFO_TPM_SPECIFICATION: u64 = 1;
/// GET_INFO flag: the TPM attributes (manufacturer, version, model).
pub const INFO_TPM_ATTRIBUTES: u64 = 2;
/// Largest GET_INFO text accepted (swtpm's buffer is 3072 bytes).
const MAX_INFO: usize = 4096;
/// Init flag: delete the volatile state before initialising.
pub const INIT_FLAG_DELETE_VOLATILE: u32 = 1;

/// A TPM result code as returned by swtpm (0 = success; 0x101 = TPM_FAIL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpmResult(pub u32);

impl TpmResult {
    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for TpmResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

/// An open control channel.
#[derive(Debug)]
pub struct CtrlChannel {
    stream: UnixStream,
}

impl CtrlChannel {
    /// Connects to the control socket at `path`, retrying until `timeout` while swtpm starts up
    /// (the socket appears a few ms after swtpm is spawned). `still_alive` is polled between
    /// attempts so that a swtpm that died early fails fast.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        mut still_alive: impl FnMut() -> bool,
    ) -> std::io::Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    return Ok(Self { stream });
                }
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("control socket {} not ready: {e}", path.display()),
                        ));
                    }
                    if !still_alive() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::BrokenPipe,
                            "swtpm exited before its control socket accepted a connection",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// CMD_INIT with `flags`: makes swtpm load (and libtpms validate) the state.
    pub fn init(&mut self, flags: u32) -> std::io::Result<TpmResult> {
        self.command(CMD_INIT, &flags.to_be_bytes())
    }

    /// CMD_SHUTDOWN: swtpm stores nothing more and exits.
    pub fn shutdown(&mut self) -> std::io::Result<TpmResult> {
        self.command(CMD_SHUTDOWN, &[])
    }

    /// CMD_GET_INFO with `flags`: the result and swtpm's JSON text (what swtpm_setup reads to
    /// pass the TPM's specification and attributes on to the certificate tool).
    pub fn get_info(&mut self, flags: u64) -> std::io::Result<(TpmResult, String)> {
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&flags.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes()); // offset
        payload.extend_from_slice(&0u32.to_be_bytes()); // pad
        let result = self.command(CMD_GET_INFO, &payload)?;
        if !result.is_success() {
            return Ok((result, String::new()));
        }
        let mut lengths = [0u8; 8];
        self.stream.read_exact(&mut lengths)?;
        let length = u32::from_be_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]) as usize;
        if length > MAX_INFO {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("swtpm's GET_INFO answer claims {length} bytes"),
            ));
        }
        let mut text = vec![0u8; length];
        self.stream.read_exact(&mut text)?;
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        Ok((result, String::from_utf8_lossy(&text[..end]).into_owned()))
    }

    fn command(&mut self, code: u32, payload: &[u8]) -> std::io::Result<TpmResult> {
        // swtpm reads a command with one recv(): send it in one write.
        let mut buf = Vec::with_capacity(4 + payload.len());
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(payload);
        self.stream.write_all(&buf)?;
        let mut resp = [0u8; 4];
        self.stream.read_exact(&mut resp)?;
        Ok(TpmResult(u32::from_be_bytes(resp)))
    }
}
