//! QUIC transport (quinn): endpoint configuration for both sides and connection set-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::{Acceptor, Lifetime, MuxConn, MuxError, MuxStream, Opener};

/// Transport parameters tuned for tunnels: many concurrent streams, windows large enough for
/// loopback bulk transfers, and keep-alives so idle agents stay connected through NATs.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(32768u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((2u32 * 1024 * 1024).into())
        .receive_window((16u32 * 1024 * 1024).into())
        .send_window(16 * 1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Some(
            Duration::from_secs(20)
                .try_into()
                .expect("20 s is a valid idle timeout"),
        ));
    t
}

/// Receive and send buffer asked for on the QUIC socket. The default receive buffer (208 KiB
/// on Linux) overflowed under one bulk stream on loopback: 728 datagrams dropped in 4 s
/// (`RcvbufErrors`), each one a loss that halved the congestion window; with 1 MiB, 14 were.
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max`, which is fine.
const SOCKET_BUFFER: usize = 1024 * 1024;

/// A QUIC endpoint on its own UDP socket.
fn endpoint(server: Option<quinn::ServerConfig>, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// A UDP socket bound to `addr` with buffers of [`SOCKET_BUFFER`] where the kernel allows.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the QUIC receive buffer");
    }
    if let Err(e) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the QUIC send buffer");
    }
    Ok(socket)
}

pub fn server_endpoint(tls: Arc<rustls::ServerConfig>, addr: SocketAddr) -> Result<quinn::Endpoint, MuxError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| MuxError::Io(std::io::Error::other(e)))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(endpoint(Some(config), addr)?)
}

/// Dials the hub; the agent opens the control stream.
pub async fn connect(tls: Arc<rustls::ClientConfig>, hub: SocketAddr, server_name: &str) -> Result<MuxConn, MuxError> {
    let bind: SocketAddr = if hub.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("literal address");
    let mut endpoint = endpoint(None, bind)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| MuxError::Io(std::io::Error::other(e)))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(hub, server_name)?.await?;
    let (send, recv) = conn.open_bi().await?;
    Ok(MuxConn {
        control: MuxStream::Quic { send, recv },
        opener: Some(Opener::Quic(conn.clone())),
        acceptor: Some(Acceptor::Quic(conn.clone())),
        lifetime: Lifetime::Quic(conn),
        transport: "quic",
    })
}

/// Completes the hub side of an incoming QUIC connection: waits for the agent's control stream.
pub async fn accept(incoming: quinn::Incoming) -> Result<MuxConn, MuxError> {
    let conn = incoming.await?;
    let (send, recv) = conn.accept_bi().await?;
    Ok(MuxConn {
        control: MuxStream::Quic { send, recv },
        opener: Some(Opener::Quic(conn.clone())),
        acceptor: Some(Acceptor::Quic(conn.clone())),
        lifetime: Lifetime::Quic(conn),
        transport: "quic",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_sockets_get_larger_buffers_where_the_kernel_allows() {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let state = quinn::udp::UdpSocketState::new((&socket).into()).unwrap();
        let got = state.recv_buffer_size((&socket).into()).unwrap();
        // Linux reports double the request; a lower `rmem_max` caps it (then at twice that).
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|max| max.trim().parse::<usize>().ok())
            .unwrap_or(SOCKET_BUFFER);
        assert!(got >= SOCKET_BUFFER.min(cap), "receive buffer {got} bytes");
    }
}
