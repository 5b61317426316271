//! Dialing the hub over QUIC, TLS or plain TCP, and the hello that authenticates the agent.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{AgentConfig, AgentError};
use crate::mux::{self, MuxConn, MuxStream, Transport};
use crate::types::TransportKind;
use crate::wire::io::{read_frame, write_frame};
use crate::wire::{AgentMsg, ConnKind, Hello, HubMsg, Role, PREFACE, PROTOCOL_VERSION};

/// With `--transport auto`, how long QUIC gets before falling back to TLS over TCP.
const QUIC_FALLBACK_AFTER: Duration = Duration::from_secs(3);
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

fn transient(what: &str) -> impl Fn(String) -> AgentError + '_ {
    move |e| AgentError::Transient(format!("{what}: {e}"))
}

/// Splits `HOST:PORT` (with `[v6]:PORT` allowed) into the host and port.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), AgentError> {
    let bad = || AgentError::Config(format!("hub address {addr:?} is not HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port.parse().map_err(|_| bad())?))
}

/// Connects to the hub with the configured transport and returns the multiplexed connection
/// and the address it reached (lanes must go to that same hub, not another of its name's
/// addresses).
pub async fn dial(config: &AgentConfig, role: Role) -> Result<(MuxConn, SocketAddr), AgentError> {
    match config.transport {
        TransportKind::Auto => match tokio::time::timeout(QUIC_FALLBACK_AFTER, dial_quic(config)).await {
            Ok(Ok(conn)) => Ok(conn),
            // The same certificate would be refused over TLS.
            Ok(Err(e @ AgentError::Config(_))) => Err(e),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "QUIC failed; falling back to TLS over TCP");
                dial_stream(config, role, true).await
            }
            Err(_) => {
                tracing::info!("no QUIC answer within {QUIC_FALLBACK_AFTER:?}; falling back to TLS over TCP");
                dial_stream(config, role, true).await
            }
        },
        TransportKind::Quic => dial_quic(config).await,
        TransportKind::Tls => dial_stream(config, role, true).await,
        TransportKind::Tcp => dial_stream(config, role, false).await,
    }
}

async fn resolve(config: &AgentConfig) -> Result<SocketAddr, AgentError> {
    let (host, port) = split_host_port(&config.hub)?;
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| AgentError::Transient(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| AgentError::Transient(format!("{host} has no address")))
}

fn tls_config(config: &AgentConfig) -> Result<std::sync::Arc<rustls::ClientConfig>, AgentError> {
    config
        .tls
        .as_ref()
        .map(|tls| tls.config.clone())
        .ok_or_else(|| AgentError::Config("this transport needs TLS settings".into()))
}

/// A failed handshake: a refused hub certificate is a configuration error (retrying cannot
/// fix it; exit 2 with a hint), anything else is worth retrying.
fn handshake_failed(config: &AgentConfig, error: String) -> AgentError {
    match config.tls.as_ref().and_then(crate::tls::ClientTls::take_refusal) {
        Some(refusal) => AgentError::Config(format!(
            "cannot trust the hub at {}: {refusal}. Pass the CA that signed the hub's certificate with \
             --ca FILE (a hub with generated certificates keeps it in <data-dir>/certs/ca.pem)",
            config.hub
        )),
        None => AgentError::Transient(error),
    }
}

/// How often an `auto` agent that fell back to TLS checks whether QUIC works again: the
/// first check after [`QUIC_RETRY_FIRST`], then twice as long each time up to the cap.
const QUIC_RETRY_FIRST: Duration = Duration::from_secs(2);
const QUIC_RETRY_CAP: Duration = Duration::from_secs(120);

/// For an `auto` agent whose session fell back to TLS: resolves once a QUIC handshake with
/// the hub succeeds again. Never resolves otherwise.
pub async fn quic_is_back(config: &AgentConfig, transport: Transport) {
    if config.transport != TransportKind::Auto || transport == Transport::Quic {
        return std::future::pending().await;
    }
    let mut wait = QUIC_RETRY_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(QUIC_RETRY_CAP);
        match tokio::time::timeout(QUIC_FALLBACK_AFTER, dial_quic(config)).await {
            Ok(Ok((probe, _))) => {
                probe.lifetime.close("probe");
                return;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "QUIC still unavailable"),
            Err(_) => tracing::debug!("QUIC still unanswered"),
        }
    }
}

