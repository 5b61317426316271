//! UDP flows on lanes: a flow that gets one of its agent's idle lanes carries its datagrams
//! as stream frames on that connection alone. Frames are written into the lane by the task
//! that received the datagram, and one task per end reads the lane and hands datagrams
//! straight to the flow's socket, so a request/response crosses no task inside either
//! process: a UDP tunnel's request rate is bound by wake-ups per datagram. Lanes are plain TCP
//! (`--transport tcp`) only.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::state::FlowState;
use crate::relay::try_read_draining;
use crate::wire::datagram::{self, MAX_FRAME_BODY};

/// Frame bytes a lane holds while its socket is full; past this, datagrams are dropped (a
/// slow peer loses datagrams instead of growing a buffer). The rest of a frame the socket
/// took in part always goes in, so the backlog can pass this by one write (≤ 64 KiB of held
/// frames plus one datagram).
const BACKLOG_LIMIT: usize = 1 << 20;
/// Room made in the read buffer before each read: one largest frame.
const READ_CHUNK: usize = MAX_FRAME_BODY + 4;

/// The sending side of a flow's lane.
pub(super) struct LaneOut {
    /// A duplicate of the lane's descriptor (non-blocking), written by whichever task sends.
    socket: std::net::TcpStream,
    /// Bytes the socket could not take yet. The lane's task flushes them, and nothing new is
    /// written before they are out, so frames never interleave.
    backlog: Mutex<BytesMut>,
    backlogged: Notify,
}

impl LaneOut {
    /// Returns the sending side, and the lane for the reading task.
    pub(super) fn split(lane: TcpStream) -> io::Result<(Arc<Self>, TcpStream)> {
        let lane = lane.into_std()?;
        let socket = lane.try_clone()?;
        let out = Arc::new(Self {
            socket,
            backlog: Mutex::new(BytesMut::new()),
            backlogged: Notify::new(),
        });
        Ok((out, TcpStream::from_std(lane)?))
    }

    /// Sends encoded frames, never waiting: written now when nothing waits before them, else
    /// queued behind the backlog. False when they had to be dropped (whole).
    pub(super) fn send(&self, frames: &[u8]) -> bool {
        let mut backlog = self.backlog.lock().expect("lane backlog lock");
        if !backlog.is_empty() && backlog.len() + frames.len() > BACKLOG_LIMIT {
            return false;
        }
        self.write_or_queue(&mut backlog, frames)
    }

    /// Writes `bytes` now if nothing waits before them; what the socket does not take (or
    /// all of it, behind a backlog) is queued. The rest of something already begun is never
    /// dropped: the peer expects it. False when the lane is broken.
    fn write_or_queue(&self, backlog: &mut BytesMut, bytes: &[u8]) -> bool {
        if !backlog.is_empty() {
            backlog.extend_from_slice(bytes);
            return true;
        }
        let written = match (&self.socket).write(bytes) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
            Err(_) => return false,
        };
        if written < bytes.len() {
            backlog.extend_from_slice(&bytes[written..]);
            self.backlogged.notify_one();
        }
        true
    }

    /// Closes the lane for the peer, whoever else still holds the descriptor.
    pub(super) fn close(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    fn has_backlog(&self) -> bool {
        !self.backlog.lock().expect("lane backlog lock").is_empty()
    }

    /// Writes what the socket takes of the backlog; an error means the lane is gone.
    fn flush(&self, lane: &TcpStream) -> io::Result<()> {
        let mut backlog = self.backlog.lock().expect("lane backlog lock");
        match lane.try_write(&backlog) {
            Ok(n) => {
                backlog.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The lane's task: delivers arriving frames to the flow and flushes the backlog, until the
/// peer closes the lane or sends garbage; then the flow ends. Reading never waits on
/// writing, so two ends that both have a full backlog cannot block each other.
pub(super) async fn drive(lane: TcpStream, out: Arc<LaneOut>, state: Arc<FlowState>) {
    let mut buf = BytesMut::new();
    loop {
        if !deliver_frames(&mut buf, &state) {
            break;
        }
        let flushing = out.has_backlog();
        tokio::select! {
            ready = lane.readable() => {
                if ready.is_err() {
                    break;
                }
                buf.reserve(READ_CHUNK);
                let room = buf.capacity() - buf.len();
                match try_read_draining(&lane, room, || lane.try_read_buf(&mut buf)) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => break,
                }
            }
            ready = lane.writable(), if flushing => {
                if ready.is_err() || out.flush(&lane).is_err() {
                    break;
                }
            }
            _ = out.backlogged.notified(), if !flushing => {}
        }
    }
    state.end();
}

/// Hands every whole frame in `buf` to the flow; false on a malformed frame.
fn deliver_frames(buf: &mut BytesMut, state: &FlowState) -> bool {
    loop {
        match datagram::take_frame(buf) {
            Ok(Some((seq, payload))) => state.deliver(seq, payload),
            Ok(None) => return true,
            Err(_) => {
                state.stats.drop_malformed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::{Sink, UdpStats};
    use tokio::io::AsyncReadExt;

    /// While the peer reads nothing, frames fill the socket, then the backlog up to its
    /// limit, then are dropped whole; once the peer reads, every accepted frame arrives
    /// intact and in order.
    #[tokio::test]
    async fn a_full_lane_backs_up_in_order_then_drops_whole_frames() {
        let (ours, mut peer) = crate::relay::tcp_pair().await;
        let (out, lane) = LaneOut::split(ours).unwrap();
        let (state, _queue) = FlowState::new(Sink::Queue, Arc::new(UdpStats::default()));
        tokio::spawn(drive(lane, out.clone(), state));

        let payload = vec![0xabu8; 60_000];
        let mut accepted = 0u64;
        let mut dropped = 0;
        for _ in 0..200 {
            if out.send(&datagram::encode_frame(accepted, &payload)) {
                accepted += 1;
            } else {
                dropped += 1;
            }
        }
        assert!(dropped > 0, "200 × 60 KB exceed the socket buffers plus the backlog");
        assert!(accepted as usize * 60_000 >= BACKLOG_LIMIT);

        let mut buf = BytesMut::new();
        let mut next = 0u64;
        while next < accepted {
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), peer.read_buf(&mut buf)).await;
            assert!(read.unwrap().unwrap() > 0, "the lane stays open");
            while let Some((seq, body)) = datagram::take_frame(&mut buf).unwrap() {
                assert_eq!(seq, next, "frames arrive in order, none missing");
                assert_eq!(&body[..], &payload[..]);
                next += 1;
            }
        }
        assert!(buf.is_empty(), "nothing after the accepted frames");
    }
}
