//! One UDP flow (one client address) over an agent↔hub connection: a stream carries its
//! header, its end, and any datagram too large for a QUIC DATAGRAM frame (or every datagram
//! on TLS/TCP transports); QUIC DATAGRAM frames carry the rest without head-of-line blocking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::UdpStats;
use crate::mux::{MuxError, MuxStream, Opener};
use crate::types::TunnelId;
use crate::wire::datagram::{self, MAX_UDP_PAYLOAD};
use crate::wire::{StreamHeader, StreamKind};

/// Datagrams queued per flow in each direction before new ones are dropped (UDP semantics:
/// a slow consumer loses datagrams instead of growing a buffer).
const FLOW_QUEUE: usize = 256;
/// Datagrams that arrive before their flow's stream are held this long, this many per flow,
/// for at most this many flows.
const PENDING_FOR: Duration = Duration::from_secs(2);
const PENDING_PER_FLOW: usize = 16;
const PENDING_FLOWS: usize = 1024;

/// What a flow receives: a datagram with its sequence number, or the end of the flow.
enum Inbound {
    Datagram(u64, Bytes),
    End,
}

/// Datagrams that overtook their flow's stream: when the first arrived, and (seq, payload).
type HeldDatagrams = (tokio::time::Instant, Vec<(u64, Bytes)>);

/// Routes the QUIC DATAGRAM frames of one connection to their flows.
pub struct DatagramRouter {
    conn: quinn::Connection,
    flows: Mutex<HashMap<u64, mpsc::Sender<Inbound>>>,
    pending: Mutex<HashMap<u64, HeldDatagrams>>,
    next_flow: AtomicU64,
    stats: Arc<UdpStats>,
}

impl DatagramRouter {
    /// Starts reading the connection's datagrams; the task ends with the connection.
    pub fn start(conn: quinn::Connection, stats: Arc<UdpStats>) -> Arc<Self> {
        let router = Arc::new(Self {
            conn: conn.clone(),
            flows: Mutex::default(),
            pending: Mutex::default(),
            next_flow: AtomicU64::new(1),
            stats,
        });
        let weak = Arc::downgrade(&router);
        tokio::spawn(async move {
            while let Ok(datagram) = conn.read_datagram().await {
                let Some(router) = weak.upgrade() else { return };
                router.route(datagram);
            }
        });
        router
    }

