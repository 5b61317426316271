//! Lanes on the agent: a few idle data connections kept dialed to the hub, plain TCP or TLS
//! like the session's own connection, so a visitor can be relayed on a connection of its own
//! (see `carrier/lanes.rs`: at once on TLS; once bulk on plain lanes, where a lane then arrives
//! naming the multiplexed stream it continues). Each lane carries one forwarded connection
//! or UDP flow at a time. A plain lane whose connection ended cleanly (framed both ways)
//! carries the next unless enough lanes are idle already ([`KEEP_IDLE_FACTOR`]); a TLS lane
//! closes with its connection. Either is replaced; the multiplexed connection stays the
//! fallback and carries everything else (control, `reach` flows).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::target::{connect_target, serve_udp_flow, StreamContext};
use super::Backoff;
use crate::carrier::lanes::{DialedLane, Lane};
use crate::mux::Lifetime;
use crate::relay::{relay_plain_lane, Handoff, LaneEnd, WantBack, MEET_DEADLINE};
use crate::shutdown::Shutdown;
use crate::types::LaneToken;
use crate::udp::UdpFlow;
use crate::wire::io::read_stream_header;
use crate::wire::{ConnKind, StreamHeader, StreamKind, PREFACE};

const DIAL_DEADLINE: Duration = Duration::from_secs(5);

/// Busy TLS lanes one agent keeps at once. A TLS lane's relay holds two copy buffers and
/// rustls' own while it runs, where a spliced plain lane holds none, so beyond this many,
/// connections take the multiplexed connection, whose per-stream cost is small.
pub const MAX_BUSY_TLS_LANES: usize = 32;

/// Busy plain lanes one agent keeps at once. A lane holds no buffer, but it is a second
/// TCP connection per visitor: the hub holds two descriptors for it (visitor and lane) instead
/// of one, so 10,000 idle visitors on lanes needed 20,000 there. Bulk transfers gain from a
/// lane; many more than this at once share the machine anyway, and take the multiplexer.
pub const MAX_BUSY_LANES: usize = 64;

/// Idle lanes an agent keeps, as a multiple of `--lanes`, when connections end: a lane whose
/// connection ended with more than this many idle is closed instead of kept. Without it a
/// burst left its peak of lanes idle for the session's life (50 after 50 keep-alive
/// visitors). Twice, not once, so that steady traffic above `--lanes` (connections ending
/// while others start) keeps its lanes instead of closing and redialing them.
const KEEP_IDLE_FACTOR: usize = 2;

