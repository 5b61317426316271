//! QUIC transport (quinn): endpoint configuration for both sides and connection set-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::{Acceptor, Lifetime, MuxConn, MuxError, MuxStream, Opener, Transport};

/// Transport parameters tuned for tunnels: many concurrent streams, windows large enough for
/// loopback bulk transfers, and keep-alives so idle agents stay connected through NATs.
pub fn transport_config() -> quinn::TransportConfig {
    let mut mtu_discovery = quinn::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(MAX_UDP_PAYLOAD);
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
        ))
        .mtu_discovery_config(Some(mtu_discovery));
    t
}

/// Largest UDP payload (QUIC packet) MTU discovery looks for, and that this endpoint accepts.
/// quinn stops at 1,452 bytes by default, so on loopback (MTU 65,536) both processes spent
/// their CPU sealing, sending, acknowledging and tracking 1,452-byte packets: one iperf3
/// stream ran at 4.4–5.7 Gbit/s, and 8.3–9.5 with this bound. On an Ethernet path discovery
/// still settles at what the path carries (1,452), and on jumbo frames it goes higher.
///
/// The bound must fit quinn's GSO batch: quinn 0.11 hands the kernel up to 10 packets per
/// `sendmsg` (`MAX_TRANSMIT_SEGMENTS`), and Linux refuses a UDP send of more than 65,535
/// bytes with EMSGSIZE, which quinn-udp counts as sent: the whole batch is lost. 10 × 6,500
/// plus the 28 bytes of IPv4 and UDP headers is 65,028. At 6,552 (65,548) a stream fell to
/// 45 Mbit/s; earlier attempts at 8,952, 16,384 and 65,527 were slower than the default for
/// the same reason. The test below fails if a quinn upgrade batches more packets.
const MAX_UDP_PAYLOAD: u16 = 6_500;

/// Receive and send buffer asked for on the QUIC socket. The default receive buffer (208 KiB
/// on Linux) overflowed under one bulk stream on loopback: 728 datagrams dropped in 4 s
/// (`RcvbufErrors`), each one a loss that halved the congestion window; with 1 MiB, 14 were.
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max`, which is fine.
const SOCKET_BUFFER: usize = 1024 * 1024;

/// A QUIC endpoint on its own UDP socket.
fn endpoint(server: Option<quinn::ServerConfig>, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("MAX_UDP_PAYLOAD is within QUIC's 1,200..=65,527");
    quinn::Endpoint::new(config, server, socket, runtime)
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
        lifetime: Lifetime::Quic(conn, Some(endpoint)),
        transport: Transport::Quic,
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
        lifetime: Lifetime::Quic(conn, None),
        transport: Transport::Quic,
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

    /// Bulk data between two endpoints on loopback travels in packets of the discovery's
    /// upper bound and (almost) none is lost. With a bound whose GSO batch exceeded a UDP
    /// datagram's 65,535 bytes, every full batch would be refused by the kernel and lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_data_travels_in_large_packets_without_losing_batches() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        crate::tls::generate_certs(dir.path(), &["localhost".to_string()]).unwrap();
        let file = |name| dir.path().join(name);
        let server_tls = crate::tls::server_config(&file(crate::tls::SERVER_CERT), &file(crate::tls::SERVER_KEY));
        let client_tls = crate::tls::client_config(Some(&file(crate::tls::CA_CERT)))
            .unwrap()
            .config;
        let server = server_endpoint(server_tls.unwrap(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let hub = tokio::spawn(async move { accept(server.accept().await.unwrap()).await.unwrap() });
        let mut agent = connect(client_tls, addr, "localhost").await.unwrap();
        agent.control.write_all(b"hello").await.unwrap(); // a QUIC stream exists once used
        let mut hub = hub.await.unwrap();

        const LEN: usize = 32 << 20;
        let mut stream = agent.opener.as_ref().unwrap().open().await.unwrap();
        let sender = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..LEN >> 20 {
                stream.write_all(&chunk).await.unwrap();
            }
            stream.shutdown().await.unwrap();
            stream
        });
        let mut received = Vec::with_capacity(LEN);
        let transfer = async {
            let mut incoming = hub.acceptor.as_mut().unwrap().accept().await.unwrap();
            incoming.read_to_end(&mut received).await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(60), transfer)
            .await
            .expect("32 MiB arrive within a minute");
        assert_eq!(received.len(), LEN);
        drop(sender.await.unwrap());

        let Lifetime::Quic(conn, _) = &agent.lifetime else {
            panic!("a QUIC connection");
        };
        let path = conn.stats().path;
        let loopback_mtu = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .ok()
            .and_then(|mtu| mtu.trim().parse::<u32>().ok());
        if loopback_mtu.is_some_and(|mtu| mtu >= u32::from(MAX_UDP_PAYLOAD) + 28) {
            assert_eq!(
                path.current_mtu, MAX_UDP_PAYLOAD,
                "discovery reached the bound: {path:?}"
            );
        }
        assert!(
            path.lost_packets * 20 < path.sent_packets,
            "under 5% of packets lost: {path:?}"
        );
    }
}
