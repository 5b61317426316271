//! UDP flows on lanes: a flow that gets one of its agent's idle lanes carries its datagrams
//! as stream frames on that connection alone. Frames are written into the lane by the task
//! that received the datagram, and one task per end reads the lane and hands datagrams
//! straight to the flow's socket, so a request/response crosses no task inside either
//! process: a UDP tunnel's request rate is bound by wake-ups per datagram. On a TLS lane the
//! frames travel in TLS records sealed by the sending task (under the same lock that orders
//! the frames) and opened by the lane's task (see `relay/sealed.rs`).

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::flow::FlowState;
use crate::relay::sealed::{self, Inbound, Outbound as RecordsOut};
use crate::relay::{try_read_draining, Lane};
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
    sending: Mutex<Sending>,
    backlogged: Notify,
}

struct Sending {
    /// Bytes the socket could not take yet. The lane's task flushes them, and nothing new is
    /// written before they are out, so frames (and records) never interleave.
    backlog: BytesMut,
    /// A TLS lane's sealing half; sealing under this lock keeps records in sequence order.
    records: Option<RecordsOut>,
}

impl LaneOut {
    /// Returns the sending side, and the lane and its opening half for the reading task.
    pub(super) fn split(lane: Lane) -> io::Result<(Arc<Self>, TcpStream, Option<Inbound>)> {
        let (lane, records, inbound) = match lane {
            Lane::Plain(tcp) => (tcp, None, None),
            Lane::Tls(sealed) => {
                let (tcp, outbound, inbound) = (*sealed).into_parts();
                (tcp, Some(outbound), Some(inbound))
            }
        };
        let lane = lane.into_std()?;
        let socket = lane.try_clone()?;
        let out = Arc::new(Self {
            socket,
            sending: Mutex::new(Sending {
                backlog: BytesMut::new(),
                records,
            }),
            backlogged: Notify::new(),
        });
        Ok((out, TcpStream::from_std(lane)?, inbound))
    }

    /// Sends encoded frames, never waiting: written now when nothing waits before them, else
    /// queued behind the backlog. False when they had to be dropped (whole).
    pub(super) fn send(&self, frames: &[u8]) -> bool {
        let mut sending = self.sending.lock().expect("lane backlog lock");
        let Sending { backlog, records } = &mut *sending;
        // Checked before sealing: a sealed record that is then dropped would leave a gap in
        // the record sequence, which the peer cannot open past.
        let on_the_wire = match records {
            None => frames.len(),
            Some(_) => frames.len() + frames.len().div_ceil(sealed::MAX_PLAINTEXT) * sealed::RECORD_OVERHEAD,
        };
        if !backlog.is_empty() && backlog.len() + on_the_wire > BACKLOG_LIMIT {
            return false;
        }
        match records {
            None => self.write_or_queue(backlog, frames),
            Some(records) => {
                let mut rest = frames;
                while !rest.is_empty() {
                    let Ok((sealed, n)) = records.seal_copy(rest) else {
                        return false;
                    };
                    if !self.write_or_queue(backlog, sealed) {
                        return false;
                    }
                    rest = &rest[n..];
                }
                true
            }
        }
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
        !self.sending.lock().expect("lane backlog lock").backlog.is_empty()
    }

    /// Writes what the socket takes of the backlog; an error means the lane is gone.
    fn flush(&self, lane: &TcpStream) -> io::Result<()> {
        let backlog = &mut self.sending.lock().expect("lane backlog lock").backlog;
        match lane.try_write(backlog) {
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
/// writing, so two ends that both have a full backlog cannot block each other. A TLS lane's
/// records are opened by `inbound` (which may already hold frames that came with the flow's
/// header).
pub(super) async fn drive(lane: TcpStream, mut inbound: Option<Inbound>, out: Arc<LaneOut>, state: Arc<FlowState>) {
    let mut buf = BytesMut::new();
    loop {
        if let Some(inbound) = &mut inbound {
            let mut taken = 0;
            for plaintext in inbound.plaintext() {
                buf.extend_from_slice(&plaintext);
                taken += plaintext.len();
            }
            inbound.consume(taken);
        }
        if !deliver_frames(&mut buf, &state) {
            break;
        }
        let flushing = out.has_backlog();
        tokio::select! {
            ready = lane.readable() => {
                if ready.is_err() {
                    break;
                }
                let read = match &mut inbound {
                    None => {
                        buf.reserve(READ_CHUNK);
                        let room = buf.capacity() - buf.len();
                        try_read_draining(&lane, room, || lane.try_read_buf(&mut buf))
                    }
                    Some(inbound) => {
                        let space = inbound.space();
                        let room = space.len();
                        try_read_draining(&lane, room, || lane.try_read(space)).and_then(|n| {
                            inbound.filled(n)?;
                            Ok(n)
                        })
                    }
                };
                match read {
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
    use crate::relay::SealedLane;
    use crate::udp::{Sink, UdpStats};
    use tokio::io::AsyncReadExt;

    use rustls::crypto::cipher::{AeadKey, Iv};
    use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

    fn secrets(tx: u8, rx: u8) -> ExtractedSecrets {
        let key = |byte: u8| ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([byte; 32]),
            iv: Iv::new([byte; 12]),
        };
        ExtractedSecrets {
            tx: (0, key(tx)),
            rx: (0, key(rx)),
        }
    }

    /// While the peer reads nothing, frames fill the socket, then the backlog up to its
    /// limit, then are dropped whole; once the peer reads, every accepted frame arrives
    /// intact and in order. On a TLS lane the same holds for the records carrying them: none
    /// is missing, or the peer could not open the ones after it.
    #[tokio::test]
    async fn a_full_lane_backs_up_in_order_then_drops_whole_frames() {
        full_lane_backs_up(false).await;
        full_lane_backs_up(true).await;
    }

    async fn full_lane_backs_up(sealed: bool) {
        let (ours, mut peer) = crate::relay::tcp_pair().await;
        let (lane, mut peer_records) = if sealed {
            let lane = SealedLane::new(ours, secrets(1, 2)).unwrap();
            let (_, inbound) = sealed::record_layer(secrets(2, 1)).unwrap();
            (Lane::Tls(Box::new(lane)), Some(inbound))
        } else {
            (Lane::Plain(ours), None)
        };
        let (out, lane, inbound) = LaneOut::split(lane).unwrap();
        let (state, _queue) = FlowState::new(Sink::Queue, Arc::new(UdpStats::default()));
        tokio::spawn(drive(lane, inbound, out.clone(), state));

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
            let mut wire = BytesMut::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), peer.read_buf(&mut wire)).await;
            assert!(read.unwrap().unwrap() > 0, "the lane stays open");
            match &mut peer_records {
                None => buf.extend_from_slice(&wire),
                Some(inbound) => buf.extend(inbound.open_all(&wire).expect("every record opens, in sequence")),
            }
            while let Some((seq, body)) = datagram::take_frame(&mut buf).unwrap() {
                assert_eq!(seq, next, "frames arrive in order, none missing");
                assert_eq!(&body[..], &payload[..]);
                next += 1;
            }
        }
        assert!(buf.is_empty(), "nothing after the accepted frames");
    }
}
