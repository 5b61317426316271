//! `burrow reach`: binds a local port and carries each local connection through the hub to
//! an exposed tunnel, keeping the port open across reconnections to the hub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{self, SessionEnd};
use super::{AgentConfig, AgentError, Backoff, FirstConnection};
use crate::mux::{Lifetime, MuxConn, MuxStream, Opener};
use crate::shutdown::Shutdown;
use crate::types::{Protocol, TunnelId};
use crate::udp::{serve_udp_socket, DatagramRouter, FlowOpener, UdpFlow};
use crate::wire::io::write_frame;
use crate::wire::{AgentMsg, HubMsg, Role, StreamHeader, StreamKind, TunnelInfo};

/// How long a local connection waits for the hub connection to come back.
const WAIT_FOR_HUB: Duration = Duration::from_secs(10);

/// The live route to the tunnel: where to open streams, which tunnel id to name, and the
/// connection's datagram router for UDP flows over QUIC.
#[derive(Clone)]
struct Route {
    opener: Opener,
    tunnel: TunnelId,
    datagrams: Option<Arc<DatagramRouter>>,
}

impl Route {
    fn new(opener: Opener, tunnel: TunnelId, lifetime: &Lifetime, config: &AgentConfig) -> Self {
        let datagrams = match lifetime {
            Lifetime::Quic(conn, _) => Some(DatagramRouter::start(conn.clone(), config.udp_stats.clone())),
            Lifetime::H2 { .. } => None,
        };
        Self {
            opener,
            tunnel,
            datagrams,
        }
    }
}

/// Waits (bounded) for a connection to the hub.
async fn current_route(mut route: watch::Receiver<Option<Route>>) -> Option<Route> {
    match tokio::time::timeout(WAIT_FOR_HUB, route.wait_for(Option::is_some)).await {
        Ok(Ok(current)) => current.clone(),
        _ => None,
    }
}

