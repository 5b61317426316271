//! The hot path: copy bytes both ways between two streams, carrying half-close, with
//! backpressure (a slow reader stalls only its own direction) and byte counts.

use tokio::io::{AsyncRead, AsyncWrite};

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
