//! Visitors: connections arriving on a tunnel's public port, routed by name on the main
//! port, or coming from a `reach` agent. Each becomes one stream to a member agent.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::registry::{PublicSocket, Tunnel};
use super::shares::{Moment, Share};
use super::sniffing::{Sniffing, Untrusted};
use super::Shared;
pub use crate::carrier::Visitor;
use crate::carrier::{NotCarried, Peer};
use crate::mux::MuxStream;
use crate::relay::Transferred;
use crate::shutdown::Shutdown;
use crate::sniff::{self, Detected, Replay};
use crate::types::{Protocol, UserName};
use crate::udp::{serve_udp_socket, splice_flows, DatagramRouter, FlowOpener, Sink, UdpFlow, UdpLimits, UdpStats};
use crate::wire::{self, StreamKind, TunnelRef};

/// A reach agent must name its tunnel this quickly after opening a stream.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// On an `auto` public port, a client that has sent nothing for this long is taken to wait
/// for its server to speak first (MySQL, SMTP, SSH) and is carried as `tcp`.
pub const SILENT_CLIENT: Duration = Duration::from_millis(300);

/// An `http` or `https` public port's visitor must have started its request this quickly.
const SNIFF_DEADLINE: Duration = Duration::from_secs(5);

/// What the data plane of public ports needs from the hub.
#[derive(Clone)]
pub struct PublicContext {
    pub shutdown: Shutdown,
    pub visitor_wait: Duration,
    pub udp: UdpLimits,
    pub udp_stats: Arc<UdpStats>,
    pub sniffing: Arc<Sniffing>,
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
        let (tunnel, context) = (tunnel.clone(), context.clone());
        tokio::spawn(async move {
            serve_public_connection(tunnel, stream, peer, &context).await;
            drop(guard);
        });
    }
}

/// One connection to a public port: detected (`auto`), checked (`http`, `https`) or taken
/// as it is (`tcp`), then carried. A trusted proxy's PROXY header is taken off first.
async fn serve_public_connection(tunnel: Arc<Tunnel>, mut tcp: TcpStream, peer: SocketAddr, context: &PublicContext) {
    let wait = context.visitor_wait;
    let trusted = context.sniffing.is_trusted(peer.ip());
    type Decide = fn(&[u8]) -> Option<Detected>;
    let (deadline, decide): (Duration, Decide) = match tunnel.protocol {
        Protocol::Auto => (SILENT_CLIENT, sniff::detect),
        Protocol::Http => (SNIFF_DEADLINE, |b| {
            sniff::http::starts_like_http(b).map(Detected::http_if)
        }),
        Protocol::Https => (SNIFF_DEADLINE, |b| sniff::tls::starts_like_tls(b).map(Detected::tls_if)),
        // Only a trusted proxy's connection is read before it is carried: for its header.
        Protocol::Tcp | Protocol::Udp if trusted => (SILENT_CLIENT, |_| Some(Detected::Tcp)),
        Protocol::Tcp | Protocol::Udp => {
            let visited = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let peer = Peer::new(peer, visited);
            return serve_visitor(tunnel, Visitor::Tcp(tcp), peer, Detected::Tcp, wait).await;
        }
    };
    let first = match context
        .sniffing
        .read(&mut tcp, peer, Untrusted::AsData, deadline, decide)
        .await
    {
        Ok(first) => first,
        Err(e) => {
            tracing::debug!(tunnel = %tunnel.id, %peer, error = %e, "closing a public-port connection");
            return;
        }
    };
    // A client silent until the deadline waits for its server to speak first.
    let detected = first.verdict.unwrap_or(Detected::Tcp);
    let peer = Peer::new(first.client, first.visited);
    let spoke = !first.bytes.is_empty();
    let mut tcp = Replay::new(first.bytes, tcp);
    let refusal = match (tunnel.protocol, detected) {
        (Protocol::Http, Detected::Tcp | Detected::Tls) => {
            Some("the tunnel serves HTTP and this is not an HTTP request")
        }
        (Protocol::Https, Detected::Tcp | Detected::Http) => {
            Some("the tunnel serves TLS and this is not a ClientHello")
        }
        _ => None,
    };
    if let Some(why) = refusal {
        tracing::debug!(tunnel = %tunnel.id, %peer, protocol = %detected, "{why}; closing");
        if tunnel.protocol == Protocol::Http && spoke {
            let response = crate::answer::tunnel_error(400, tunnel.name().as_str(), why);
            crate::answer::answer_and_close(&mut tcp, &response).await;
        }
        return;
    }
    tracing::debug!(tunnel = %tunnel.id, %peer, protocol = %detected, "public-port connection");
    let (sniffed, tcp) = tcp.into_parts();
    let http = detected == Detected::Http;
    serve_visitor(tunnel, Visitor::Routed { sniffed, tcp, http }, peer, detected, wait).await
}

/// Opens a UDP flow to a member of `tunnel` for client `peer`.
async fn open_flow_to_member(
    tunnel: &Tunnel,
    peer: String,
    sink: Sink,
    wait: Duration,
    stats: Arc<UdpStats>,
) -> Option<UdpFlow> {
    if tunnel.is_paused() {
        tracing::debug!(tunnel = %tunnel.id, %peer, "the tunnel is paused; refusing a UDP flow");
        return None;
    }
    let member = tunnel.pick_member(wait).await?;
    let opened = member
        .link
        .open_flow(tunnel.id, peer, sink, stats, &tunnel.lane_visitors);
    opened
        .await
        .inspect_err(|e| tracing::warn!(tunnel = %tunnel.id, error = %e, "opening a UDP flow to the agent failed"))
        .ok()
}

