//! HTTP/2 as a stream multiplexer over TLS or plain TCP (the h2 crate, no HTTP semantics).
//!
//! Each data stream is one POST request whose request and response bodies carry the two
//! directions; end-of-stream on a body is a half-close. Flow-control windows are set
//! explicitly, and h2's small-DATA-frame budget is raised: interactive protocols legitimately
//! send many tiny frames on many streams, and the default budget made h2 answer a busy
//! connection with GOAWAY ENHANCE_YOUR_CALM, dropping every stream on it.
//!
//! A body may also end with trailers carrying [`MOVED_TRAILER`]: the stream's connection goes
//! on over a plain lane from there (`relay/moving.rs`), so the reader must not take it for a
//! half-close.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

use super::{Acceptor, Lifetime, MuxConn, MuxError, MuxStream, Opener, Transport};

const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const MAX_FRAME: u32 = 256 * 1024;
/// Concurrent forwarded connections per agent connection: the 10,000-idle-connection footprint
/// measurement (`scripts/footprint.sh`) hung at 8,192 while the next visitor waited for a slot.
const MAX_STREAMS: u32 = 32 * 1024;
/// Largest chunk written per `poll_write`; bigger writes are split so one stream cannot
/// monopolise the connection's send buffer.
const MAX_WRITE: usize = 256 * 1024;
const DATA_FRAME_BUDGET: usize = 64 * 1024 * 1024;
/// The trailer that ends one direction of a stream whose connection moves to a lane.
const MOVED_TRAILER: &str = "burrow-moved";

/// Runs the HTTP/2 client side on `io`, opening the first stream as the control stream.
pub async fn client<T>(io: T, transport: Transport) -> Result<MuxConn, MuxError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send_request, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buffer_size(MAX_WRITE)
        .data_frame_budget(DATA_FRAME_BUDGET)
        .handshake::<_, Bytes>(io)
        .await?;
    let (closed_tx, closed_rx) = watch::channel(false);
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP/2 connection ended");
        }
        let _ = closed_tx.send(true);
    });
    let control = open(send_request.clone()).await?;
    Ok(MuxConn {
        control,
        opener: Some(Opener::H2(send_request)),
        acceptor: None,
        lifetime: Lifetime::H2 {
            closed: closed_rx,
            abort: std::sync::Arc::new(driver.abort_handle()),
        },
        transport,
    })
}

/// Runs the HTTP/2 server side on `io`; the peer's first stream is the control stream.
pub async fn server<T>(io: T, transport: Transport) -> Result<MuxConn, MuxError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buffer_size(MAX_WRITE)
        .data_frame_budget(DATA_FRAME_BUDGET)
        .handshake::<_, Bytes>(io)
        .await?;
    let control = match connection.accept().await {
        Some(Ok((request, respond))) => respond_stream(request, respond)?,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(MuxError::Closed),
    };
    // Accepted streams are bounded by MAX_STREAMS (the peer may not exceed it), so the
    // unbounded channel cannot grow without bound. The accept loop also drives all I/O of
    // the connection, so it must never wait on the consumer.
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = watch::channel(false);
    let driver = tokio::spawn(async move {
        while let Some(next) = connection.accept().await {
            match next
                .map_err(MuxError::from)
                .and_then(|(req, respond)| respond_stream(req, respond))
            {
                Ok(stream) => {
                    let _ = streams_tx.send(stream);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 accept failed");
                    break;
                }
            }
        }
        let _ = closed_tx.send(true);
    });
    Ok(MuxConn {
        control,
        opener: None,
        acceptor: Some(Acceptor::H2(streams_rx)),
        lifetime: Lifetime::H2 {
            closed: closed_rx,
            abort: std::sync::Arc::new(driver.abort_handle()),
        },
        transport,
    })
}

/// An accepted stream. Its response headers are not sent yet: they leave with the stream's
/// first data (or its end), in the same write, instead of costing a write and a read of their
/// own at each end while a new connection is being set up.
fn respond_stream(
    request: http::Request<RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) -> Result<MuxStream, MuxError> {
    Ok(MuxStream::H2(H2Stream::new(
        SendHalf::Unanswered(respond),
        Recv::Ready(request.into_body()),
    )))
}

