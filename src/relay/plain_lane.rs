//! The relay between a socket and a plain lane, built so the lane can carry one connection
//! after another: each direction is framed (a 2-byte length before each message, [`END`] for
//! its end of stream) until a read fills the whole relay buffer; from then on that direction
//! is raw bytes spliced socket to socket (see `splice.rs`), ended by the lane's own FIN, and
//! the lane is closed afterwards. A lane whose two directions both ended framed is idle
//! again once the agent confirms with [`DONE`]; an agent with enough idle lanes closes it
//! instead ([`WantBack`]).
//!
//! Why: a new lane per visitor cost a whole TCP connection (the agent's dial, the hub's
//! accept, both closes) on top of the visitor's and the target's, and left a TIME_WAIT
//! socket on the hub for every visitor. Small messages cost the same syscalls framed as
//! copied; bulk transfers keep the splice. Splicing from the first byte was measured before:
//! it moves bulk with about a third less CPU but made small request/response traffic slower
//! (peers.sh HTTP: 29k req/s spliced against 37k copied), hence framed copies until a read
//! fills the buffer. An idle connection holds no buffer, and no pipe.
//!
//! Order on the lane: the hub writes the stream header, frames, `END`; the agent frames,
//! `END`, and `DONE` once it has read the hub's `END` too. The hub parks the lane only after
//! `DONE`, so the next header never arrives while the agent still reads the last connection.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::splice::splice_to_end;
use super::{read_chunk, Transferred};

/// End of this direction's stream (as a FIN would say); the lane stays open.
const END: u16 = 0;
/// Raw bytes follow until the lane's FIN; the lane is not used again.
const BULK: u16 = 0xFFFF;
/// From the agent, after both directions ended framed: the lane is idle again.
const DONE: u16 = 0xFFFE;
/// Longest framed message; a read longer than this (a full relay buffer) starts bulk.
const MAX_FRAME: usize = 0xFFFD;

/// The agent sends [`DONE`] right after its last frame; a lane that does not is closed.
const DONE_DEADLINE: Duration = Duration::from_secs(10);

/// Which end of the lane this relay runs at.
#[derive(Clone)]
pub enum LaneEnd {
    Hub,
    /// The agent, asking [`WantBack`] whether to keep a lane whose connection ended framed.
    Agent(WantBack),
}

/// The agent's answer, asked just before it would send `DONE` (the frame that tells the hub
/// the lane is idle again): `true` keeps the lane for the next connection, `false` closes it
/// instead (enough lanes are idle already). It must be decided before `DONE`: once the hub
/// has it, the hub may place a visitor on the lane at any moment, and a lane the agent closed
/// after that would drop the visitor's header.
pub type WantBack = Arc<dyn Fn() -> bool + Send + Sync>;

/// How one direction ended.
enum Ended {
    /// With [`END`] (and, from the agent, maybe [`DONE`] with it): the lane can go on.
    Framed { done_sent: bool },
    /// Raw or cut short: the lane is finished.
    Closed,
}

