//! systemd's readiness protocol (`sd_notify`): when `NOTIFY_SOCKET` is set, every role tells
//! the service manager `READY=1` once it can carry traffic and `STOPPING=1` when it begins to
//! drain, so `Type=notify` units (`contrib/burrow-hub.service`) start and stop in order.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one. A failure is
/// logged and otherwise ignored: the process runs the same with or without systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): systemd's usual choice.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
