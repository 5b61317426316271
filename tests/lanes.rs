//! Lanes: on `--transport tcp` and `tls` an `expose` agent keeps dedicated data connections
//! dialed to the hub; visitors move onto them once bulk (a plain lane then used again or
//! replaced, a TLS lane replaced), with the multiplexed connection as the fallback. Hub and agent run in-process so the test
//! can see which path a connection took.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use burrow::agent::AgentConfig;
use burrow::carrier::lanes::LaneKind;
use burrow::hub::registry::Tunnel;
use burrow::hub::{Hub, HubConfig};
use burrow::shutdown::Shutdown;
use burrow::types::{AgentId, Secret, TransportKind};
use burrow::wire::TunnelSpec;
use common::*;

const WAIT: Duration = Duration::from_secs(20);

async fn hub() -> (Hub, tempfile::TempDir) {
    hub_with(|_| {}).await
}

async fn hub_with(adjust: impl FnOnce(&mut HubConfig)) -> (Hub, tempfile::TempDir) {
    let (mut config, data) = in_process_hub(&["alice"], Some(24000));
    adjust(&mut config);
    config.allow_plaintext = true;
    (Hub::start(config).await.unwrap(), data)
}

fn agent(hub: &Hub, lanes: usize) -> AgentConfig {
    AgentConfig {
        hub: hub.listen.to_string(),
        user: "alice".parse().unwrap(),
        access_key: Secret::new("alice-key"),
        share: None,
        agent_id: AgentId::random(),
        transport: TransportKind::Tcp,
        tls: None,
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(30),
        udp: Default::default(),
        udp_stats: Default::default(),
        link: Default::default(),
        forward_proxy: None,
        lanes,
    }
}

/// The same agent over TLS, trusting the CA the hub generated in `data`.
fn tls_agent(hub: &Hub, data: &tempfile::TempDir, lanes: usize) -> AgentConfig {
    let ca = data.path().join("certs").join(burrow::tls::CA_CERT);
    AgentConfig {
        transport: TransportKind::Tls,
        tls: Some(burrow::tls::client_config(Some(&ca)).unwrap()),
        ..agent(hub, lanes)
    }
}

/// Starts `expose` for a TCP `target`; see [`expose_spec`].
async fn expose(hub: &Hub, lanes: usize, target: &str, shutdown: &Shutdown) -> (String, Arc<Tunnel>) {
    expose_spec(hub, lanes, TunnelSpec::tcp(target), shutdown).await
}

/// Starts `expose` for a UDP `target`; see [`expose_spec`].
async fn expose_udp(hub: &Hub, lanes: usize, target: &str, shutdown: &Shutdown) -> (String, Arc<Tunnel>) {
    let spec = TunnelSpec {
        protocol: burrow::types::Protocol::Udp,
        ..TunnelSpec::tcp(target)
    };
    expose_spec(hub, lanes, spec, shutdown).await
}

/// Starts `expose` over plain TCP; see [`expose_with`].
async fn expose_spec(hub: &Hub, lanes: usize, spec: TunnelSpec, shutdown: &Shutdown) -> (String, Arc<Tunnel>) {
    expose_with(hub, agent(hub, lanes), spec, shutdown).await
}

/// Starts `expose` of the public tunnel `bulk` and returns its public address and the hub's
/// record of it, once the agent's idle lanes are parked on the hub.
async fn expose_with(hub: &Hub, config: AgentConfig, spec: TunnelSpec, shutdown: &Shutdown) -> (String, Arc<Tunnel>) {
    let (public, tunnel, _agent) = expose_task(hub, config, spec, shutdown).await;
    (public, tunnel)
}

