//! Visitors: connections arriving on a tunnel's public port, routed by name on the main
//! port, or coming from a `reach` agent. Each becomes one stream to a member agent.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};

use super::lanes::{Lane, LaneKind, LanePool, TlsLane};
use super::registry::{PublicSocket, Tunnel};
use super::Shared;
use crate::mux::MuxStream;
use crate::relay::{relay_io, relay_movable_at_hub, relay_streams, relay_tcp, Transferred};
use crate::shutdown::Shutdown;
use crate::types::{Protocol, UserName};
use crate::udp::{serve_udp_socket, splice_flows, DatagramRouter, FlowOpener, Sink, UdpFlow, UdpLimits, UdpStats};
use crate::wire::{self, StreamHeader, StreamKind, TunnelRef};

/// A reach agent must name its tunnel this quickly after opening a stream.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// What the data plane of public ports needs from the hub.
#[derive(Clone)]
pub struct PublicContext {
    pub shutdown: Shutdown,
    pub visitor_wait: Duration,
    pub udp: UdpLimits,
    pub udp_stats: Arc<UdpStats>,
}

pub fn spawn_public_listener(
    tunnel: Arc<Tunnel>,
    socket: PublicSocket,
    context: PublicContext,
) -> tokio::task::JoinHandle<()> {
    match socket {
        PublicSocket::Tcp(listener) => tokio::spawn(serve_tcp_port(tunnel, listener, context)),
        PublicSocket::Udp(socket) => {
            let open: FlowOpener = {
                let (tunnel, stats, wait) = (tunnel.clone(), context.udp_stats.clone(), context.visitor_wait);
                Arc::new(move |client, sink| {
                    let (tunnel, stats) = (tunnel.clone(), stats.clone());
                    Box::pin(async move { open_flow_to_member(&tunnel, client.to_string(), sink, wait, stats).await })
                })
            };
            let limits = context.udp;
            tokio::spawn(serve_udp_socket(
                socket,
                open,
                limits,
                context.udp_stats,
                context.shutdown,
            ))
        }
    }
}

async fn serve_tcp_port(tunnel: Arc<Tunnel>, listener: TcpListener, context: PublicContext) {
    while let Some((stream, peer)) = context.shutdown.accept(&listener, "public port").await {
        crate::relay::configure_tcp(&stream);
        let guard = context.shutdown.track();
        let tunnel = tunnel.clone();
        let wait = context.visitor_wait;
        tokio::spawn(async move {
            serve_visitor(tunnel, Visitor::Tcp(stream), peer.to_string(), wait).await;
            drop(guard);
        });
    }
}

/// Opens a UDP flow to a member of `tunnel` for client `peer`: on an idle plain lane of that
/// member if there is one (flows frame their datagrams straight into the socket), else on a
/// multiplexed stream.
async fn open_flow_to_member(
    tunnel: &Tunnel,
    peer: String,
    sink: Sink,
    wait: Duration,
    stats: Arc<UdpStats>,
) -> Option<UdpFlow> {
    let member = tunnel.pick_member(wait).await?;
    let plain_lanes = member.lanes.as_ref().filter(|pool| pool.kind() == LaneKind::Plain);
    if let Some(Lane::Plain(lane)) = plain_lanes.and_then(|pool| pool.take()) {
        return match UdpFlow::open_on_lane(lane, tunnel.id, peer, sink, stats).await {
            Ok(flow) => {
                tunnel.lane_visitors.fetch_add(1, Ordering::Relaxed);
                Some(flow)
            }
            Err(e) => {
                tracing::warn!(tunnel = %tunnel.id, error = %e, "opening a UDP flow on a lane failed");
                None
            }
        };
    }
    match UdpFlow::open(&member.opener, member.datagrams.as_ref(), tunnel.id, peer, sink, stats).await {
        Ok(flow) => Some(flow),
        Err(e) => {
            tracing::warn!(tunnel = %tunnel.id, error = %e, "opening a UDP flow to the agent failed");
            None
        }
    }
}

/// Where a visitor's bytes come from.
pub enum Visitor {
    /// A connection to the tunnel's public port.
    Tcp(TcpStream),
    /// A connection routed by name on the main port: the bytes read while sniffing come first;
    /// `http` when it was routed by an HTTP `Host` (else by TLS SNI).
    Routed {
        sniffed: bytes::BytesMut,
        tcp: TcpStream,
        http: bool,
    },
    /// A stream from a `reach` agent.
    Reach(MuxStream),
}

