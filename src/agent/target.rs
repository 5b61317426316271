//! What serving one visitor's connection to an exposed target needs, shared by streams
//! (`expose.rs`) and lanes (`lanes.rs`): the session's context and the targets of its
//! tunnels, dialing a target, the 502 for an HTTP visitor whose target refuses, and UDP
//! flows toward a target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::sniff::proxy::{self, ProxyVersion};
use crate::types::TunnelId;
use crate::wire::StreamHeader;

const TARGET_CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// How long a stream naming a tunnel this agent does not know yet waits for it. The hub
/// announces a tunnel it places on the agent on the control stream, which may arrive just
/// after the tunnel's first stream.
const UNKNOWN_TUNNEL_WAIT: Duration = Duration::from_secs(5);

/// One tunnel this agent serves.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// The tunnel's name, for the errors visitors are answered with.
    pub(super) name: String,
    /// `HOST:PORT` of the service.
    pub(super) address: String,
    /// What the target speaks: an HTTP visitor of a target that refuses gets a 502.
    pub(super) protocol: crate::types::Protocol,
    /// The PROXY protocol header the target wants before each visitor's bytes.
    pub(super) proxy_protocol: Option<ProxyVersion>,
}

/// The tunnels one session serves, by id.
#[derive(Default)]
pub(super) struct Targets {
    by_id: Mutex<HashMap<TunnelId, Arc<Target>>>,
    /// Bumped on every addition, for streams waiting for their tunnel.
    added: watch::Sender<u64>,
}

impl Targets {
    pub(super) fn insert(&self, id: TunnelId, target: Target) {
        self.by_id.lock().expect("targets lock").insert(id, Arc::new(target));
        self.added.send_modify(|n| *n += 1);
    }

    /// Gives tunnel `id` its new name (for logs); its old name, if this session serves it.
    pub(super) fn rename(&self, id: TunnelId, name: &crate::types::TunnelName) -> Option<String> {
        let mut by_id = self.by_id.lock().expect("targets lock");
        let target = by_id.get_mut(&id)?;
        let old = target.name.clone();
        let mut renamed = Target::clone(target);
        renamed.name = name.to_string();
        *target = Arc::new(renamed);
        Some(old)
    }

    fn get_now(&self, id: TunnelId) -> Option<Arc<Target>> {
        self.by_id.lock().expect("targets lock").get(&id).cloned()
    }

    /// The target of the tunnel a stream from the hub names, waiting briefly for one the hub
    /// has just announced. The hub names tunnels by id; a stream that names one otherwise,
    /// or a tunnel this agent does not serve, has none.
    pub(super) async fn for_stream(&self, header: &crate::wire::StreamHeader) -> Option<Arc<Target>> {
        let id = header.tunnel_id()?;
        let mut added = self.added.subscribe();
        let wait = async {
            loop {
                if let Some(target) = self.get_now(id) {
                    return Some(target);
                }
                added.changed().await.ok()?;
            }
        };
        tokio::time::timeout(UNKNOWN_TUNNEL_WAIT, wait).await.ok().flatten()
    }
}

/// What serving one stream from the hub needs.
pub(super) struct StreamContext {
    pub(super) targets: Arc<Targets>,
    pub(super) datagrams: Option<Arc<crate::udp::DatagramRouter>>,
    pub(super) udp_idle: Duration,
    pub(super) udp_stats: Arc<crate::udp::UdpStats>,
    /// Where connections the hub moves off the multiplexer meet their lanes.
    pub(super) moved_lanes: crate::relay::MovedLanes<crate::carrier::lanes::DialedLane>,
    /// Counts the connections served, for the console and metrics.
    pub(super) link: Arc<super::LinkStatus>,
    /// Serves the streams of forward-proxy tunnels (`expose --forward-proxy`).
    pub(super) forward_proxy: Option<Arc<crate::proxy::ForwardProxy>>,
}

