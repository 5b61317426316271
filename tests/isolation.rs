//! The hub checks every stream, not only the agent's first request: a `reach` connection
//! that names another user's private tunnel id in a stream header gets nothing through.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burrow::agent::{session, AgentConfig};
use burrow::hub::Hub;
use burrow::types::{AgentId, Secret, TransportKind, TunnelId};
use burrow::wire::{Role, StreamHeader, StreamKind, TunnelSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::in_process_hub;

fn agent(hub: &Hub, user: &str, ca: &std::path::Path) -> AgentConfig {
    AgentConfig {
        hub: hub.listen.to_string(),
        user: user.parse().unwrap(),
        access_key: Secret::new(format!("{user}-key")),
        share: None,
        agent_id: AgentId::random(),
        transport: TransportKind::Tls,
        tls: Some(burrow::tls::client_config(Some(ca)).unwrap()),
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(30),
        udp: Default::default(),
        udp_stats: Default::default(),
        link: Default::default(),
        forward_proxy: None,
        lanes: 0,
    }
}

/// Opens a reach stream as `config`'s user naming `tunnel`, sends a probe, returns the reply.
async fn probe(config: &AgentConfig, tunnel: TunnelId) -> Vec<u8> {
    let (mut conn, _) = session::dial(config, Role::Reach).await.unwrap();
    session::hello(config, &mut conn.control, Role::Reach).await.unwrap();
    let mut stream = conn.opener.as_ref().unwrap().open().await.unwrap();
    let header = StreamHeader {
        kind: StreamKind::Tcp,
        tunnel: tunnel.into(),
        peer: "probe".into(),
        visited: String::new(),
        flow: 0,
    };
    // The hub may reset a refused stream as soon as it has read the header, so a write that
    // fails is the refusal itself, not an error of the test.
    let mut opening = header.encode();
    opening.extend_from_slice(b"probe");
    if stream.write_all(&opening).await.is_err() || stream.shutdown().await.is_err() {
        return Vec::new();
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "stream neither answered nor closed");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_naming_another_users_private_tunnel_are_dropped() {
    let (config, data) = in_process_hub(&["alice", "bob"], None);
    let hub = Hub::start(config).await.unwrap();
    let ca = data.path().join("certs/ca.pem");

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap().to_string();
    let visits = Arc::new(AtomicUsize::new(0));
    let counter = visits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = echo.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    let spec = TunnelSpec {
        name: Some("alice-private".parse().unwrap()),
        ..TunnelSpec::tcp(target)
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let alice = agent(&hub, "alice", &ca);
    tokio::spawn(burrow::agent::expose::run(
        alice.clone(),
        spec,
        burrow::shutdown::Shutdown::new(),
        move |up: burrow::agent::SessionUp<'_>| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(up.info.id);
            }
        },
    ));
    let tunnel = rx.await.unwrap();

    let bob = agent(&hub, "bob", &ca);
    assert!(probe(&bob, tunnel).await.is_empty(), "bob's stream must get nothing");
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "bob's stream must never reach the target"
    );
    assert!(
        probe(&bob, TunnelId::random()).await.is_empty(),
        "unknown tunnel ids get nothing"
    );

    // The same stream from the owner goes through.
    assert_eq!(probe(&alice, tunnel).await, b"probe");
    assert_eq!(visits.load(Ordering::SeqCst), 1);
}
