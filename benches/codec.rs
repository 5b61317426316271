//! Per-message costs of the wire formats: the stream header written per forwarded
//! connection, a control frame, UDP datagram framing (QUIC DATAGRAM payloads and the
//! length-prefixed frames used on streams), and TLS lane records (sealed and opened in place).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

use burrow::types::TunnelId;
use burrow::wire::datagram::{decode_datagram, decode_frame_body, encode_datagram, encode_frame, frame_body_len};
use burrow::wire::{
    decode_body, encode_frame as encode_control, frame_len, AgentMsg, StreamHeader, StreamKind, TunnelSpec,
};

fn stream_header(c: &mut Criterion) {
    let header = StreamHeader {
        kind: StreamKind::Tcp,
        tunnel: TunnelId::random(),
        peer: "203.0.113.77:51234".into(),
        flow: 0,
    };
    c.bench_function("wire/stream_header_round_trip", |b| {
        b.iter(|| {
            let bytes = black_box(&header).encode();
            let fixed: [u8; StreamHeader::FIXED_LEN] = bytes[..StreamHeader::FIXED_LEN].try_into().unwrap();
            black_box(StreamHeader::decode_fixed(&fixed).unwrap())
        })
    });
}

fn control_frame(c: &mut Criterion) {
    let msg = AgentMsg::Register {
        spec: TunnelSpec {
            name: Some("web".parse().unwrap()),
            public: true,
            ..TunnelSpec::tcp("127.0.0.1:8080")
        },
    };
    c.bench_function("wire/control_frame_round_trip", |b| {
        b.iter(|| {
            let frame = encode_control(black_box(&msg));
            let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
            black_box(decode_body::<AgentMsg>(&frame[4..4 + len]).unwrap())
        })
    });
}

fn datagrams(c: &mut Criterion) {
    let mut group = c.benchmark_group("datagram");
    for size in [64usize, 1200, 60_000] {
        let payload = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("quic_round_trip", size), &payload, |b, payload| {
            b.iter(|| {
                let datagram = encode_datagram(black_box(7), black_box(42), payload);
                black_box(decode_datagram(datagram).unwrap())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("stream_frame_round_trip", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    let frame = encode_frame(black_box(42), payload);
                    let len = frame_body_len(frame[..4].try_into().unwrap()).unwrap();
                    let body: Bytes = frame.slice(4..4 + len);
                    black_box(decode_frame_body(body).unwrap())
                })
            },
        );
    }
    group.finish();
}

/// What a TLS lane does per socket read: seal 64 KiB into four records in place, then (the
/// other end) open them in place.
fn sealed_records(c: &mut Criterion) {
    use burrow::relay::sealed::{record_layer, SEAL_CAPACITY};
    use rustls::crypto::cipher::{AeadKey, Iv};
    use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
    let key = |byte: u8| ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([byte; 32]),
        iv: Iv::new([byte; 12]),
    };
    let (mut seal, _) = record_layer(ExtractedSecrets {
        tx: (0, key(1)),
        rx: (0, key(2)),
    })
    .unwrap();
    let (_, mut open) = record_layer(ExtractedSecrets {
        tx: (0, key(2)),
        rx: (0, key(1)),
    })
    .unwrap();
    let mut group = c.benchmark_group("sealed");
    group.throughput(Throughput::Bytes(SEAL_CAPACITY as u64));
    group.bench_function("seal_and_open_64KiB", |b| {
        b.iter(|| {
            let _ = seal.slots();
            let records = seal.seal_read(SEAL_CAPACITY).unwrap();
            let mut wire = records;
            while !wire.is_empty() {
                let space = open.space();
                let n = space.len().min(wire.len());
                space[..n].copy_from_slice(&wire[..n]);
                open.filled(n).unwrap();
                wire = &wire[n..];
                let plain: usize = open.plaintext().iter().map(|s| s.len()).sum();
                open.consume(black_box(plain));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, stream_header, control_frame, datagrams, sealed_records);
criterion_main!(benches);
