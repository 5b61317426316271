//! A short fuzzing pass over every parser of network input (`burrow::fuzzing::TARGETS`) on
//! stable Rust: seeds from `tests/testdata/` and hand-made headers, then random mutations of
//! them (bit flips, overwrites, cuts, insertions, splices) from a fixed seed. The long,
//! coverage-guided runs are `cargo +nightly fuzz run TARGET` in `fuzz/` (docs/fuzzing.md).
//! `BURROW_FUZZ_ITERATIONS` sets the mutations per target (default 100,000).

use burrow::fuzzing::TARGETS;
use burrow::sniff::proxy::{self, ProxyVersion};
use burrow::types::TunnelId;
use burrow::wire::{self, StreamHeader, StreamKind, TunnelRef};
use rand::{Rng, SeedableRng};

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/client-hellos");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let addresses = Some((
        "203.0.113.7:40000".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
    ));
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let mut header = proxy::encode(version, addresses);
        seeds.push(header.clone());
        header.extend_from_slice(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n");
        seeds.push(header);
    }
    seeds.push(b"GET /path HTTP/1.1\r\nHost: web.localhost:7443\r\nUpgrade: websocket\r\n\r\n".to_vec());
    seeds.push(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec());
    seeds.push(b"5;e=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nT: x\r\n\r\nGET / HTTP/1.1\r\n\r\n".to_vec());
    seeds.push(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc".to_vec());
    seeds.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec());
    seeds.push(wire::PREFACE.to_vec());
    seeds.push(b"PROXY a.example:3128; HTTPS [2001:db8::1]:443;socks5 s:1080 ; DIRECT;TUNNEL corp".to_vec());
    seeds.push(b"http://user:pw@[::1]:3128/".to_vec());
    let mut udp = StreamHeader::tcp(TunnelRef::Name("db".into()), "127.0.0.1:5000", "");
    udp.kind = StreamKind::Udp;
    udp.flow = 7;
    seeds.push(udp.encode());
    seeds.push(StreamHeader::tcp(TunnelId::random(), "[2001:db8::1]:1", "10.0.0.1:20001").encode());
    seeds.push(wire::encode_frame(&wire::AgentMsg::Ping));
    seeds.push(wire::datagram::encode_datagram(3, 9, b"payload").to_vec());
    seeds.push(wire::datagram::encode_frame(4, b"framed").to_vec());
    seeds
}

fn mutate(rng: &mut impl Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                data[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                data[at] = [0, 0xff, 0x7f, 0x80, b'\r', b'\n', b' ', rng.random()][rng.random_range(0..8)];
            }
            2 if len > 0 => data.truncate(rng.random_range(0..len)),
            3 => {
                let at = rng.random_range(0..=len);
                let extra: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
                data.splice(at..at, extra);
            }
            4 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let from = rng.random_range(0..=other.len());
                let at = rng.random_range(0..=len);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ if len > 1 => {
                // Lengths are where parsers go wrong: set a two-byte field to an extreme.
                let at = rng.random_range(0..len - 1);
                let value: u16 = [0, 1, 0x3fff, 0x4000, 0xffff][rng.random_range(0..5)];
                data[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
            _ => {}
        }
    }
    data
}

#[test]
fn every_parser_survives_mutated_input() {
    let iterations: usize = std::env::var("BURROW_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seeds = seeds();
    for (name, target) in TARGETS {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xb0_77_0c);
        for seed in &seeds {
            for cut in 0..=seed.len() {
                target(&seed[..cut]);
            }
        }
        for i in 0..iterations {
            let data = mutate(&mut rng, &seeds);
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "target {name} panicked on input {i}: {data:02x?}");
        }
    }
}
