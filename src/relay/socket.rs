//! The options every TCP connection burrow relays on gets, set in one place when the
//! connection is accepted or dialled.

use std::ffi::OsString;

use nix::sys::socket::{setsockopt, sockopt::TcpCongestion};
use tokio::net::TcpStream;

/// The congestion control for connections between two loopback endpoints. Reno paces
/// nothing and is built into every Linux kernel and allowed to unprivileged processes.
const LOOPBACK_CONGESTION: &str = "reno";

/// Turns off Nagle's algorithm (relayed writes are already as large as the data allows, and
/// small request/response traffic must not wait for an ACK), and on a loopback connection
/// replaces a pacing congestion control such as BBR with Reno.
///
/// Why: BBR sizes its window from the bandwidth times the smallest round trip it has seen,
/// and on loopback that round trip is a few microseconds, while a receiver that loses its
/// CPU for a moment stalls for tens of microseconds to milliseconds. Each busy connection
/// then waits on its own window, and the pacing timer adds work per packet. Measured through
/// a tcp tunnel whose hub and agent share the host (docs/benchmarks.md, tenth session):
/// eight iperf3 streams 1.2–2.1× in five alternated peers.sh pairs, one stream 1.1–1.8×.
/// Connections over a network keep the system's choice.
pub fn configure_tcp(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    // Canonical: a dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1.
    let loopback = stream
        .peer_addr()
        .is_ok_and(|peer| peer.ip().to_canonical().is_loopback());
    if loopback {
        if let Err(e) = setsockopt(stream, TcpCongestion, &OsString::from(LOOPBACK_CONGESTION)) {
            tracing::debug!(error = %e, "cannot set the loopback congestion control");
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::getsockopt;

    use super::*;

    #[tokio::test]
    async fn loopback_connections_get_nodelay_and_reno_on_both_ends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (dialled, accepted) = tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
        let (dialled, (accepted, _)) = (dialled.unwrap(), accepted.unwrap());
        for stream in [&dialled, &accepted] {
            configure_tcp(stream);
            assert!(stream.nodelay().unwrap());
            let congestion = getsockopt(stream, TcpCongestion).unwrap();
            assert_eq!(congestion.to_str().unwrap().trim_end_matches('\0'), LOOPBACK_CONGESTION);
        }
    }
}
