//! UDP load generator for `scripts/udp-bench.sh`: an echo target, request/response rate with
//! one or many clients, and bulk one-way throughput into a sink. Plain std threads, so the
//! generator costs little next to the tunnel it measures.
//!
//! ```text
//! udpload echo PORT                        UDP echo server on 127.0.0.1:PORT
//! udpload rr ADDR CLIENTS SECS             CLIENTS sequential clients for SECS seconds
//! udpload bulk ADDR SINK_PORT SECS SIZE    blast SIZE-byte datagrams at ADDR for SECS seconds,
//!                                          counting what reaches a sink on 127.0.0.1:SINK_PORT
//! ```
//! Each measuring mode prints one line of `key=value` pairs.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match arg(1) {
        "echo" => echo(arg(2).parse().unwrap_or_else(|_| usage())),
        "rr" => rr(arg(2), number(arg(3)), number(arg(4))),
        "bulk" => bulk(arg(2), number(arg(3)), number(arg(4)), number(arg(5))),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: udpload echo PORT | rr ADDR CLIENTS SECS | bulk ADDR SINK_PORT SECS SIZE");
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

fn echo(port: u16) {
    let socket = UdpSocket::bind(("127.0.0.1", port)).expect("bind the echo port");
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

/// Each client sends a 64-byte request and waits for its echo (1 s timeout = lost).
fn rr(addr: &str, clients: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let addr = addr.to_string();
            thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client");
                socket.connect(&addr).expect("connect");
                socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut request = [0u8; 64];
                request[..8].copy_from_slice(&(c as u64).to_be_bytes());
                let mut reply = [0u8; 128];
                let (mut latencies, mut lost) = (Vec::new(), 0u64);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    request[8..16].copy_from_slice(&seq.to_be_bytes());
                    let sent = Instant::now();
                    socket.send(&request).expect("send");
                    // Skip late echoes of earlier (timed-out) requests.
                    loop {
                        match socket.recv(&mut reply) {
                            Ok(n) if n == request.len() && reply[..n] == request => {
                                latencies.push(sent.elapsed());
                                break;
                            }
                            Ok(_) => continue,
                            Err(_) => {
                                lost += 1;
                                break;
                            }
                        }
                    }
                }
                (latencies, lost)
            })
        })
        .collect();
    let (mut latencies, mut lost) = (Vec::new(), 0);
    for worker in workers {
        let (l, n) = worker.join().expect("client thread");
        latencies.extend(l);
        lost += n;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "rate={:.1} p50_us={:.0} p99_us={:.0} lost={}",
        latencies.len() as f64 / secs as f64,
        pct(0.50),
        pct(0.99),
        lost
    );
}

/// One sender as fast as it can; the sink counts datagrams and bytes until 0.5 s after the
/// sender stops.
fn bulk(addr: &str, sink_port: u16, secs: u64, size: usize) {
    let sink = UdpSocket::bind(("127.0.0.1", sink_port)).expect("bind the sink port");
    sink.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (received, bytes, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let counter = {
        let (received, bytes, done) = (received.clone(), bytes.clone(), done.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = sink.recv(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
    socket.connect(addr).expect("connect");
    let payload = vec![0x5au8; size];
    // A first datagram opens the flow; count only what follows.
    let _ = socket.send(&payload);
    thread::sleep(Duration::from_millis(200));
    let (received_before, bytes_before) = (received.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        if socket.send(&payload).is_ok() {
            sent += 1;
        }
    }
    thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    counter.join().expect("sink thread");
    let got = received.load(Ordering::Relaxed) - received_before;
    let got_bytes = bytes.load(Ordering::Relaxed) - bytes_before;
    println!(
        "sent={} received={} mbit_s={:.1} loss_pct={:.1}",
        sent,
        got,
        got_bytes as f64 * 8.0 / 1e6 / secs as f64,
        100.0 * (sent.saturating_sub(got)) as f64 / sent.max(1) as f64
    );
}
