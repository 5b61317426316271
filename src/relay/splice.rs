//! The relay between two TCP sockets, used where a forwarded connection runs on a lane (a
//! dedicated plain-TCP data connection) on both the hub and the agent: small messages are
//! copied, bulk data is moved with splice(2) socket → pipe → socket inside the kernel, so it
//! never enters user space.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::{read_chunk, Transferred, RELAY_BUFFER};

/// A new pipe's capacity (16 pages): the most one splice call moves through a pipe that was
/// not enlarged.
const DEFAULT_PIPE: usize = 64 * 1024;

/// The capacity a bulk direction asks for. One iperf3 stream over `--transport tcp`,
/// alternated seven times with the default pipe: hub + agent CPU per GB 0.56 s against
/// 0.68 s (−17%, lower in every pair), 11.9 against 11.3 Gbit/s; eight streams 0.62 against
/// 0.66 s per GB at the same throughput.
const LARGE_PIPE: usize = 1024 * 1024;

/// Pipe capacity this process may add beyond the default. Linux gives each user a soft
/// budget of pipe pages (`/proc/sys/fs/pipe-user-pages-soft`, 16,384 pages by default);
/// once a user is past it, every new pipe gets two pages, which would make later relays
/// splice 8 KiB at a time. So enlarged pipes stay within a quarter of that budget
/// (16 MiB by default: sixteen bulk directions at once), and the rest keep the default.
fn pipe_budget() -> &'static PipeBudget {
    static BUDGET: OnceLock<PipeBudget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let soft_pages = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|pages| pages.trim().parse::<usize>().ok())
            .unwrap_or(0);
        // 0 means no soft limit; 4 KiB pages undercount where pages are larger (safe).
        let soft_bytes = if soft_pages == 0 { 1 << 30 } else { soft_pages * 4096 };
        PipeBudget::new(soft_bytes / 4)
    })
}

/// Bytes of pipe capacity that may still be added, shared by every relay of the process.
struct PipeBudget {
    left: AtomicUsize,
}

impl PipeBudget {
    fn new(bytes: usize) -> Self {
        Self {
            left: AtomicUsize::new(bytes),
        }
    }

    /// Takes `bytes` if that much is left.
    fn take(&self, bytes: usize) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes))
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.left.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// The pipe one bulk direction splices through: enlarged to [`LARGE_PIPE`] while the
/// process's budget allows, else of the default size.
struct Pipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    /// The pipe's capacity: the most one splice call moves.
    capacity: usize,
    /// Capacity added beyond the default, returned to `budget` when the pipe closes.
    added: usize,
    budget: &'static PipeBudget,
}

impl Pipe {
    fn new(budget: &'static PipeBudget) -> io::Result<Self> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let mut pipe = Pipe {
            read_end,
            write_end,
            capacity: DEFAULT_PIPE,
            added: 0,
            budget,
        };
        let extra = LARGE_PIPE - DEFAULT_PIPE;
        if budget.take(extra) {
            match fcntl(&pipe.write_end, FcntlArg::F_SETPIPE_SZ(LARGE_PIPE as i32)) {
                Ok(capacity) => {
                    pipe.capacity = capacity as usize;
                    pipe.added = extra;
                }
                Err(_) => budget.give_back(extra),
            }
        }
        Ok(pipe)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.budget.give_back(self.added);
    }
}

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
    let pipe = Pipe::new(pipe_budget())?;
    loop {
        from.as_ref().readable().await?;
        match splice_once(from, to, &pipe).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    to.shutdown().await?;
    Ok(total)
}

/// Moves what is there (up to the pipe's capacity) into the pipe and on to `to`.
async fn splice_once(from: &OwnedReadHalf, to: &OwnedWriteHalf, pipe: &Pipe) -> io::Result<usize> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let n = from.as_ref().try_io(Interest::READABLE, || {
        splice(from.as_ref(), None, &pipe.write_end, None, pipe.capacity, flags).map_err(io::Error::from)
    })?;
    let mut left = n;
    while left > 0 {
        left -= to
            .as_ref()
            .async_io(Interest::WRITABLE, || {
                splice(&pipe.read_end, None, to.as_ref(), None, left, flags).map_err(io::Error::from)
            })
            .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[test]
    fn pipes_are_enlarged_only_within_the_budget_and_return_it_when_closed() {
        let extra = LARGE_PIPE - DEFAULT_PIPE;
        let budget: &'static PipeBudget = Box::leak(Box::new(PipeBudget::new(2 * extra)));
        let first = Pipe::new(budget).unwrap();
        let second = Pipe::new(budget).unwrap();
        let third = Pipe::new(budget).unwrap();
        // pipe-max-size (1 MiB by default) may forbid the larger size; then none grows.
        if first.added > 0 {
            assert_eq!(first.capacity, LARGE_PIPE);
            assert_eq!(second.capacity, LARGE_PIPE);
            assert_eq!(third.capacity, DEFAULT_PIPE, "the budget was spent");
            assert_eq!(third.added, 0);
            drop(first);
            let fourth = Pipe::new(budget).unwrap();
            assert_eq!(fourth.capacity, LARGE_PIPE, "a closed pipe gave its share back");
        }
        drop((second, third));
    }

    #[tokio::test]
    async fn carries_bytes_both_ways_and_half_close() {
        // left client ⇄ [relay between left server and right client] ⇄ right server
        let (mut left, left_inner) = connected_pair().await;
        let (right_inner, mut right) = connected_pair().await;
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
