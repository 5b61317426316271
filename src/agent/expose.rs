//! `burrow expose`: registers a tunnel and serves the streams the hub opens for it by dialing
//! the target, reconnecting (and so resuming the tunnel's lease) when the connection drops.
//! One connection carries every tunnel of the agent: the one it was started with and any the
//! hub places on it later (`HubMsg::Exposed`), each stream naming its tunnel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::session::{self, SessionEnd};
use super::target::{bad_gateway, connect_target, serve_udp_flow, StreamContext, Target, Targets};
use super::{AgentConfig, AgentError, Backoff, FirstConnection, SessionUp};
use crate::carrier::lanes::LaneKind;
use crate::mux::{Acceptor, MuxConn, MuxStream};
use crate::shutdown::Shutdown;
use crate::types::TunnelName;
use crate::wire::io::{read_stream_header, write_frame};
use crate::wire::{AgentMsg, HubMsg, Role, TunnelInfo, TunnelSpec};

const STREAM_HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// Runs until shutdown or a fatal refusal. `on_session` is called each time a session
/// comes up: first when the tunnel is first registered, then on every reconnection.
pub async fn run(
    config: AgentConfig,
    mut spec: TunnelSpec,
    shutdown: Shutdown,
    mut on_session: impl FnMut(SessionUp<'_>),
) -> Result<(), AgentError> {
    let mut backoff = Backoff::for_reconnects();
    let mut first = FirstConnection::new(&config);
    let mut announced = false;
    // Tunnels the hub placed on this agent, registered again on every reconnection.
    let placed = Arc::new(Mutex::new(Vec::new()));
    loop {
        let end = match first.attempt(&config, register(&config, &spec, &placed)).await {
            Ok(session) => {
                backoff = Backoff::for_reconnects();
                first.done();
                // A generated name must survive reconnects so the lease is found again.
                spec.name = Some(session.info.name.clone());
                tracing::info!(tunnel = %session.info.id, name = %session.info.name, transport = %session.transport, "tunnel ready");
                on_session(SessionUp {
                    info: &session.info,
                    transport: session.transport,
                    first: !announced,
                });
                announced = true;
                config.link.up(session.transport);
                let span = tracing::info_span!(
                    "session",
                    tunnel = %session.info.name,
                    transport = %session.transport
                );
                let renamed = Mutex::new(None);
                let served = serve(&config, session, &placed, &renamed, &shutdown);
                let served = tracing::Instrument::instrument(served, span).await;
                config.link.down();
                if let Some(name) = renamed.into_inner().expect("renamed lock") {
                    spec.name = Some(name);
                }
                let end = served?;
                match &end {
                    SessionEnd::Draining => break,
                    SessionEnd::Stopped(reason) => {
                        tracing::warn!("the hub stopped this tunnel: {reason}");
                        shutdown.begin();
                        break;
                    }
                    SessionEnd::QuicIsBack => tracing::info!("QUIC works again; moving the session back to QUIC"),
                    SessionEnd::HubLeft(why) => tracing::warn!("the hub went away ({why}); reconnecting"),
                    SessionEnd::Lost(why) => tracing::warn!("connection to the hub lost ({why}); reconnecting"),
                }
                session::reconnect_delay(&end, &mut backoff)
            }
            Err(e @ AgentError::Transient(_)) => {
                tracing::warn!("cannot reach the hub: {e}");
                let delay = backoff.next_delay();
                tokio::select! {
                    paused = first.pause(&config, delay, &e) => { paused?; continue }
                    _ = shutdown.draining() => break,
                }
            }
            Err(fatal) => return Err(fatal),
        };
        tokio::select! {
            _ = tokio::time::sleep(end) => {}
            _ = shutdown.draining() => break,
        }
    }
    drain(&config, &shutdown).await;
    Ok(())
}

pub(crate) async fn drain(config: &AgentConfig, shutdown: &Shutdown) {
    let active = shutdown.active();
    if active > 0 {
        tracing::info!(active, timeout = ?config.shutdown_timeout, "draining connections");
        if !shutdown.wait_idle(config.shutdown_timeout).await {
            tracing::warn!(
                left = shutdown.active(),
                "shutdown timeout reached with connections open"
            );
        }
    }
}

/// A session with its tunnels registered on it.
struct Registered {
    conn: MuxConn,
    hub: std::net::SocketAddr,
    /// The tunnel the agent was started with.
    info: TunnelInfo,
    targets: Arc<Targets>,
    lane_token: Option<crate::types::LaneToken>,
    transport: crate::mux::Transport,
}

/// Tunnels the hub placed on this agent (`HubMsg::Exposed`), with the names it gave them.
type Placed = Arc<Mutex<Vec<TunnelSpec>>>;

fn target_of(info: &TunnelInfo, spec: &TunnelSpec) -> Target {
    Target {
        name: info.name.to_string(),
        address: spec.target.clone(),
        protocol: spec.protocol,
        proxy_protocol: spec.proxy_protocol,
    }
}

/// Registers `spec` on the session's control stream.
async fn register_one(control: &mut MuxStream, spec: &TunnelSpec) -> Result<TunnelInfo, AgentError> {
    write_frame(control, &AgentMsg::Register { spec: spec.clone() })
        .await
        .map_err(|e| AgentError::Transient(format!("registering: {e}")))?;
    match session::request_reply(control).await? {
        HubMsg::Registered { tunnel } => Ok(tunnel),
        HubMsg::Refused { code, message } => Err(AgentError::Refused { code, message }),
        other => Err(AgentError::Transient(format!(
            "unexpected answer to register: {other:?}"
        ))),
    }
}

/// Dials the hub, says hello and registers the agent's tunnel, then those the hub placed on
/// it before. One of those the hub now refuses is dropped (with a warning): the agent's own
/// tunnel is what decides whether it runs.
async fn register(config: &AgentConfig, spec: &TunnelSpec, placed: &Placed) -> Result<Registered, AgentError> {
    let (mut conn, hub) = session::dial(config, Role::Expose).await?;
    let targets = Arc::new(Targets::default());
    let registered = async {
        let lane_token = session::hello(config, &mut conn.control, Role::Expose).await?;
        let info = register_one(&mut conn.control, spec).await?;
        targets.insert(info.id, target_of(&info, spec));
        let earlier = placed.lock().expect("placed tunnels lock").clone();
        for other in earlier {
            match register_one(&mut conn.control, &other).await {
                Ok(info) => targets.insert(info.id, target_of(&info, &other)),
                Err(AgentError::Refused { message, .. }) => {
                    tracing::warn!(
                        target = other.target,
                        "the hub no longer takes a tunnel it placed here: {message}"
                    );
                    placed
                        .lock()
                        .expect("placed tunnels lock")
                        .retain(|kept| kept != &other);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((info, lane_token))
    }
    .await;
    match registered {
        Ok((info, lane_token)) => Ok(Registered {
            transport: conn.transport,
            conn,
            hub,
            info,
            targets,
            lane_token,
        }),
        Err(e) => {
            conn.lifetime.close("agent giving up");
            Err(e)
        }
    }
}

/// Serves the streams the hub opens on a registered session until it ends.
async fn serve(
    config: &AgentConfig,
    session: Registered,
    placed: &Placed,
    renamed: &Mutex<Option<TunnelName>>,
    shutdown: &Shutdown,
) -> Result<SessionEnd, AgentError> {
    let main_id = session.info.id;
    let Registered {
        conn:
            MuxConn {
                control,
                acceptor,
                lifetime,
                transport,
                ..
            },
        hub,
        lane_token,
        targets,
        ..
    } = session;
    // Lanes are the session's own kind of connection: plain beside a plain-TCP session, TLS
    // (with the same connector and server name) beside a TLS one.
    let lanes_at = match (lane_token, LaneKind::for_transport(transport)) {
        (Some(token), Some(kind)) if config.lanes > 0 => Some(super::lanes::LaneDial {
            hub,
            token,
            tls: (kind == LaneKind::Tls)
                .then(|| session::tls_connector(config))
                .transpose()?,
        }),
        _ => None,
    };
    let Some(acceptor) = acceptor else {
        lifetime.close("no incoming streams");
        return Ok(SessionEnd::Lost("the transport offers no incoming streams".into()));
    };
    let udp = crate::udp::DatagramRouter::for_connection(&lifetime, config.udp_stats.clone());
    let context = StreamContext {
        targets: targets.clone(),
        datagrams: udp,
        udp_idle: config.udp.idle_timeout,
        udp_stats: config.udp_stats.clone(),
        moved_lanes: Default::default(),
        link: config.link.clone(),
        forward_proxy: config.forward_proxy.clone(),
    };
    let context = Arc::new(context);
    let lanes = lanes_at.map(|dial| {
        tokio::spawn(super::lanes::keep_lanes(
            dial,
            config.lanes,
            context.clone(),
            lifetime.clone(),
            shutdown.clone(),
        ))
    });
    // This session's own streams, so that it can be left while they finish.
    let streams = Shutdown::new();
    let server = tokio::spawn(serve_streams(acceptor, context, shutdown.clone(), streams.clone()));
    let quic_is_back = session::quic_is_back(config, transport);
    let placed_here = |msg| match msg {
        HubMsg::Exposed { tunnel, spec } => {
            tracing::info!(tunnel = %tunnel.id, name = %tunnel.name, target = spec.target, "the hub placed a tunnel on this agent");
            targets.insert(tunnel.id, target_of(&tunnel, &spec));
            let mut placed = placed.lock().expect("placed tunnels lock");
            placed.retain(|kept| kept.name != spec.name);
            placed.push(spec);
            None
        }
        // Registered by the new name from now on, so a reconnect finds the tunnel again.
        HubMsg::Renamed { id, name } => {
            let old = targets.rename(id, &name)?;
            tracing::info!(tunnel = %id, %old, new = %name, "the tunnel was renamed through the API");
            let old = old.parse::<TunnelName>().ok();
            if id == main_id {
                *renamed.lock().expect("renamed lock") = Some(name);
            } else {
                let mut placed = placed.lock().expect("placed tunnels lock");
                if let Some(spec) = placed.iter_mut().find(|spec| spec.name == old) {
                    spec.name = Some(name);
                }
            }
            None
        }
        _ => None,
    };
    let end = session::supervise(
        control,
        &lifetime,
        shutdown,
        config.shutdown_timeout,
        quic_is_back,
        placed_here,
    )
    .await;
    let close = async move {
        server.abort();
        if let Some(lanes) = lanes {
            lanes.abort();
        }
        lifetime.close_and_flush("session over").await;
    };
    if let SessionEnd::QuicIsBack = end {
        let limit = config.shutdown_timeout;
        tokio::spawn(async move {
            streams.wait_idle(limit).await;
            close.await;
        });
    } else {
        close.await;
    }
    Ok(end)
}

/// Streams still arriving while the agent drains are served too: the hub opened them for
/// visitors it had placed on this agent before it heard of the drain (it places none after).
async fn serve_streams(mut acceptor: Acceptor, context: Arc<StreamContext>, shutdown: Shutdown, session: Shutdown) {
    while let Some(stream) = acceptor.accept().await {
        let guards = (shutdown.track(), session.track());
        let context = context.clone();
        tokio::spawn(async move {
            serve_stream(stream, &context).await;
            drop(guards);
        });
    }
}

/// One connection from the hub: dial the target and relay.
async fn serve_stream(mut stream: MuxStream, context: &StreamContext) {
    let header = match tokio::time::timeout(STREAM_HEADER_DEADLINE, read_stream_header(&mut stream)).await {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "bad stream header from the hub");
            return;
        }
        Err(_) => return,
    };
    if header.kind == crate::wire::StreamKind::Moved {
        tracing::debug!("the hub sent a lane-only stream kind on a stream");
        return;
    }
    let Some(target) = context.targets.for_stream(&header).await else {
        tracing::debug!(tunnel = %header.tunnel, "a stream for a tunnel this agent does not serve");
        return;
    };
    if header.kind == crate::wire::StreamKind::Udp {
        serve_udp_flow(context, &target, |sink, stats| {
            Some(crate::udp::UdpFlow::accept(
                stream,
                &header,
                context.datagrams.as_ref(),
                sink,
                stats,
            ))
        })
        .await;
        return;
    }
    if target.address == crate::wire::FORWARD_PROXY_TARGET {
        let counted = context.link.connection();
        match &context.forward_proxy {
            Some(proxy) => proxy.clone().serve(stream, header.peer.clone()).await,
            None => tracing::warn!(tunnel = %target.name, "a forward-proxy tunnel on an agent without --forward-proxy"),
        }
        drop(counted);
        return;
    }
    let upstream = match connect_target(&target, &header, &context.link).await {
        Ok(upstream) => upstream,
        Err(cause) => return refuse_http_visitor(stream, &target, &cause).await,
    };
    let counted = context.link.connection();
    let span = tracing::debug_span!("connection", tunnel = %target.name, peer = %header.peer);
    let relayed = crate::relay::relay_movable_at_agent(upstream, stream, &context.moved_lanes);
    match tracing::Instrument::instrument(relayed, span.clone()).await {
        Ok(moved) => {
            counted.moved(moved.b_to_a, moved.a_to_b);
            span.in_scope(|| tracing::debug!(bytes_in = moved.b_to_a, bytes_out = moved.a_to_b, "connection closed"))
        }
        Err(e) => tracing::info!(peer = %header.peer, error = %e, "relay ended with an error"),
    }
}

/// The target refused: an HTTP visitor of an `http` or `auto` tunnel gets `502 Bad Gateway`
/// naming the tunnel and the cause; any other visitor's connection just closes.
async fn refuse_http_visitor(mut stream: MuxStream, target: &Target, cause: &str) {
    if let Some(response) = bad_gateway(&mut stream, target, cause).await {
        crate::answer::answer_and_close(&mut stream, &response).await;
    }
}
