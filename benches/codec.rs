//! Per-message costs of the wire formats: the stream header written per forwarded
//! connection, a control frame, and UDP datagram framing (QUIC DATAGRAM payloads and the
//! length-prefixed frames used on streams).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

use burrow::types::TunnelId;
use burrow::wire::datagram::{decode_datagram, decode_frame_body, encode_datagram, encode_frame, frame_body_len};
use burrow::wire::{decode_body, encode_frame as encode_control, frame_len, AgentMsg, StreamHeader, TunnelSpec};

fn stream_header(c: &mut Criterion) {
    use futures_util::FutureExt;
    let header = StreamHeader::tcp(TunnelId::random(), "203.0.113.77:51234", "198.51.100.1:20001");
    c.bench_function("wire/stream_header_round_trip", |b| {
        b.iter(|| {
            let bytes = black_box(&header).encode();
            // A slice never waits, so the reader finishes on its first poll.
            let read = burrow::wire::io::read_stream_header(&mut &bytes[..]).now_or_never();
            black_box(read.expect("a slice is always ready").unwrap())
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

criterion_group!(benches, stream_header, control_frame, datagrams);
criterion_main!(benches);
