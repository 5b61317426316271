//! The floor for `scripts/floor.sh`: the plainest relays that can stand where a hub and an
//! agent stand, so `peers.sh` can say, in the same run as `direct`, what any relay chain
//! reaches on this machine. Not a product: no framing, no multiplexing, no flows, no
//! authentication, no error handling beyond dropping a connection.
//!
//! ```text
//! floor tcp LISTEN TARGET   each accepted connection gets its own connection to TARGET;
//!                           one thread, level-triggered epoll, one read and one write per
//!                           message (what a lane per visitor costs, with nothing else)
//! floor udp LISTEN TARGET   one client's datagrams to TARGET and the replies back; one
//!                           thread busy-polling both sockets, yielding the CPU when neither
//!                           had anything, and blocking in epoll after 50 µs without a
//!                           datagram (as burrow's runtime polls)
//! floor udp-tokio LISTEN TARGET
//!                           the same relay as two tasks on burrow's runtime (one thread,
//!                           busy-polling 50 µs): what the runtime costs a round trip
//! ```
//!
//! Two of them chained (LISTEN → the next one's LISTEN → target) are a hub and an agent
//! doing nothing but forwarding.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// The epoll token of the listening socket; a connection's is 2 × its pair's id + its side
/// (0 accepted, 1 dialled).
const LISTENER: u64 = u64::MAX;

/// How long the UDP relay keeps polling after its last datagram: burrow's default window.
const SPIN: Duration = burrow::runtime::MEASURED_BUSY_POLL;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(listen), Some(target)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: floor tcp|udp|udp-tokio LISTEN_ADDR TARGET_ADDR");
        std::process::exit(2);
    };
    let target: SocketAddr = target.parse().expect("TARGET_ADDR: ip:port");
    match mode.as_str() {
        "tcp" => relay_tcp(listen, target),
        "udp" => relay_udp(listen, target),
        "udp-tokio" => relay_udp_tokio(listen, target),
        _ => {
            eprintln!("mode must be tcp, udp or udp-tokio");
            std::process::exit(2);
        }
    }
}

fn relay_tcp(listen: &str, target: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    // Each accepted connection and the one dialled for it, by pair id.
    let mut pairs: HashMap<u64, [TcpStream; 2]> = HashMap::new();
    let mut next_id = 0u64;
    let mut events = vec![EpollEvent::empty(); 64];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
        for event in &events[..n] {
            let token = event.data();
            if token == LISTENER {
                let Ok((visitor, _)) = listener.accept() else { continue };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let id = next_id;
                next_id += 1;
                for (side, stream) in [&visitor, &upstream].into_iter().enumerate() {
                    stream.set_nodelay(true)?;
                    epoll.add(
                        stream.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN, 2 * id + side as u64),
                    )?;
                }
                pairs.insert(id, [visitor, upstream]);
                continue;
            }
            let (id, side) = (token / 2, (token % 2) as usize);
            let Some(pair) = pairs.get_mut(&id) else { continue };
            let [a, b] = pair;
            let (from, to) = if side == 0 { (a, b) } else { (b, a) };
            let done = match from.read(&mut buf) {
                Ok(0) => true,
                Ok(len) => to.write_all(&buf[..len]).is_err(),
                Err(e) => e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::Interrupted,
            };
            if done {
                // Dropping both streams closes them and takes them out of the epoll set.
                pairs.remove(&id);
            }
        }
    }
}

fn relay_udp(listen: &str, target: SocketAddr) -> std::io::Result<()> {
    let public = UdpSocket::bind(listen)?;
    let upstream = UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    upstream.connect(target)?;
    public.set_nonblocking(true)?;
    upstream.set_nonblocking(true)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for socket in [&public, &upstream] {
        epoll.add(socket.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
    }
    let mut events = vec![EpollEvent::empty(); 2];
    let mut client = None;
    let mut buf = vec![0u8; 65536];
    let mut last_datagram = Instant::now();
    loop {
        let mut worked = false;
        if let Ok((len, from)) = public.recv_from(&mut buf) {
            client = Some(from);
            let _ = upstream.send(&buf[..len]);
            worked = true;
        }
        if let Ok(len) = upstream.recv(&mut buf) {
            if let Some(to) = client {
                let _ = public.send_to(&buf[..len], to);
            }
            worked = true;
        }
        if worked {
            last_datagram = Instant::now();
        } else if last_datagram.elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            epoll.wait(&mut events, EpollTimeout::NONE)?;
        }
    }
}

fn relay_udp_tokio(listen: &str, target: SocketAddr) -> std::io::Result<()> {
    let runtime = burrow::runtime::single_thread(burrow::runtime::MEASURED_BUSY_POLL)?;
    runtime.block_on(async {
        let public = std::sync::Arc::new(tokio::net::UdpSocket::bind(listen).await?);
        // As an `expose` agent sets up its target: a connected socket and a clone to send on.
        let Some((upstream, sender)) = burrow::udp::connect_target(&target.to_string()).await else {
            return Err(std::io::Error::other("cannot set up the upstream socket"));
        };
        let client = std::sync::Arc::new(std::sync::Mutex::new(None));
        let replies = {
            let (public, client) = (public.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(len) = upstream.recv(&mut buf).await {
                    let to = *client.lock().expect("client lock");
                    if let Some(to) = to {
                        let _ = public.try_send_to(&buf[..len], to);
                    }
                }
            })
        };
        let mut buf = vec![0u8; 65536];
        loop {
            let (len, from) = public.recv_from(&mut buf).await?;
            *client.lock().expect("client lock") = Some(from);
            let _ = sender.send(&buf[..len]);
            if replies.is_finished() {
                return Ok(());
            }
        }
    })
}
