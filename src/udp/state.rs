//! What the receiving side of a UDP flow shares, whether its datagrams come over the
//! multiplexer (`flow.rs`) or a lane of its own (`lane.rs`): where they go ([`Sink`]), the
//! order they are taken in, the flow's idle clock and its end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::UdpStats;

/// Datagrams queued per flow before new ones are dropped (UDP semantics: a slow consumer
/// loses datagrams instead of growing a buffer).
pub(super) const FLOW_QUEUE: usize = 256;
/// Where a flow's arriving datagrams go.
pub enum Sink {
    /// Straight out of a non-blocking UDP socket: to `peer`, or to its connected address.
    /// A std socket on purpose: tokio's `try_send` refuses until the reactor has seen the
    /// socket writable, which silently lost the first datagram of every new flow.
    Socket {
        socket: Arc<std::net::UdpSocket>,
        peer: Option<SocketAddr>,
    },
    /// Into a queue read with [`UdpFlow::recv`] (the hub splicing two flows).
    Queue,
}

enum Delivery {
    Socket {
        socket: Arc<std::net::UdpSocket>,
        peer: Option<SocketAddr>,
    },
    Queue(mpsc::Sender<Bytes>),
}

/// The part of a flow that receiving tasks share.
pub(super) struct FlowState {
    delivery: Delivery,
    /// One past the highest sequence number delivered; older datagrams arrived late.
    next_expected: AtomicU64,
    /// Milliseconds since `epoch` of the last datagram either way, for idle expiry.
    last_activity: AtomicU64,
    epoch: Instant,
    pub(super) ended: AtomicBool,
    pub(super) ended_notify: Notify,
    pub(super) stats: Arc<UdpStats>,
}

impl FlowState {
    /// A flow's shared state delivering into `sink`, and the queue to read for a queue sink.
    pub(super) fn new(sink: Sink, stats: Arc<UdpStats>) -> (Arc<Self>, Option<mpsc::Receiver<Bytes>>) {
        let (delivery, queue) = match sink {
            Sink::Socket { socket, peer } => (Delivery::Socket { socket, peer }, None),
            Sink::Queue => {
                let (tx, rx) = mpsc::channel(FLOW_QUEUE);
                (Delivery::Queue(tx), Some(rx))
            }
        };
        let state = Arc::new(FlowState {
            delivery,
            next_expected: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            epoch: Instant::now(),
            ended: AtomicBool::new(false),
            ended_notify: Notify::new(),
            stats,
        });
        (state, queue)
    }

    pub(super) fn touch(&self) {
        self.last_activity
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    pub(super) fn deliver(&self, seq: u64, payload: Bytes) {
        if self.next_expected.fetch_max(seq + 1, Ordering::AcqRel) > seq {
            self.stats.drop_reordered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = match &self.delivery {
            Delivery::Socket {
                socket,
                peer: Some(peer),
            } => socket.send_to(&payload, *peer).is_ok(),
            Delivery::Socket { socket, peer: None } => socket.send(&payload).is_ok(),
            Delivery::Queue(tx) => tx.try_send(payload.clone()).is_ok(),
        };
        if sent {
            self.touch();
            self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_in.fetch_add(payload.len() as u64, Ordering::Relaxed);
        } else {
            self.stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.ended_notify.notify_waiters();
    }
}