/// Carries one visitor connection to a member of `tunnel`, as that member's link decides,
/// in a span of its own (tunnel, peer, then the agent connection's transport); the bytes
/// moved are logged when it ends.
pub async fn serve_visitor(tunnel: Arc<Tunnel>, visitor: Visitor, peer: Peer, protocol: Detected, wait: Duration) {
    tunnel.connections.count(protocol);
    let span = tracing::debug_span!(
        "connection",
        tunnel = %tunnel.name(),
        peer = %peer,
        transport = tracing::field::Empty
    );
    tracing::Instrument::instrument(carry_visitor(tunnel, visitor, peer, protocol, wait), span).await
}

async fn carry_visitor(tunnel: Arc<Tunnel>, visitor: Visitor, peer: Peer, protocol: Detected, wait: Duration) {
    if tunnel.is_paused() {
        tracing::debug!(tunnel = %tunnel.id, %peer, "the tunnel is paused; refusing visitor");
        refuse_visitor(&tunnel, visitor, "the tunnel is paused by its owner").await;
        return;
    }
    let Some(member) = tunnel.pick_member(wait).await else {
        tracing::debug!(tunnel = %tunnel.id, %peer, "no agent serves the tunnel; refusing visitor");
        let cause = "no agent is connected (it may be reconnecting); try again shortly";
        refuse_visitor(&tunnel, visitor, cause).await;
        return;
    };
    tracing::Span::current().record("transport", member.link.transport().as_str());
    tunnel.open.count(protocol);
    let carried = member
        .link
        .carry(tunnel.id, visitor, &peer, &tunnel.lane_visitors)
        .await;
    tunnel.open.leave(protocol);
    match carried {
        Ok(result) => account(&tunnel, &peer, result),
        Err(NotCarried { visitor }) => {
            let cause = "the agent's connection is failing; try again shortly";
            refuse_visitor(&tunnel, visitor, cause).await;
        }
    }
}

/// A visitor the tunnel cannot serve now: one speaking HTTP (as detected, or routed by
/// `Host`) gets `503` naming the tunnel and `cause`; anyone else is closed at once.
async fn refuse_visitor(tunnel: &Tunnel, visitor: Visitor, cause: &str) {
    if let Visitor::Routed {
        mut tcp, http: true, ..
    } = visitor
    {
        let response = crate::answer::tunnel_error(503, tunnel.name().as_str(), cause);
        crate::answer::answer_and_close(&mut tcp, &response).await;
    }
}

/// Adds a finished visitor's bytes to the tunnel's counters (`a_to_b` = visitor to agent).
fn account(tunnel: &Tunnel, peer: &Peer, result: std::io::Result<Transferred>) {
    match result {
        Ok(moved) => {
            tunnel.bytes_in.fetch_add(moved.a_to_b, Ordering::Relaxed);
            tunnel.bytes_out.fetch_add(moved.b_to_a, Ordering::Relaxed);
            tracing::debug!(bytes_in = moved.a_to_b, bytes_out = moved.b_to_a, "connection closed");
        }
        Err(e) => {
            tracing::debug!(tunnel = %tunnel.id, %peer, error = %e, "visitor relay ended with an error")
        }
    }
}

/// Who a `reach` agent's session acts for.
#[derive(Clone, Debug)]
pub enum Reacher {
    /// A user, by credentials: every tunnel they may reach.
    User(UserName),
    /// A share link: its tunnel alone, each connection or UDP flow admitted by the share.
    Share(Arc<Share>),
}

impl Reacher {
    /// The tunnel a stream header names, if this reacher may reach it now.
    fn tunnel(&self, shared: &Shared, named: &TunnelRef, agent: SocketAddr) -> Option<Arc<Tunnel>> {
        match self {
            Reacher::User(user) => match named {
                TunnelRef::Id(id) => shared.registry.get(*id).filter(|t| t.reachable_by(user)),
                TunnelRef::Name(name) => shared.registry.resolve(user, name),
            },
            Reacher::Share(share) => {
                let tunnel = shared.registry.get(share.record.tunnel)?;
                let admitted = share.admit(Moment::now(), None);
                if let Err(refusal) = &admitted {
                    tracing::info!(share = %share.record.id, %agent, "share refused a connection: {refusal}");
                }
                admitted.ok().map(|()| tunnel)
            }
        }
    }
}

/// A stream opened by a `reach` agent: its header names the tunnel.
pub async fn serve_reach_stream(
    shared: Arc<Shared>,
    reacher: Reacher,
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
    let Some(tunnel) = reacher.tunnel(&shared, &header.tunnel, agent) else {
        tracing::debug!(%agent, tunnel = %header.tunnel, ?reacher, "reach stream for a tunnel it may not reach now");
        return;
    };
    let _guard = shared.shutdown.track();
    match header.kind {
        StreamKind::Moved => tracing::debug!(%agent, "a reach agent sent a lane-only stream kind"),
        StreamKind::Tcp => {
            // A reach agent's connection is not sniffed: it counts as what the tunnel declares.
            let declared = Detected::declared(tunnel.protocol);
            let peer = Peer {
                client: header.peer,
                visited: header.visited,
            };
            serve_visitor(
                tunnel,
                Visitor::Reach(stream),
                peer,
                declared,
                shared.config.visitor_wait,
            )
            .await
        }
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
