//! Relay throughput: the relay between a loopback socket and an HTTP/2 stream over an
//! in-memory pipe, the lane relay between two loopback sockets, and whole tunnels (hub +
//! expose agent in-process, visitor on the public port) over each transport, with and
//! without lanes on TCP and TLS.
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use burrow::hub::{Hub, HubConfig};
use burrow::relay::{relay_plain_lane, LaneEnd};
use burrow::types::{AgentId, Secret, TransportKind};
use burrow::wire::TunnelSpec;

const PAYLOAD: usize = 16 << 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A sink that discards what it reads and answers one byte at EOF, so a transfer is timed
/// until the last byte has arrived.
async fn discard_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    addr
}

async fn push(addr: &str, payload: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
}

/// Pushes `payload` from a visitor through `relay` (given the accepted visitor socket and a
/// discarding sink's address; it returns the bytes it moved toward the sink) and checks that
/// all of it went through.
async fn push_through_relay<F, Fut>(payload: Arc<Vec<u8>>, relay: F)
where
    F: FnOnce(TcpStream, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let sink = discard_server().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entry = listener.local_addr().unwrap().to_string();
    let relayed = tokio::spawn(async move {
        let (visitor_side, _) = listener.accept().await.unwrap();
        relay(visitor_side, sink).await
    });
    push(&entry, &payload).await;
    assert_eq!(relayed.await.unwrap(), PAYLOAD as u64);
}

/// The relay's hot path without a network between hub and agent: a loopback TCP visitor,
/// `relay`, and an HTTP/2 stream over an in-memory pipe whose far end discards.
fn relay_to_h2_in_memory(c: &mut Criterion) {
    let rt = runtime();
    let payload = Arc::new(vec![0x5au8; PAYLOAD]);
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Bytes(PAYLOAD as u64)).sample_size(10);
    group.bench_function("tcp_to_h2_in_memory", |b| {
        b.to_async(&rt).iter(|| {
            let payload = payload.clone();
            async move {
                let (mut visitor, relay_side, near, mut far) = burrow::relay::h2_pair_and_tcp().await;
                let relay = tokio::spawn(burrow::relay::relay(relay_side, near));
                let reader = tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0;
                    while let Ok(n) = far.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        total += n;
                    }
                    let _ = far.shutdown().await;
                    total
                });
                visitor.write_all(&payload).await.unwrap();
                visitor.shutdown().await.unwrap();
                assert_eq!(reader.await.unwrap(), PAYLOAD);
                let _ = relay.await;
            }
        })
    });
    // A plain lane as hub and agent run it, two relays: visitor → hub relay → lane → agent
    // relay → sink, framed until the first full read, then spliced (`relay/plain_lane.rs`).
    group.bench_function("plain_lane_hub_and_agent", |b| {
        b.to_async(&rt).iter(|| {
            push_through_relay(payload.clone(), |visitor_side, sink| async move {
                let (agent_lane, hub_lane) = burrow::relay::tcp_pair().await;
                let agent = tokio::spawn(async move {
                    let target_side = TcpStream::connect(sink).await.unwrap();
                    relay_plain_lane(target_side, agent_lane, LaneEnd::Agent(Arc::new(|| true)))
                        .await
                        .unwrap()
                });
                let (hub, _) = relay_plain_lane(visitor_side, hub_lane, LaneEnd::Hub).await.unwrap();
                assert_eq!(agent.await.unwrap().0.b_to_a, PAYLOAD as u64);
                hub.a_to_b
            })
        })
    });
    group.finish();
}

/// Starts a hub and an expose agent in-process; returns the tunnel's public address.
async fn tunnel(transport: TransportKind, lanes: usize, slot: u16, data: &std::path::Path) -> String {
    burrow::tls::install_crypto_provider();
    let sink = discard_server().await;
    let mut config = HubConfig::new("127.0.0.1:0".parse().unwrap(), data.to_path_buf());
    config.users = vec![("bench".parse().unwrap(), Secret::new("bench-key"))];
    config.allow_plaintext = true;
    let base = 24000 + (std::process::id() % 50) as u16 * 20 + slot * 4;
    config.port_range = (base, base + 3);
    let hub = Hub::start(config).await.unwrap();
    let agent = burrow::agent::AgentConfig {
        hub: hub.listen.to_string(),
        user: "bench".parse().unwrap(),
        access_key: Secret::new("bench-key"),
        share: None,
        agent_id: AgentId::random(),
        transport,
        tls: match transport {
            TransportKind::Tcp => None,
            _ => Some(burrow::tls::client_config(Some(&data.join("certs/ca.pem"))).unwrap()),
        },
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(30),
        udp: Default::default(),
        udp_stats: Default::default(),
        lanes,
        link: Default::default(),
        forward_proxy: None,
    };
    let spec = TunnelSpec {
        name: Some("bench".parse().unwrap()),
        public: true,
        ..TunnelSpec::tcp(sink)
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(burrow::agent::expose::run(
        agent,
        spec,
        burrow::shutdown::Shutdown::new(),
        move |up: burrow::agent::SessionUp<'_>| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(up.info.public_address.clone().unwrap());
            }
        },
    ));
    std::mem::forget(hub); // keep serving for the whole benchmark
    rx.await.unwrap()
}

fn relay_through_tunnel(c: &mut Criterion) {
    let rt = runtime();
    let payload = Arc::new(vec![0x5au8; PAYLOAD]);
    let mut group = c.benchmark_group("tunnel");
    group
        .throughput(Throughput::Bytes(PAYLOAD as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let variants = [
        ("tcp", TransportKind::Tcp, 0),
        ("tcp_lanes", TransportKind::Tcp, 4),
        ("tls", TransportKind::Tls, 0),
        ("tls_lanes", TransportKind::Tls, 4),
        ("quic", TransportKind::Quic, 0),
    ];
    for (slot, (name, transport, lanes)) in variants.into_iter().enumerate() {
        let data = tempfile::tempdir().unwrap();
        let public = rt.block_on(tunnel(transport, lanes, slot as u16, data.path()));
        group.bench_with_input(BenchmarkId::new("upload_16MiB", name), &public, |b, public| {
            b.to_async(&rt).iter(|| {
                let payload = payload.clone();
                async move { push(public, &payload).await }
            })
        });
        std::mem::forget(data);
    }
    group.finish();
}

criterion_group!(benches, relay_to_h2_in_memory, relay_through_tunnel);
criterion_main!(benches);
