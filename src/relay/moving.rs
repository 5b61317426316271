//! Connections that start on the multiplexer and move onto a lane once they turn bulk.
//!
//! Why: a small request/response exchange costs fewer system calls on the agent's HTTP/2
//! connection, where the frames of many connections share each read and write, than on a
//! lane of its own, where every message is a send and a receive at both ends (peers.sh
//! HTTP with 50 keep-alive connections: 8 calls per request on lanes against 4 on the
//! multiplexer). A bulk transfer is the other way round: on a plain lane it is spliced socket
//! to socket with no user-space buffer, where HTTP/2 copies it through windows of megabytes.
//! The hub cannot tell the two apart when a visitor connects, so every visitor of a session
//! with plain lanes starts multiplexed, and moves to an idle lane at its first whole relay
//! buffer in either direction.
//!
//! The move, keeping each direction in order:
//! 1. The hub stops reading the visitor, writes a `StreamKind::Moved` header naming the
//!    stream on an idle lane, and ends its direction of the stream with the "moved" trailer
//!    (`mux/h2.rs`). What it reads from the visitor from then on goes on the lane; when the
//!    move came from a whole read of the visitor, that read goes there too, right after the
//!    header as the start of a spliced direction, so no bulk data enters HTTP/2's windows.
//! 2. The agent writes what the stream brought to the target up to that trailer, stops
//!    reading the target, ends its own direction with the same trailer, and meets the lane
//!    ([`MovedLanes`]; the lane may arrive before or after the trailer).
//! 3. The hub writes what the stream brought to the visitor up to the agent's trailer; then
//!    both ends relay over the lane as `plain_lane.rs` does (framed, then spliced once bulk),
//!    and the lane can be reused afterwards.
//!
//! A direction that ended before the move (a plain end of stream) stays ended: the lane's
//! relay then carries its `END` without a second half-close.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use super::pipe::pipe;
use super::plain_lane::{relay_plain_lane, relay_plain_lane_bulk_sent, write_both, LaneEnd, WantBack, BULK_HEAD};
use super::{read_chunk, relay, Transferred, RELAY_BUFFER};
use crate::mux::MuxStream;

/// A lane a connection can move onto, and how each end carries the connection there once
/// both directions have moved. A plain lane frames, then splices, and can carry another
/// connection afterwards; a TLS lane carries the bytes as they are and closes with its
/// connection.
pub trait MovableLane: Send + Sized {
    /// Writes the moved header `head`; with `first`, a whole read that starts the lane's
    /// direction from the visitor (on a plain lane behind its `BULK` head: that direction is
    /// spliced from there on).
    fn write_head(&mut self, head: &[u8], first: Option<&[u8]>) -> impl Future<Output = io::Result<()>> + Send;

    /// At the hub: relays `visitor` on the lane; `bulk_sent` when the head came with a whole
    /// read. The lane back when it can carry another connection.
    fn relay_at_hub(
        self,
        visitor: TcpStream,
        bulk_sent: bool,
    ) -> impl Future<Output = io::Result<(Transferred, Option<Self>)>> + Send;

    /// At the agent: relays `target` on the lane; `want_back` is asked before a plain lane is
    /// offered for the next connection (see [`WantBack`]).
    fn relay_at_agent(
        self,
        target: TcpStream,
        want_back: WantBack,
    ) -> impl Future<Output = io::Result<(Transferred, Option<Self>)>> + Send;
}

impl MovableLane for TcpStream {
    async fn write_head(&mut self, head: &[u8], first: Option<&[u8]>) -> io::Result<()> {
        match first {
            Some(first) => write_both(self, &[head, &BULK_HEAD[..]].concat(), first).await,
            None => self.write_all(head).await,
        }
    }

    async fn relay_at_hub(self, visitor: TcpStream, bulk_sent: bool) -> io::Result<(Transferred, Option<Self>)> {
        match bulk_sent {
            true => Ok((relay_plain_lane_bulk_sent(visitor, self).await?, None)),
            false => relay_plain_lane(visitor, self, LaneEnd::Hub).await,
        }
    }

