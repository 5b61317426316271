//! One UDP flow (one client address) over an agent↔hub connection: a stream carries its
//! header, its end, and any datagram too large for a QUIC DATAGRAM frame (or every datagram
//! on TLS/TCP transports); QUIC DATAGRAM frames carry the rest without head-of-line blocking.
//!
//! Arriving datagrams are handed to the flow's [`Sink`] by whichever task received them (the
//! connection's datagram router or the stream reader). A socket sink sends them on at once,
//! without waking another task: the request/response rate of a UDP tunnel is bound by
//! wake-ups per datagram.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lane::LaneOut;
use super::state::{FlowState, Sink, FLOW_QUEUE};
use super::UdpStats;
use crate::mux::{MuxError, MuxStream, Opener};

use crate::wire::datagram::{self, MAX_UDP_PAYLOAD};
use crate::wire::{StreamHeader, StreamKind, TunnelRef};

/// Bytes of held frames a lane flow writes at once at most, and keeps allocated between
/// bursts.
const HELD_CAPACITY: usize = 64 << 10;
/// Datagrams that arrive before their flow's stream are held this long, this many per flow,
/// for at most this many flows.
const PENDING_FOR: Duration = Duration::from_secs(2);
const PENDING_PER_FLOW: usize = 16;
const PENDING_FLOWS: usize = 1024;

/// Datagrams that overtook their flow's stream: when the first arrived, and (seq, payload).
type HeldDatagrams = (Instant, Vec<(u64, Bytes)>);

/// Routes the QUIC DATAGRAM frames of one connection to their flows.
pub struct DatagramRouter {
    conn: quinn::Connection,
    flows: Mutex<HashMap<u64, Arc<FlowState>>>,
    pending: Mutex<HashMap<u64, HeldDatagrams>>,
    next_flow: AtomicU64,
    stats: Arc<UdpStats>,
}

impl DatagramRouter {
    /// A router for the connection `lifetime` closes, if it carries datagrams (QUIC only: on
    /// HTTP/2 every flow's datagrams are framed on its stream).
    pub fn for_connection(lifetime: &crate::mux::Lifetime, stats: Arc<UdpStats>) -> Option<Arc<Self>> {
        match lifetime {
            crate::mux::Lifetime::Quic(conn, _) => Some(Self::start(conn.clone(), stats)),
            crate::mux::Lifetime::H2 { .. } => None,
        }
    }

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
        let state = self.flows.lock().expect("router lock").get(&flow).cloned();
        match state {
            Some(state) => state.deliver(seq, payload),
            None => self.hold(flow, seq, payload),
        }
    }

    /// Keeps a datagram that overtook its flow's stream, within tight bounds.
    fn hold(&self, flow: u64, seq: u64, payload: Bytes) {
        let mut pending = self.pending.lock().expect("router lock");
        let now = Instant::now();
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

    fn register(&self, flow: u64, state: Arc<FlowState>) {
        let held = self.pending.lock().expect("router lock").remove(&flow);
        let mut held = held.map(|(_, v)| v).unwrap_or_default();
        held.sort_by_key(|(seq, _)| *seq);
        for (seq, payload) in held {
            state.deliver(seq, payload);
        }
        self.flows.lock().expect("router lock").insert(flow, state);
    }

    fn unregister(&self, flow: u64) {
        self.flows.lock().expect("router lock").remove(&flow);
    }
}

/// A cheap handle to watch a flow's end and idleness from another task.
#[derive(Clone)]
pub struct FlowWatch(Arc<FlowState>);

