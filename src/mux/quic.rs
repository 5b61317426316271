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

pub fn server_endpoint(tls: Arc<rustls::ServerConfig>, addr: SocketAddr) -> Result<quinn::Endpoint, MuxError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| MuxError::Io(std::io::Error::other(e)))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(quinn::Endpoint::server(config, addr)?)
}

/// Dials the hub; the agent opens the control stream.
pub async fn connect(tls: Arc<rustls::ClientConfig>, hub: SocketAddr, server_name: &str) -> Result<MuxConn, MuxError> {
    let bind: SocketAddr = if hub.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("literal address");
    let mut endpoint = quinn::Endpoint::client(bind)?;
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