    async fn relay_at_agent(self, target: TcpStream, want_back: WantBack) -> io::Result<(Transferred, Option<Self>)> {
        relay_plain_lane(target, self, LaneEnd::Agent(want_back)).await
    }
}

/// A lane whose bytes need no framing of ours (a TLS lane: rustls ends each direction with
/// its close_notify), carried as they are; it closes with its connection.
impl<T> MovableLane for Box<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn write_head(&mut self, head: &[u8], first: Option<&[u8]>) -> io::Result<()> {
        self.write_all(head).await?;
        if let Some(first) = first {
            self.write_all(first).await?;
        }
        self.flush().await
    }

    async fn relay_at_hub(self, visitor: TcpStream, _bulk_sent: bool) -> io::Result<(Transferred, Option<Self>)> {
        Ok((relay(visitor, self).await?, None))
    }

    async fn relay_at_agent(self, target: TcpStream, _want_back: WantBack) -> io::Result<(Transferred, Option<Self>)> {
        Ok((relay(target, self).await?, None))
    }
}

/// How long one end of a move waits for the other: the lane for its trailer, or the trailer
/// for its lane. Both are sent together by the hub, so this only bounds a broken peer.
pub const MEET_DEADLINE: Duration = Duration::from_secs(10);

/// How long a connection that turned bulk waits for a lane when none is idle, once: the
/// agent dials a replacement whenever a lane is taken, so one is usually a connection setup
/// away. Meanwhile the visitor is not read. Without the wait, connections beyond the idle
/// lanes (`iperf3 -P 8` on `--lanes 4`) pumped megabytes into the HTTP/2 windows until a
/// lane came (hub + agent peak 17 MB against 12.6 with enough lanes idle).
pub const LANE_WAIT: Duration = Duration::from_millis(50);

/// At the hub: relays `visitor` on `stream` (its stream header already sent) and moves the
/// connection onto a lane from `take_lane` once either direction carries a whole relay
/// buffer. `take_lane(wait)` returns an idle lane, waiting up to `wait` for one.
/// `moved_header(id)` is the lane's stream header for stream `id`. Returns the bytes moved
/// (`a_to_b`: visitor to agent) and the lane when it can carry another connection.
pub async fn relay_movable_at_hub<Lane, TakeLane>(
    visitor: TcpStream,
    stream: MuxStream,
    mut take_lane: impl FnMut(Duration) -> TakeLane,
    moved_header: impl Fn(u32) -> Vec<u8>,
) -> io::Result<(Transferred, Option<Lane>)>
where
    Lane: MovableLane,
    TakeLane: Future<Output = Option<Lane>>,
{
    let Some(id) = stream.movable_id() else {
        return relay(visitor, stream).await.map(|moved| (moved, None));
    };
    let (mut mux_read, mut mux_write) = stream.into_split();
    let (visitor_read, mut visitor_write) = visitor.into_split();
    let bulk_down = Notify::new();
    let up = async {
        let mut total = 0u64;
        let mut waited = false;
        // `first`: a whole read that goes on the lane, raw, right after the header, instead
        // of through the multiplexer's windows.
        let mut try_move =
            async |mux_write: &mut crate::mux::MuxSend, first: Option<&Bytes>| -> io::Result<Option<Lane>> {
                let wait = if waited { Duration::ZERO } else { LANE_WAIT };
                waited = true;
                let Some(mut lane) = take_lane(wait).await else {
                    return Ok(None);
                };
                let head = moved_header(id);
                if let Err(e) = lane.write_head(&head, first.map(|first| &first[..])).await {
                    // Nothing was promised yet: stay on the multiplexer.
                    tracing::debug!(error = %e, "a lane failed before a connection moved to it");
                    return Ok(None);
                }
                mux_write.finish_moved()?;
                Ok(Some(lane))
            };
        loop {
            let chunk = tokio::select! {
                biased;
                chunk = read_chunk(visitor_read.as_ref()) => chunk?,
                () = bulk_down.notified() => match try_move(&mut mux_write, None).await? {
                    Some(lane) => return Ok((total, Some((lane, false)))),
                    None => continue,
                },
            };
            let Some(chunk) = chunk else {
                mux_write.finish()?;
                return Ok((total, None));
            };
            total += chunk.len() as u64;
            if chunk.len() >= RELAY_BUFFER {
                if let Some(lane) = try_move(&mut mux_write, Some(&chunk)).await? {
                    return Ok((total, Some((lane, true))));
                }
            }
            mux_write.send(chunk).await?;
        }
    };
    let down = async {
        let total = pipe(&mut mux_read, &mut visitor_write, || bulk_down.notify_one()).await?;
        let moved = mux_read.moved();
        if !moved {
            visitor_write.shutdown().await?;
        }
        Ok::<_, io::Error>((total, moved))
    };
    let ((up_total, lane), (down_total, down_moved)) = tokio::try_join!(up, down)?;
    let mut moved = Transferred {
        a_to_b: up_total,
        b_to_a: down_total,
    };
    let Some((lane, bulk_sent)) = lane else {
        if down_moved {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the agent moved a stream the hub did not",
            ));
        }
        return Ok((moved, None));
    };
    let visitor = visitor_read.reunite(visitor_write).map_err(io::Error::other)?;
    let (on_lane, lane) = lane.relay_at_hub(visitor, bulk_sent).await?;
    moved.a_to_b += on_lane.a_to_b;
    moved.b_to_a += on_lane.b_to_a;
    Ok((moved, lane))
}