/// [`expose_with`], also returning the agent's task (it ends once the agent has drained).
async fn expose_task(
    hub: &Hub,
    config: AgentConfig,
    spec: TunnelSpec,
    shutdown: &Shutdown,
) -> (
    String,
    Arc<Tunnel>,
    tokio::task::JoinHandle<Result<(), burrow::agent::AgentError>>,
) {
    let lanes = if config.transport == TransportKind::Quic {
        0
    } else {
        config.lanes
    };
    let spec = TunnelSpec {
        name: Some("bulk".parse().unwrap()),
        public: true,
        ..spec
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let shutdown = shutdown.clone();
    let agent = tokio::spawn(async move {
        burrow::agent::expose::run(config, spec, shutdown, move |up: burrow::agent::SessionUp<'_>| {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(up.info.clone());
            }
        })
        .await
    });
    let info = tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
    let tunnel = hub.registry().get(info.id).unwrap();
    if lanes > 0 {
        let pools = tunnel.lane_pools();
        assert_eq!(pools.len(), 1, "a TCP or TLS agent gets a lane pool");
        tokio::time::timeout(WAIT, pools[0].wait_idle(lanes)).await.unwrap();
    }
    (info.public_address.unwrap(), tunnel, agent)
}

/// Five UDP clients of the tunnel at `public`: small datagrams from all at once, then each
/// client's 60 KB datagram in turn (several at once could overflow a socket's receive buffer:
/// real UDP loss, not burrow's). Each must get exactly its own datagrams back, whole.
async fn five_udp_clients_get_their_own_replies(public: &str) {
    use tokio::net::UdpSocket;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(public).await.unwrap();
        clients.push(socket);
    }
    async fn exchange(socket: &UdpSocket, payload: Vec<u8>) {
        let mut buf = vec![0u8; 65536];
        socket.send(&payload).await.unwrap();
        let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &payload[..], "a client gets its own datagram back, whole");
    }
    let small = clients.iter().enumerate().map(|(i, c)| exchange(c, vec![i as u8; 100]));
    futures_util::future::join_all(small).await;
    for (i, client) in clients.iter().enumerate() {
        exchange(client, vec![i as u8; 60_000]).await;
        exchange(client, vec![i as u8; 7]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_ride_lanes_with_half_close_and_lanes_are_replaced() {
    let (hub, _data) = hub().await;
    let config = agent(&hub, 2);
    visitors_ride_lanes(&hub, config).await;
}

/// A TLS session's lanes are TLS connections too (rustls at both ends), and carry visitors
/// the same way, each lane one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_get_tls_lanes_for_tcp_visitors() {
    let (hub, data) = hub().await;
    visitors_ride_lanes(&hub, tls_agent(&hub, &data, 2)).await;
}

/// UDP flows of a TLS session stay multiplexed: their datagrams are framed straight into a
/// plain lane's socket, which a TLS lane has not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_of_a_tls_session_are_multiplexed() {
    let (hub, data) = hub().await;
    let target = udp_echo_server().await;
    let shutdown = Shutdown::new();
    let spec = TunnelSpec {
        protocol: burrow::types::Protocol::Udp,
        ..TunnelSpec::tcp(&target)
    };
    let (public, tunnel) = expose_with(&hub, tls_agent(&hub, &data, 2), spec, &shutdown).await;
    five_udp_clients_get_their_own_replies(&public).await;
    assert_eq!(tunnel.lane_visitors.load(Ordering::Relaxed), 0);
    shutdown.begin();
}

/// An agent with two lanes of its session's kind: 8 MiB up, half-close, and the target's
/// answer (the hash) back on the same lane, counted by the hub; the lane is replaced; then
/// several visitors at once, more than there are lanes, all carried intact (the rest
/// multiplexed).
async fn visitors_ride_lanes(hub: &Hub, config: AgentConfig) {
    let kind = match config.transport {
        TransportKind::Tls => LaneKind::Tls,
        _ => LaneKind::Plain,
    };
    let sink = hashing_sink().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_with(hub, config, TunnelSpec::tcp(&sink), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    assert_eq!(pool.kind(), kind);

    let upload = random_bytes(8 << 20);
    let reply = round_trip(&public, &upload).await;
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("{} {}", sha256_hex(&upload), upload.len())
    );
    assert_eq!(tunnel.lane_visitors.load(Ordering::Relaxed), 1, "it went over a lane");
    // The hub adds a connection's bytes when its relay ends, which can be just after the
    // visitor has read its reply and EOF.
    all_relays_end(&tunnel).await;
    assert_eq!(tunnel.bytes_in.load(Ordering::Relaxed), upload.len() as u64);

    tokio::time::timeout(WAIT, pool.wait_idle(2))
        .await
        .expect("the used lane is replaced");
    let visitors = (0..6).map(|i| {
        let public = public.clone();
        async move {
            let data = random_bytes((1 << 20) + i);
            let reply = round_trip(&public, &data).await;
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                format!("{} {}", sha256_hex(&data), data.len())
            );
        }
    });
    futures_util::future::join_all(visitors).await;
    let on_lanes = tunnel.lane_visitors.load(Ordering::Relaxed);
    assert!((3..=7).contains(&on_lanes), "{on_lanes} visitors used lanes");
    shutdown.begin();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lanes_everything_is_multiplexed() {
    let (hub, _data) = hub().await;
    let echo = echo_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose(&hub, 0, &echo, &shutdown).await;
    let data = random_bytes(1 << 20);
    assert_eq!(round_trip(&public, &data).await, data);
    assert_eq!(tunnel.lane_visitors.load(Ordering::Relaxed), 0);
    assert!(tunnel.lane_pools()[0].idle() == 0);
    shutdown.begin();
}