    fn route(&self, raw: Bytes) {
        let Ok((flow, seq, payload)) = datagram::decode_datagram(raw) else {
            self.stats.drop_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let sender = self.flows.lock().expect("router lock").get(&flow).cloned();
        match sender {
            Some(tx) => {
                if tx.try_send(Inbound::Datagram(seq, payload)).is_err() {
                    self.stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => self.hold(flow, seq, payload),
        }
    }

    /// Keeps a datagram that overtook its flow's stream, within tight bounds.
    fn hold(&self, flow: u64, seq: u64, payload: Bytes) {
        let mut pending = self.pending.lock().expect("router lock");
        let now = tokio::time::Instant::now();
        pending.retain(|_, (since, _)| now.duration_since(*since) < PENDING_FOR);
        if pending.len() >= PENDING_FLOWS && !pending.contains_key(&flow) {
            self.stats.drop_unknown_flow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (_, held) = pending.entry(flow).or_insert_with(|| (now, Vec::new()));
        if held.len() < PENDING_PER_FLOW {
            held.push((seq, payload));
        } else {
            self.stats.drop_unknown_flow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn register(&self, flow: u64, tx: mpsc::Sender<Inbound>) {
        let held = self.pending.lock().expect("router lock").remove(&flow);
        for (seq, payload) in held.map(|(_, v)| v).unwrap_or_default() {
            let _ = tx.try_send(Inbound::Datagram(seq, payload));
        }
        self.flows.lock().expect("router lock").insert(flow, tx);
    }

    fn unregister(&self, flow: u64) {
        self.flows.lock().expect("router lock").remove(&flow);
    }
}

/// One end of a UDP flow. Dropping it ends the flow for the peer too.
pub struct UdpFlow {
    id: u64,
    next_seq: u64,
    /// Highest sequence number delivered; anything at or below it arrived late and is dropped.
    delivered: Option<u64>,
    router: Option<Arc<DatagramRouter>>,
    to_stream: mpsc::Sender<Bytes>,
    inbound: mpsc::Receiver<Inbound>,
    stats: Arc<UdpStats>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        if let Some(router) = &self.router {
            router.unregister(self.id);
        }
        // The writer task finishes the stream when its channel closes; the reader is stopped.
        self.tasks[0].abort();
    }
}

impl UdpFlow {
    /// Opens a flow toward the peer, for `tunnel`, on behalf of client `peer`.
    pub async fn open(
        opener: &Opener,
        router: Option<&Arc<DatagramRouter>>,
        tunnel: TunnelId,
        peer: String,
        stats: Arc<UdpStats>,
    ) -> Result<Self, MuxError> {
        let id = router.map_or(0, |r| r.next_flow.fetch_add(1, Ordering::Relaxed));
        let mut stream = opener.open().await?;
        let header = StreamHeader {
            kind: StreamKind::Udp,
            tunnel,
            peer,
            flow: id,
        };
        stream.write_all(&header.encode()).await?;
        Ok(Self::start(id, stream, router.cloned(), stats))
    }

    /// The accepting side, once the stream header has been read.
    pub fn accept(
        stream: MuxStream,
        header: &StreamHeader,
        router: Option<&Arc<DatagramRouter>>,
        stats: Arc<UdpStats>,
    ) -> Self {
        Self::start(header.flow, stream, router.cloned(), stats)
    }

    fn start(id: u64, stream: MuxStream, router: Option<Arc<DatagramRouter>>, stats: Arc<UdpStats>) -> Self {
        let (in_tx, inbound) = mpsc::channel(FLOW_QUEUE);
        let (to_stream, mut out_rx) = mpsc::channel::<Bytes>(FLOW_QUEUE);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let reader_stats = stats.clone();
        let stream_in = in_tx.clone();
        let read_task = tokio::spawn(async move {
            loop {
                let mut prefix = [0u8; 4];
                if reader.read_exact(&mut prefix).await.is_err() {
                    break;
                }
                let Ok(len) = datagram::frame_body_len(prefix) else {
                    reader_stats.drop_malformed.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).await.is_err() {
                    break;
                }
                match datagram::decode_frame_body(Bytes::from(body)) {
                    Ok((seq, payload)) => {
                        // Stream frames wait for room: the stream itself is the backpressure.
                        if stream_in.send(Inbound::Datagram(seq, payload)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        reader_stats.drop_malformed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            let _ = stream_in.send(Inbound::End).await;
        });
        let write_task = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        if let Some(router) = &router {
            router.register(id, in_tx);
        }
        Self {
            id,
            next_seq: 0,
            delivered: None,
            router,
            to_stream,
            inbound,
            stats,
            tasks: [read_task.abort_handle(), write_task.abort_handle()],
        }
    }

    /// Sends one datagram; never waits. Returns false when it had to be dropped.
    pub fn send(&mut self, payload: &[u8]) -> bool {
        if payload.len() > MAX_UDP_PAYLOAD {
            self.stats.drop_too_large.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(router) = &self.router {
            let fits = router
                .conn
                .max_datagram_size()
                .is_some_and(|max| payload.len() + 16 <= max);
            if fits {
                return match router
                    .conn
                    .send_datagram(datagram::encode_datagram(self.id, seq, payload))
                {
                    Ok(()) => self.count_out(payload.len()),
                    Err(_) => {
                        self.stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                };
            }
        }
        match self.to_stream.try_send(datagram::encode_frame(seq, payload)) {
            Ok(()) => self.count_out(payload.len()),
            Err(_) => {
                self.stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn count_out(&self, len: usize) -> bool {
        self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
        true
    }

    /// The next datagram in order, or `None` once the peer ended the flow.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.inbound.recv().await? {
                Inbound::End => return None,
                Inbound::Datagram(seq, payload) => {
                    if self.delivered.is_some_and(|last| seq <= last) {
                        self.stats.drop_reordered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.delivered = Some(seq);
                    self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_in.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    return Some(payload);
                }
            }
        }
    }
}
