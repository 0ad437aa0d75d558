//! The guest's serial console: attach to QEMU's serial socket (one client at a time).

use std::path::Path;

use tokio::net::UnixStream;

/// Connects to the serial console socket; read the guest's output, write its input.
pub async fn attach(serial_socket: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(serial_socket).await
}