/// A UDP flow from the hub (on its multiplexed stream or its own lane, as `carry` sets it
/// up): a socket connected to `target`, whose replies go back until the flow ends or idles
/// out.
pub(super) async fn serve_udp_flow(
    context: &StreamContext,
    target: &Target,
    carry: impl FnOnce(crate::udp::Sink, Arc<crate::udp::UdpStats>) -> Option<crate::udp::UdpFlow>,
) {
    let Some((socket, sender)) = crate::udp::connect_target(&target.address).await else {
        return;
    };
    let sink = crate::udp::Sink::Socket {
        socket: sender,
        peer: None,
    };
    if let Some(flow) = carry(sink, context.udp_stats.clone()) {
        crate::udp::serve_udp_target(flow, socket, context.udp_idle).await;
    }
}

/// Connects to the exposed service for the visitor `header` describes, and sends the PROXY
/// header the target asks for; a failure is logged and its cause returned (the caller then
/// answers or closes the visitor's connection).
pub(super) async fn connect_target(
    target: &Target,
    header: &StreamHeader,
    link: &super::LinkStatus,
) -> Result<TcpStream, String> {
    let address = &target.address;
    let peer = &header.peer;
    let connected = tokio::time::timeout(TARGET_CONNECT_DEADLINE, TcpStream::connect(address)).await;
    let reason = match &connected {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(super::DialError::Refused),
        Ok(Err(_)) => Some(super::DialError::Unreachable),
        Err(_) => Some(super::DialError::Timeout),
    };
    if let Some(reason) = reason {
        link.dial_failed(reason);
    }
    let cause = match connected {
        Ok(Ok(mut tcp)) => {
            crate::relay::configure_tcp(&tcp);
            let Some(version) = target.proxy_protocol else {
                return Ok(tcp);
            };
            let proxy_header = proxy::encode(version, visitor_addresses(header, &tcp));
            match tcp.write_all(&proxy_header).await {
                Ok(()) => return Ok(tcp),
                Err(e) => format!("sending the PROXY header to {address}: {e}"),
            }
        }
        Ok(Err(e)) => format!("cannot connect to {address}: {e}"),
        Err(_) => format!("connecting to {address} timed out after {TARGET_CONNECT_DEADLINE:?}"),
    };
    tracing::warn!(peer, "{cause}");
    Err(cause)
}

/// The visitor and the address it connected to, for a PROXY header. Without a visited
/// address (a `reach` visitor) the target's own address stands in; a visitor address that
/// is not an IP address and port yields a header without addresses.
fn visitor_addresses(header: &StreamHeader, target: &TcpStream) -> Option<(SocketAddr, SocketAddr)> {
    let client: SocketAddr = header.peer.parse().ok()?;
    let visited = header.visited.parse().ok().or_else(|| target.peer_addr().ok())?;
    Some((client, visited))
}

/// How long the agent waits for a visitor's first bytes to tell whether it speaks HTTP.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(500);

/// The `502` for a visitor whose target refused, if the tunnel may speak HTTP and the
/// visitor's first bytes (read from `visitor`, waiting briefly) are an HTTP request.
pub(super) async fn bad_gateway<R: tokio::io::AsyncRead + Unpin>(
    visitor: &mut R,
    target: &Target,
    cause: &str,
) -> Option<Vec<u8>> {
    use crate::types::Protocol;
    use tokio::io::AsyncReadExt;
    if !matches!(target.protocol, Protocol::Http | Protocol::Auto) {
        return None;
    }
    let mut first = [0u8; 2048];
    let n = tokio::time::timeout(FIRST_BYTES_WAIT, visitor.read(&mut first))
        .await
        .ok()?
        .ok()?;
    (crate::sniff::detect(&first[..n]) == Some(crate::sniff::Detected::Http))
        .then(|| crate::answer::tunnel_error(502, &target.name, cause))
}