impl FlowWatch {
    /// Resolves once the peer has ended the flow (its stream closed).
    pub async fn ended(&self) {
        loop {
            let notified = self.0.ended_notify.notified();
            if self.0.ended.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Time since the last datagram in either direction.
    pub fn idle_for(&self) -> Duration {
        self.0.idle_for()
    }

    /// Resolves when the flow ends or has been idle for `limit`; true when it expired.
    pub async fn expired_or_ended(&self, limit: Duration) -> bool {
        loop {
            let left = limit.saturating_sub(self.idle_for());
            if left.is_zero() {
                self.0.stats.flows_expired.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            tokio::select! {
                _ = self.ended() => return false,
                _ = tokio::time::sleep(left) => {}
            }
        }
    }
}

/// Where a flow's outgoing datagrams go when not as QUIC datagrams.
enum Outbound {
    /// Frames for the task writing the flow's multiplexed stream.
    Stream(mpsc::Sender<Bytes>),
    /// Frames written straight into the flow's own lane; `held` collects a burst of them
    /// (see [`UdpFlow::hold`]) for one write.
    Lane { lane: Arc<LaneOut>, held: HeldFrames },
}

#[derive(Default)]
struct HeldFrames {
    frames: BytesMut,
    datagrams: u64,
    payload_bytes: u64,
}

/// The encoded header that starts a flow's stream or lane.
fn flow_header(tunnel: TunnelRef, peer: String, flow: u64) -> Vec<u8> {
    StreamHeader {
        kind: StreamKind::Udp,
        tunnel,
        peer,
        visited: String::new(),
        flow,
    }
    .encode()
}

/// One end of a UDP flow. Dropping it ends the flow for the peer too.
pub struct UdpFlow {
    id: u64,
    next_seq: u64,
    router: Option<Arc<DatagramRouter>>,
    out: Outbound,
    state: Arc<FlowState>,
    queue: Option<mpsc::Receiver<Bytes>>,
    reader: tokio::task::AbortHandle,
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        if let Some(router) = &self.router {
            router.unregister(self.id);
        }
        // A stream's writer task finishes the stream once its sender is dropped; a lane is
        // closed here, as its reading task also holds it.
        if let Outbound::Lane { lane, .. } = &self.out {
            lane.close();
        }
        self.reader.abort();
    }
}

impl UdpFlow {
    /// Opens a flow toward the peer, for `tunnel`, on behalf of client `peer`.
    pub async fn open(
        opener: &Opener,
        router: Option<&Arc<DatagramRouter>>,
        tunnel: impl Into<TunnelRef>,
        peer: String,
        sink: Sink,
        stats: Arc<UdpStats>,
    ) -> Result<Self, MuxError> {
        let id = router.map_or(0, |r| r.next_flow.fetch_add(1, Ordering::Relaxed));
        let mut stream = opener.open().await?;
        stream.write_all(&flow_header(tunnel.into(), peer, id)).await?;
        Ok(Self::start(id, stream, router.cloned(), sink, stats))
    }

    /// Opens a flow toward the peer on `lane`, a lane of its own (no QUIC datagrams, so no
    /// flow id).
    pub async fn open_on_lane(
        mut lane: tokio::net::TcpStream,
        tunnel: impl Into<TunnelRef>,
        peer: String,
        sink: Sink,
        stats: Arc<UdpStats>,
    ) -> std::io::Result<Self> {
        lane.write_all(&flow_header(tunnel.into(), peer, 0)).await?;
        Self::on_lane(lane, sink, stats)
    }

    /// The accepting side, once the stream header has been read.
    pub fn accept(
        stream: MuxStream,
        header: &StreamHeader,
        router: Option<&Arc<DatagramRouter>>,
        sink: Sink,
        stats: Arc<UdpStats>,
    ) -> Self {
        Self::start(header.flow, stream, router.cloned(), sink, stats)
    }

    fn start(
        id: u64,
        stream: MuxStream,
        router: Option<Arc<DatagramRouter>>,
        sink: Sink,
        stats: Arc<UdpStats>,
    ) -> Self {
        let (state, queue) = FlowState::new(sink, stats);
        let (to_stream, mut out_rx) = mpsc::channel::<Bytes>(FLOW_QUEUE);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let reader_state = state.clone();
        let read_task = tokio::spawn(async move {
            loop {
                let mut prefix = [0u8; 4];
                if reader.read_exact(&mut prefix).await.is_err() {
                    break;
                }
                let Ok(len) = datagram::frame_body_len(prefix) else {
                    reader_state.stats.drop_malformed.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).await.is_err() {
                    break;
                }
                match datagram::decode_frame_body(Bytes::from(body)) {
                    Ok((seq, payload)) => reader_state.deliver(seq, payload),
                    Err(_) => {
                        reader_state.stats.drop_malformed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            reader_state.end();
        });
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        if let Some(router) = &router {
            router.register(id, state.clone());
        }
        Self {
            id,
            next_seq: 0,
            router,
            out: Outbound::Stream(to_stream),
            state,
            queue,
            reader: read_task.abort_handle(),
        }
    }

    /// A flow carried on a lane of its own, its stream header already sent or read.
    pub fn on_lane(lane: tokio::net::TcpStream, sink: Sink, stats: Arc<UdpStats>) -> std::io::Result<Self> {
        let (out, lane) = LaneOut::split(lane)?;
        let (state, queue) = FlowState::new(sink, stats);
        let reader = tokio::spawn(super::lane::drive(lane, out.clone(), state.clone()));
        Ok(Self {
            id: 0,
            next_seq: 0,
            router: None,
            out: Outbound::Lane {
                lane: out,
                held: HeldFrames::default(),
            },
            state,
            queue,
            reader: reader.abort_handle(),
        })
    }

    pub fn watch(&self) -> FlowWatch {
        FlowWatch(self.state.clone())
    }

    /// Sends one datagram; never waits. Returns false when it had to be dropped.
    pub fn send(&mut self, payload: &[u8]) -> bool {
        self.hold(payload) && self.release()
    }

    /// Like [`send`](Self::send), except that a flow on a lane holds the datagram until
    /// [`release`](Self::release), so that a burst read from a socket leaves in one write.
    pub fn hold(&mut self, payload: &[u8]) -> bool {
        let stats = &self.state.stats;
        if payload.len() > MAX_UDP_PAYLOAD {
            stats.drop_too_large.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let via_datagram = self
            .router
            .as_ref()
            .filter(|r| r.conn.max_datagram_size().is_some_and(|max| payload.len() + 16 <= max));
        let sent = match via_datagram {
            Some(router) => router
                .conn
                .send_datagram(datagram::encode_datagram(self.id, seq, payload))
                .is_ok(),
            None => match &mut self.out {
                Outbound::Stream(to_stream) => to_stream.try_send(datagram::encode_frame(seq, payload)).is_ok(),
                Outbound::Lane { held, .. } => {
                    datagram::put_frame(&mut held.frames, seq, payload);
                    held.datagrams += 1;
                    held.payload_bytes += payload.len() as u64;
                    if held.frames.len() >= HELD_CAPACITY {
                        return self.release(); // a burst of large datagrams: write it now
                    }
                    return true; // counted when released
                }
            },
        };
        if sent {
            self.state.touch();
            stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
            stats.bytes_out.fetch_add(payload.len() as u64, Ordering::Relaxed);
        } else {
            stats.drop_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Writes the datagrams held on a lane; false when they had to be dropped.
    pub fn release(&mut self) -> bool {
        let Outbound::Lane { lane, held } = &mut self.out else {
            return true;
        };
        if held.datagrams == 0 {
            return true;
        }
        let stats = &self.state.stats;
        let sent = lane.send(&held.frames);
        if sent {
            self.state.touch();
            stats.datagrams_out.fetch_add(held.datagrams, Ordering::Relaxed);
            stats.bytes_out.fetch_add(held.payload_bytes, Ordering::Relaxed);
        } else {
            stats.drop_queue_full.fetch_add(held.datagrams, Ordering::Relaxed);
        }
        held.frames.clear();
        if held.frames.capacity() > HELD_CAPACITY {
            held.frames = BytesMut::new(); // a large datagram passed; idle flows stay small
        }
        held.datagrams = 0;
        held.payload_bytes = 0;
        sent
    }

    /// For a [`Sink::Queue`] flow: the next datagram in order, or `None` once the peer ended
    /// the flow. A socket-sink flow delivers by itself and returns `None` here at its end.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let watch = self.watch();
        match &mut self.queue {
            Some(queue) => tokio::select! {
                biased;
                datagram = queue.recv() => datagram,
                _ = watch.ended() => queue.try_recv().ok(),
            },
            None => {
                watch.ended().await;
                None
            }
        }
    }
}
