//! The hot path: copy bytes both ways between two streams, carrying half-close, with
//! backpressure (a slow reader stalls only its own direction) and byte counts.

use std::cell::RefCell;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::mux::MuxStream;

mod moving;
mod pipe;
mod plain_lane;
mod socket;
mod splice;

pub use moving::{relay_movable_at_agent, relay_movable_at_hub, Handoff, MovableLane, MovedLanes, MEET_DEADLINE};
pub(crate) use pipe::pipe;
pub use pipe::{relay, BufferedRead, ChunkRead, ChunkWrite, RelayEnd};
pub use plain_lane::{relay_plain_lane, LaneEnd, WantBack};
pub use socket::configure_tcp;

/// Largest read from a socket (and largest gathered write to one). Large reads amortise
/// syscalls and frame overhead; a buffer of this size exists only while data is in flight.
pub const RELAY_BUFFER: usize = 64 * 1024;

/// Reads up to this many bytes are copied out of the thread's read buffer into a chunk of
/// their own size; larger ones take the buffer itself along (bulk data is not copied).
const COPY_OUT_LIMIT: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every relay on this runtime thread. A buffer per read used to be
    /// allocated and freed for every small message, and glibc gave the freed top of its heap
    /// back to the kernel each time: under 50 keep-alive HTTP connections the agent made one
    /// `brk` call per message and faulted the pages in again.
    static READ_BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Reads what `socket` has now (at most [`RELAY_BUFFER`] bytes) without waiting: `None` at
/// end of file, `WouldBlock` when nothing is there. An idle connection holds no buffer.
fn try_read_chunk(socket: &TcpStream) -> io::Result<Option<Bytes>> {
    READ_BUFFER.with_borrow_mut(|buf| {
        buf.reserve(RELAY_BUFFER);
        let room = buf.capacity() - buf.len();
        let read = try_read_draining(socket, room, || socket.try_read_buf(buf))?;
        match read {
            0 => Ok(None),
            n if n <= COPY_OUT_LIMIT => {
                let chunk = Bytes::copy_from_slice(buf);
                buf.clear();
                Ok(Some(chunk))
            }
            _ => Ok(Some(buf.split().freeze())),
        }
    })
}

