//! The socket ends of UDP tunnels: client-facing sockets (a hub's public UDP port, a `reach`
//! agent's local UDP port) that keep one flow per client address with idle expiry and a
//! bound on flows, and the expose side's socket toward the target.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::Sink;
use super::{UdpFlow, UdpStats};
use crate::shutdown::Shutdown;
use crate::wire::datagram::MAX_UDP_PAYLOAD;

/// Opens the flow for a new client address, whose replies go to the given sink; `None` when
/// no route exists now.
pub type FlowOpener =
    Arc<dyn Fn(SocketAddr, Sink) -> Pin<Box<dyn Future<Output = Option<UdpFlow>> + Send>> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub struct UdpLimits {
    /// A flow with no datagram either way for this long is closed.
    pub idle_timeout: Duration,
    /// Flows per socket; datagrams from further new clients are dropped.
    pub max_flows: usize,
}

impl Default for UdpLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_flows: 4096,
        }
    }
}

/// Datagrams from one client held while its flow opens.
const OPENING_QUEUE: usize = 64;

enum Client {
    Opening(Vec<Bytes>),
    Open(UdpFlow),
}

type Clients = Arc<Mutex<HashMap<SocketAddr, Client>>>;

/// Serves a client-facing UDP socket until shutdown: each client address gets its own flow.
/// Datagrams go into the flow from this loop directly, and replies leave the socket from the
/// task that received them, so a request/response crosses no extra task.
///
/// `socket` must be non-blocking; a clone of it sends the replies.
pub async fn serve_udp_socket(
    socket: std::net::UdpSocket,
    open: FlowOpener,
    limits: UdpLimits,
    stats: Arc<UdpStats>,
    shutdown: Shutdown,
) {
    let clients: Clients = Arc::default();
    let sender = match socket.try_clone() {
        Ok(sender) => Arc::new(sender),
        Err(e) => {
            tracing::error!(error = %e, "cannot clone the UDP socket");
            return;
        }
    };
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the UDP socket");
            return;
        }
    };
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    // Clients whose flows hold datagrams of the current burst.
    let mut holding: Vec<SocketAddr> = Vec::with_capacity(BURST);
    loop {
        let mut received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = shutdown.draining() => return,
        };
        for more in 1..=BURST {
            match received {
                Ok((len, client)) => {
                    let opening = {
                        let mut map = clients.lock().expect("clients lock");
                        take_datagram(&mut map, client, &buf[..len], &limits, &stats, &mut holding)
                    };
                    if opening {
                        stats.flows_opened.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(open_flow(client, sender.clone(), open.clone(), clients.clone(), limits));
                    }
                }
                // ICMP errors for earlier sends surface here on some systems; not fatal.
                Err(e) => tracing::debug!(error = %e, "UDP receive error"),
            }
            if more == BURST {
                break;
            }
            received = match socket.try_recv_from(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                other => other,
            };
        }
        let mut map = clients.lock().expect("clients lock");
        for client in holding.drain(..) {
            if let Some(Client::Open(flow)) = map.get_mut(&client) {
                flow.release();
            }
        }
    }
}

/// Datagrams read from a client-facing socket in one go before the flows they went to
/// write them out: a burst of one flow leaves in one write.
const BURST: usize = 32;

/// Puts one client datagram into its flow (held until the burst ends), or into the queue of
/// a flow being opened. True when the client is new and its flow must be opened.
fn take_datagram(
    map: &mut HashMap<SocketAddr, Client>,
    client: SocketAddr,
    payload: &[u8],
    limits: &UdpLimits,
    stats: &UdpStats,
    holding: &mut Vec<SocketAddr>,
) -> bool {
    let count = map.len();
    match map.get_mut(&client) {
        Some(Client::Open(flow)) => {
            if flow.hold(payload) && !holding.contains(&client) {
                holding.push(client);
            }
            false
        }
        Some(Client::Opening(held)) => {
            if held.len() < OPENING_QUEUE {
                held.push(Bytes::copy_from_slice(payload));
            } else {
                stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            false
        }
        None if count >= limits.max_flows => {
            stats.drop_flow_limit.fetch_add(1, Ordering::Relaxed);
            false
        }
        None => {
            map.insert(client, Client::Opening(vec![Bytes::copy_from_slice(payload)]));
            true
        }
    }
}

/// Opens the flow of a new client, sends what it sent meanwhile, and keeps the flow until it
/// ends or idles out.
async fn open_flow(
    client: SocketAddr,
    socket: Arc<std::net::UdpSocket>,
    open: FlowOpener,
    clients: Clients,
    limits: UdpLimits,
) {
    let sink = Sink::Socket {
        socket,
        peer: Some(client),
    };
    if let Some(mut flow) = open(client, sink).await {
        let watch = flow.watch();
        {
            let mut map = clients.lock().expect("clients lock");
            if let Some(Client::Opening(held)) = map.remove(&client) {
                for payload in held {
                    flow.hold(&payload);
                }
                flow.release();
            }
            map.insert(client, Client::Open(flow));
        }
        watch.expired_or_ended(limits.idle_timeout).await;
    }
    // Dropping the flow (with the entry) closes its stream.
    clients.lock().expect("clients lock").remove(&client);
}

/// The expose side of a flow: a socket connected to the target, so replies come back here.
/// Returns the socket to receive on and a clone to use as the flow's sink, or `None` if the
/// target is unusable.
pub async fn connect_target(target: &str) -> Option<(UdpSocket, Arc<std::net::UdpSocket>)> {
    let Some(addr) = tokio::net::lookup_host(target).await.ok().and_then(|mut a| a.next()) else {
        tracing::warn!(target, "cannot resolve the UDP target");
        return None;
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let connected = std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(addr).map(|_| s))
        .and_then(|s| s.set_nonblocking(true).map(|_| s))
        .and_then(|s| s.try_clone().map(|sender| (s, sender)))
        .and_then(|(s, sender)| UdpSocket::from_std(s).map(|s| (s, Arc::new(sender))));
    match connected {
        Ok(pair) => Some(pair),
        Err(e) => {
            tracing::warn!(target, error = %e, "cannot set up a UDP socket toward the target");
            None
        }
    }
}

/// Carries the target's replies into the flow until it ends or idles out. Datagrams toward
/// the target leave through the flow's socket sink.
pub async fn serve_udp_target(mut flow: UdpFlow, socket: UdpSocket, idle: Duration) {
    let watch = flow.watch();
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let expiry = watch.expired_or_ended(idle);
    tokio::pin!(expiry);
    loop {
        let mut received = tokio::select! {
            received = socket.recv(&mut buf) => received,
            _ = &mut expiry => return,
        };
        for more in 1..=BURST {
            // A refused earlier send (nothing listening yet) is UDP loss, not the end.
            if let Ok(len) = received {
                flow.hold(&buf[..len]);
            }
            if more == BURST {
                break;
            }
            received = match socket.try_recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                other => other,
            };
        }
        flow.release();
    }
}

/// The hub between a `reach` agent's flow and the exposing agent's flow (both queue sinks).
pub async fn splice_flows(mut a: UdpFlow, mut b: UdpFlow, idle: Duration) {
    let (watch_a, watch_b) = (a.watch(), b.watch());
    loop {
        tokio::select! {
            datagram = a.recv() => match datagram {
                Some(d) => { b.send(&d); }
                None => return,
            },
            datagram = b.recv() => match datagram {
                Some(d) => { a.send(&d); }
                None => return,
            },
            _ = tokio::time::sleep(idle) => {
                if watch_a.idle_for() >= idle && watch_b.idle_for() >= idle {
                    return;
                }
            }
        }
    }
}