/// At the agent: relays `target` on `stream` and, when the hub moves the connection, goes on
/// over the lane `lanes` hands over for the stream. Returns the bytes moved (`a_to_b`: target
/// to hub).
pub async fn relay_movable_at_agent<Lane: MovableLane>(
    target: TcpStream,
    stream: MuxStream,
    lanes: &MovedLanes<Lane>,
) -> io::Result<Transferred> {
    let Some(id) = stream.movable_id() else {
        return relay(target, stream).await;
    };
    let (mut mux_read, mut mux_write) = stream.into_split();
    let (target_read, mut target_write) = target.into_split();
    let stop_reading = Notify::new();
    let up = async {
        let mut total = 0u64;
        loop {
            let chunk = tokio::select! {
                biased;
                () = stop_reading.notified() => {
                    mux_write.finish_moved()?;
                    return Ok(total);
                }
                chunk = read_chunk(target_read.as_ref()) => chunk?,
            };
            let Some(chunk) = chunk else {
                mux_write.finish()?;
                return Ok(total);
            };
            total += chunk.len() as u64;
            mux_write.send(chunk).await?;
        }
    };
    let down = async {
        let total = pipe(&mut mux_read, &mut target_write, || {}).await?;
        let moved = mux_read.moved();
        if moved {
            // Stored as a permit if the target's direction already ended: then nothing waits.
            stop_reading.notify_one();
        } else {
            target_write.shutdown().await?;
        }
        Ok::<_, io::Error>((total, moved))
    };
    let (up_total, (down_total, moved)) = tokio::try_join!(up, down)?;
    let mut transferred = Transferred {
        a_to_b: up_total,
        b_to_a: down_total,
    };
    if !moved {
        return Ok(transferred);
    }
    let handoff = lanes.claim(id).await?;
    let target = target_read.reunite(target_write).map_err(io::Error::other)?;
    let relayed = handoff.lane.relay_at_agent(target, handoff.want_back).await;
    let (on_lane, lane) = match relayed {
        Ok(done) => done,
        Err(e) => {
            let _ = handoff.back.send(None);
            return Err(e);
        }
    };
    let _ = handoff.back.send(lane);
    transferred.a_to_b += on_lane.a_to_b;
    transferred.b_to_a += on_lane.b_to_a;
    Ok(transferred)
}