pub async fn run(
    config: AgentConfig,
    tunnel: String,
    local: String,
    shutdown: Shutdown,
    on_ready: impl FnOnce(&TunnelInfo, SocketAddr),
) -> Result<(), AgentError> {
    let mut backoff = Backoff::for_reconnects();
    let first = FirstConnection::new(&config);
    // The first resolution decides whether the tunnel exists for this user at all.
    let (info, parts) = loop {
        match first.attempt(&config, connect_once(&config, &tunnel)).await {
            Ok(connected) => break connected,
            Err(e @ AgentError::Transient(_)) => {
                tracing::warn!("cannot reach the hub: {e}");
                tokio::select! {
                    paused = first.pause(&config, backoff.next_delay(), &e) => paused?,
                    _ = shutdown.draining() => return Ok(()),
                }
            }
            Err(fatal) => return Err(fatal),
        }
    };
    let bind_error = |source| AgentError::Bind {
        addr: local.clone(),
        source,
    };
    let route = Route::new(parts.0.clone(), info.id, &parts.2, &config);
    let (route_tx, route_rx) = watch::channel(Some(route));
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<AgentError>(1);
    let start_keeper = |parts| {
        tokio::spawn(keep_connected(
            config.clone(),
            tunnel.clone(),
            parts,
            route_tx,
            shutdown.clone(),
            fatal_tx,
        ))
    };

    let result = if info.protocol == Protocol::Udp {
        let socket = bind_udp(&local).await.map_err(bind_error)?;
        on_ready(&info, socket.local_addr().map_err(bind_error)?);
        let keeper = start_keeper(parts);
        let stats = config.udp_stats.clone();
        let open: FlowOpener = Arc::new(move |client, sink| {
            let (route, stats) = (route_rx.clone(), stats.clone());
            Box::pin(async move {
                let route = current_route(route).await?;
                let flow = UdpFlow::open(
                    &route.opener,
                    route.datagrams.as_ref(),
                    route.tunnel,
                    client.to_string(),
                    sink,
                    stats,
                );
                flow.await
                    .map_err(|e| tracing::warn!(error = %e, "cannot open a UDP flow"))
                    .ok()
            })
        });
        let served = serve_udp_socket(socket, open, config.udp, config.udp_stats.clone(), shutdown.clone());
        let result = tokio::select! {
            _ = served => Ok(()),
            fatal = fatal_rx.recv() => fatal.map_or(Ok(()), Err),
        };
        keeper.abort();
        result
    } else {
        let listener = TcpListener::bind(&local).await.map_err(bind_error)?;
        on_ready(&info, listener.local_addr().map_err(bind_error)?);
        let keeper = start_keeper(parts);
        let result = loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.draining() => break Ok(()),
                fatal = fatal_rx.recv() => break fatal.map_or(Ok(()), Err),
            };
            match accepted {
                Ok((tcp, peer)) => {
                    crate::relay::configure_tcp(&tcp);
                    let guard = shutdown.track();
                    let route = route_rx.clone();
                    tokio::spawn(async move {
                        carry(tcp, peer, route).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "local accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        drop(listener);
        super::expose::drain(&config, &shutdown).await;
        keeper.abort();
        result
    };
    result
}

/// A non-blocking std UDP socket bound at `local` (a name is resolved first).
async fn bind_udp(local: &str) -> std::io::Result<std::net::UdpSocket> {
    let addr = tokio::net::lookup_host(local)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Dials, says hello and resolves the tunnel.
async fn connect_once(config: &AgentConfig, tunnel: &str) -> Result<(TunnelInfo, Session), AgentError> {
    let (
        MuxConn {
            mut control,
            opener,
            lifetime,
            transport,
            ..
        },
        _hub,
    ) = session::dial(config, Role::Reach).await?;
    let resolved = async {
        session::hello(config, &mut control, Role::Reach).await?;
        write_frame(
            &mut control,
            &AgentMsg::Resolve {
                tunnel: tunnel.to_string(),
            },
        )
        .await
        .map_err(|e| AgentError::Transient(format!("resolving: {e}")))?;
        match session::request_reply(&mut control).await? {
            HubMsg::Resolved { tunnel } => Ok(tunnel),
            HubMsg::Refused { code, message } => Err(AgentError::Refused { code, message }),
            other => Err(AgentError::Transient(format!(
                "unexpected answer to resolve: {other:?}"
            ))),
        }
    }
    .await;
    match (resolved, opener) {
        (Ok(info), Some(opener)) => Ok((info, (opener, control, lifetime, transport))),
        (Ok(_), None) => Err(AgentError::Transient("transport cannot open streams".into())),
        (Err(e), _) => {
            lifetime.close("agent giving up");
            Err(e)
        }
    }
}

/// An established session: where to open streams, its control stream, its lifetime and
/// transport.
type Session = (Opener, MuxStream, Lifetime, &'static str);

/// Keeps a connection to the hub, publishing the current route; reconnects with backoff.
async fn keep_connected(
    config: AgentConfig,
    tunnel: String,
    first: Session,
    route: watch::Sender<Option<Route>>,
    shutdown: Shutdown,
    fatal: tokio::sync::mpsc::Sender<AgentError>,
) {
    let mut backoff = Backoff::for_reconnects();
    let (_, mut control, mut lifetime, mut transport) = first;
    loop {
        let quic_is_back = session::quic_is_back(&config, transport);
        let end = session::supervise(control, &lifetime, &shutdown, config.shutdown_timeout, quic_is_back).await;
        match &end {
            SessionEnd::Draining => return,
            SessionEnd::QuicIsBack => tracing::info!("QUIC works again; moving the session back to QUIC"),
            SessionEnd::Stopped(reason) | SessionEnd::Lost(reason) | SessionEnd::HubLeft(reason) => {
                tracing::warn!("connection to the hub lost ({reason}); reconnecting");
            }
        }
        route.send_replace(None);
        if let SessionEnd::QuicIsBack = end {
            // New connections take the QUIC session; those running here get the drain time.
            let (old, limit) = (lifetime.clone(), config.shutdown_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                old.close("moved to QUIC");
            });
        } else {
            lifetime.close("reconnecting");
        }
        let mut delay = session::reconnect_delay(&end, &mut backoff);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.draining() => return,
            }
            match connect_once(&config, &tunnel).await {
                Ok((info, (opener, new_control, new_lifetime, new_transport))) => {
                    tracing::info!(tunnel = %info.id, transport = new_transport, "reconnected to the hub");
                    backoff = Backoff::for_reconnects();
                    transport = new_transport;
                    route.send_replace(Some(Route::new(opener, info.id, &new_lifetime, &config)));
                    control = new_control;
                    lifetime = new_lifetime;
                    break;
                }
                Err(e @ AgentError::Transient(_)) => tracing::warn!("cannot reach the hub: {e}"),
                Err(e) => {
                    let _ = fatal.send(e).await;
                    return;
                }
            }
            delay = backoff.next_delay();
        }
    }
}

/// One local connection: open a stream to the tunnel and relay.
async fn carry(tcp: TcpStream, peer: SocketAddr, route: watch::Receiver<Option<Route>>) {
    let Some(Route { opener, tunnel, .. }) = current_route(route).await else {
        tracing::warn!(%peer, "no connection to the hub; dropping local connection");
        return;
    };
    // The header and what the local client has already sent open the stream in one write.
    let header = StreamHeader {
        kind: StreamKind::Tcp,
        tunnel,
        peer: peer.to_string(),
        flow: 0,
    };
    let mut opening = bytes::BytesMut::from(&header.encode()[..]);
    if let Err(e) = crate::relay::read_arrived(&tcp, &mut opening) {
        tracing::debug!(%peer, error = %e, "local connection failed before its stream opened");
        return;
    }
    let mut stream = match opener.open().await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot open a stream to the hub");
            return;
        }
    };
    if stream.send_opening(opening.freeze()).await.is_err() {
        return;
    }
    if let Err(e) = crate::relay::relay_tcp(tcp, stream).await {
        tracing::debug!(%peer, error = %e, "relay ended with an error");
    }
}
