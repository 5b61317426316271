//! The carrier: one [`AgentLink`] per agent connection, the only thing hub and agent code
//! ask to "carry this connection, or this UDP flow, to tunnel T" over that connection: the
//! hub toward an exposing agent, a `reach` agent toward the hub. Whether that is a QUIC
//! stream, an HTTP/2 stream that moves onto a lane (plain or TLS) once bulk, a plain lane of
//! its own for a UDP flow, or QUIC datagrams is decided here and nowhere else; the lanes
//! themselves are [`lanes`].

pub mod lanes;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::mux::{MuxStream, Opener};
use crate::relay::{relay, relay_movable_at_hub, Transferred};
use crate::udp::{DatagramRouter, Sink, UdpFlow, UdpStats};
use crate::wire::{StreamHeader, StreamKind, TunnelRef};
use lanes::{Lane, LaneKind, LanePool};

/// Where a visitor's bytes come from.
pub enum Visitor {
    /// A connection to the tunnel's public port (or, at a `reach` agent, its local port).
    Tcp(TcpStream),
    /// A connection routed by name on the main port: the bytes read while sniffing come first;
    /// `http` when it was routed by an HTTP `Host` (else by TLS SNI).
    Routed {
        sniffed: BytesMut,
        tcp: TcpStream,
        http: bool,
    },
    /// A stream from a `reach` agent.
    Reach(MuxStream),
}

/// Who a visitor is, as the stream header toward the agent tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address: the socket's peer, or what a trusted proxy's PROXY header said.
    pub client: String,
    /// The address the client connected to (a public port, the main port, or a trusted
    /// proxy's destination); empty for `reach` visitors.
    pub visited: String,
}

impl Peer {
    pub fn new(client: impl ToString, visited: impl ToString) -> Self {
        Self {
            client: client.to_string(),
            visited: visited.to_string(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.client)
    }
}

/// A visitor the link could not start carrying (the agent's connection is failing), handed
/// back for the hub to answer.
pub struct NotCarried {
    pub visitor: Visitor,
}

/// Everything one end holds to carry connections over one agent connection.
pub struct AgentLink {
    /// How the agent connection travels (for logs).
    transport: crate::mux::Transport,
    opener: Opener,
    /// Routes QUIC datagrams of UDP flows on this connection (QUIC only).
    datagrams: Option<Arc<DatagramRouter>>,
    /// Idle lanes the agent has dialed (TCP and TLS connections of `expose` agents).
    lanes: Option<Arc<LanePool>>,
}

impl AgentLink {
    pub fn new(
        transport: crate::mux::Transport,
        opener: Opener,
        datagrams: Option<Arc<DatagramRouter>>,
        lanes: Option<Arc<LanePool>>,
    ) -> Self {
        Self {
            transport,
            opener,
            datagrams,
            lanes,
        }
    }

    pub fn transport(&self) -> crate::mux::Transport {
        self.transport
    }

    /// The agent's lane pool, if its connection has lanes.
    pub fn lanes(&self) -> Option<&Arc<LanePool>> {
        self.lanes.as_ref()
    }

    fn lanes_of(&self, kind: LaneKind) -> Option<&LanePool> {
        self.lanes.as_deref().filter(|pool| pool.kind() == kind)
    }

    /// Opens a data stream to the agent (a `reach` agent's own streams are opened by it).
    pub async fn open_stream(&self) -> Result<MuxStream, crate::mux::MuxError> {
        self.opener.open().await
    }

    /// A new stream to tunnel `tunnel` for `peer`, its header sent: for a `reach` agent's
    /// forward proxy, which speaks HTTP on it itself.
    pub async fn open_to(&self, tunnel: TunnelRef, peer: &Peer) -> io::Result<MuxStream> {
        let header = StreamHeader::tcp(tunnel, &peer.client, &peer.visited).encode();
        let mut stream = self.opener.open().await.map_err(io::Error::other)?;
        stream.send_opening(bytes::Bytes::from(header)).await?;
        Ok(stream)
    }