/// A lane that arrived for a moved connection, on its way to that connection's relay.
pub struct Handoff<Lane> {
    pub lane: Lane,
    /// Whether the agent keeps the lane afterwards (see [`WantBack`]).
    pub want_back: WantBack,
    /// The lane goes back here when its connection ends (`None`: it closed).
    pub back: oneshot::Sender<Option<Lane>>,
}

enum Slot<Lane> {
    /// The lane came first and waits for its stream's trailer.
    Lane(Handoff<Lane>),
    /// The trailer came first and the relay waits for its lane.
    Relay(oneshot::Sender<Handoff<Lane>>),
}

/// Where the agent's moved connections meet their lanes, by stream id: one per session.
pub struct MovedLanes<Lane> {
    slots: Arc<Mutex<HashMap<u32, Slot<Lane>>>>,
}

impl<Lane> Clone for MovedLanes<Lane> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
        }
    }
}

impl<Lane> Default for MovedLanes<Lane> {
    fn default() -> Self {
        Self { slots: Arc::default() }
    }
}

impl<Lane> MovedLanes<Lane> {
    /// A lane for stream `id` has arrived: handed to the stream's relay if it waits, else
    /// parked for it. The lane's task withdraws it after [`MEET_DEADLINE`] if unclaimed.
    pub fn arrive(&self, id: u32, handoff: Handoff<Lane>) {
        let mut slots = self.slots.lock().expect("moved-lane slots poisoned");
        match slots.remove(&id) {
            Some(Slot::Relay(relay)) => {
                drop(slots);
                // Fails only if the relay gave up just now; the lane then closes.
                let _ = relay.send(handoff);
            }
            // A second lane for one stream (a broken hub): the first one stays.
            Some(earlier @ Slot::Lane(_)) => {
                slots.insert(id, earlier);
            }
            None => {
                slots.insert(id, Slot::Lane(handoff));
            }
        }
    }

    /// Drops the lane parked for stream `id` if no relay claimed it (its `back` says `None`).
    pub fn withdraw(&self, id: u32) {
        let mut slots = self.slots.lock().expect("moved-lane slots poisoned");
        if matches!(slots.get(&id), Some(Slot::Lane(_))) {
            slots.remove(&id);
        }
    }