/// Carries one visitor connection to a member of `tunnel`: on an idle TLS lane of that member
/// if it has one, else on a new multiplexed stream (which may move onto a plain lane of that
/// member once bulk).
pub async fn serve_visitor(tunnel: Arc<Tunnel>, visitor: Visitor, peer: String, wait: Duration) {
    let Some(member) = tunnel.pick_member(wait).await else {
        tracing::debug!(tunnel = %tunnel.id, %peer, "no agent serves the tunnel; refusing visitor");
        let cause = "no agent is connected (it may be reconnecting); try again shortly";
        refuse_visitor(&tunnel, visitor, &[], cause).await;
        return;
    };
    let header = StreamHeader::tcp(tunnel.id, peer.clone()).encode();
    // A visitor of a session with plain lanes starts on the multiplexer and moves to a lane
    // once bulk (`relay/moving.rs`); lane framing runs between two sockets, so a reach
    // stream stays on the multiplexer. A TLS lane carries any visitor at once: connections
    // do not move onto TLS lanes.
    let plain_lanes = member.lanes.as_ref().filter(|pool| pool.kind() == LaneKind::Plain);
    let tls_lanes = member.lanes.as_ref().filter(|pool| pool.kind() == LaneKind::Tls);
    if let Some(Lane::Tls(lane)) = tls_lanes.and_then(|pool| pool.take()) {
        serve_visitor_on_tls_lane(&tunnel, visitor, peer, header, lane).await;
        return;
    }
    // The stream's first write carries the header and whatever the visitor has sent so far,
    // so the agent learns of the connection and gets its first bytes from one frame.
    let mut opening = BytesMut::from(&header[..]);
    let early = match &visitor {
        Visitor::Tcp(tcp) => match crate::relay::read_arrived(tcp, &mut opening) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(tunnel = %tunnel.id, %peer, error = %e, "visitor failed before its stream opened");
                return;
            }
        },
        Visitor::Routed { sniffed, .. } => {
            opening.extend_from_slice(sniffed);
            sniffed.len()
        }
        Visitor::Reach(_) => 0,
    };
    let mut stream = match member.opener.open().await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(tunnel = %tunnel.id, error = %e, "opening a stream to the agent failed");
            let arrived = &opening[header.len()..];
            refuse_visitor(
                &tunnel,
                visitor,
                arrived,
                "the agent's connection is failing; try again shortly",
            )
            .await;
            return;
        }
    };
    if stream.send_opening(opening.freeze()).await.is_err() {
        return;
    }
    tunnel.jobs.fetch_add(1, Ordering::Relaxed);
    let relay = async |tcp, stream| match plain_lanes {
        Some(pool) => relay_movable(&tunnel, &peer, tcp, stream, pool).await,
        None => relay_tcp(tcp, stream).await,
    };
    let result = match visitor {
        Visitor::Tcp(tcp) | Visitor::Routed { tcp, .. } => relay(tcp, stream).await,
        Visitor::Reach(reach) => relay_streams(reach, stream).await,
    };
    tunnel.jobs.fetch_sub(1, Ordering::Relaxed);
    let result = result.map(|mut moved| {
        moved.a_to_b += early as u64;
        moved
    });
    account(&tunnel, &peer, result);
}

/// A visitor the tunnel cannot serve now: one speaking HTTP gets `503` naming the tunnel
/// and `cause`; anyone else is closed at once. A public port's visitor counts as HTTP on an
/// `http` tunnel, or on an `auto` one when its first bytes (`arrived` if they were read
/// already) are an HTTP request.
async fn refuse_visitor(tunnel: &Tunnel, visitor: Visitor, arrived: &[u8], cause: &str) {
    let (mut tcp, http) = match visitor {
        Visitor::Routed { tcp, http, .. } => (tcp, http),
        Visitor::Tcp(tcp) => {
            let http = match tunnel.record().protocol {
                Protocol::Http => true,
                Protocol::Auto => {
                    let mut first = BytesMut::from(arrived);
                    if first.is_empty() {
                        let _ = crate::relay::read_arrived(&tcp, &mut first);
                    }
                    crate::sniff::starts_like_http(&first)
                }
                _ => false,
            };
            (tcp, http)
        }
        Visitor::Reach(_) => return,
    };
    if http {
        let response = crate::answer::tunnel_error(503, tunnel.name.as_str(), cause);
        crate::answer::answer_and_close(&mut tcp, &response).await;
    }
}

