//! Cost of classifying a connection's first bytes: a real ClientHello (curl's, recorded in
//! `tests/testdata/client-hellos/`) and an HTTP request head, as the main port reads them
//! (server name, `Host`) and as an `auto` public port detects them; and PROXY headers.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use burrow::sniff::{self, proxy};

const REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: web.localhost:7443\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n";

fn client_hello(c: &mut Criterion) {
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/client-hellos/curl-h2.bin"
    ))
    .unwrap();
    c.bench_function("sniff/main_port_client_hello", |b| {
        b.iter(|| sniff::classify(black_box(&hello)))
    });
    c.bench_function("sniff/public_port_client_hello", |b| {
        b.iter(|| sniff::detect(black_box(&hello)))
    });
}

fn request_head(c: &mut Criterion) {
    c.bench_function("sniff/main_port_request_head", |b| {
        b.iter(|| sniff::classify(black_box(REQUEST)))
    });
    c.bench_function("sniff/public_port_request_head", |b| {
        b.iter(|| sniff::detect(black_box(REQUEST)))
    });
}

fn proxy_headers(c: &mut Criterion) {
    let addresses = Some((
        "203.0.113.7:40000".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
    ));
    for (name, version) in [("v1", proxy::ProxyVersion::V1), ("v2", proxy::ProxyVersion::V2)] {
        let header = proxy::encode(version, addresses);
        c.bench_function(&format!("sniff/proxy_{name}"), |b| {
            b.iter(|| proxy::parse(black_box(&header)))
        });
    }
}

criterion_group!(benches, client_hello, request_head, proxy_headers);
criterion_main!(benches);
