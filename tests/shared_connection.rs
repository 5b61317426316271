//! Many tunnels share one agent connection: the wire protocol registers several tunnels on
//! one control stream, and the hub routes each tunnel's visitors as streams on that same
//! connection, each naming its tunnel.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use burrow::agent::{session, AgentConfig};
use burrow::hub::Hub;
use burrow::types::{AgentId, Secret, TransportKind};
use burrow::wire::io::{read_stream_header, write_frame};
use burrow::wire::{AgentMsg, HubMsg, Role, TunnelSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::in_process_hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tunnels_on_one_connection_each_get_their_own_visitors() {
    let (config, data) = in_process_hub(&["alice"], Some(23000));
    let hub = Hub::start(config).await.unwrap();
    let agent = AgentConfig {
        hub: hub.listen.to_string(),
        user: "alice".parse().unwrap(),
        access_key: Secret::new("alice-key"),
        share: None,
        agent_id: AgentId::random(),
        transport: TransportKind::Quic,
        tls: Some(burrow::tls::client_config(Some(&data.path().join("certs/ca.pem"))).unwrap()),
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(30),
        udp: Default::default(),
        udp_stats: Default::default(),
        link: Default::default(),
        forward_proxy: None,
        lanes: 0,
    };

    let (mut conn, _) = session::dial(&agent, Role::Expose).await.unwrap();
    session::hello(&agent, &mut conn.control, Role::Expose).await.unwrap();
    let mut ports = HashMap::new();
    for name in ["first", "second"] {
        let spec = TunnelSpec {
            name: Some(name.parse().unwrap()),
            public: true,
            ..TunnelSpec::tcp("127.0.0.1:9")
        };
        write_frame(&mut conn.control, &AgentMsg::Register { spec })
            .await
            .unwrap();
        let HubMsg::Registered { tunnel } = session::request_reply(&mut conn.control).await.unwrap() else {
            panic!("registration refused");
        };
        ports.insert(tunnel.id, (name, tunnel.hub_port.unwrap()));
    }

    // A visitor on each public port says which tunnel it meant to reach.
    let mut visitors = Vec::new();
    for (name, port) in ports.values().cloned() {
        visitors.push(tokio::spawn(async move {
            let mut visitor = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            visitor.write_all(name.as_bytes()).await.unwrap();
            visitor.shutdown().await.unwrap();
            let mut reply = String::new();
            visitor.read_to_string(&mut reply).await.unwrap();
            (name, reply)
        }));
    }

    // Both arrive as streams on this one connection, each header naming its own tunnel.
    let mut acceptor = conn.acceptor.take().unwrap();
    for _ in 0..2 {
        let mut stream = tokio::time::timeout(Duration::from_secs(20), acceptor.accept())
            .await
            .unwrap()
            .unwrap();
        let header = read_stream_header(&mut stream).await.unwrap();
        let (name, _) = ports[&header.tunnel_id().expect("the hub names tunnels by id")];
        let mut said = String::new();
        stream.read_to_string(&mut said).await.unwrap();
        assert_eq!(
            said, name,
            "the visitor of {name} came through the stream for tunnel {}",
            header.tunnel
        );
        stream.write_all(format!("served {name}").as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    }
    for visitor in visitors {
        let (name, reply) = visitor.await.unwrap();
        assert_eq!(reply, format!("served {name}"));
    }
}
