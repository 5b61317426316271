//! The one relay between two byte streams: each direction is a pipe of `Bytes` chunks from
//! one end's [`ChunkRead`] to the other's [`ChunkWrite`], and a direction's end is a
//! half-close of the other end, so the far side can still answer. Backpressure is each
//! writer's own: a slow reader stalls only its direction. A socket, a multiplexed stream and
//! a TLS lane are each a [`RelayEnd`]; moving (`moving.rs`) and lane framing
//! (`plain_lane.rs`) are state machines on top of these pieces.

use std::future::Future;
use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{read_chunk, Transferred, RELAY_BUFFER};
use crate::mux::{MuxRecv, MuxSend, MuxStream};

/// The reading half of a relay's end.
pub trait ChunkRead: Send {
    /// The next chunk, waiting for one; `None` at end of stream.
    fn chunk(&mut self) -> impl Future<Output = io::Result<Option<Bytes>>> + Send;

    /// A chunk that has already arrived, without waiting; `None` when none has. Only a
    /// source that hands over small pieces (QUIC packets) says anything here.
    fn ready_chunk(&mut self) -> Option<io::Result<Option<Bytes>>> {
        None
    }
}

/// The writing half of a relay's end.
pub trait ChunkWrite: Send {
    /// Writes `first`, then the chunks gathered behind it, without copying where the end
    /// takes chunks as they are.
    fn write(&mut self, first: Bytes, more: Vec<Bytes>) -> impl Future<Output = io::Result<()>> + Send;

    /// Ends this direction (a half-close); the other direction goes on.
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A byte stream the relay takes apart into its two halves.
pub trait RelayEnd {
    type Read: ChunkRead;
    type Write: ChunkWrite;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

/// Relays both ways between `a` and `b` until both directions have ended, carrying each
/// end of stream as a half-close. Returns the bytes moved (`a_to_b`: read from `a`).
pub async fn relay(a: impl RelayEnd, b: impl RelayEnd) -> io::Result<Transferred> {
    let (mut a_read, mut a_write) = a.into_halves();
    let (mut b_read, mut b_write) = b.into_halves();
    let up = async {
        let total = pipe(&mut a_read, &mut b_write, || {}).await?;
        b_write.finish().await?;
        Ok(total)
    };
    let down = async {
        let total = pipe(&mut b_read, &mut a_write, || {}).await?;
        a_write.finish().await?;
        Ok::<_, io::Error>(total)
    };
    let (a_to_b, b_to_a) = tokio::try_join!(up, down)?;
    Ok(Transferred { a_to_b, b_to_a })
}

/// Moves chunks from `from` to `to` until `from` ends (without ending `to`): the bytes moved.
/// What has already arrived behind a chunk (up to one relay buffer) is gathered into the
/// same write, so QUIC's packet-sized chunks reach a socket in one write instead of dozens.
/// `on_bulk` is called after each write of a whole relay buffer (the direction carries bulk
/// data).
pub(crate) async fn pipe(
    from: &mut impl ChunkRead,
    to: &mut impl ChunkWrite,
    mut on_bulk: impl FnMut(),
) -> io::Result<u64> {
    let mut total = 0u64;
    while let Some(first) = from.chunk().await? {
        let mut more = Vec::new();
        let mut size = first.len();
        let mut ended = false;
        while size < RELAY_BUFFER {
            match from.ready_chunk() {
                Some(Ok(Some(chunk))) => {
                    size += chunk.len();
                    more.push(chunk);
                }
                Some(Ok(None)) => {
                    ended = true;
                    break;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        total += size as u64;
        to.write(first, more).await?;
        if size >= RELAY_BUFFER {
            on_bulk();
        }
        if ended {
            break;
        }
    }
    Ok(total)
}

/// A socket: read in chunks of up to one relay buffer (see `read_chunk`); written as one
/// write per gathered batch (joined first: sockets take one buffer per call).
impl RelayEnd for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn into_halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl ChunkRead for OwnedReadHalf {
    async fn chunk(&mut self) -> io::Result<Option<Bytes>> {
        read_chunk(self.as_ref()).await
    }
}

impl ChunkWrite for OwnedWriteHalf {
    async fn write(&mut self, first: Bytes, more: Vec<Bytes>) -> io::Result<()> {
        write_joined(self, first, more).await
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}

/// Writes `first` and `more` to a byte stream in one write, joining them first if needed.
async fn write_joined(to: &mut (impl AsyncWrite + Unpin), first: Bytes, more: Vec<Bytes>) -> io::Result<()> {
    if more.is_empty() {
        return to.write_all(&first).await;
    }
    let mut joined = BytesMut::with_capacity(first.len() + more.iter().map(Bytes::len).sum::<usize>());
    joined.extend_from_slice(&first);
    for chunk in &more {
        joined.extend_from_slice(chunk);
    }
    to.write_all(&joined).await
}

/// A multiplexed stream: chunks pass through as the transport delivers and takes them.
impl RelayEnd for MuxStream {
    type Read = MuxRecv;
    type Write = MuxSend;
    fn into_halves(self) -> (MuxRecv, MuxSend) {
        self.into_split()
    }
}

impl ChunkRead for MuxRecv {
    async fn chunk(&mut self) -> io::Result<Option<Bytes>> {
        MuxRecv::chunk(self).await
    }

    fn ready_chunk(&mut self) -> Option<io::Result<Option<Bytes>>> {
        MuxRecv::chunk(self).now_or_never()
    }
}

impl ChunkWrite for MuxSend {
    async fn write(&mut self, first: Bytes, more: Vec<Bytes>) -> io::Result<()> {
        self.send(first).await?;
        for chunk in more {
            self.send(chunk).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        MuxSend::finish(self)
    }
}

/// Any other byte stream, boxed (a TLS lane): read into a buffer of its own, written and
/// flushed per batch (rustls holds what it sealed until flushed), and ended with a shutdown
/// (on TLS, its close_notify).
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RelayEnd for Box<T> {
    type Read = BufferedRead<Box<T>>;
    type Write = WriteHalf<Box<T>>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        let (read, write) = tokio::io::split(self);
        let read = BufferedRead {
            half: read,
            buf: BytesMut::new(),
        };
        (read, write)
    }
}

/// The reading half of a boxed stream, with the buffer its chunks are split from: a chunk
/// shares the buffer's allocation until it is written, and its room is reused after.
pub struct BufferedRead<T> {
    half: ReadHalf<T>,
    buf: BytesMut,
}

impl<T: AsyncRead + Unpin + Send> ChunkRead for BufferedRead<T> {
    async fn chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.buf.reserve(RELAY_BUFFER);
        match self.half.read_buf(&mut self.buf).await? {
            0 => Ok(None),
            _ => Ok(Some(self.buf.split().freeze())),
        }
    }
}

impl<T: AsyncWrite + Unpin + Send> ChunkWrite for WriteHalf<T> {
    async fn write(&mut self, first: Bytes, more: Vec<Bytes>) -> io::Result<()> {
        write_joined(self, first, more).await?;
        self.flush().await
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await
    }
}
