//! The relay between two TCP sockets, used where a forwarded connection runs on a lane (a
//! dedicated plain-TCP data connection) on both the hub and the agent: small messages are
//! copied, bulk data is moved with splice(2) socket → pipe → socket inside the kernel, so it
//! never enters user space.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{read_chunk, Transferred, RELAY_BUFFER};

/// Most bytes moved by one splice call: the default pipe capacity (16 pages). Larger pipes
/// (`F_SETPIPE_SZ`) were measured: 1 MiB cut hub + agent CPU per byte of one stream by 17%,
/// but draining faster let TCP autotuning grow the socket buffers behind a stalled reader
/// from 12–16 MB to 20–62 MB (`slow_reader_gets_backpressure_on_its_stream_only`, bound
/// 40 MiB); 256 KiB gave 10% and 17–25 MB. The default stays.
const SPLICE_CHUNK: usize = 64 * 1024;

/// Relays both ways between `a` and `b` until both directions have ended, carrying
/// half-close (EOF on one side shuts down writing on the other). Backpressure is the
/// kernel's: nothing more is read in a direction until what was read has been written.
pub async fn relay_sockets(a: TcpStream, b: TcpStream) -> io::Result<Transferred> {
    let (mut a_read, mut a_write) = a.into_split();
    let (mut b_read, mut b_write) = b.into_split();
    let (a_to_b, b_to_a) = tokio::try_join!(pump(&mut a_read, &mut b_write), pump(&mut b_read, &mut a_write))?;
    Ok(Transferred { a_to_b, b_to_a })
}

/// One direction. It starts by copying through a buffer, which costs two syscalls per
/// message, and switches to splicing once a read fills the whole buffer: measured on
/// loopback, splice moves bulk data with about a third less CPU but makes small
/// request/response traffic slower (peers.sh HTTP: 29k req/s spliced vs 37k copied).
/// An idle connection holds no buffer, and no pipe until it has once moved bulk data.
async fn pump(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf) -> io::Result<u64> {
    let mut total = 0u64;
    // Copying until the first full buffer.
    loop {
        let Some(buf) = read_chunk(from.as_ref()).await? else {
            to.shutdown().await?;
            return Ok(total);
        };
        to.write_all(&buf).await?;
        total += buf.len() as u64;
        if buf.len() == RELAY_BUFFER {
            break;
        }
    }
    total += splice_to_end(from, to).await?;
    to.shutdown().await?;
    Ok(total)
}

/// Splices everything `from` sends until its end of file into `to` (without shutting `to`
/// down); returns how many bytes moved. The pipe lives only as long as the call.
pub(super) async fn splice_to_end(from: &OwnedReadHalf, to: &OwnedWriteHalf) -> io::Result<u64> {
    let pipe = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let mut total = 0u64;
    loop {
        from.as_ref().readable().await?;
        match splice_once(from, to, &pipe).await {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Moves what is there (up to one pipe's capacity) into the pipe and on to `to`.
async fn splice_once(
    from: &OwnedReadHalf,
    to: &OwnedWriteHalf,
    (pipe_out, pipe_in): &(OwnedFd, OwnedFd),
) -> io::Result<usize> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let n = from.as_ref().try_io(Interest::READABLE, || {
        splice(from.as_ref(), None, pipe_in, None, SPLICE_CHUNK, flags).map_err(io::Error::from)
    })?;
    let mut left = n;
    while left > 0 {
        left -= to
            .as_ref()
            .async_io(Interest::WRITABLE, || {
                splice(pipe_out, None, to.as_ref(), None, left, flags).map_err(io::Error::from)
            })
            .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tcp_pair;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn carries_bytes_both_ways_and_half_close() {
        // left client ⇄ [relay between left server and right client] ⇄ right server
        let (mut left, left_inner) = tcp_pair().await;
        let (right_inner, mut right) = tcp_pair().await;
        let relay = tokio::spawn(relay_sockets(left_inner, right_inner));

        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            left.write_all(&sent).await.unwrap();
            left.shutdown().await.unwrap();
            let mut reply = Vec::new();
            left.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let mut received = Vec::new();
        right.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, payload, "bytes arrive intact and EOF follows them");
        // The other direction is still open after the half-close.
        right.write_all(b"reply after half-close").await.unwrap();
        right.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let moved = relay.await.unwrap().unwrap();
        assert_eq!(moved.a_to_b, payload.len() as u64);
        assert_eq!(moved.b_to_a, 22);
    }
}