/// Relays a visitor on its multiplexed stream, moving it onto one of `pool`'s plain lanes
/// once bulk; a lane whose connection ended cleanly goes back to `pool`.
async fn relay_movable(
    tunnel: &Tunnel,
    peer: &str,
    tcp: TcpStream,
    stream: MuxStream,
    pool: &LanePool,
) -> std::io::Result<Transferred> {
    let take_lane = |wait: Duration| async move {
        let lane = match pool.take() {
            None if !wait.is_zero() => {
                let _ = tokio::time::timeout(wait, pool.wait_idle(1)).await;
                pool.take()
            }
            idle => idle,
        };
        let Lane::Plain(lane) = lane? else {
            return None;
        };
        tunnel.lane_visitors.fetch_add(1, Ordering::Relaxed);
        Some(lane)
    };
    let moved_header = |id: u32| {
        StreamHeader {
            kind: StreamKind::Moved,
            tunnel: tunnel.id.into(),
            peer: peer.to_owned(),
            flow: u64::from(id),
        }
        .encode()
    };
    let (moved, lane) = relay_movable_at_hub(tcp, stream, take_lane, moved_header).await?;
    if let Some(lane) = lane {
        pool.give_back(Lane::Plain(lane));
    }
    Ok(moved)
}

/// Carries a visitor on a TLS lane of its own: the encoded stream header (with a routed
/// visitor's sniffed bytes in the same write), then the bytes both ways until both have
/// ended; the lane closes with the connection.
async fn serve_visitor_on_tls_lane(
    tunnel: &Tunnel,
    visitor: Visitor,
    peer: String,
    mut first: Vec<u8>,
    mut lane: Box<TlsLane>,
) {
    use tokio::io::AsyncWriteExt;
    if let Visitor::Routed { sniffed, .. } = &visitor {
        first.extend_from_slice(sniffed);
    }
    if let Err(e) = async {
        lane.write_all(&first).await?;
        lane.flush().await
    }
    .await
    {
        tracing::debug!(tunnel = %tunnel.id, %peer, error = %e, "a TLS lane failed before its visitor started");
        return;
    }
    tunnel.jobs.fetch_add(1, Ordering::Relaxed);
    tunnel.lane_visitors.fetch_add(1, Ordering::Relaxed);
    let result = match visitor {
        Visitor::Tcp(tcp) | Visitor::Routed { tcp, .. } => relay_io(tcp, lane).await,
        Visitor::Reach(stream) => relay_io(stream, lane).await,
    };
    tunnel.jobs.fetch_sub(1, Ordering::Relaxed);
    account(tunnel, &peer, result);
}

/// Adds a finished visitor's bytes to the tunnel's counters (`a_to_b` = visitor to agent).
fn account(tunnel: &Tunnel, peer: &str, result: std::io::Result<Transferred>) {
    match result {
        Ok(moved) => {
            tunnel.bytes_in.fetch_add(moved.a_to_b, Ordering::Relaxed);
            tunnel.bytes_out.fetch_add(moved.b_to_a, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!(tunnel = %tunnel.id, %peer, error = %e, "visitor relay ended with an error")
        }
    }
}

/// A stream opened by a `reach` agent of `user`: its header names the tunnel.
pub async fn serve_reach_stream(
    shared: Arc<Shared>,
    user: UserName,
    mut stream: MuxStream,
    agent: SocketAddr,
    datagrams: Option<Arc<DatagramRouter>>,
) {
    let header = match tokio::time::timeout(HEADER_DEADLINE, wire::io::read_stream_header(&mut stream)).await {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => {
            tracing::debug!(%agent, error = %e, "bad stream header from reach agent");
            return;
        }
        Err(_) => return,
    };
    let tunnel = match &header.tunnel {
        TunnelRef::Id(id) => shared.registry.get(*id).filter(|t| t.reachable_by(&user)),
        TunnelRef::Name(name) => shared.registry.resolve(&user, name),
    };
    let Some(tunnel) = tunnel else {
        tracing::debug!(%agent, tunnel = %header.tunnel, %user, "reach stream for a tunnel the user may not reach");
        return;
    };
    let _guard = shared.shutdown.track();
    match header.kind {
        StreamKind::Moved => tracing::debug!(%agent, "a reach agent sent a lane-only stream kind"),
        StreamKind::Tcp => serve_visitor(tunnel, Visitor::Reach(stream), header.peer, shared.config.visitor_wait).await,
        StreamKind::Udp => {
            let stats = shared.udp_stats.clone();
            let from_reach = UdpFlow::accept(stream, &header, datagrams.as_ref(), Sink::Queue, stats.clone());
            let to_agent = open_flow_to_member(&tunnel, header.peer, Sink::Queue, shared.config.visitor_wait, stats);
            if let Some(to_agent) = to_agent.await {
                splice_flows(from_reach, to_agent, shared.config.udp.idle_timeout).await;
            }
        }
    }
}