    /// Carries `visitor` of tunnel `tunnel` until both directions have ended, on a new
    /// multiplexed stream that moves onto one of the agent's lanes once it turns bulk.
    /// `on_lane` counts a connection that moved. The bytes moved include what the visitor
    /// sent before its stream opened.
    pub async fn carry(
        &self,
        tunnel: impl Into<TunnelRef>,
        visitor: Visitor,
        peer: &Peer,
        on_lane: &AtomicU64,
    ) -> Result<io::Result<Transferred>, NotCarried> {
        let tunnel = tunnel.into();
        let header = StreamHeader::tcp(tunnel.clone(), &peer.client, &peer.visited).encode();
        // The stream's first write carries the header and whatever the visitor has sent so
        // far, so the agent learns of the connection and gets its first bytes from one frame.
        let mut opening = BytesMut::from(&header[..]);
        let early = match &visitor {
            Visitor::Tcp(tcp) => match crate::relay::read_arrived(tcp, &mut opening) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            },
            Visitor::Routed { sniffed, .. } => {
                opening.extend_from_slice(sniffed);
                sniffed.len()
            }
            Visitor::Reach(_) => 0,
        };
        let mut stream = match self.opener.open().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%tunnel, error = %e, "opening a stream to the agent failed");
                return Err(NotCarried { visitor });
            }
        };
        if let Err(e) = stream.send_opening(opening.freeze()).await {
            return Ok(Err(e));
        }
        // Moving runs between two sockets, so a reach stream stays multiplexed.
        let result = match (visitor, self.lanes.as_deref()) {
            (Visitor::Tcp(tcp) | Visitor::Routed { tcp, .. }, Some(pool)) => {
                relay_movable(tunnel, &peer.client, tcp, stream, pool, on_lane).await
            }
            (Visitor::Tcp(tcp) | Visitor::Routed { tcp, .. }, None) => relay(tcp, stream).await,
            (Visitor::Reach(reach), _) => relay(reach, stream).await,
        };
        Ok(result.map(|mut moved| {
            moved.a_to_b += early as u64;
            moved
        }))
    }

    /// Opens a UDP flow of tunnel `tunnel` for client `peer`: on an idle plain lane if there
    /// is one (its datagrams are framed straight into the socket; `on_lane` counts it), else
    /// on a multiplexed stream, with QUIC datagrams where the connection has them.
    pub async fn open_flow(
        &self,
        tunnel: impl Into<TunnelRef>,
        peer: String,
        sink: Sink,
        stats: Arc<UdpStats>,
        on_lane: &AtomicU64,
    ) -> io::Result<UdpFlow> {
        if let Some(Lane::Plain(lane)) = self.lanes_of(LaneKind::Plain).and_then(LanePool::take) {
            on_lane.fetch_add(1, Ordering::Relaxed);
            return UdpFlow::open_on_lane(lane, tunnel, peer, sink, stats).await;
        }
        UdpFlow::open(&self.opener, self.datagrams.as_ref(), tunnel, peer, sink, stats)
            .await
            .map_err(io::Error::other)
    }
}

/// Relays a visitor on its multiplexed stream, moving it onto one of `pool`'s lanes once
/// bulk; a lane whose connection ended cleanly goes back to `pool`.
async fn relay_movable(
    tunnel: TunnelRef,
    peer: &str,
    tcp: TcpStream,
    stream: MuxStream,
    pool: &LanePool,
    on_lane: &AtomicU64,
) -> io::Result<Transferred> {
    let take_lane = |wait: Duration| async move {
        let lane = match pool.take() {
            None if !wait.is_zero() => {
                let _ = tokio::time::timeout(wait, pool.wait_idle(1)).await;
                pool.take()
            }
            idle => idle,
        };
        let lane = lane?;
        on_lane.fetch_add(1, Ordering::Relaxed);
        Some(lane)
    };
    let moved_header = |id: u32| {
        StreamHeader {
            kind: StreamKind::Moved,
            tunnel: tunnel.clone(),
            peer: peer.to_owned(),
            visited: String::new(),
            flow: u64::from(id),
        }
        .encode()
    };
    let (moved, lane) = relay_movable_at_hub(tcp, stream, take_lane, moved_header).await?;
    if let Some(lane) = lane {
        pool.give_back(lane);
    }
    Ok(moved)
}