/// Waits until `socket` is readable, then reads what is there, as `try_read_chunk` does
/// (`None` at end of file).
pub async fn read_chunk(socket: &TcpStream) -> io::Result<Option<Bytes>> {
    loop {
        socket.readable().await?;
        match try_read_chunk(socket) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Waits until `socket` is readable, then runs `read` as [`try_read_draining`] does, again
/// after a wake-up that finds nothing. For relays that read into buffers of their own.
pub async fn read_ready(
    socket: &TcpStream,
    room: usize,
    mut read: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        socket.readable().await?;
        match try_read_draining(socket, room, &mut read) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Runs `read`, a non-blocking read of at most `room` bytes from `socket`. A read that leaves
/// room means the socket is drained: its readiness is cleared then (by answering
/// `WouldBlock` to `try_io`), as tokio's own `poll_read` does, instead of by a second read
/// that would only return EAGAIN after every message. `Ok(0)` is end of file.
pub fn try_read_draining(
    socket: &TcpStream,
    room: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut got = None;
    let drained = socket.try_io(Interest::READABLE, || {
        let n = read()?;
        got = Some(n);
        if n > 0 && n < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    // Without a read, `drained` holds why: not ready after all, or the read failed.
    got.map_or(drained, Ok)
}

/// Bytes of a visitor's first data read before its stream opens (see [`read_arrived`]).
/// h2 holds them until its connection has window, so a stalled peer costs at most
/// this much per waiting visitor, less than the kernel already buffers for its socket.
pub const EARLY_BYTES: usize = 8 * 1024;

/// Appends to `opening` what the visitor has already sent, up to [`EARLY_BYTES`], without
/// waiting: a client that speaks first has usually sent its request by the time its
/// connection is accepted. The count read; 0 when nothing has arrived yet (or at end of
/// stream, which the relay then reads for itself). The socket's readiness is tokio's to
/// track: a read here at most costs the relay one read that finds nothing.
pub fn read_arrived(tcp: &TcpStream, opening: &mut BytesMut) -> std::io::Result<usize> {
    let start = opening.len();
    opening.resize(start + EARLY_BYTES, 0);
    let n = match nix::unistd::read(tcp, &mut opening[start..]) {
        Ok(n) => n,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => 0,
        Err(e) => {
            opening.truncate(start);
            return Err(e.into());
        }
    };
    opening.truncate(start + n);
    Ok(n)
}

/// Bytes moved by one relay, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Both ends of one TCP connection on loopback (connecting end first). For tests and benches.
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().expect("addr")),
        listener.accept()
    );
    (client.expect("connect"), accepted.expect("accept").0)
}

/// An HTTP/2 connection over an in-memory pipe with one data stream open, and a connected
/// TCP pair on loopback: the pieces of a relay without a network between hub and agent. For
/// tests and benches.
pub async fn h2_pair_and_tcp() -> (TcpStream, TcpStream, MuxStream, MuxStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (client, server) = tokio::join!(
        crate::mux::h2::client(a, crate::mux::Transport::Tcp),
        crate::mux::h2::server(b, crate::mux::Transport::Tcp)
    );
    let (client, mut server) = (client.expect("h2 client"), server.expect("h2 server"));
    let near = client.opener.expect("client opens").open().await.expect("open stream");
    // The far side sees the stream once something is written on it.
    let far = server.acceptor.as_mut().expect("server accepts").accept();
    let (visitor, relay_side) = tcp_pair().await;
    // The connections' driver tasks keep running while `near` and `far` are alive.
    let mut near = near;
    near.write_all(b"\0").await.expect("first byte");
    let mut far = far.await.expect("stream arrives");
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut far, &mut first)
        .await
        .expect("first byte arrives");
    (visitor, relay_side, near, far)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// What has arrived is taken without waiting, up to the limit, after what `opening`
    /// already holds; the rest is left for the relay, whose socket still wakes it.
    #[tokio::test]
    async fn a_visitors_arrived_bytes_join_the_opening_and_the_rest_stays_readable() {
        let (mut visitor, mut at_hub) = tcp_pair().await;
        let mut opening = BytesMut::from(&b"hdr"[..]);
        assert_eq!(read_arrived(&at_hub, &mut opening).unwrap(), 0, "nothing sent yet");
        assert_eq!(&opening[..], b"hdr");

        let request: Vec<u8> = (0..EARLY_BYTES + 5000).map(|i| (i % 251) as u8).collect();
        visitor.write_all(&request).await.unwrap();
        at_hub.readable().await.unwrap();
        let early = read_arrived(&at_hub, &mut opening).unwrap();
        assert!(early > 0 && early <= EARLY_BYTES, "took {early} bytes");
        assert_eq!(&opening[..3], b"hdr");
        assert_eq!(&opening[3..], &request[..early]);

        visitor.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), at_hub.read_to_end(&mut rest))
            .await
            .expect("the relay's reads are still woken")
            .unwrap();
        assert_eq!(rest, &request[early..]);
    }

    /// `read_chunk`, bounded so a lost wake-up fails the test instead of hanging it.
    async fn next_chunk(socket: &TcpStream) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), read_chunk(socket))
            .await
            .expect("the reader is woken")
            .unwrap()
    }

    #[tokio::test]
    async fn a_drained_read_still_sees_the_next_message_and_end_of_file() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (reader, _) = listener.accept().await.unwrap();

        writer.write_all(b"first").await.unwrap();
        assert_eq!(next_chunk(&reader).await.as_deref(), Some(&b"first"[..]));
        // Readiness was cleared by the short read; the next message must wake the reader.
        writer.write_all(b"second").await.unwrap();
        assert_eq!(next_chunk(&reader).await.as_deref(), Some(&b"second"[..]));
        // Data and FIN together: the data first, then end of file, not a hang.
        writer.write_all(b"last").await.unwrap();
        writer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        while let Some(chunk) = next_chunk(&reader).await {
            rest.extend_from_slice(&chunk);
        }
        assert_eq!(rest, b"last");

        // A full-size read hands its buffer over; the next read gets a fresh one.
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (reader, _) = listener.accept().await.unwrap();
        let bulk: Vec<u8> = (0..3 * RELAY_BUFFER as u32).map(|i| (i % 253) as u8).collect();
        let sent = bulk.clone();
        let send = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let mut chunks = Vec::new();
        while let Some(chunk) = next_chunk(&reader).await {
            assert!(chunk.len() <= RELAY_BUFFER);
            chunks.push(chunk);
        }
        send.await.unwrap();
        assert_eq!(
            chunks.concat(),
            bulk,
            "chunks keep their bytes after the buffer is reused"
        );
    }

    #[tokio::test]
    async fn relays_tcp_to_a_stream_both_ways_and_carries_half_close() {
        let (mut visitor, relay_side, near, mut far) = h2_pair_and_tcp().await;
        let relay_task = tokio::spawn(relay(relay_side, near));

        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let (mut visitor_read, mut visitor_write) = visitor.split();
        let writer = async {
            visitor_write.write_all(&sent).await.unwrap();
            visitor_write.shutdown().await.unwrap();
        };
        let mut received = Vec::new();
        let reader = far.read_to_end(&mut received);
        let (_, read) = tokio::join!(writer, reader);
        read.unwrap();
        assert_eq!(received, payload, "visitor's bytes arrive intact, then end of stream");
        // The far side can still answer after the visitor half-closed.
        far.write_all(b"done").await.unwrap();
        far.shutdown().await.unwrap();
        let mut reply = Vec::new();
        visitor_read.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"done");
        let moved = relay_task.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Transferred {
                a_to_b: 300_000,
                b_to_a: 4
            }
        );
    }
}
