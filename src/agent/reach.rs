//! `burrow reach`: binds a local port and carries each local connection through the hub to
//! an exposed tunnel, keeping the port open across reconnections to the hub. Underneath,
//! a [`ReachLink`] is the connection itself: it opens streams to any tunnel the user may
//! reach, named per stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{self, SessionEnd};
use super::{AgentConfig, AgentError, Backoff, FirstConnection};
use crate::carrier::{AgentLink, Peer, Visitor};
use crate::mux::{Lifetime, MuxConn, MuxStream, Opener};
use crate::shutdown::Shutdown;
use crate::types::{Protocol, TunnelId};
use crate::udp::{serve_udp_socket, DatagramRouter, FlowOpener};
use crate::wire::io::write_frame;
use crate::wire::{AgentMsg, HubMsg, ListenOutcome, Role, TunnelInfo, TunnelRef};

/// What `reach` offers local programs.
pub enum Listen {
    /// A port at this address whose every connection goes through the tunnel.
    Port(String),
    /// A forward proxy at `address` (`--http-proxy`), routing each request; its `TUNNEL`
    /// routes are streams of this agent's connection.
    HttpProxy {
        address: String,
        settings: Box<crate::proxy::ProxySettings>,
    },
}

/// `TUNNEL` routes of `reach --http-proxy`: streams on the agent's one connection to the
/// hub, to the tunnel it was started for or another one named.
struct ReachTunnels {
    route: watch::Receiver<Option<Route>>,
    default: crate::types::TunnelId,
}

impl crate::proxy::TunnelDialer for ReachTunnels {
    fn open<'a>(
        &'a self,
        name: Option<&'a str>,
        client: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::proxy::upstream::BoxIo, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let link = current_route(self.route.clone())
                .await
                .ok_or("no connection to the hub")?;
            let tunnel = match name {
                Some(name) => TunnelRef::Name(name.to_string()),
                None => self.default.into(),
            };
            let stream = link
                .open_to(tunnel, &Peer::new(client, ""))
                .await
                .map_err(|e| format!("cannot open a stream to the hub: {e}"))?;
            Ok(Box::new(stream) as crate::proxy::upstream::BoxIo)
        })
    }
}

/// How long a local connection waits for the hub connection to come back.
const WAIT_FOR_HUB: Duration = Duration::from_secs(10);

/// The live route to the hub: the current connection's link.
type Route = Arc<AgentLink>;

fn route(opener: Opener, lifetime: &Lifetime, config: &AgentConfig, transport: crate::mux::Transport) -> Route {
    let datagrams = DatagramRouter::for_connection(lifetime, config.udp_stats.clone());
    Arc::new(AgentLink::new(transport, opener, datagrams, None))
}