/// Relays both ways between `socket` (a visitor at the hub, the target at the agent) and a
/// plain `lane`, carrying half-close. Returns the bytes moved (`a_to_b`: socket to lane) and
/// the lane when it can carry another connection.
pub async fn relay_plain_lane(
    socket: TcpStream,
    lane: TcpStream,
    end: LaneEnd,
) -> io::Result<(Transferred, Option<TcpStream>)> {
    let (mut socket_read, mut socket_write) = socket.into_split();
    let (mut lane_read, mut lane_write) = lane.into_split();
    // Set once the lane's END has come in. The agent's send, ending after that, writes its
    // END and DONE at once (one write and one wake-up at the hub fewer per connection).
    let other_side_ended = AtomicBool::new(false);
    let want_back = match &end {
        LaneEnd::Agent(want_back) => Some(want_back),
        LaneEnd::Hub => None,
    };
    let done_with_end = want_back.map(|want_back| (&other_side_ended, want_back));
    let ((a_to_b, sent), (b_to_a, received, mut leftover)) = tokio::try_join!(
        send(&mut socket_read, &mut lane_write, done_with_end),
        receive(&mut lane_read, &mut socket_write, &other_side_ended),
    )?;
    let moved = Transferred { a_to_b, b_to_a };
    let done_sent = match (sent, received) {
        (Ended::Framed { done_sent }, Ended::Framed { .. }) => done_sent,
        _ => return Ok((moved, None)),
    };
    let reusable = match want_back {
        Some(want_back) => {
            leftover.is_empty()
                && (done_sent || (want_back() && lane_write.write_all(&DONE.to_be_bytes()).await.is_ok()))
        }
        None => matches!(
            tokio::time::timeout(DONE_DEADLINE, read_done(&lane_read, &mut leftover)).await,
            Ok(Ok(()))
        ),
    };
    if !reusable {
        return Ok((moved, None));
    }
    let lane = lane_read.reunite(lane_write).map_err(io::Error::other)?;
    Ok((moved, Some(lane)))
}

/// The head that starts a raw, spliced direction: what a connection that moves onto a lane
/// at a whole read (`moving.rs`) writes before that read's bytes.
pub(super) const BULK_HEAD: [u8; 2] = BULK.to_be_bytes();

/// As [`relay_plain_lane`] at the hub, for a connection whose socket-to-lane direction has
/// already written [`BULK_HEAD`] and its first bytes: that direction is spliced from here
/// on. The lane is not used again.
pub(super) async fn relay_plain_lane_bulk_sent(socket: TcpStream, lane: TcpStream) -> io::Result<Transferred> {
    let (socket_read, mut socket_write) = socket.into_split();
    let (mut lane_read, mut lane_write) = lane.into_split();
    let other_side_ended = AtomicBool::new(false);
    let (a_to_b, (b_to_a, _, _)) = tokio::try_join!(
        splice_rest(&socket_read, &mut lane_write),
        receive(&mut lane_read, &mut socket_write, &other_side_ended)
    )?;
    Ok(Transferred { a_to_b, b_to_a })
}

/// Socket to lane: frames, then [`END`]; or, from the first full read on, [`BULK`] and the
/// rest spliced, then the lane's FIN. With `done_with_end` (the agent), [`DONE`] goes with the
/// `END` when the other direction has already ended and the agent wants the lane back.
async fn send(
    from: &mut OwnedReadHalf,
    lane: &mut OwnedWriteHalf,
    done_with_end: Option<(&AtomicBool, &WantBack)>,
) -> io::Result<(u64, Ended)> {
    let mut total = 0u64;
    loop {
        let Some(chunk) = read_chunk(from.as_ref()).await? else {
            let done_sent =
                done_with_end.is_some_and(|(ended, want_back)| ended.load(Ordering::Relaxed) && want_back());
            let [e0, e1] = END.to_be_bytes();
            let [d0, d1] = DONE.to_be_bytes();
            let end_and_done = [e0, e1, d0, d1];
            let length = if done_sent { 4 } else { 2 };
            lane.write_all(&end_and_done[..length]).await?;
            return Ok((total, Ended::Framed { done_sent }));
        };
        total += chunk.len() as u64;
        if chunk.len() > MAX_FRAME {
            write_headed(lane, BULK, &chunk).await?;
            total += splice_rest(from, lane).await?;
            return Ok((total, Ended::Closed));
        }
        write_headed(lane, chunk.len() as u16, &chunk).await?;
    }
}

/// The rest of a spliced direction: everything `from` sends, then the lane's FIN.
async fn splice_rest(from: &OwnedReadHalf, lane: &mut OwnedWriteHalf) -> io::Result<u64> {
    let total = splice_to_end(from, lane).await?;
    lane.shutdown().await?;
    Ok(total)
}

