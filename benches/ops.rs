//! A scrape of `/metrics` from a hub holding 1,000 tunnels (one `expose` agent with 999 more
//! placed on its connection, each with its counters), over HTTP on loopback as Prometheus
//! scrapes it (goal: under 50 ms), and `GET /api/v1/tunnels` and the Sauce list with
//! `full=true` of the same 1,000, authenticated.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use burrow::hub::{Hub, HubConfig};
use burrow::shutdown::Shutdown;
use burrow::types::{AgentId, Secret, TransportKind};
use burrow::wire::TunnelSpec;

const TUNNELS: usize = 1000;

async fn hub_with_tunnels(data: &std::path::Path) -> (Hub, String) {
    burrow::tls::install_crypto_provider();
    let mut config = HubConfig::new("127.0.0.1:0".parse().unwrap(), data.to_path_buf());
    config.users = vec![("bench".parse().unwrap(), Secret::new("bench-key"))];
    let hub = Hub::start(config).await.unwrap();
    let agent_id = AgentId::random();
    let agent = burrow::agent::AgentConfig {
        hub: hub.listen.to_string(),
        user: "bench".parse().unwrap(),
        access_key: Secret::new("bench-key"),
        share: None,
        agent_id,
        transport: TransportKind::Quic,
        tls: Some(burrow::tls::client_config(Some(&data.join("certs/ca.pem"))).unwrap()),
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(30),
        udp: Default::default(),
        udp_stats: Default::default(),
        lanes: 0,
        link: Default::default(),
        forward_proxy: None,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(burrow::agent::expose::run(
        agent,
        TunnelSpec::tcp("127.0.0.1:9"),
        Shutdown::new(),
        move |_| {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
        },
    ));
    ready_rx.await.unwrap();
    for i in 1..TUNNELS {
        let spec = TunnelSpec {
            name: Some(format!("placed-{i}").parse().unwrap()),
            ..TunnelSpec::tcp("127.0.0.1:9")
        };
        hub.expose_on(agent_id, spec).await.unwrap();
    }
    assert_eq!(hub.registry().tunnel_count(), TUNNELS);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    hub.ops().spawn(listener);
    (hub, api)
}

async fn scrape(api: &str) -> usize {
    get(api, "/metrics").await
}

/// `GET path` as the bench user; the size of the answer.
async fn get(api: &str, path: &str) -> usize {
    let mut tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    // base64("bench:bench-key")
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: ops\r\nAuthorization: Basic YmVuY2g6YmVuY2gta2V5\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut body = Vec::new();
    tcp.read_to_end(&mut body).await.unwrap();
    body.len()
}

fn metrics_scrape(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (_hub, api) = rt.block_on(hub_with_tunnels(data.path()));
    let size = rt.block_on(scrape(&api));
    eprintln!("one scrape of {TUNNELS} tunnels: {size} bytes");
    let mut group = c.benchmark_group("ops");
    group.sample_size(20);
    group.bench_function("metrics_scrape_1000_tunnels", |b| b.to_async(&rt).iter(|| scrape(&api)));
    for path in ["/api/v1/tunnels", "/rest/v1/bench/tunnels?full=true"] {
        let size = rt.block_on(get(&api, path));
        assert!(size > 100_000, "{path}: {size} bytes");
        eprintln!("{path} with {TUNNELS} tunnels: {size} bytes");
        group.bench_function(format!("GET {path} 1000 tunnels"), |b| {
            b.to_async(&rt).iter(|| get(&api, path))
        });
    }
    group.finish();
}

criterion_group!(benches, metrics_scrape);
criterion_main!(benches);
