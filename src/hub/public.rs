//! Visitors: connections arriving on a tunnel's public port, routed by name on the main
//! port, or coming from a `reach` agent. Each becomes one stream to a member agent.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;

use super::registry::{PublicSocket, Tunnel};
use super::Shared;
use crate::carrier::NotCarried;
pub use crate::carrier::Visitor;
use crate::mux::MuxStream;
use crate::relay::Transferred;
use crate::shutdown::Shutdown;
use crate::types::{Protocol, UserName};
use crate::udp::{serve_udp_socket, splice_flows, DatagramRouter, FlowOpener, Sink, UdpFlow, UdpLimits, UdpStats};
use crate::wire::{self, StreamKind, TunnelRef};

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

/// Opens a UDP flow to a member of `tunnel` for client `peer`.
async fn open_flow_to_member(
    tunnel: &Tunnel,
    peer: String,
    sink: Sink,
    wait: Duration,
    stats: Arc<UdpStats>,
) -> Option<UdpFlow> {
    let member = tunnel.pick_member(wait).await?;
    let opened = member
        .link
        .open_flow(tunnel.id, peer, sink, stats, &tunnel.lane_visitors);
    opened
        .await
        .inspect_err(|e| tracing::warn!(tunnel = %tunnel.id, error = %e, "opening a UDP flow to the agent failed"))
        .ok()
}

/// Carries one visitor connection to a member of `tunnel`, as that member's link decides.
pub async fn serve_visitor(tunnel: Arc<Tunnel>, visitor: Visitor, peer: String, wait: Duration) {
    let Some(member) = tunnel.pick_member(wait).await else {
        tracing::debug!(tunnel = %tunnel.id, %peer, "no agent serves the tunnel; refusing visitor");
        let cause = "no agent is connected (it may be reconnecting); try again shortly";
        refuse_visitor(&tunnel, visitor, &[], cause).await;
        return;
    };
    tunnel.jobs.fetch_add(1, Ordering::Relaxed);
    let carried = member
        .link
        .carry(tunnel.id, visitor, &peer, &tunnel.lane_visitors)
        .await;
    tunnel.jobs.fetch_sub(1, Ordering::Relaxed);
    match carried {
        Ok(result) => account(&tunnel, &peer, result),
        Err(NotCarried { visitor, arrived }) => {
            let cause = "the agent's connection is failing; try again shortly";
            refuse_visitor(&tunnel, visitor, &arrived, cause).await;
        }
    }
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