/// Opens one stream as the HTTP/2 client. The response (and so the receive half) arrives
/// later; the send half is usable at once, so no round trip is spent before writing.
pub async fn open(send_request: h2::client::SendRequest<Bytes>) -> Result<MuxStream, MuxError> {
    let mut send_request = send_request.ready().await?;
    let request = http::Request::post("http://burrow/")
        .body(())
        .expect("static request is valid");
    let (response, send) = send_request.send_request(request, false)?;
    Ok(MuxStream::H2(H2Stream::new(
        SendHalf::Open(send),
        Recv::Pending(response),
    )))
}

enum Recv {
    Pending(h2::client::ResponseFuture),
    Ready(RecvStream),
    Done,
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().expect("checked is_io");
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

/// The receiving half of an HTTP/2 stream: DATA frames as they arrive, without copying.
pub struct H2Recv {
    recv: Recv,
    /// Bytes of a frame not yet consumed through `AsyncRead` (e.g. after a header was read).
    pending: Bytes,
    /// The body ended with [`MOVED_TRAILER`] rather than a plain end of stream.
    moved: bool,
}

impl H2Recv {
    /// The next chunk of data, or `None` at end of stream.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        loop {
            match &mut self.recv {
                Recv::Pending(response) => {
                    let response = ready!(Pin::new(response).poll(cx)).map_err(to_io)?;
                    self.recv = Recv::Ready(response.into_body());
                }
                Recv::Ready(body) => match ready!(body.poll_data(cx)) {
                    Some(Ok(data)) => {
                        // Window credit goes back as soon as a frame is taken off h2's queue:
                        // the consumer holds at most one frame, so buffering stays bounded.
                        let _ = body.flow_control().release_capacity(data.len());
                        if !data.is_empty() {
                            return Poll::Ready(Ok(Some(data)));
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                    None => {
                        // Trailers, if any, are already in: they came with the end of stream.
                        if let Some(trailers) = ready!(body.poll_trailers(cx)).map_err(to_io)? {
                            self.moved = trailers.contains_key(MOVED_TRAILER);
                        }
                        self.recv = Recv::Done;
                    }
                },
                Recv::Done => return Poll::Ready(Ok(None)),
            }
        }
    }