/// Lane offers with wrong tokens, or that say nothing after the preface, are closed by the
/// hub (the stalled one after its token deadline, 300 ms here) and park nothing, while a real
/// visitor's bytes go through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_lanes_are_closed_and_disturb_nobody() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (hub, _data) = hub_with(|config| config.lane_token_deadline = Duration::from_millis(300)).await;
    let echo = echo_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose(&hub, 2, &echo, &shutdown).await;
    let pools = tunnel.lane_pools();

    let mut bogus = Vec::new();
    for i in 0..50u8 {
        let mut lane = tokio::net::TcpStream::connect(hub.listen).await.unwrap();
        let mut offer = burrow::wire::PREFACE.to_vec();
        offer.push(burrow::wire::ConnKind::LANE_BYTE);
        if i > 0 {
            offer.extend_from_slice(&[i; 16]); // a token no session has; lane 0 sends none
        }
        lane.write_all(&offer).await.unwrap();
        bogus.push(lane);
    }
    let data = random_bytes(2 << 20);
    assert_eq!(round_trip(&public, &data).await, data);
    for mut lane in bogus {
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(WAIT, lane.read(&mut buf)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "the hub closes a bogus lane");
    }
    assert!(pools[0].idle() <= 2, "bogus lanes were not parked");
    shutdown.begin();
}

/// UDP flows ride lanes too, one flow per lane: each client gets its own replies (a 60 KB
/// datagram arrives whole), the flows beyond the idle lanes fall back to the multiplexed
/// connection, and when the hub expires an idle flow it closes the lane and the agent lets go
/// of its socket toward the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_ride_lanes_and_expiry_closes_them() {
    use tokio::net::UdpSocket;
    let (hub, _data) = hub_with(|config| config.udp.idle_timeout = Duration::from_millis(500)).await;
    // Echoes every datagram, and remembers the agent sockets it heard from.
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap().to_string();
    let (senders_tx, mut senders) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = target.recv_from(&mut buf).await {
            let _ = senders_tx.send(from);
            let _ = target.send_to(&buf[..n], from).await;
        }
    });
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_udp(&hub, 2, &target_addr, &shutdown).await;

    five_udp_clients_get_their_own_replies(&public).await;
    let on_lanes = tunnel.lane_visitors.load(Ordering::Relaxed);
    assert!((2..=5).contains(&on_lanes), "{on_lanes} of 5 flows used lanes");

    // After the 500 ms idle timeout the hub closes the flows; the agent then closes its
    // sockets toward the target, so the target's datagrams to them are refused.
    let agent_socket = tokio::time::timeout(WAIT, senders.recv()).await.unwrap().unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.connect(agent_socket).await.unwrap();
    let released = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 16];
        loop {
            let _ = probe.send(b"anyone?").await;
            match tokio::time::timeout(Duration::from_millis(100), probe.recv(&mut buf)).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => continue,
            }
        }
    })
    .await;
    assert!(released.is_ok(), "the agent's socket for an expired flow is closed");
    let all_expired = tokio::time::timeout(WAIT, async {
        while hub.udp_stats().flows_expired.load(Ordering::Relaxed) < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(all_expired.await.is_ok(), "the hub counts the 5 expired flows");
    shutdown.begin();
}

/// Starts a plain-TCP `reach` agent for the tunnel `bulk`; returns its local address.
async fn reach(hub: &Hub, shutdown: &Shutdown) -> std::net::SocketAddr {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let config = agent(hub, 0);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        burrow::agent::reach::run(
            config,
            "bulk".into(),
            burrow::agent::reach::Listen::Port("127.0.0.1:0".into()),
            shutdown,
            move |_, local| {
                let _ = ready_tx.send(local);
            },
        )
        .await
    });
    tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap()
}