/// One write of a 2-byte `head` and `body` where the socket takes both at once, as it does
/// for a small message.
async fn write_headed(to: &mut OwnedWriteHalf, head: u16, body: &[u8]) -> io::Result<()> {
    write_both(to, &head.to_be_bytes(), body).await
}

/// Writes `head`, then `body`, in one system call when the socket takes both.
pub(super) async fn write_both(to: &mut (impl AsyncWrite + Unpin), head: &[u8], body: &[u8]) -> io::Result<()> {
    let written = to.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]).await?;
    if written < head.len() {
        to.write_all(&head[written..]).await?;
        to.write_all(body).await
    } else {
        to.write_all(&body[written - head.len()..]).await
    }
}

/// Lane to socket: writes each frame's bytes, shuts the socket's writing down at [`END`]
/// (noting it in `ended`, returning what was read past it) or at the lane's end, and splices
/// after [`BULK`].
async fn receive(
    lane: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    ended: &AtomicBool,
) -> io::Result<(u64, Ended, BytesMut)> {
    let mut total = 0u64;
    // Bytes read but not yet written: at most one partial frame, and nothing while idle.
    let mut pending = BytesMut::new();
    loop {
        while pending.len() >= 2 {
            match u16::from_be_bytes([pending[0], pending[1]]) {
                END => {
                    pending.advance(2);
                    ended.store(true, Ordering::Relaxed);
                    shut_write(to).await?;
                    return Ok((total, Ended::Framed { done_sent: false }, pending));
                }
                BULK => {
                    pending.advance(2);
                    to.write_all(&pending).await?;
                    total += pending.len() as u64;
                    total += splice_to_end(lane, to).await?;
                    to.shutdown().await?;
                    return Ok((total, Ended::Closed, BytesMut::new()));
                }
                DONE => return Err(io::Error::new(io::ErrorKind::InvalidData, "lane: DONE before END")),
                len => {
                    let len = len as usize;
                    if pending.len() < 2 + len {
                        break;
                    }
                    to.write_all(&pending[2..2 + len]).await?;
                    pending.advance(2 + len);
                    total += len as u64;
                }
            }
        }
        if pending.is_empty() {
            pending = BytesMut::new();
        }
        let Some(chunk) = read_chunk(lane.as_ref()).await? else {
            // The other end closed the lane mid-connection: end this direction like a FIN.
            to.shutdown().await?;
            return Ok((total, Ended::Closed, BytesMut::new()));
        };
        // Usually nothing is pending and the chunk is its own allocation: take it as is
        // instead of copying it again.
        if pending.is_empty() {
            pending = chunk
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        } else {
            pending.extend_from_slice(&chunk);
        }
    }
}

/// Ends `to`'s writing as the other end's `END` asks. A connection that moved here from the
/// multiplexer (`moving.rs`) may have ended this direction already, and its socket may be
/// closed both ways by now: that is not an error.
async fn shut_write(to: &mut OwnedWriteHalf) -> io::Result<()> {
    match to.shutdown().await {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        done => done,
    }
}

