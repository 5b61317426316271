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
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{UdpFlow, UdpStats};
use crate::shutdown::Shutdown;
use crate::wire::datagram::MAX_UDP_PAYLOAD;

/// Opens the flow for a new client address; `None` when no route exists now.
pub type FlowOpener = Arc<dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = Option<UdpFlow>> + Send>> + Send + Sync>;

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

/// Datagrams from one client waiting for its flow (while it opens, or if it is slow).
const CLIENT_QUEUE: usize = 256;

/// Serves a client-facing UDP socket until shutdown: each client address gets its own flow.
pub async fn serve_udp_socket(
    socket: Arc<UdpSocket>,
    open: FlowOpener,
    limits: UdpLimits,
    stats: Arc<UdpStats>,
    shutdown: Shutdown,
) {
    let flows: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>> = Arc::default();
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = shutdown.draining() => return,
        };
        let (len, client) = match received {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors for earlier sends surface here on some systems; not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let payload = Bytes::copy_from_slice(&buf[..len]);
        let existing = flows.lock().expect("flows lock").get(&client).cloned();
        if let Some(tx) = existing {
            if tx.try_send(payload).is_err() {
                stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        {
            let mut flows = flows.lock().expect("flows lock");
            if flows.len() >= limits.max_flows {
                stats.drop_flow_limit.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = tx.try_send(payload);
            flows.insert(client, tx);
        }
        stats.flows_opened.fetch_add(1, Ordering::Relaxed);
        let (socket, open, flows, stats) = (socket.clone(), open.clone(), flows.clone(), stats.clone());
        tokio::spawn(async move {
            if let Some(flow) = open(client).await {
                carry_client(&socket, client, rx, flow, limits.idle_timeout, &stats).await;
            }
            flows.lock().expect("flows lock").remove(&client);
        });
    }
}

async fn carry_client(
    socket: &UdpSocket,
    client: SocketAddr,
    mut from_client: mpsc::Receiver<Bytes>,
    mut flow: UdpFlow,
    idle: Duration,
    stats: &UdpStats,
) {
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            payload = from_client.recv() => match payload {
                Some(payload) => {
                    flow.send(&payload);
                    deadline = Instant::now() + idle;
                }
                None => return,
            },
            reply = flow.recv() => match reply {
                Some(reply) => {
                    let _ = socket.send_to(&reply, client).await;
                    deadline = Instant::now() + idle;
                }
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => {
                stats.flows_expired.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The expose side of a flow: a socket connected to the target, so replies come back here.
pub async fn serve_udp_target(mut flow: UdpFlow, target: &str, idle: Duration, stats: &UdpStats) {
    let addr = match tokio::net::lookup_host(target).await.ok().and_then(|mut a| a.next()) {
        Some(addr) => addr,
        None => {
            tracing::warn!(target, "cannot resolve the UDP target");
            return;
        }
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "cannot bind a UDP socket toward the target");
            return;
        }
    };
    if let Err(e) = socket.connect(addr).await {
        tracing::warn!(target, error = %e, "cannot connect the UDP socket to the target");
        return;
    }
    let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            datagram = flow.recv() => match datagram {
                Some(datagram) => {
                    // A refused send (nothing listening yet) is UDP loss, not the end.
                    let _ = socket.send(&datagram).await;
                    deadline = Instant::now() + idle;
                }
                None => return,
            },
            received = socket.recv(&mut buf) => {
                if let Ok(len) = received {
                    flow.send(&buf[..len]);
                    deadline = Instant::now() + idle;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                stats.flows_expired.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The hub between a `reach` agent's flow and the exposing agent's flow.
pub async fn splice_flows(mut a: UdpFlow, mut b: UdpFlow, idle: Duration) {
    let mut deadline = Instant::now() + idle;
    loop {
        tokio::select! {
            datagram = a.recv() => match datagram {
                Some(d) => { b.send(&d); deadline = Instant::now() + idle; }
                None => return,
            },
            datagram = b.recv() => match datagram {
                Some(d) => { a.send(&d); deadline = Instant::now() + idle; }
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}