/// Where lanes go and what they are: the address the session reached, its lane token, and
/// for a TLS session the connector and server name it used.
pub struct LaneDial {
    pub hub: SocketAddr,
    pub token: LaneToken,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// What a lane reports to [`keep_lanes`].
enum LaneEvent {
    /// It stopped being idle and carries a connection.
    Taken,
    /// Its connection ended cleanly and it waits for the next.
    Idle,
    /// It closed without being used, or finished carrying its connection.
    Gone { was_busy: bool },
}

/// Keeps `count` idle lanes dialed until the session ends or the agent drains. Lanes that
/// are carrying a connection then go on until it finishes; idle ones wait until the hub
/// closes them (see [`serve_lane`]).
pub async fn keep_lanes(
    dial: LaneDial,
    count: usize,
    context: Arc<StreamContext>,
    lifetime: Lifetime,
    shutdown: Shutdown,
) {
    let most_busy = match dial.tls {
        Some(_) => MAX_BUSY_TLS_LANES,
        None => MAX_BUSY_LANES,
    };
    let (events_tx, mut events) = mpsc::unbounded_channel::<LaneEvent>();
    let (mut idle, mut busy) = (0usize, 0usize);
    // `idle` as the lanes' relays see it when they decide whether to come back. They may
    // read it a moment stale, so a few more can come back at once; `keep_lanes` never
    // dials while idle ≥ count, so it only bounds how many stay.
    let idle_now = Arc::new(AtomicUsize::new(0));
    let want_back: WantBack = {
        let idle_now = idle_now.clone();
        let keep_at_most = count * KEEP_IDLE_FACTOR;
        Arc::new(move || idle_now.load(Ordering::Relaxed) < keep_at_most)
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut retry_at = None;
    let link = context.link.clone();
    let publish = |idle: usize, busy: usize| {
        link.lanes_idle.store(idle as u64, Ordering::Relaxed);
        link.lanes_busy.store(busy as u64, Ordering::Relaxed);
    };
    // The session's lanes end with it: none is idle or busy once this returns.
    let _reset = Reset(context.link.clone());
    loop {
        while idle < count && busy < most_busy && retry_at.is_none() {
            match dial_lane(&dial).await {
                Ok(lane) => {
                    idle += 1;
                    backoff.reset();
                    idle_now.store(idle, Ordering::Relaxed);
                    tokio::spawn(serve_lane(
                        lane,
                        context.clone(),
                        want_back.clone(),
                        events_tx.clone(),
                        lifetime.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "dialing a lane failed; streams use the shared connection");
                    retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                }
            }
        }
        publish(idle, busy);
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(event) = events.recv() => {
                match event {
                    LaneEvent::Taken => {
                        idle -= 1;
                        busy += 1;
                    }
                    LaneEvent::Idle => {
                        busy -= 1;
                        idle += 1;
                    }
                    LaneEvent::Gone { was_busy: true } => busy -= 1,
                    LaneEvent::Gone { was_busy: false } => idle -= 1,
                }
                idle_now.store(idle, Ordering::Relaxed);
            }
            _ = retry => retry_at = None,
            _ = lifetime.closed() => return,
            _ = shutdown.draining() => return,
        }
    }
}

/// Clears the published lane counts when `keep_lanes` ends.
struct Reset(Arc<super::LinkStatus>);

impl Drop for Reset {
    fn drop(&mut self) {
        self.0.lanes_idle.store(0, Ordering::Relaxed);
        self.0.lanes_busy.store(0, Ordering::Relaxed);
    }
}

async fn dial_lane(dial: &LaneDial) -> std::io::Result<DialedLane> {
    let mut hello = Vec::with_capacity(PREFACE.len() + 1 + dial.token.0.len());
    hello.extend_from_slice(PREFACE);
    hello.push(ConnKind::Lane.byte());
    hello.extend_from_slice(&dial.token.0);
    let connect = async {
        let mut tcp = TcpStream::connect(dial.hub).await?;
        crate::relay::configure_tcp(&tcp);
        match &dial.tls {
            None => {
                tcp.write_all(&hello).await?;
                Ok(Lane::Plain(tcp))
            }
            Some((connector, name)) => {
                let mut tls = connector.connect(name.clone(), tcp).await?;
                tls.write_all(&hello).await?;
                tls.flush().await?;
                Ok(Lane::Tls(Box::new(tls)))
            }
        }
    };
    tokio::time::timeout(DIAL_DEADLINE, connect)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Waits (idle) for the hub to send a stream header, then carries what it names; a plain
/// lane whose connection ended cleanly waits for the next one, a TLS lane closes with its
/// connection.
///
/// A lane counts as a running connection for the whole of its life, idle too, and does not
/// close itself when the agent drains: the hub may have taken it for a visitor just before it
/// heard of the drain, and that visitor's header is then still on its way. The hub closes the
/// lanes still idle once it hears (`hub/session.rs`), so the drain waits for one message
/// round trip, not for its limit.
async fn serve_lane(
    mut lane: DialedLane,
    context: Arc<StreamContext>,
    want_back: WantBack,
    events: mpsc::UnboundedSender<LaneEvent>,
    lifetime: Lifetime,
    shutdown: Shutdown,
) {
    let _running = shutdown.track();
    loop {
        let header = tokio::select! {
            header = read_header(&mut lane) => header,
            _ = lifetime.closed() => None,
        };
        let Some(header) = header else {
            let _ = events.send(LaneEvent::Gone { was_busy: false });
            return;
        };
        let _ = events.send(LaneEvent::Taken);
        let returned = match header.kind {
            StreamKind::Moved => carry_moved(lane, header.flow, &context, &want_back).await,
            _ => carry(lane, header, &context, &want_back).await,
        };
        match returned {
            Some(again) => {
                lane = again;
                let _ = events.send(LaneEvent::Idle);
            }
            None => {
                let _ = events.send(LaneEvent::Gone { was_busy: true });
                return;
            }
        }
    }
}

async fn read_header(lane: &mut DialedLane) -> Option<StreamHeader> {
    let header = match lane {
        Lane::Plain(tcp) => read_stream_header(tcp).await,
        Lane::Tls(tls) => read_stream_header(tls).await,
    };
    header
        .inspect_err(|e| tracing::debug!(error = %e, "lane closed before use"))
        .ok()
}

/// Hands a lane to the relay of the multiplexed stream `flow` names, whose connection the
/// hub moved here (`relay/moving.rs`), and waits for the lane to come back.
async fn carry_moved(lane: DialedLane, flow: u64, context: &StreamContext, want_back: &WantBack) -> Option<DialedLane> {
    let Ok(id) = u32::try_from(flow) else {
        tracing::debug!("a moved connection with a bad stream id: closing the lane");
        return None;
    };
    let (back, mut returned) = oneshot::channel();
    let handoff = Handoff {
        lane,
        want_back: want_back.clone(),
        back,
    };
    context.moved_lanes.arrive(id, handoff);
    let lane = tokio::select! {
        lane = &mut returned => lane,
        () = tokio::time::sleep(MEET_DEADLINE) => {
            // Unclaimed by now: dropped, and `returned` says so. Claimed: its relay runs on.
            context.moved_lanes.withdraw(id);
            returned.await
        }
    };
    lane.ok().flatten()
}

/// Carries one connection (or UDP flow) the hub placed on a plain lane; returns the lane if
/// it can carry another (and `want_back` said to keep it: see [`KEEP_IDLE_FACTOR`]). TLS
/// lanes carry moved connections only.
async fn carry(
    lane: DialedLane,
    header: StreamHeader,
    context: &StreamContext,
    want_back: &WantBack,
) -> Option<DialedLane> {
    let Lane::Plain(lane) = lane else {
        tracing::debug!(kind = ?header.kind, "the hub sent a TLS lane a stream kind it does not carry; closing the lane");
        return None;
    };
    let target = context.targets.for_stream(&header).await?;
    if header.kind == StreamKind::Udp {
        // A UDP flow keeps its lane until it ends, then closes it.
        serve_udp_flow(context, &target, |sink, stats| {
            match UdpFlow::on_lane(lane, sink, stats) {
                Ok(flow) => Some(flow),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot carry a UDP flow on a lane");
                    None
                }
            }
        })
        .await;
        return None;
    }
    // A target that cannot be reached closes the lane, which the visitor sees as a close.
    let upstream = connect_target(&target, &header, &context.link).await.ok()?;
    relay_plain_lane(upstream, lane, LaneEnd::Agent(want_back.clone()))
        .await
        .map(|(_, again)| again.map(Lane::Plain))
        .inspect_err(|e| tracing::info!(peer = %header.peer, error = %e, "relay ended with an error"))
        .ok()
        .flatten()
}
