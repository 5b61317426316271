//! Stream multiplexing over one agent↔hub connection, behind one small interface with two
//! implementations: QUIC (`quic.rs`, quinn) and HTTP/2 over TLS or plain TCP (`h2.rs`).
//!
//! A [`MuxConn`] is what both the agent and the hub hold once a connection is established:
//! a control stream (the agent speaks first on it), an [`Opener`] for data streams this side
//! starts and an [`Acceptor`] for data streams the peer starts. With HTTP/2 only the client
//! side may open streams, so the connection's role decides who is the HTTP/2 client: the hub
//! for `expose` agents (it opens one stream per visitor), the agent for `reach` agents.

pub mod h2;
pub mod quic;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("QUIC connection: {0}")]
    QuicConnection(#[from] quinn::ConnectionError),
    #[error("QUIC connect: {0}")]
    QuicConnect(#[from] quinn::ConnectError),
    #[error("HTTP/2: {0}")]
    H2(#[from] ::h2::Error),
    #[error("the connection is closed")]
    Closed,
    #[error("this side of the connection cannot open streams")]
    CannotOpen,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One bidirectional byte stream carried by the multiplexer.
pub enum MuxStream {
    Quic {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    H2(h2::H2Stream),
}

impl AsyncRead for MuxStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MuxStream::Quic { recv, .. } => Pin::new(recv).poll_read(cx, buf),
            MuxStream::H2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MuxStream::Quic { send, .. } => Pin::new(send).poll_write(cx, buf).map_err(io::Error::from),
            MuxStream::H2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MuxStream::Quic { send, .. } => Pin::new(send).poll_flush(cx),
            MuxStream::H2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MuxStream::Quic { send, .. } => Pin::new(send).poll_shutdown(cx),
            MuxStream::H2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Largest chunk taken from a QUIC stream at once.
const MAX_CHUNK: usize = 256 * 1024;

impl MuxStream {
    /// The id a lane names this stream by when its connection moves there
    /// (`relay/moving.rs`); `None` where connections do not move (QUIC: no lanes).
    pub fn movable_id(&self) -> Option<u32> {
        match self {
            MuxStream::Quic { .. } => None,
            MuxStream::H2(stream) => Some(stream.id()),
        }
    }

    /// Sends the first bytes of a stream this side just opened (its header, and what the
    /// visitor had already sent) without waiting for flow-control credit: an HTTP/2 stream
    /// gets none until its HEADERS frame has left, and this way its first DATA leaves in the
    /// same write instead of a round later. For a few KiB only: h2 holds them until the
    /// stream has credit, which the peer's initial window (`h2.rs`) always covers.
    pub async fn send_opening(&mut self, data: bytes::Bytes) -> io::Result<()> {
        match self {
            MuxStream::Quic { send, .. } => send.write_chunk(data).await.map_err(io::Error::from),
            MuxStream::H2(stream) => stream.send_opening(data),
        }
    }

    /// Splits into halves that move data as `Bytes` chunks, without copying through a buffer.
    pub fn into_split(self) -> (MuxRecv, MuxSend) {
        match self {
            MuxStream::Quic { send, recv } => (MuxRecv::Quic(recv), MuxSend::Quic(send)),
            MuxStream::H2(s) => {
                let (recv, send) = s.into_split();
                (MuxRecv::H2(recv), MuxSend::H2(send))
            }
        }
    }
}

/// The receiving half of a [`MuxStream`].
pub enum MuxRecv {
    Quic(quinn::RecvStream),
    H2(h2::H2Recv),
}

impl MuxRecv {
    /// The next chunk as the transport delivered it, or `None` at end of stream.
    pub async fn chunk(&mut self) -> io::Result<Option<bytes::Bytes>> {
        match self {
            MuxRecv::Quic(recv) => Ok(recv.read_chunk(MAX_CHUNK, true).await?.map(|c| c.bytes)),
            MuxRecv::H2(recv) => recv.chunk().await,
        }
    }

    /// Whether the stream ended because its connection moved to a lane (`relay/moving.rs`).
    pub fn moved(&self) -> bool {
        matches!(self, MuxRecv::H2(recv) if recv.moved())
    }
}

/// The sending half of a [`MuxStream`].
pub enum MuxSend {
    Quic(quinn::SendStream),
    H2(h2::H2Send),
}

impl MuxSend {
    /// Sends a chunk without copying it; waits for flow-control credit (backpressure).
    pub async fn send(&mut self, data: bytes::Bytes) -> io::Result<()> {
        match self {
            MuxSend::Quic(send) => send.write_chunk(data).await.map_err(io::Error::from),
            MuxSend::H2(send) => send.send(data).await,
        }
    }

    /// Half-closes the stream.
    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            MuxSend::Quic(send) => send.finish().map_err(io::Error::other),
            MuxSend::H2(send) => send.finish(),
        }
    }

    /// Ends this direction because the connection goes on over a lane (HTTP/2 only).
    pub fn finish_moved(&mut self) -> io::Result<()> {
        match self {
            MuxSend::Quic(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "QUIC streams do not move")),
            MuxSend::H2(send) => send.finish_moved(),
        }
    }
}

/// Starts new data streams toward the peer. Cheap to clone.
#[derive(Clone)]
pub enum Opener {
    Quic(quinn::Connection),
    H2(::h2::client::SendRequest<bytes::Bytes>),
}

impl Opener {
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        match self {
            Opener::Quic(conn) => {
                let (send, recv) = conn.open_bi().await?;
                Ok(MuxStream::Quic { send, recv })
            }
            Opener::H2(send_request) => h2::open(send_request.clone()).await,
        }
    }
}