/// The TLS connector and server name for the hub, as the session and its lanes use them.
pub(super) fn tls_connector(
    config: &AgentConfig,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), AgentError> {
    let (host, _) = split_host_port(&config.hub)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| AgentError::Config(format!("{host} is not a valid TLS server name: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(tls_config(config)?), name))
}

async fn dial_quic(config: &AgentConfig) -> Result<(MuxConn, SocketAddr), AgentError> {
    let addr = resolve(config).await?;
    let (host, _) = split_host_port(&config.hub)?;
    let conn = tokio::time::timeout(CONNECT_DEADLINE, mux::quic::connect(tls_config(config)?, addr, host))
        .await
        .map_err(|_| AgentError::Transient("QUIC connect timed out".into()))?
        .map_err(|e| handshake_failed(config, format!("QUIC to {}: {e}", config.hub)))?;
    Ok((conn, addr))
}

async fn dial_stream(config: &AgentConfig, role: Role, tls: bool) -> Result<(MuxConn, SocketAddr), AgentError> {
    let addr = resolve(config).await?;
    let tcp = tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(addr))
        .await
        .map_err(|_| AgentError::Transient(format!("connecting to {addr} timed out")))?
        .map_err(|e| transient(&format!("connecting to {addr}"))(e.to_string()))?;
    crate::relay::configure_tcp(&tcp);
    let mut preface = PREFACE.to_vec();
    preface.push(ConnKind::Agent(role).byte());
    if tls {
        let (connector, name) = tls_connector(config)?;
        let mut io = tokio::time::timeout(CONNECT_DEADLINE, connector.connect(name, tcp))
            .await
            .map_err(|_| AgentError::Transient("TLS handshake timed out".into()))?
            .map_err(|e| handshake_failed(config, format!("TLS handshake with {}: {e}", config.hub)))?;
        io.write_all(&preface)
            .await
            .map_err(|e| transient("writing preface")(e.to_string()))?;
        Ok((h2_for_role(io, role, Transport::Tls).await?, addr))
    } else {
        let mut io = tcp;
        io.write_all(&preface)
            .await
            .map_err(|e| transient("writing preface")(e.to_string()))?;
        Ok((h2_for_role(io, role, Transport::Tcp).await?, addr))
    }
}

/// The agent is the HTTP/2 server when the hub opens the streams (`expose`), the client when
/// it opens them itself (`reach`).
async fn h2_for_role<T>(io: T, role: Role, transport: Transport) -> Result<MuxConn, AgentError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = match role {
        Role::Expose => mux::h2::server(io, transport).await,
        Role::Reach => mux::h2::client(io, transport).await,
    };
    conn.map_err(|e| AgentError::Transient(format!("HTTP/2 set-up: {e}")))
}

/// Sends the hello and waits for the hub's verdict: the lane token it offers, if any.
pub async fn hello(
    config: &AgentConfig,
    control: &mut MuxStream,
    role: Role,
) -> Result<Option<crate::types::LaneToken>, AgentError> {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        user: config.user.clone(),
        access_key: config.access_key.clone(),
        agent_id: config.agent_id,
        role,
        hostname: nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        client_version: env!("CARGO_PKG_VERSION").into(),
        share: config.share.clone(),
    };
    write_frame(control, &AgentMsg::Hello(hello))
        .await
        .map_err(|e| transient("sending hello")(e.to_string()))?;
    match request_reply(control).await? {
        HubMsg::Welcome { lane_token, .. } => Ok(lane_token),
        HubMsg::Refused { code, message } => Err(AgentError::Refused { code, message }),
        other => Err(AgentError::Transient(format!("unexpected answer to hello: {other:?}"))),
    }
}