/// A `reach` agent's UDP flow: multiplexed from that agent to the hub, then on a lane from
/// the hub to the exposing agent; datagrams come back to the right local client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_udp_flows_take_a_lane_toward_the_exposing_agent() {
    use tokio::net::UdpSocket;
    let (hub, _data) = hub().await;
    let target_addr = udp_echo_server().await;
    let shutdown = Shutdown::new();
    let (_, tunnel) = expose_udp(&hub, 2, &target_addr, &shutdown).await;

    let local = reach(&hub, &shutdown).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(local).await.unwrap();
    let mut buf = vec![0u8; 65536];
    for payload in [b"first".to_vec(), vec![9u8; 30_000]] {
        client.send(&payload).await.unwrap();
        let n = tokio::time::timeout(WAIT, client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &payload[..]);
    }
    assert_eq!(
        tunnel.lane_visitors.load(Ordering::Relaxed),
        1,
        "the hub's leg took a lane"
    );
    shutdown.begin();
}

/// An agent keeps at most `MAX_BUSY_TLS_LANES` TLS lanes busy (each holds copy buffers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_tls_lanes_are_capped() {
    let (hub, data) = hub().await;
    busy_lanes_are_capped(&hub, tls_agent(&hub, &data, 1), burrow::agent::MAX_BUSY_TLS_LANES).await;
}

/// A TLS lane carries one connection and closes with it (a TLS connection is not used again
/// after its close_notify): bulk connections in turn each move onto a new lane, intact both
/// ways, while small ones and a `reach` agent's stream stay multiplexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_lane_carries_one_connection_and_small_ones_stay_multiplexed() {
    let (hub, data) = hub().await;
    let echo = echo_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_with(&hub, tls_agent(&hub, &data, 1), TunnelSpec::tcp(&echo), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    for i in 0..5usize {
        an_idle_lane(&pool).await;
        let payload = random_bytes((1 << 20) + i * 50_000);
        assert_eq!(round_trip(&public, &payload).await, payload);
    }
    assert_eq!(tunnel.lane_visitors.load(Ordering::Relaxed), 5);
    let admitted = pool.admitted();
    assert!(admitted >= 5, "{admitted} lanes for 5 connections: none was used twice");

    an_idle_lane(&pool).await;
    let small = random_bytes(1000);
    assert_eq!(round_trip(&public, &small).await, small);
    let local = reach(&hub, &shutdown).await.to_string();
    let payload = random_bytes(3 << 20);
    assert_eq!(round_trip(&local, &payload).await, payload);
    assert_eq!(
        tunnel.lane_visitors.load(Ordering::Relaxed),
        5,
        "a small visitor and a reach stream stay multiplexed"
    );
    shutdown.begin();
}

/// An agent keeps at most `MAX_BUSY_LANES` plain lanes busy (each is a second TCP
/// connection per visitor, two descriptors in the hub instead of one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_plain_lanes_are_capped() {
    let (hub, _data) = hub().await;
    busy_lanes_are_capped(&hub, agent(&hub, 1), burrow::agent::MAX_BUSY_LANES).await;
}

/// A visitor through an echo tunnel that moved onto a plain lane: it starts multiplexed and
/// moves at its first whole relay buffer, so it echoes 1 MiB.
async fn hold_bulk(public: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let visitor = tokio::net::TcpStream::connect(public).await.unwrap();
    let (mut read, mut write) = visitor.into_split();
    let block = random_bytes(1 << 20);
    let sent = block.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write
    });
    let mut echoed = vec![0u8; block.len()];
    tokio::time::timeout(WAIT, read.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert!(echoed == block, "the echo is intact");
    read.reunite(writer.await.unwrap()).unwrap()
}

