//! One agent connection carries several tunnels: the hub places a second tunnel on a
//! connected `expose` agent, the agent serves both on the same connection, and one `reach`
//! connection opens streams to either by name or id. Hub and agents run in-process so the
//! test can ask the hub directly and see which session serves each tunnel.

mod common;

use std::time::Duration;

use burrow::agent::reach::ReachLink;
use burrow::agent::AgentConfig;
use burrow::hub::Hub;
use burrow::shutdown::Shutdown;
use burrow::types::{AgentId, Secret, TransportKind};
use burrow::wire::{RefuseCode, TunnelRef, TunnelSpec};
use common::*;

const WAIT: Duration = Duration::from_secs(20);

async fn hub() -> (Hub, tempfile::TempDir) {
    let (mut config, data) = in_process_hub(&["alice", "bob"], Some(25000));
    config.allow_plaintext = true;
    (Hub::start(config).await.unwrap(), data)
}

fn agent(hub: &Hub, data: &tempfile::TempDir, user: &str, transport: TransportKind) -> AgentConfig {
    let ca = data.path().join("certs").join(burrow::tls::CA_CERT);
    AgentConfig {
        hub: hub.listen.to_string(),
        user: user.parse().unwrap(),
        access_key: Secret::new(format!("{user}-key")),
        share: None,
        agent_id: AgentId::random(),
        transport,
        tls: (transport != TransportKind::Tcp).then(|| burrow::tls::client_config(Some(&ca)).unwrap()),
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: WAIT,
        udp: Default::default(),
        udp_stats: Default::default(),
        link: Default::default(),
        forward_proxy: None,
        lanes: 2,
    }
}

/// A local port whose every connection `link` carries to `tunnel`.
async fn local_port(link: std::sync::Arc<ReachLink>, tunnel: TunnelRef) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let (link, tunnel) = (link.clone(), tunnel.clone());
            tokio::spawn(async move { link.carry(tcp, peer, tunnel).await });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_connection_carries_two_tunnels_and_one_reach_opens_streams_to_both() {
    for transport in [TransportKind::Quic, TransportKind::Tls, TransportKind::Tcp] {
        let (hub, data) = hub().await;
        let (web, db) = (tag_server("served by web").await, tag_server("served by db").await);
        let shutdown = Shutdown::new();

        let config = agent(&hub, &data, "alice", transport);
        let agent_id = config.agent_id;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let spec = TunnelSpec {
            name: Some("web".parse().unwrap()),
            ..TunnelSpec::tcp(&web)
        };
        let expose = tokio::spawn(burrow::agent::expose::run(config, spec, shutdown.clone(), move |up| {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(up.info.clone());
            }
        }));
        let web_info = tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();

        // The hub places a second tunnel on the same agent connection.
        let db_spec = TunnelSpec {
            name: Some("db".parse().unwrap()),
            ..TunnelSpec::tcp(&db)
        };
        let db_info = hub.expose_on(agent_id, db_spec).await.unwrap();
        assert_ne!(db_info.id, web_info.id);
        let served_by = async |id| {
            let tunnel = hub.registry().get(id).unwrap();
            tunnel.pick_member(WAIT).await.expect("an agent serves it").session
        };
        assert_eq!(
            served_by(web_info.id).await,
            served_by(db_info.id).await,
            "{transport:?}: both tunnels are served by one agent connection"
        );
        let unknown = hub.expose_on(AgentId::random(), TunnelSpec::tcp(&db)).await;
        assert_eq!(unknown.map_err(|e| e.code).err(), Some(RefuseCode::NotFound));

        // One reach connection, streams to both tunnels by name, and to one by id.
        let reach = std::sync::Arc::new(
            ReachLink::connect(agent(&hub, &data, "alice", transport), shutdown.clone())
                .await
                .unwrap(),
        );
        let to_web = local_port(reach.clone(), TunnelRef::Name("web".into())).await;
        let to_db = local_port(reach.clone(), TunnelRef::Name("db".into())).await;
        let to_db_by_id = local_port(reach.clone(), TunnelRef::Id(db_info.id)).await;
        for _ in 0..3 {
            assert_eq!(round_trip(&to_web, b"").await, b"served by web", "{transport:?}");
            assert_eq!(round_trip(&to_db, b"").await, b"served by db", "{transport:?}");
            assert_eq!(round_trip(&to_db_by_id, b"").await, b"served by db", "{transport:?}");
        }

        // Bob may reach neither (the tunnels are not shared): his streams are closed unserved.
        let bob = std::sync::Arc::new(
            ReachLink::connect(agent(&hub, &data, "bob", transport), shutdown.clone())
                .await
                .unwrap(),
        );
        let bob_to_db = local_port(bob.clone(), TunnelRef::Name("alice/db".into())).await;
        let bob_by_id = local_port(bob, TunnelRef::Id(web_info.id)).await;
        assert!(try_round_trip(&bob_to_db, b"").await.unwrap_or_default().is_empty());
        assert!(try_round_trip(&bob_by_id, b"").await.unwrap_or_default().is_empty());

        shutdown.begin();
        tokio::time::timeout(WAIT, expose).await.unwrap().unwrap().unwrap();
    }
}

