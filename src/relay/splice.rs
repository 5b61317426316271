//! Bulk data between two TCP sockets with splice(2), socket → pipe → socket inside the
//! kernel, so it never enters user space: what a plain lane's direction does once it has
//! turned bulk (`plain_lane.rs`).

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Most bytes moved by one splice call: the default pipe capacity (16 pages). Larger pipes
/// (`F_SETPIPE_SZ`) were measured: 1 MiB cut hub + agent CPU per byte of one stream by 17%,
/// but draining faster let TCP autotuning grow the socket buffers behind a stalled reader
/// from 12–16 MB to 20–62 MB (`slow_reader_gets_backpressure_on_its_stream_only`, bound
/// 40 MiB); 256 KiB gave 10% and 17–25 MB. The default stays.
const SPLICE_CHUNK: usize = 64 * 1024;

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
