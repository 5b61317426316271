//! The options every TCP connection burrow relays on gets, set in one place when the
//! connection is accepted or dialled.

use tokio::net::TcpStream;

/// Turns off Nagle's algorithm: relayed writes are already as large as the data allows, and
/// small request/response traffic must not wait for an ACK. The congestion control stays the
/// system's choice.
pub fn configure_tcp(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}
