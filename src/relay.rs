//! The hot path: copy bytes both ways between two streams, carrying half-close, with
//! backpressure (a slow reader stalls only its own direction) and byte counts.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mux::{MuxRecv, MuxSend, MuxStream};

/// Buffer per direction. Large reads amortise syscalls and frame overhead; the buffer is the
/// only data held per direction, so memory per relayed connection is bounded by it.
pub const RELAY_BUFFER: usize = 64 * 1024;

/// Bytes moved by one relay, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Relays until both directions have ended. An end of stream on one side becomes a
/// write-shutdown (half-close) on the other; the opposite direction keeps flowing.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (a_to_b, b_to_a) = tokio::io::copy_bidirectional_with_sizes(a, b, RELAY_BUFFER, RELAY_BUFFER).await?;
    Ok(Transferred { a_to_b, b_to_a })
}

/// Relays between a TCP connection and a multiplexed stream, moving `Bytes` chunks: data
/// read from the socket is handed to the transport without another copy, and chunks from
/// the transport are written straight to the socket. No buffer is held while the connection
/// is idle: one is allocated only once the socket is readable.
pub async fn relay_tcp(tcp: TcpStream, stream: MuxStream) -> std::io::Result<Transferred> {
    let (tcp_read, mut tcp_write) = tcp.into_split();
    let (mut mux_read, mut mux_write) = stream.into_split();
    let up = async {
        let mut total = 0u64;
        loop {
            tcp_read.readable().await?;
            let mut buf = BytesMut::with_capacity(RELAY_BUFFER);
            match tcp_read.try_read_buf(&mut buf) {
                Ok(0) => {
                    mux_write.finish()?;
                    return Ok(total);
                }
                Ok(n) => {
                    total += n as u64;
                    mux_write.send(buf.freeze()).await?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    };
    let down = async {
        let total = copy_chunks(&mut mux_read, &mut tcp_write).await?;
        tcp_write.shutdown().await?;
        Ok::<_, std::io::Error>(total)
    };
    let (a_to_b, b_to_a) = tokio::try_join!(up, down)?;
    Ok(Transferred { a_to_b, b_to_a })
}

async fn copy_chunks<W: AsyncWrite + Unpin>(from: &mut MuxRecv, to: &mut W) -> std::io::Result<u64> {
    use futures_util::FutureExt;
    let mut total = 0u64;
    while let Some(first) = from.chunk().await? {
        // QUIC hands over packet-sized chunks: gather whatever else is already there (up to
        // one relay buffer) so the socket sees one write instead of dozens of small ones.
        let mut gathered = Vec::new();
        let mut size = first.len();
        let mut ended = false;
        while size < RELAY_BUFFER {
            match from.chunk().now_or_never() {
                Some(Ok(Some(more))) => {
                    size += more.len();
                    gathered.push(more);
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
        if gathered.is_empty() {
            to.write_all(&first).await?;
        } else {
            let mut joined = BytesMut::with_capacity(size);
            joined.extend_from_slice(&first);
            for more in &gathered {
                joined.extend_from_slice(more);
            }
            to.write_all(&joined).await?;
        }
        if ended {
            break;
        }
    }
    Ok(total)
}

/// Relays between two multiplexed streams (the hub joining a `reach` agent's stream to an
/// exposing agent's): chunks pass through without being copied.
pub async fn relay_streams(a: MuxStream, b: MuxStream) -> std::io::Result<Transferred> {
    let (mut a_read, mut a_write) = a.into_split();
    let (mut b_read, mut b_write) = b.into_split();
    let (a_to_b, b_to_a) = tokio::try_join!(forward(&mut a_read, &mut b_write), forward(&mut b_read, &mut a_write))?;
    Ok(Transferred { a_to_b, b_to_a })
}

async fn forward(from: &mut MuxRecv, to: &mut MuxSend) -> std::io::Result<u64> {
    let mut total = 0u64;
    while let Some(chunk) = from.chunk().await? {
        total += chunk.len() as u64;
        to.send(chunk).await?;
    }
    to.finish()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_and_carries_half_close() {
        let (mut client, mut relay_a) = tokio::io::duplex(1024);
        let (mut relay_b, mut server) = tokio::io::duplex(1024);
        let relay_task = tokio::spawn(async move { relay(&mut relay_a, &mut relay_b).await });

        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, payload, "client's bytes arrive intact, then EOF");
        // The server can still answer after the client half-closed.
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
        let moved = relay_task.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Transferred {
                a_to_b: 100_000,
                b_to_a: 4
            }
        );
    }
}