/// Receives the data streams the peer starts.
pub enum Acceptor {
    Quic(quinn::Connection),
    H2(mpsc::UnboundedReceiver<MuxStream>),
}

impl Acceptor {
    /// The next stream, or `None` once the connection is gone.
    pub async fn accept(&mut self) -> Option<MuxStream> {
        match self {
            Acceptor::Quic(conn) => conn
                .accept_bi()
                .await
                .ok()
                .map(|(send, recv)| MuxStream::Quic { send, recv }),
            Acceptor::H2(rx) => rx.recv().await,
        }
    }
}

/// Closes the whole connection and tells when it has closed, whoever closed it.
#[derive(Clone)]
pub enum Lifetime {
    /// An agent's connection keeps its own endpoint, to flush the close before it exits.
    Quic(quinn::Connection, Option<quinn::Endpoint>),
    H2 {
        closed: watch::Receiver<bool>,
        abort: std::sync::Arc<tokio::task::AbortHandle>,
    },
}

impl Lifetime {
    pub async fn closed(&self) {
        match self {
            Lifetime::Quic(conn, _) => {
                conn.closed().await;
            }
            Lifetime::H2 { closed, .. } => {
                let mut closed = closed.clone();
                let _ = closed.wait_for(|c| *c).await;
            }
        }
    }

    pub fn close(&self, reason: &str) {
        match self {
            Lifetime::Quic(conn, _) => conn.close(0u32.into(), reason.as_bytes()),
            Lifetime::H2 { abort, .. } => abort.abort(),
        }
    }

    /// Closes the connection and, on an agent's QUIC connection, waits (at most a second)
    /// until the peer has been told: a process that exits right after `close` would
    /// otherwise leave the hub to find out from its idle timeout. A TCP connection's end
    /// reaches the peer when the socket closes.
    pub async fn close_and_flush(&self, reason: &str) {
        self.close(reason);
        if let Lifetime::Quic(_, Some(endpoint)) = self {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// What carries an agent connection, decided once when it is established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// QUIC: streams, and UDP as datagrams.
    Quic,
    /// HTTP/2 over TLS over TCP.
    Tls,
    /// HTTP/2 over plain TCP (`--allow-plaintext` hubs), with lanes beside it.
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tls => "tls",
            Transport::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An established agent↔hub connection.
pub struct MuxConn {
    pub control: MuxStream,
    pub opener: Option<Opener>,
    pub acceptor: Option<Acceptor>,
    pub lifetime: Lifetime,
    pub transport: Transport,
}