/// A visitor that moved onto a plain lane and stays framed there: it asks the block server
/// for 64 KiB at a time until the hub has moved it (a whole relay buffer coming down), so
/// nothing is left to carry after the move and its lane can be parked again when it ends.
async fn hold_on_lane(public: &str, tunnel: &Tunnel) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let before = tunnel.lane_visitors.load(Ordering::Relaxed);
    let mut visitor = tokio::net::TcpStream::connect(public).await.unwrap();
    let mut block = vec![0u8; BLOCK];
    for _ in 0..100 {
        visitor.write_all(b"?").await.unwrap();
        tokio::time::timeout(WAIT, visitor.read_exact(&mut block))
            .await
            .unwrap()
            .unwrap();
        // The hub takes the lane as soon as a whole buffer has come down, and the agent
        // sends nothing after the block until the move, so the count is settled by the time
        // the next block is asked for; the last ask may still be moving, hence a bounded wait.
        let moved = tokio::time::timeout(Duration::from_millis(50), async {
            while tunnel.lane_visitors.load(Ordering::Relaxed) == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        if moved.await.is_ok() {
            return visitor;
        }
    }
    panic!("a hundred whole blocks and the connection never moved to a lane");
}

/// Half-closes a held visitor and waits (bounded) for the tunnel's end of stream, with
/// nothing left before it.
async fn close_and_see_the_end(mut visitor: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    visitor.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, visitor.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

/// Bytes [`block_server`] answers per byte asked: one relay buffer.
const BLOCK: usize = 64 << 10;

/// Answers each byte it receives with [`BLOCK`] bytes, and closes when the client does.
async fn block_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    spawn_target(|mut stream| async move {
        let mut asked = [0u8; 64];
        let block = vec![b'b'; BLOCK];
        loop {
            match stream.read(&mut asked).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for _ in 0..n {
                        if stream.write_all(&block).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let _ = stream.shutdown().await;
    })
}

/// Once `cap` lanes carry connections the agent dials no replacement, so further visitors
/// are multiplexed; when some finish, it dials again.
async fn busy_lanes_are_capped(hub: &Hub, config: AgentConfig, cap: usize) {
    let echo = echo_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_with(hub, config, TunnelSpec::tcp(&echo), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    let mut held = Vec::new();
    for _ in 0..cap {
        an_idle_lane(&pool).await;
        held.push(hold_bulk(&public).await);
    }
    for _ in 0..8 {
        held.push(hold_bulk(&public).await);
    }
    assert_eq!(tunnel.lane_visitors.load(Ordering::Relaxed), cap as u64);
    assert_eq!(pool.idle(), 0, "no lane was dialed beyond the cap");
    held.truncate(cap - 4); // closes the newest: the 8 multiplexed and 4 on lanes
    tokio::time::timeout(WAIT, pool.wait_idle(1))
        .await
        .expect("with lanes free again the agent dials a replacement");
    shutdown.begin();
}

/// Waits (bounded) until the agent has a lane idle on the hub.
async fn an_idle_lane(pool: &burrow::carrier::lanes::LanePool) {
    tokio::time::timeout(WAIT, pool.wait_idle(1))
        .await
        .expect("a lane is idle");
}

/// Waits (bounded) until the hub has finished relaying every connection of `tunnel`, lanes
/// parked or closed: it has no signal for that, so this polls its job count.
async fn all_relays_end(tunnel: &Tunnel) {
    tokio::time::timeout(WAIT, async {
        while tunnel.jobs() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every relay ends");
}

/// After a burst an agent keeps at most twice `--lanes` idle plain lanes: lanes beyond that
/// close as their connections end (the agent sends no DONE, so the hub never parks them)
/// instead of staying idle for the session's life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_plain_lanes_shrink_after_a_burst() {
    let (hub, _data) = hub().await;
    let blocks = block_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_with(&hub, agent(&hub, 1), TunnelSpec::tcp(&blocks), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    let mut held = Vec::new();
    for _ in 0..10 {
        an_idle_lane(&pool).await;
        held.push(hold_on_lane(&public, &tunnel).await);
    }
    assert_eq!(
        tunnel.lane_visitors.load(Ordering::Relaxed),
        10,
        "each visitor moved to a lane"
    );
    for visitor in held {
        close_and_see_the_end(visitor).await;
    }
    all_relays_end(&tunnel).await;
    let idle = pool.idle();
    // 2 = twice --lanes; one more if two connections ended at the same moment.
    assert!(
        (1..=3).contains(&idle),
        "{idle} idle lanes after ten connections on --lanes 1"
    );
    // The kept lanes still carry (hold_on_lane fails unless the visitor moves onto one).
    drop(hold_on_lane(&public, &tunnel).await);
    shutdown.begin();
}

/// A plain lane whose connection moved onto it and then ended framed both ways (nothing
/// large enough to splice after the move) carries the next one: twenty connections in turn
/// cost no new lane connection each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lanes_are_used_again_after_a_framed_close() {
    let (hub, _data) = hub().await;
    let blocks = block_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_with(&hub, agent(&hub, 1), TunnelSpec::tcp(&blocks), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    for _ in 0..20 {
        an_idle_lane(&pool).await;
        close_and_see_the_end(hold_on_lane(&public, &tunnel).await).await;
        all_relays_end(&tunnel).await;
    }
    assert_eq!(tunnel.lane_visitors.load(Ordering::Relaxed), 20);
    let admitted = pool.admitted();
    assert!(admitted <= 3, "{admitted} lanes dialed for 20 connections");
    shutdown.begin();
}

/// A visitor the hub placed on an agent just before it heard that the agent drains is still
/// carried, on a lane the hub had taken and on a multiplexed stream it opens: the agent
/// neither closes its lanes nor refuses streams when it starts draining. The hub then closes
/// the idle lanes, so the agent stops once those visitors are done, well inside its limit.
/// (A stream that arrives after the agent's last connection ended still finds it gone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_sent_before_the_hub_hears_of_a_drain_are_still_carried() {
    use burrow::wire::{StreamHeader, StreamKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (hub, _data) = hub().await;
    let echo = echo_server().await;
    let shutdown = Shutdown::new();
    let config = AgentConfig {
        shutdown_timeout: Duration::from_secs(600),
        connect_timeout: Duration::from_secs(30),
        ..agent(&hub, 2)
    };
    let (_, tunnel, agent) = expose_task(&hub, config, TunnelSpec::tcp(&echo), &shutdown).await;
    let member = tunnel.pick_member(WAIT).await.expect("the agent serves the tunnel");
    let pool = member.link.lanes().cloned().expect("a plain-TCP agent has lanes");
    let Some(burrow::carrier::lanes::Lane::Plain(mut lane)) = pool.take() else {
        panic!("an idle plain lane");
    };

    shutdown.begin();
    tokio::time::timeout(WAIT, pool.wait_closed())
        .await
        .expect("the hub hears of the drain and closes the idle lanes");
    assert!(tunnel.lane_pools().is_empty(), "the draining agent left the tunnel");

    let header = |peer: &str| {
        StreamHeader {
            kind: StreamKind::Tcp,
            tunnel: tunnel.id.into(),
            peer: peer.to_string(),
            visited: String::new(),
            flow: 0,
        }
        .encode()
    };
    // The taken lane holds the agent's drain open (it waits for that lane's header), so the
    // stream below surely arrives while the agent drains.
    let mut stream = tokio::time::timeout(WAIT, member.link.open_stream())
        .await
        .expect("a stream opens in time")
        .expect("the connection is still up");
    stream
        .write_all(&[header("127.0.0.1:2"), b"on a stream".to_vec()].concat())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut from_stream = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut from_stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        from_stream, b"on a stream",
        "the stream's visitor is carried to the end"
    );

    // As the hub would: the header, one framed message, its end (`relay/plain_lane.rs`).
    lane.write_all(&[header("127.0.0.1:1"), b"\x00\x0bon the lane\x00\x00".to_vec()].concat())
        .await
        .unwrap();
    let mut from_lane = [0u8; 17];
    tokio::time::timeout(WAIT, lane.read_exact(&mut from_lane))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &from_lane, b"\x00\x0bon the lane\x00\x00\xff\xfe",
        "the lane's visitor is carried to the end (echo, end, lane idle again)"
    );
    // The hub closes the lane, idle again, as it closes all idle lanes of a draining agent.
    drop(lane);

    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops once its visitors are done, not at its drain limit")
        .unwrap()
        .unwrap();
}

/// A minimal HTTP/1.1 server with keep-alive: answers each request with its path and the
/// number of requests that connection has carried.
async fn http_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    spawn_target(|mut stream| async move {
        let (mut pending, mut served) = (Vec::new(), 0);
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let request = String::from_utf8_lossy(&pending[..end]).to_string();
                pending.drain(..end + 4);
                served += 1;
                let path = request.split(' ').nth(1).unwrap_or("?").to_string();
                let body = match path.strip_prefix("/big") {
                    // 4 MiB: a download large enough to move to a lane.
                    Some(_) => "x".repeat(4 << 20),
                    None => format!("{path} #{served}\n"),
                };
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// curl, a real HTTP client, through a session with plain lanes: keep-alive requests with
/// small answers stay on the multiplexer (where they cost the fewest system calls), and a
/// 4 MiB download on the same kind of connection moves to a lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_keep_alive_requests_stay_multiplexed_and_a_download_moves_to_a_lane() {
    let (hub, _data) = hub().await;
    let server = http_server().await;
    let shutdown = Shutdown::new();
    let (public, tunnel) = expose_with(&hub, agent(&hub, 1), TunnelSpec::tcp(&server), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    an_idle_lane(&pool).await;
    let curl = async |paths: &[&str]| {
        let output = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new("curl")
                .args(["-sS", "--http1.1", "--max-time", "10"])
                .args(paths.iter().map(|path| format!("http://{public}{path}")))
                .output(),
        )
        .await
        .expect("curl finishes")
        .expect("curl runs (installed by .ci/run)");
        assert!(output.status.success(), "{output:?}");
        output.stdout
    };
    for _ in 0..2 {
        let answers = curl(&["/a", "/b"]).await;
        assert_eq!(
            String::from_utf8_lossy(&answers),
            "/a #1\n/b #2\n",
            "both requests on one connection, answered in order"
        );
    }
    assert_eq!(
        tunnel.lane_visitors.load(Ordering::Relaxed),
        0,
        "small answers stay multiplexed"
    );
    let answers = curl(&["/a", "/big"]).await;
    assert_eq!(answers.len(), "/a #1\n".len() + (4 << 20));
    assert!(answers.starts_with(b"/a #1\n") && answers[6..].iter().all(|&b| b == b'x'));
    assert_eq!(
        tunnel.lane_visitors.load(Ordering::Relaxed),
        1,
        "the download moved to a lane"
    );
    shutdown.begin();
}

/// A visitor routed by name on the hub's main port (HTTP `Host`) rides a lane too, the bytes
/// the hub read to route it going first, on the multiplexer before it moves to a lane.
/// Bodies of every size: none, framed after the head (or multiplexed), and large enough to
/// turn bulk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_routed_by_name_ride_plain_lanes() {
    let (hub, _data) = hub().await;
    routed_visitors_ride_lanes(&hub, agent(&hub, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_routed_by_name_ride_tls_lanes() {
    let (hub, data) = hub().await;
    routed_visitors_ride_lanes(&hub, tls_agent(&hub, &data, 1)).await;
}

async fn routed_visitors_ride_lanes(hub: &Hub, config: AgentConfig) {
    let echo = echo_server().await;
    let shutdown = Shutdown::new();
    let (_public, tunnel) = expose_with(hub, config, TunnelSpec::tcp(&echo), &shutdown).await;
    let pool = tunnel.lane_pools()[0].clone();
    let main_port = hub.listen.to_string();
    for (i, body) in [0, 100 << 10, 2 << 20].into_iter().enumerate() {
        an_idle_lane(&pool).await;
        let head = format!("POST /{i} HTTP/1.1\r\nHost: bulk.localhost\r\nContent-Length: {body}\r\n\r\n");
        let mut request = head.into_bytes();
        request.extend(random_bytes(body));
        assert_eq!(round_trip(&main_port, &request).await, request, "request {i}");
        if body == 0 {
            let on_lanes = tunnel.lane_visitors.load(Ordering::Relaxed);
            assert_eq!(on_lanes, 0, "a request without a body stays multiplexed");
        }
    }
    // 100 KiB may or may not have filled a read at the hub; 2 MiB did.
    let on_lanes = tunnel.lane_visitors.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&on_lanes),
        "{on_lanes} routed visitors moved to a lane"
    );
    shutdown.begin();
}