/// At the hub: the agent's [`DONE`], with nothing after it.
async fn read_done(lane: &OwnedReadHalf, leftover: &mut BytesMut) -> io::Result<()> {
    while leftover.len() < 2 {
        match read_chunk(lane.as_ref()).await? {
            Some(chunk) => leftover.extend_from_slice(&chunk),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    if leftover[..] != DONE.to_be_bytes() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "lane: bytes after END"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tcp_pair;
    use tokio::io::AsyncReadExt;

    /// visitor ⇄ [hub relay] ⇄ lane ⇄ [agent relay] ⇄ target, for one connection.
    struct Path {
        visitor: TcpStream,
        target: TcpStream,
        hub: tokio::task::JoinHandle<io::Result<(Transferred, Option<TcpStream>)>>,
        agent: tokio::task::JoinHandle<io::Result<(Transferred, Option<TcpStream>)>>,
    }

    async fn path(hub_lane: TcpStream, agent_lane: TcpStream, want_back: bool) -> Path {
        let (visitor, visitor_at_hub) = tcp_pair().await;
        let (target_at_agent, target) = tcp_pair().await;
        let agent_end = LaneEnd::Agent(Arc::new(move || want_back));
        Path {
            visitor,
            target,
            hub: tokio::spawn(relay_plain_lane(visitor_at_hub, hub_lane, LaneEnd::Hub)),
            agent: tokio::spawn(relay_plain_lane(target_at_agent, agent_lane, agent_end)),
        }
    }

    async fn exchange(path: &mut Path, request: &[u8], reply: &[u8]) {
        path.visitor.write_all(request).await.unwrap();
        let mut got = vec![0u8; request.len()];
        path.target.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request);
        path.target.write_all(reply).await.unwrap();
        let mut got = vec![0u8; reply.len()];
        path.visitor.read_exact(&mut got).await.unwrap();
        assert_eq!(got, reply);
    }

    #[tokio::test]
    async fn one_lane_carries_connection_after_connection_with_half_close() {
        let (mut hub_lane, mut agent_lane) = tcp_pair().await;
        for round in 0..3u8 {
            let mut path = path(hub_lane, agent_lane, true).await;
            exchange(&mut path, &[round; 10], b"first reply").await;
            exchange(&mut path, b"second request", &[round; 3]).await;
            if round % 2 == 0 {
                // The visitor half-closes; the target still answers, then closes.
                path.visitor.shutdown().await.unwrap();
                let mut rest = Vec::new();
                path.target.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty(), "the target sees the visitor's end of stream");
                path.target.write_all(b"after half-close").await.unwrap();
                path.target.shutdown().await.unwrap();
                let mut tail = Vec::new();
                path.visitor.read_to_end(&mut tail).await.unwrap();
                assert_eq!(tail, b"after half-close");
            } else {
                // The target half-closes first (as an HTTP server that closes); the visitor
                // still sends, then closes.
                path.target.write_all(b"after half-close").await.unwrap();
                path.target.shutdown().await.unwrap();
                let mut tail = Vec::new();
                path.visitor.read_to_end(&mut tail).await.unwrap();
                assert_eq!(tail, b"after half-close");
                path.visitor.write_all(&[0u8; 16]).await.unwrap();
                path.visitor.shutdown().await.unwrap();
                let mut rest = Vec::new();
                path.target.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, [0u8; 16], "the visitor's last bytes, then its end of stream");
            }
            let (up, down) = if round % 2 == 0 {
                (10 + 14, 11 + 3 + 16)
            } else {
                (10 + 14 + 16, 11 + 3 + 16)
            };
            let (moved, agent_again) = path.agent.await.unwrap().unwrap();
            assert_eq!((moved.a_to_b, moved.b_to_a), (down, up));
            let (moved, hub_again) = path.hub.await.unwrap().unwrap();
            assert_eq!((moved.a_to_b, moved.b_to_a), (up, down));
            hub_lane = hub_again.expect("the hub keeps a lane that ended cleanly");
            agent_lane = agent_again.expect("the agent keeps a lane that ended cleanly");
        }
    }

    #[tokio::test]
    async fn a_lane_the_agent_does_not_want_back_is_closed_at_both_ends() {
        for visitor_closes_first in [true, false] {
            let (hub_lane, agent_lane) = tcp_pair().await;
            let mut path = path(hub_lane, agent_lane, false).await;
            exchange(&mut path, b"request", b"reply").await;
            let (first, second) = if visitor_closes_first {
                (&mut path.visitor, &mut path.target)
            } else {
                (&mut path.target, &mut path.visitor)
            };
            first.shutdown().await.unwrap();
            let mut rest = Vec::new();
            second.read_to_end(&mut rest).await.unwrap();
            second.write_all(b"last").await.unwrap();
            second.shutdown().await.unwrap();
            first.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"last", "the connection itself ends as usual");
            let (moved, agent_lane) = path.agent.await.unwrap().unwrap();
            assert!(
                agent_lane.is_none(),
                "the agent closes the lane instead of sending DONE"
            );
            assert_eq!(moved.a_to_b + moved.b_to_a, 7 + 5 + 4);
            // Without DONE the hub sees the lane's end of file at once, not its DONE deadline.
            let hub = tokio::time::timeout(Duration::from_secs(2), path.hub).await;
            let (_, hub_lane) = hub.expect("the hub learns at once").unwrap().unwrap();
            assert!(hub_lane.is_none(), "the hub does not park a lane without DONE");
        }
    }

    #[tokio::test]
    async fn bulk_is_spliced_and_then_the_lane_is_closed() {
        let (hub_lane, agent_lane) = tcp_pair().await;
        let mut path = path(hub_lane, agent_lane, true).await;
        exchange(&mut path, b"small first", b"ok").await;
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = payload.clone();
        let mut visitor = path.visitor;
        let upload = tokio::spawn(async move {
            visitor.write_all(&sent).await.unwrap();
            visitor.shutdown().await.unwrap();
            let mut reply = Vec::new();
            visitor.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        path.target.read_to_end(&mut received).await.unwrap();
        assert!(received == payload, "bulk bytes arrive intact, then the end of stream");
        path.target.write_all(b"small after bulk").await.unwrap();
        path.target.shutdown().await.unwrap();
        assert_eq!(upload.await.unwrap(), b"small after bulk");
        let (moved, hub_lane) = path.hub.await.unwrap().unwrap();
        assert_eq!(moved.a_to_b, 11 + payload.len() as u64);
        assert!(hub_lane.is_none(), "a lane that went raw is not used again");
        assert!(path.agent.await.unwrap().unwrap().1.is_none());
    }

    #[tokio::test]
    async fn a_lane_that_breaks_the_framing_ends_the_connection_with_an_error() {
        for garbage in [&b"\xff\xfe"[..], b"\x00\x03abc\xff\xfe"] {
            let (hub_lane, mut far_end) = tcp_pair().await;
            let (mut visitor, visitor_at_hub) = tcp_pair().await;
            let hub = tokio::spawn(relay_plain_lane(visitor_at_hub, hub_lane, LaneEnd::Hub));
            far_end.write_all(garbage).await.unwrap();
            let relayed = hub.await.unwrap();
            assert_eq!(
                relayed.err().map(|e| e.kind()),
                Some(io::ErrorKind::InvalidData),
                "DONE before END is refused"
            );
            // The visitor's connection is closed, with whatever framed bytes came first.
            let mut got = Vec::new();
            let _ = visitor.read_to_end(&mut got).await;
            assert!(got.is_empty() || got == b"abc", "{got:?}");
        }
    }

    #[tokio::test]
    async fn a_lane_cut_mid_connection_ends_the_stream_and_is_not_kept() {
        let (hub_lane, mut agent_lane) = tcp_pair().await;
        let (mut visitor, visitor_at_hub) = tcp_pair().await;
        let hub = tokio::spawn(relay_plain_lane(visitor_at_hub, hub_lane, LaneEnd::Hub));
        visitor.write_all(b"hello").await.unwrap();
        let mut frame = [0u8; 7];
        agent_lane.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, *b"\x00\x05hello", "a small message travels as one frame");
        // A frame cut short, then the lane closes.
        agent_lane.write_all(b"\x00\x09part").await.unwrap();
        drop(agent_lane);
        let mut got = Vec::new();
        visitor.read_to_end(&mut got).await.unwrap();
        assert!(
            got.is_empty(),
            "no partial frame reaches the visitor; the stream just ends"
        );
        visitor.shutdown().await.unwrap();
        let (_, lane) = hub.await.unwrap().unwrap_or_default();
        assert!(lane.is_none());
    }
}