/// A TCP forwarder to `to` whose connections can all be cut at once.
async fn cuttable_forwarder(to: std::net::SocketAddr) -> (String, tokio::sync::watch::Sender<u32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (cut_tx, cut_rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut cut = cut_rx.clone();
            cut.mark_unchanged();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
            });
        }
    });
    (addr, cut_tx)
}

/// A tunnel the hub placed on an agent survives the agent's reconnection: the agent
/// registers it again on its new connection, under the same id, and serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_tunnel_is_registered_again_after_a_reconnection() {
    let (hub, data) = hub().await;
    let (web, db) = (tag_server("served by web").await, tag_server("served by db").await);
    let shutdown = Shutdown::new();
    let (forwarder, cut) = cuttable_forwarder(hub.listen).await;
    let config = AgentConfig {
        hub: forwarder,
        ..agent(&hub, &data, "alice", TransportKind::Tcp)
    };
    let agent_id = config.agent_id;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let spec = TunnelSpec {
        name: Some("web".parse().unwrap()),
        ..TunnelSpec::tcp(&web)
    };
    let _expose = tokio::spawn(burrow::agent::expose::run(config, spec, shutdown.clone(), move |up| {
        let _ = ready_tx.send(up.info.clone());
    }));
    tokio::time::timeout(WAIT, ready_rx.recv()).await.unwrap().unwrap();
    let db_spec = TunnelSpec {
        name: Some("db".parse().unwrap()),
        ..TunnelSpec::tcp(&db)
    };
    let db_info = hub.expose_on(agent_id, db_spec).await.unwrap();
    let tunnel = hub.registry().get(db_info.id).unwrap();
    let before = tunnel.pick_member(WAIT).await.unwrap().session;
    let reach = std::sync::Arc::new(
        ReachLink::connect(agent(&hub, &data, "alice", TransportKind::Quic), shutdown.clone())
            .await
            .unwrap(),
    );
    let to_db = local_port(reach, TunnelRef::Name("db".into())).await;
    // Served once: the agent has heard of the tunnel.
    assert_eq!(round_trip(&to_db, b"").await, b"served by db");

    // The agent's connection is cut; it comes back on a new one.
    cut.send_replace(1);
    tokio::time::timeout(WAIT, ready_rx.recv()).await.unwrap().unwrap();

    let tunnel = hub.registry().get(db_info.id).expect("the placed tunnel kept its id");
    let after = tunnel.pick_member(WAIT).await.unwrap().session;
    assert_ne!(before, after, "a new connection serves the placed tunnel");
    assert_eq!(round_trip(&to_db, b"").await, b"served by db");
    shutdown.begin();
}