    pub async fn chunk(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Whether the stream ended because its connection moved to a lane (after `chunk` said
    /// `None`).
    pub fn moved(&self) -> bool {
        self.moved
    }
}

/// The sending half of an HTTP/2 stream.
pub struct H2Send {
    half: SendHalf,
    /// The stream's id, kept here as an unanswered stream has no `SendStream` yet.
    id: u32,
    closed: bool,
}

enum SendHalf {
    /// An accepted stream whose response headers wait for its first data or its end.
    Unanswered(h2::server::SendResponse<Bytes>),
    Open(SendStream<Bytes>),
    /// Sending the response headers failed: the stream is gone.
    Failed,
}

impl H2Send {
    fn new(half: SendHalf) -> Self {
        let id = match &half {
            SendHalf::Unanswered(respond) => respond.stream_id().as_u32(),
            SendHalf::Open(send) => send.stream_id().as_u32(),
            SendHalf::Failed => 0,
        };
        Self {
            half,
            id,
            closed: false,
        }
    }

    /// The stream to send on, answering an accepted stream first; an error once this
    /// direction has ended.
    fn stream(&mut self) -> io::Result<&mut SendStream<Bytes>> {
        if self.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if let SendHalf::Unanswered(_) = self.half {
            if let SendHalf::Unanswered(mut respond) = std::mem::replace(&mut self.half, SendHalf::Failed) {
                self.half = SendHalf::Open(respond.send_response(http::Response::new(()), false).map_err(to_io)?);
            }
        }
        match &mut self.half {
            SendHalf::Open(send) => Ok(send),
            _ => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Waits for send capacity (flow-control credit) for up to `want` bytes.
    fn poll_capacity_for(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let want = want.min(MAX_WRITE);
        let send = self.stream()?;
        send.reserve_capacity(want);
        loop {
            let available = send.capacity();
            if available > 0 {
                return Poll::Ready(Ok(available.min(want)));
            }
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    /// Sends `data` as it is (no copy), in as many frames as flow control requires.
    pub async fn send(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_capacity_for(cx, data.len())).await?;
            self.stream()?.send_data(data.split_to(n), false).map_err(to_io)?;
        }
        Ok(())
    }

    /// The stream's id, the same at both ends of the connection.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Ends this direction with [`MOVED_TRAILER`]: the peer reads end of stream and sees
    /// [`H2Recv::moved`].
    pub fn finish_moved(&mut self) -> io::Result<()> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert(MOVED_TRAILER, http::HeaderValue::from_static("lane"));
        self.end(Some(trailers))
    }

    /// Half-closes: the peer reads end of stream.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.end(None)
    }

    /// Ends this direction, with `trailers` if given, and gives back unused send capacity.
    fn end(&mut self, trailers: Option<http::HeaderMap>) -> io::Result<()> {
        let ended = self.stream().and_then(|send| {
            send.reserve_capacity(0);
            match trailers {
                Some(trailers) => send.send_trailers(trailers),
                None => send.send_data(Bytes::new(), true),
            }
            .map_err(to_io)
        });
        self.closed = true;
        ended
    }

    /// See [`super::MuxStream::send_opening`].
    fn send_opening(&mut self, data: Bytes) -> io::Result<()> {
        self.stream()?.send_data(data, false).map_err(to_io)
    }
}

/// One HTTP/2 stream as an `AsyncRead + AsyncWrite` byte stream, or split into halves.
pub struct H2Stream {
    send: H2Send,
    recv: H2Recv,
}

impl H2Stream {
    fn new(send: SendHalf, recv: Recv) -> Self {
        Self {
            send: H2Send::new(send),
            recv: H2Recv {
                recv,
                pending: Bytes::new(),
                moved: false,
            },
        }
    }

    /// The stream's id, the same at both ends of the connection.
    pub fn id(&self) -> u32 {
        self.send.id()
    }

    /// See [`super::MuxStream::send_opening`].
    pub fn send_opening(&mut self, data: Bytes) -> io::Result<()> {
        self.send.send_opening(data)
    }

    pub fn into_split(self) -> (H2Recv, H2Send) {
        (self.recv, self.send)
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let recv = &mut self.get_mut().recv;
        if recv.pending.is_empty() {
            match ready!(recv.poll_chunk(cx))? {
                Some(data) => recv.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = recv.pending.len().min(buf.remaining());
        buf.put_slice(&recv.pending[..n]);
        recv.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

use std::future::Future;

impl AsyncWrite for H2Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let send = &mut self.get_mut().send;
        let n = ready!(send.poll_capacity_for(cx, buf.len()))?;
        send.stream()?
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().send.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// One end of an in-memory pipe that counts the writes made on it.
    struct Counted {
        io: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write(cx, buf);
            if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    async fn read_bounded(stream: &mut MuxStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("the data arrives")
            .expect("read");
        buf
    }

    /// Setting up a forwarded connection costs one write at each end: the opener's HEADERS
    /// leave with the stream's first data, and the acceptor's response headers with its
    /// first reply, not each in a write (and a read at the other end) of its own.
    #[tokio::test]
    async fn a_new_stream_costs_one_write_each_way() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client_writes, server_writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (opener, acceptor) = tokio::join!(
            client(
                Counted {
                    io: a,
                    writes: client_writes.clone()
                },
                Transport::Tcp
            ),
            server(
                Counted {
                    io: b,
                    writes: server_writes.clone()
                },
                Transport::Tcp
            ),
        );
        let (mut opener, mut acceptor) = (opener.unwrap(), acceptor.unwrap());
        // One exchange on the control stream each way: the handshake's frames are out by then.
        opener.control.write_all(b"a").await.unwrap();
        assert_eq!(read_bounded(&mut acceptor.control, 1).await, b"a");
        acceptor.control.write_all(b"b").await.unwrap();
        assert_eq!(read_bounded(&mut opener.control, 1).await, b"b");
        let (client_before, server_before) = (
            client_writes.load(Ordering::SeqCst),
            server_writes.load(Ordering::SeqCst),
        );

        let mut near = opener.opener.as_ref().unwrap().open().await.unwrap();
        near.send_opening(Bytes::from_static(b"header, then the visitor's request"))
            .await
            .unwrap();
        let mut far = acceptor.acceptor.as_mut().unwrap().accept().await.unwrap();
        assert_eq!(read_bounded(&mut far, 34).await, b"header, then the visitor's request");
        assert_eq!(
            client_writes.load(Ordering::SeqCst) - client_before,
            1,
            "HEADERS and DATA in one write"
        );
        assert_eq!(
            server_writes.load(Ordering::SeqCst),
            server_before,
            "nothing answered before the reply"
        );

        far.write_all(b"reply").await.unwrap();
        assert_eq!(read_bounded(&mut near, 5).await, b"reply");
        assert_eq!(
            server_writes.load(Ordering::SeqCst) - server_before,
            1,
            "response headers and DATA in one write"
        );
    }
}
