//! systemd's readiness protocol (`Type=notify`): `READY=1` once the API is served, `STOPPING=1`
//! when a signal ends it. Outside systemd (`$NOTIFY_SOCKET` unset: `ferrovirt serve` by hand)
//! nothing is sent.

/// Tells systemd that the API is served.
pub fn ready() {
    send(&[sd_notify::NotifyState::Ready], "READY=1");
}

/// Tells systemd that the server is stopping (running VMs stay).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping], "STOPPING=1");
}

fn send(states: &[sd_notify::NotifyState], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(false, states) {
        Ok(()) => tracing::debug!("told systemd {what}"),
        Err(error) => tracing::warn!(%error, "could not tell systemd {what} ($NOTIFY_SOCKET)"),
    }
}