    /// The lane for stream `id`, once it arrives (within [`MEET_DEADLINE`]).
    pub async fn claim(&self, id: u32) -> io::Result<Handoff<Lane>> {
        let waiting = {
            let mut slots = self.slots.lock().expect("moved-lane slots poisoned");
            if let Some(Slot::Lane(handoff)) = slots.remove(&id) {
                return Ok(handoff);
            }
            let (relay, waiting) = oneshot::channel();
            slots.insert(id, Slot::Relay(relay));
            waiting
        };
        match tokio::time::timeout(MEET_DEADLINE, waiting).await {
            Ok(Ok(handoff)) => Ok(handoff),
            _ => {
                let mut slots = self.slots.lock().expect("moved-lane slots poisoned");
                if matches!(slots.get(&id), Some(Slot::Relay(_))) {
                    slots.remove(&id);
                }
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no lane arrived for a connection the hub moved",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{h2_pair_and_tcp, tcp_pair};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    const BOUND: Duration = Duration::from_secs(10);

    /// The two relays of visitor ⇄ [hub] ⇄ HTTP/2 stream ⇄ [agent] ⇄ target, with one spare
    /// lane between them that the hub may move the connection onto.
    struct Relays {
        hub: tokio::task::JoinHandle<io::Result<(Transferred, Option<TcpStream>)>>,
        agent: tokio::task::JoinHandle<io::Result<Transferred>>,
        /// Lanes the hub took.
        taken: Arc<AtomicUsize>,
        /// What the agent's relay gave back through `back`; `Err` if no relay claimed the lane.
        lane_back: tokio::task::JoinHandle<Result<Option<TcpStream>, oneshot::error::RecvError>>,
    }

    /// The relays, the visitor's end and the target's end.
    async fn path() -> (Relays, TcpStream, TcpStream) {
        let (visitor, visitor_at_hub, near, far) = h2_pair_and_tcp().await;
        let (target_at_agent, target) = tcp_pair().await;
        let (hub_lane, mut agent_lane) = tcp_pair().await;
        let lanes = MovedLanes::default();
        let taken = Arc::new(AtomicUsize::new(0));
        let mut spare = Some(hub_lane);
        let take_lane = {
            let taken = taken.clone();
            move |_wait| {
                let lane = spare.take();
                if lane.is_some() {
                    taken.fetch_add(1, Ordering::Relaxed);
                }
                std::future::ready(lane)
            }
        };
        let hub = tokio::spawn(relay_movable_at_hub(visitor_at_hub, near, take_lane, |id| {
            id.to_be_bytes().to_vec()
        }));
        let agent = tokio::spawn({
            let lanes = lanes.clone();
            async move { relay_movable_at_agent(target_at_agent, far, &lanes).await }
        });
        // The agent's lane task: the moved header (here just the stream id), then the meeting.
        let lane_back = tokio::spawn(async move {
            let mut id = [0u8; 4];
            agent_lane.read_exact(&mut id).await.expect("the hub names the stream");
            let (back, returned) = oneshot::channel();
            let want_back: WantBack = Arc::new(|| true);
            let handoff = Handoff {
                lane: agent_lane,
                want_back,
                back,
            };
            lanes.arrive(u32::from_be_bytes(id), handoff);
            returned.await
        });
        let relays = Relays {
            hub,
            agent,
            taken,
            lane_back,
        };
        (relays, visitor, target)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn read_to_end(socket: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
        let mut all = Vec::new();
        tokio::time::timeout(BOUND, socket.read_to_end(&mut all))
            .await
            .expect("the stream ends in time")
            .expect("read");
        all
    }

    /// Both relays' byte counts, and whether the agent's relay claimed the lane.
    async fn finish(relays: Relays) -> (Transferred, Transferred, bool) {
        let hub = tokio::time::timeout(BOUND, relays.hub)
            .await
            .expect("the hub's relay ends");
        let agent = tokio::time::timeout(BOUND, relays.agent)
            .await
            .expect("the agent's relay ends");
        let claimed = if relays.taken.load(Ordering::Relaxed) > 0 {
            let back = tokio::time::timeout(BOUND, relays.lane_back)
                .await
                .expect("the lane comes back");
            back.unwrap().is_ok()
        } else {
            relays.lane_back.abort();
            false
        };
        (hub.unwrap().unwrap().0, agent.unwrap().unwrap(), claimed)
    }

    #[tokio::test]
    async fn a_bulk_upload_moves_to_the_lane_in_order_and_the_reply_follows() {
        let (relays, visitor, mut target) = path().await;
        let upload = pattern(3 << 20);
        let sent = upload.clone();
        let (mut visitor_read, mut visitor_write) = visitor.into_split();
        let writer = tokio::spawn(async move {
            visitor_write.write_all(&sent).await.unwrap();
            visitor_write.shutdown().await.unwrap();
        });
        assert_eq!(
            read_to_end(&mut target).await,
            upload,
            "every byte, in order, then the end"
        );
        writer.await.unwrap();
        target.write_all(b"stored").await.unwrap();
        target.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut visitor_read).await, b"stored");
        let (hub, agent, claimed) = finish(relays).await;
        assert!(claimed, "the agent's relay went on over the lane");
        assert_eq!((hub.a_to_b, hub.b_to_a), (3 << 20, 6));
        assert_eq!((agent.b_to_a, agent.a_to_b), (3 << 20, 6));
    }

    #[tokio::test]
    async fn a_bulk_download_moves_too() {
        let (relays, mut visitor, target) = path().await;
        visitor.write_all(b"GET /big").await.unwrap();
        let download = pattern(3 << 20);
        let sent = download.clone();
        let (mut target_read, mut target_write) = target.into_split();
        let mut request = [0u8; 8];
        target_read.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"GET /big");
        let writer = tokio::spawn(async move {
            target_write.write_all(&sent).await.unwrap();
            target_write.shutdown().await.unwrap();
        });
        let (mut visitor_read, mut visitor_write) = visitor.into_split();
        assert_eq!(read_to_end(&mut visitor_read).await, download);
        writer.await.unwrap();
        visitor_write.shutdown().await.unwrap();
        assert!(
            read_to_end(&mut target_read).await.is_empty(),
            "the visitor's end arrives"
        );
        let (hub, _, claimed) = finish(relays).await;
        assert!(claimed, "the download moved to the lane");
        assert_eq!((hub.a_to_b, hub.b_to_a), (8, 3 << 20));
    }

    #[tokio::test]
    async fn small_exchanges_stay_on_the_multiplexer() {
        let (relays, mut visitor, mut target) = path().await;
        for round in 0..50u8 {
            let request = [round; 300];
            visitor.write_all(&request).await.unwrap();
            let mut got = [0u8; 300];
            target.read_exact(&mut got).await.unwrap();
            assert_eq!(got, request);
            target.write_all(&[round; 2000]).await.unwrap();
            let mut reply = [0u8; 2000];
            visitor.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, [round; 2000]);
        }
        visitor.shutdown().await.unwrap();
        assert!(read_to_end(&mut target).await.is_empty());
        target.shutdown().await.unwrap();
        assert!(read_to_end(&mut visitor).await.is_empty());
        let (hub, _, claimed) = finish(relays).await;
        assert!(!claimed);
        assert_eq!((hub.a_to_b, hub.b_to_a), (50 * 300, 50 * 2000));
    }