/// A `reach` agent's connection to the hub, kept up (reconnecting with backoff) until it is
/// dropped or the process drains. It carries local connections to any tunnel the user may
/// reach, by name or id, each stream naming its own.
pub struct ReachLink {
    route: watch::Receiver<Option<Route>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl ReachLink {
    /// Connects to the hub (one attempt; an error says why it failed).
    pub async fn connect(config: AgentConfig, shutdown: Shutdown) -> Result<Self, AgentError> {
        let (_, session) = connect_once(&config, None).await?;
        let (route_tx, route) = watch::channel(Some(route(session.0.clone(), &session.2, &config, session.3)));
        // Refusals after a reconnection end the keeper; streams then find no route.
        let (fatal_tx, _) = tokio::sync::mpsc::channel(1);
        let keeper = tokio::spawn(keep_connected(config, None, session, route_tx, shutdown, fatal_tx));
        Ok(Self { route, keeper })
    }

    /// Carries the local connection `tcp` from `peer` to `tunnel` until either side ends it.
    /// A tunnel the user may not reach closes the connection.
    pub async fn carry(&self, tcp: TcpStream, peer: SocketAddr, tunnel: TunnelRef) {
        carry(tcp, peer, self.route.clone(), tunnel).await;
    }
}

impl Drop for ReachLink {
    fn drop(&mut self) {
        self.keeper.abort();
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
    listen: Listen,
    shutdown: Shutdown,
    on_ready: impl FnOnce(&TunnelInfo, SocketAddr),
) -> Result<(), AgentError> {
    let mut backoff = Backoff::for_reconnects();
    let first = FirstConnection::new(&config);
    // The first resolution decides whether the tunnel exists for this user at all.
    let (info, parts) = loop {
        match first.attempt(&config, connect_once(&config, Some(&tunnel))).await {
            Ok((Some(info), parts)) => break (info, parts),
            // connect_once resolves the tunnel it is given; without an answer, try again.
            Ok((None, _)) => continue,
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
    let (local, proxy_settings) = match listen {
        Listen::Port(local) => (local, None),
        Listen::HttpProxy { address, settings } => (address, Some(settings)),
    };
    if proxy_settings.is_some() && !info.forward_proxy {
        parts.2.close("agent giving up");
        return Err(AgentError::Config(format!(
            "--http-proxy: tunnel {} is not a forward proxy; expose one with `burrow expose --forward-proxy`",
            info.name
        )));
    }
    let bind_error = |source| AgentError::Bind {
        addr: local.clone(),
        source,
    };
    let route = route(parts.0.clone(), &parts.2, &config, parts.3);
    let tunnel_id = info.id;
    let (route_tx, route_rx) = watch::channel(Some(route));
    let proxy = proxy_settings.map(|settings| {
        let tunnels = ReachTunnels {
            route: route_rx.clone(),
            default: tunnel_id,
        };
        Arc::new(crate::proxy::ForwardProxy::new(crate::proxy::ProxySettings {
            tunnels: Some(Arc::new(tunnels)),
            ..*settings
        }))
    });
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<AgentError>(1);
    let start_keeper = |parts| {
        tokio::spawn(keep_connected(
            config.clone(),
            Some(tunnel.clone()),
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
                let link = current_route(route).await?;
                let flow = link.open_flow(tunnel_id, client.to_string(), sink, stats, &NO_LANES);
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
                    let counted = config.link.connection();
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        match proxy {
                            Some(proxy) => proxy.serve(tcp, peer.to_string()).await,
                            None => {
                                if let Some(moved) = carry(tcp, peer, route, tunnel_id.into()).await {
                                    counted.moved(moved.a_to_b, moved.b_to_a);
                                }
                            }
                        }
                        drop((counted, guard));
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

/// Dials, says hello and resolves `tunnel` if given.
async fn connect_once(config: &AgentConfig, tunnel: Option<&str>) -> Result<(Option<TunnelInfo>, Session), AgentError> {
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
        let Some(tunnel) = tunnel else {
            return Ok(None);
        };
        write_frame(
            &mut control,
            &AgentMsg::Resolve {
                tunnel: tunnel.to_string(),
            },
        )
        .await
        .map_err(|e| AgentError::Transient(format!("resolving: {e}")))?;
        match session::request_reply(&mut control).await? {
            HubMsg::Resolved { tunnel } => Ok(Some(tunnel)),
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
type Session = (Opener, MuxStream, Lifetime, crate::mux::Transport);

/// Keeps a connection to the hub, publishing the current route; reconnects with backoff.
async fn keep_connected(
    config: AgentConfig,
    tunnel: Option<String>,
    first: Session,
    route: watch::Sender<Option<Route>>,
    shutdown: Shutdown,
    fatal: tokio::sync::mpsc::Sender<AgentError>,
) {
    let mut backoff = Backoff::for_reconnects();
    let (_, mut control, mut lifetime, mut transport) = first;
    config.link.up(transport);
    loop {
        let quic_is_back = session::quic_is_back(&config, transport);
        // Listeners the hub asked for live as long as this connection.
        let mut listeners = Vec::new();
        let on_message = |msg| match msg {
            HubMsg::Listen {
                request,
                tunnel,
                port,
                exact,
            } => {
                let (outcome, listener) = listen_for_hub(tunnel, port, exact, route.subscribe(), &shutdown);
                listeners.extend(listener);
                Some(AgentMsg::Listened { request, outcome })
            }
            _ => None,
        };
        let end = session::supervise(
            control,
            &lifetime,
            &shutdown,
            config.shutdown_timeout,
            quic_is_back,
            on_message,
        )
        .await;
        for listener in listeners {
            listener.abort();
        }
        match &end {
            SessionEnd::Draining => {
                config.link.down();
                return;
            }
            SessionEnd::QuicIsBack => tracing::info!("QUIC works again; moving the session back to QUIC"),
            SessionEnd::Stopped(reason) | SessionEnd::Lost(reason) | SessionEnd::HubLeft(reason) => {
                tracing::warn!("connection to the hub lost ({reason}); reconnecting");
            }
        }
        route.send_replace(None);
        config.link.down();
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
            match connect_once(&config, tunnel.as_deref()).await {
                Ok((_, (opener, new_control, new_lifetime, new_transport))) => {
                    tracing::info!(transport = %new_transport, "reconnected to the hub");
                    backoff = Backoff::for_reconnects();
                    transport = new_transport;
                    config.link.up(transport);
                    route.send_replace(Some(self::route(opener, &new_lifetime, &config, new_transport)));
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

/// Opens the local listener a [`HubMsg::Listen`] asks for (127.0.0.1) and the task that
/// carries its connections to `tunnel`.
fn listen_for_hub(
    tunnel: TunnelId,
    port: u16,
    exact: bool,
    route: watch::Receiver<Option<Route>>,
    shutdown: &Shutdown,
) -> (ListenOutcome, Option<tokio::task::JoinHandle<()>>) {
    let bind = |port: u16| -> std::io::Result<TcpListener> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    };
    let bound = match bind(port) {
        Err(e) if !exact && port != 0 => {
            tracing::debug!(port, error = %e, "the port asked for is taken; listening on any");
            bind(0)
        }
        bound => bound,
    };
    let listener = match bound {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let message = format!("port {port} is in use on the agent's host");
            return (ListenOutcome::Taken { message }, None);
        }
        Err(e) => return (ListenOutcome::Failed { message: e.to_string() }, None),
    };
    let port = listener.local_addr().map_or(0, |a| a.port());
    tracing::info!(tunnel = %tunnel, port, "listening for the hub's connect request");
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        while let Some((tcp, peer)) = shutdown.accept(&listener, "connect listener").await {
            crate::relay::configure_tcp(&tcp);
            let (route, guard) = (route.clone(), shutdown.track());
            tokio::spawn(async move {
                carry(tcp, peer, route, tunnel.into()).await;
                drop(guard);
            });
        }
    });
    (ListenOutcome::Listening { port }, Some(task))
}

/// One local connection: open a stream to `tunnel` and relay. The bytes it moved, once it
/// ended cleanly.
async fn carry(
    tcp: TcpStream,
    peer: SocketAddr,
    route: watch::Receiver<Option<Route>>,
    tunnel: TunnelRef,
) -> Option<crate::relay::Transferred> {
    let Some(link) = current_route(route).await else {
        tracing::warn!(%peer, "no connection to the hub; dropping local connection");
        return None;
    };
    match link
        .carry(tunnel, Visitor::Tcp(tcp), &Peer::new(peer, ""), &NO_LANES)
        .await
    {
        Ok(Ok(moved)) => return Some(moved),
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "relay ended with an error"),
        Err(_) => tracing::warn!(%peer, "cannot open a stream to the hub; dropping local connection"),
    }
    None
}

/// A `reach` agent's connection has no lanes: nothing is ever counted here.
static NO_LANES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
