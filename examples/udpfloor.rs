//! The floor for `scripts/udp-bench.sh FLOOR=1`: the least a two-process UDP-over-TCP relay
//! can do per datagram — blocking threads, no runtime, no flows, no framing beyond a 2-byte
//! length — to show what a hub and an agent could at best reach on this machine. Not a
//! product: one client, no error handling beyond exiting.
//!
//! ```text
//! udpfloor hub UDP_LISTEN TCP_LISTEN      public UDP port; waits for one agent on TCP_LISTEN
//! udpfloor agent HUB_TCP TARGET_UDP       dials the hub, relays to the target
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;

fn read_frame(tcp: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)?;
    let len = u16::from_be_bytes(len) as usize;
    tcp.read_exact(&mut buf[..len])?;
    Ok(len)
}

fn write_frame(tcp: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(payload);
    tcp.write_all(&frame)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: udpfloor hub UDP_LISTEN TCP_LISTEN | agent HUB_TCP TARGET_UDP");
        std::process::exit(2);
    }
    let mut buf = vec![0u8; 65536];
    if args[1] == "hub" {
        let udp = Arc::new(UdpSocket::bind(&args[2])?);
        let (mut tcp, _) = TcpListener::bind(&args[3])?.accept()?;
        tcp.set_nodelay(true)?;
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (udp2, mut tcp2, client2) = (udp.clone(), tcp.try_clone()?, client.clone());
        thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; 65536];
            loop {
                let len = read_frame(&mut tcp2, &mut buf)?;
                if let Some(to) = *client2.lock().unwrap() {
                    udp2.send_to(&buf[..len], to)?;
                }
            }
        });
        loop {
            let (len, from) = udp.recv_from(&mut buf)?;
            *client.lock().unwrap() = Some(from);
            write_frame(&mut tcp, &buf[..len])?;
        }
    } else {
        let mut tcp = TcpStream::connect(&args[2])?;
        tcp.set_nodelay(true)?;
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        udp.connect(&args[3])?;
        let (udp2, mut tcp2) = (udp.clone(), tcp.try_clone()?);
        thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; 65536];
            loop {
                let len = udp2.recv(&mut buf)?;
                write_frame(&mut tcp2, &buf[..len])?;
            }
        });
        loop {
            let len = read_frame(&mut tcp, &mut buf)?;
            udp.send(&buf[..len])?;
        }
    }
}