    #[tokio::test]
    async fn a_direction_that_ended_before_the_move_stays_ended() {
        let (relays, visitor, mut target) = path().await;
        // The target answers and closes its side first, as an HTTP/1.0 server would.
        target.write_all(b"early").await.unwrap();
        target.shutdown().await.unwrap();
        let (mut visitor_read, mut visitor_write) = visitor.into_split();
        assert_eq!(read_to_end(&mut visitor_read).await, b"early");
        // Then the visitor uploads in bulk, which moves the connection.
        let upload = pattern(2 << 20);
        let sent = upload.clone();
        let writer = tokio::spawn(async move {
            visitor_write.write_all(&sent).await.unwrap();
            visitor_write.shutdown().await.unwrap();
        });
        assert_eq!(read_to_end(&mut target).await, upload);
        writer.await.unwrap();
        let (hub, agent, claimed) = finish(relays).await;
        assert!(claimed, "the upload moved");
        assert_eq!((hub.a_to_b, hub.b_to_a), (2 << 20, 5));
        assert_eq!((agent.b_to_a, agent.a_to_b), (2 << 20, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_and_its_relay_meet_in_either_order_or_give_up() {
        let lanes = MovedLanes::default();
        let handoff = |lane| {
            let (back, returned) = oneshot::channel();
            let want_back: WantBack = Arc::new(|| true);
            (Handoff { lane, want_back, back }, returned)
        };
        let (lane, _peer) = tcp_pair().await;
        // Lane first.
        let (first, _returned) = handoff(lane);
        lanes.arrive(1, first);
        assert!(lanes.claim(1).await.is_ok());
        // Relay first.
        let claim = tokio::spawn({
            let lanes = lanes.clone();
            async move { lanes.claim(3).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        let (lane, _peer) = tcp_pair().await;
        let (second, _returned) = handoff(lane);
        lanes.arrive(3, second);
        claim.await.unwrap().expect("the waiting relay gets the lane");
        // A relay whose lane never comes gives up; a lane nobody claims is withdrawn.
        let err = lanes.claim(5).await.err().expect("no lane for stream 5");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let (lane, _peer) = tcp_pair().await;
        let (parked, returned) = handoff(lane);
        lanes.arrive(7, parked);
        lanes.withdraw(7);
        assert!(returned.await.is_err(), "the withdrawn lane is dropped");
        assert!(lanes.slots.lock().unwrap().is_empty(), "nothing is left behind");
    }
}