/// Reads the hub's next control message, bounded in time.
pub async fn request_reply(control: &mut MuxStream) -> Result<HubMsg, AgentError> {
    match tokio::time::timeout(CONNECT_DEADLINE, read_frame::<_, HubMsg>(control)).await {
        Ok(Ok(Some(msg))) => Ok(msg),
        Ok(Ok(None)) => Err(AgentError::Transient("hub closed the control stream".into())),
        Ok(Err(e)) => Err(AgentError::Transient(format!("control stream: {e}"))),
        Err(_) => Err(AgentError::Transient("hub did not answer in time".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_addresses_split_into_host_and_port() {
        assert_eq!(split_host_port("hub.example:7443").unwrap(), ("hub.example", 7443));
        assert_eq!(split_host_port("[::1]:7443").unwrap(), ("::1", 7443));
        assert!(split_host_port("nohost").is_err());
        assert!(split_host_port(":7443").is_err());
        assert!(split_host_port("h:notaport").is_err());
    }
}

/// Why a connected session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The connection dropped or the hub went silent: reconnect with backoff.
    Lost(String),
    /// The hub said it was going away (a restart, most often) and then closed the
    /// connection: reconnect promptly, as it is likely back soon.
    HubLeft(String),
    /// An `auto` agent on TLS found QUIC working again and told the hub it is draining this
    /// session: reconnect at once, over QUIC, while running connections finish here.
    QuicIsBack,
    /// The hub told the agent to stop serving (replaced by a newer agent, deleted).
    Stopped(String),
    /// This process is shutting down.
    Draining,
}

/// How often the agent pings the hub, and how long a silent hub is tolerated. QUIC has its
/// own keep-alive; this also catches a dead TCP connection under HTTP/2.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(35);

/// Watches an established session: pings the hub, handles its control messages (those it
/// does not act on itself go to `on_message`), and returns when the connection is lost, the
/// hub stops the agent, `quic_is_back` resolves, or the process starts draining.
///
/// On draining it tells the hub (which then sends no new connections) and keeps the
/// connection up until running connections finish or `drain_limit` passes.
pub async fn supervise(
    control: MuxStream,
    lifetime: &mux::Lifetime,
    shutdown: &crate::shutdown::Shutdown,
    drain_limit: Duration,
    quic_is_back: impl std::future::Future<Output = ()>,
    mut on_message: impl FnMut(HubMsg) -> Option<AgentMsg>,
) -> SessionEnd {
    let (mut reader, mut writer) = tokio::io::split(control);
    // Reading runs in its own task: a frame read is not cancel-safe, so it must never be a
    // select! branch that other branches can interrupt half-way.
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::channel::<Result<HubMsg, String>>(8);
    let read_task = tokio::spawn(async move {
        loop {
            let next = match read_frame::<_, HubMsg>(&mut reader).await {
                Ok(Some(msg)) => Ok(msg),
                Ok(None) => Err("hub closed the control stream".to_string()),
                Err(e) => Err(format!("control stream: {e}")),
            };
            let failed = next.is_err();
            if msg_tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    let mut hub_leaving: Option<String> = None;
    let lost = |why: String, hub_leaving: &Option<String>| match hub_leaving {
        Some(reason) => SessionEnd::HubLeft(reason.clone()),
        None => SessionEnd::Lost(why),
    };
    tokio::pin!(quic_is_back);
    let end = loop {
        tokio::select! {
            msg = msg_rx.recv() => match msg {
                Some(Ok(HubMsg::StopTunnel { reason, .. })) => break SessionEnd::Stopped(reason),
                Some(Ok(HubMsg::GoingAway { reason })) => {
                    tracing::info!("the hub is going away ({reason}); reconnecting once it closes");
                    last_heard = tokio::time::Instant::now();
                    hub_leaving = Some(reason);
                }
                Some(Ok(other)) => {
                    last_heard = tokio::time::Instant::now();
                    if let Some(answer) = on_message(other) {
                        if let Err(e) = write_frame(&mut writer, &answer).await {
                            break lost(format!("answering the hub: {e}"), &hub_leaving);
                        }
                    }
                }
                Some(Err(e)) => break lost(e, &hub_leaving),
                None => break lost("control reader ended".into(), &hub_leaving),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    break lost(format!("hub silent for {SILENCE_LIMIT:?}"), &hub_leaving);
                }
                if let Err(e) = write_frame(&mut writer, &AgentMsg::Ping).await {
                    break lost(format!("sending ping: {e}"), &hub_leaving);
                }
            }
            _ = lifetime.closed() => break lost("connection closed".into(), &hub_leaving),
            _ = &mut quic_is_back, if hub_leaving.is_none() => {
                // Out of the hub's pools first: new connections wait for the QUIC session
                // while the running ones finish on this one.
                if write_frame(&mut writer, &AgentMsg::Draining).await.is_err() {
                    break lost("sending drain".into(), &hub_leaving);
                }
                break SessionEnd::QuicIsBack;
            }
            _ = shutdown.draining() => {
                if write_frame(&mut writer, &AgentMsg::Draining).await.is_ok() {
                    shutdown.wait_idle(drain_limit).await;
                }
                break SessionEnd::Draining;
            }
        }
    };
    read_task.abort();
    end
}

/// The pause before the first attempt to reach the hub again after a session ended with
/// `end`; `backoff` becomes the pace of the attempts that follow.
pub fn reconnect_delay(end: &SessionEnd, backoff: &mut super::Backoff) -> Duration {
    match end {
        SessionEnd::QuicIsBack => Duration::ZERO,
        SessionEnd::HubLeft(_) => {
            // A restarting hub is usually back within a second or two: retry often (with
            // jitter, so its agents do not all arrive at once) until it answers.
            *backoff = super::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
            backoff.next_delay()
        }
        _ => backoff.next_delay(),
    }
}
