//! Whether a unix socket is ready for connections: a server's socket file exists from bind() on,
//! but a connect() before its listen() is refused, so "the file exists" is not "ready". swtpm
//! (its control socket) and QEMU are waited for this way.

use std::path::Path;

/// Whether a process listens on the unix socket at `path` (`/proc/net/unix`: the `__SO_ACCEPTCON`
/// flag, 0x10000). When that table cannot be read, the socket file's existence has to do.
pub fn unix_socket_listening(path: &Path) -> bool {
    match std::fs::read_to_string("/proc/net/unix") {
        Ok(table) => listening_in_table(&table, path),
        Err(_) => true,
    }
}

/// [`unix_socket_listening`] over the text of `/proc/net/unix`
/// (`Num RefCount Protocol Flags Type St Inode Path`).
pub fn listening_in_table(table: &str, path: &Path) -> bool {
    const ACCEPT_CONNECTIONS: u32 = 0x10000;
    let Some(wanted) = path.to_str() else {
        return true;
    };
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7..].join(" ") == wanted
            && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & ACCEPT_CONNECTIONS != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_counts_as_ready_once_it_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctrl.sock");
        // Bound but not listening (as swtpm's socket between bind() and listen()): a datagram
        // socket never listens.
        let table = |path: &Path| {
            std::fs::read_to_string("/proc/net/unix").map(|t| listening_in_table(&t, path))
        };
        let _bound = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        assert_eq!(table(&path).ok(), Some(false));
        let other = dir.path().join("other.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
        assert_eq!(table(&other).ok(), Some(true));
        let sample = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                      0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/a b.sock\n\
                      0000000000000000: 00000002 00000000 00000000 0001 01 12346 /run/c.sock\n";
        assert!(listening_in_table(sample, Path::new("/run/a b.sock")));
        assert!(!listening_in_table(sample, Path::new("/run/c.sock")));
        assert!(!listening_in_table(sample, Path::new("/run/d.sock")));
    }
}
