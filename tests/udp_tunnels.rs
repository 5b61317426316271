//! End to end: UDP tunnels — flows per client, large datagrams, reach, expiry, real DNS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

/// A UDP server that answers every datagram with the address it came from.
async fn udp_whoami() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(from.to_string().as_bytes(), from).await;
        }
    });
    addr
}

/// `localhost:PORT` from a ready line, as an IPv4 socket address (UDP does not fall back
/// from ::1 the way TCP connects do).
fn v4(public: &str) -> SocketAddr {
    let port = public.rsplit_once(':').unwrap().1;
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Exposes `target` as a public udp tunnel named `name`; returns the agent and its ready line.
async fn expose_public_udp(hub: &TestHub, transport: &str, target: &str, name: &str) -> (Proc, serde_json::Value) {
    let mut agent = hub.expose(
        transport,
        "alice",
        target,
        &["--name", name, "--protocol", "udp", "--public"],
    );
    let ready = agent.ready().await;
    (agent, ready)
}

/// Sends `payload` and waits for one reply, retrying a few times (UDP may lose datagrams).
async fn request(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    request_counting_retries(socket, to, payload).await.0
}

/// Like [`request`], also returning how many times the datagram had to be sent again.
async fn request_counting_retries(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> (Vec<u8>, u32) {
    let mut buf = vec![0u8; 65536];
    for retries in 0..5 {
        socket.send_to(payload, to).await.unwrap();
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
            return (buf[..n].to_vec(), retries);
        }
        eprintln!("no reply from {to} within 2 s; resending");
    }
    panic!("no reply from {to} after 5 tries");
}

/// 50 clients at once, 20 datagrams each: every reply is the client's own datagram, whole.
async fn concurrent_flows_get_their_own_replies(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = udp_echo_server().await;
    let (_agent, ready) = expose_public_udp(&hub, transport, &echo, "dns").await;
    assert!(str_of(&ready, "connection_string").starts_with("udp://"), "{ready}");
    let public = v4(&str_of(&ready, "public_address"));
    let mut clients = Vec::new();
    for client in 0..50u32 {
        clients.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut retries = 0;
            for n in 0..20u32 {
                let payload = format!("client {client} datagram {n} ")
                    .repeat(1 + (n as usize % 7))
                    .into_bytes();
                let (reply, again) = request_counting_retries(&socket, public, &payload).await;
                assert_eq!(reply, payload, "client {client} got someone else's or a damaged reply");
                retries += again;
            }
            retries
        }));
    }
    let mut retries = 0;
    for client in clients {
        retries += client.await.unwrap();
    }
    // One datagram in flight per client on loopback: nothing should be lost, least of all the
    // first datagram of a flow, which races its flow's stream to the agent.
    assert_eq!(retries, 0, "datagrams were lost");
}

/// A 60 KB datagram and the largest possible one (65,507 bytes) arrive whole: over QUIC they
/// exceed the path's datagram size and take the stream fallback.
async fn large_datagrams_arrive_whole(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = udp_echo_server().await;
    let (_agent, ready) = expose_public_udp(&hub, transport, &echo, "big").await;
    let public = v4(&str_of(&ready, "public_address"));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for size in [60_000usize, 65_507, 1_000] {
        let payload = random_bytes(size);
        assert_eq!(
            request(&socket, public, &payload).await,
            payload,
            "{size}-byte datagram"
        );
    }
}

/// A private UDP tunnel reached through `reach`, which binds a local UDP socket.
async fn reach_carries_udp(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = udp_echo_server().await;
    let mut agent = hub.expose(transport, "alice", &echo, &["--name", "game", "--protocol", "udp"]);
    agent.ready().await;
    let mut reach = hub.reach(transport, "alice", "game", &[]);
    let local: SocketAddr = str_of(&reach.ready().await, "local_address").parse().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in 0..20u32 {
        let payload = format!("tick {n}").into_bytes();
        assert_eq!(request(&socket, local, &payload).await, payload);
    }
    let big = random_bytes(60_000);
    assert_eq!(request(&socket, local, &big).await, big);
}

macro_rules! per_transport {
    ($($transport:ident),*) => {$(
        mod $transport {
            const T: &str = stringify!($transport);
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_flows_get_their_own_replies() { super::concurrent_flows_get_their_own_replies(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_datagrams_arrive_whole() { super::large_datagrams_arrive_whole(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reach_carries_udp() { super::reach_carries_udp(T).await }
        }
    )*};
}

per_transport!(quic, tls, tcp);

/// An idle flow expires: the next datagram from the same client opens a new flow, seen by the
/// target as a new source socket on the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flows_expire() {
    let hub = TestHub::start(&["--udp-idle-timeout", "1s"]).await;
    let whoami = udp_whoami().await;
    let (_agent, ready) = expose_public_udp(&hub, "quic", &whoami, "who").await;
    let public = v4(&str_of(&ready, "public_address"));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = request(&socket, public, b"?").await;
    assert_eq!(request(&socket, public, b"?").await, first, "same flow while active");
    // Expiry is a matter of time: wait past the 1 s idle timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = request(&socket, public, b"?").await;
    assert_ne!(after, first, "the idle flow should have expired and a new one opened");
}

/// A real DNS query with dig through a UDP tunnel to dnsmasq (installed by .ci/run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_resolves_through_the_tunnel() {
    require_tool("dnsmasq", "dnsmasq-base");
    require_tool("dig", "bind9-dnsutils");
    let dig = |server: SocketAddr| async move {
        let output = tokio::process::Command::new("dig")
            .args([
                &format!("@{}", server.ip()),
                "-p",
                &server.port().to_string(),
                "burrow.test",
                "A",
                "+short",
                "+tries=5",
                "+time=1",
            ])
            .output()
            .await
            .unwrap();
        (
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    // dnsmasq needs the port free for both UDP and TCP; ports below the ephemeral range avoid
    // the other tests' outgoing connections. Readiness: dnsmasq answers directly.
    let mut started = None;
    let mut logs = String::new();
    for attempt in 0..10u16 {
        let port = 19000 + (std::process::id() as u16 % 500) * 2 + attempt * 97 % 1000;
        let free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if !free {
            continue;
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut dnsmasq = tokio::process::Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--address=/burrow.test/10.1.2.3",
                "--user=root",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let direct: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if dig(direct).await.0 == "10.1.2.3" {
            started = Some((dnsmasq, direct));
            break;
        }
        let _ = dnsmasq.kill().await;
        logs.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
    }
    let Some((mut dnsmasq, direct)) = started else {
        panic!("dnsmasq never answered; its logs:\n{logs}")
    };

    let hub = TestHub::start(&["--allow-plaintext"]).await;
    // QUIC carries the query as a DATAGRAM frame; plain TCP on a lane (or on the multiplexed
    // connection while no lane is dialed yet).
    for transport in ["quic", "tcp"] {
        let (agent, ready) = expose_public_udp(&hub, transport, &direct.to_string(), &format!("dns-{transport}")).await;
        let public = v4(&str_of(&ready, "public_address"));
        let (answer, stderr) = dig(public).await;
        assert_eq!(
            answer,
            "10.1.2.3",
            "through the {transport} tunnel; dig stderr: {stderr}\nagent stderr: {}\nhub stderr: {}",
            agent.stderr_text(),
            hub.proc.stderr_text()
        );
    }
    let _ = dnsmasq.kill().await;
}
