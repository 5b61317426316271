//! End to end: tunnel ownership, pools and replacement, transport policy, and bad input on
//! the hub's ports.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_all(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_members_share_connections() {
    let hub = TestHub::start(&[]).await;
    let (a, b) = (tag_server("A").await, tag_server("B").await);
    let mut first = hub.expose("tls", "alice", &a, &["--name", "pooled", "--public", "--pool"]);
    let ready_a = first.ready().await;
    let mut second = hub.expose("tls", "alice", &b, &["--name", "pooled", "--public", "--pool"]);
    let ready_b = second.ready().await;
    assert_eq!(ready_a["tunnel_id"], ready_b["tunnel_id"], "one tunnel, two members");
    let public = str_of(&ready_a, "public_address");
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        *seen.entry(read_all(&public).await).or_insert(0) += 1;
    }
    assert_eq!(seen.get("A"), Some(&10), "round-robin over the pool: {seen:?}");
    assert_eq!(seen.get("B"), Some(&10), "round-robin over the pool: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_without_pool_replaces_the_old_agent() {
    let hub = TestHub::start(&[]).await;
    let (a, b) = (tag_server("A").await, tag_server("B").await);
    let mut old = hub.expose("quic", "alice", &a, &["--name", "web", "--public"]);
    let before = old.ready().await;
    let public = str_of(&before, "public_address");
    assert_eq!(read_all(&public).await, "A");
    let mut new = hub.expose("tls", "alice", &b, &["--name", "web", "--public"]);
    let after = new.ready().await;
    assert_eq!(before["tunnel_id"], after["tunnel_id"]);
    assert_eq!(before["public_address"], after["public_address"]);
    // The replaced agent is told to stop and exits cleanly.
    assert_eq!(old.exit_status(Duration::from_secs(20)).await.code(), Some(0));
    assert!(old.stderr_text().contains("replaced"), "{}", old.stderr_text());
    assert_eq!(read_all(&public).await, "B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_reach_each_others_private_tunnels() {
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut private = hub.expose("tls", "alice", &echo, &["--name", "alice-db"]);
    let ready = private.ready().await;

    for tunnel in ["alice-db".to_string(), str_of(&ready, "tunnel_id")] {
        let mut bob = hub.reach("tls", "bob", &tunnel, &[]);
        assert_eq!(
            bob.exit_status(Duration::from_secs(20)).await.code(),
            Some(2),
            "bob reaching {tunnel}"
        );
        let stderr = bob.stderr_text();
        assert!(
            stderr.contains("no tunnel") && stderr.lines().count() == 1,
            "one-line reason: {stderr}"
        );
    }
    let mut missing = hub.reach("tls", "alice", "does-not-exist", &[]);
    assert_eq!(missing.exit_status(Duration::from_secs(20)).await.code(), Some(2));

    // Bob's streams naming Alice's tunnel id are refused too: reach a tunnel of his own, then
    // check that the hub checks each stream (covered by the resolve refusal above). With
    // `--shared all`, bob may reach it.
    let mut shared = hub.expose("tls", "alice", &echo, &["--name", "alice-shared", "--shared", "all"]);
    shared.ready().await;
    let mut bob = hub.reach("tls", "bob", "alice-shared", &[]);
    let local = str_of(&bob.ready().await, "local_address");
    assert_eq!(
        round_trip(&local, b"shared with everyone").await,
        b"shared with everyone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_agents_need_allow_plaintext() {
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose("tcp", "alice", &echo, &[]);
    assert_eq!(agent.exit_status(Duration::from_secs(20)).await.code(), Some(2));
    assert!(
        agent.stderr_text().contains("--allow-plaintext"),
        "{}",
        agent.stderr_text()
    );
}

/// With UDP to the hub black-holed, `--transport auto` falls back to TLS within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_transport_falls_back_to_tls_when_udp_is_blocked() {
    // Hold the UDP side of a port and never answer: QUIC packets to it vanish. The port must
    // also be free for TCP (the hub's main port); below the ephemeral range other tests'
    // outgoing connections cannot hold it.
    let (_blackhole, port) = (0..200u16)
        .map(|i| 19500 + (std::process::id() as u16 % 100) * 4 + i * 7 % 400)
        .find_map(|port| {
            let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).ok()?;
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
            Some((udp, port))
        })
        .expect("a port free for UDP and TCP");
    let data = tempfile::tempdir().unwrap();
    let mut hub = Proc::spawn(&[
        "hub".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.path().to_str().unwrap().into(),
        "--auth".into(),
        "alice:alice-key".into(),
        "--port-range".into(),
        "29900-29909".into(),
        "--json".into(),
    ]);
    hub.ready().await;
    let echo = echo_server().await;
    let started = std::time::Instant::now();
    let mut agent = Proc::spawn(&[
        "expose".into(),
        echo,
        "--hub".into(),
        format!("127.0.0.1:{port}"),
        "--ca".into(),
        data.path().join("certs/ca.pem").to_str().unwrap().into(),
        "-u".into(),
        "alice".into(),
        "-k".into(),
        "alice-key".into(),
        "--public".into(),
        "--json".into(),
    ]);
    let ready = agent.ready().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "fallback took {took:?}");
    assert!(
        agent.stderr_text().contains("falling back to TLS"),
        "{}",
        agent.stderr_text()
    );
    assert_eq!(
        round_trip(&str_of(&ready, "public_address"), b"over tls").await,
        b"over tls"
    );
}

/// Garbage, silent clients and unknown names on the main and public ports are turned away
/// without disturbing a working tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_does_not_disturb_other_tunnels() {
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose("quic", "alice", &echo, &["--name", "steady", "--public"]);
    let public = str_of(&agent.ready().await, "public_address");

    // An agent-looking TLS ClientHello (ALPN burrow/1) and then silence: the hub gives up on
    // the handshake (checked at the end, as it takes the 5 s sniff deadline).
    let mut stalled = TcpStream::connect(&hub.addr).await.unwrap();
    {
        burrow::tls::install_crypto_provider();
        let config = burrow::tls::client_config(Some(std::path::Path::new(&hub.ca())))
            .unwrap()
            .config;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(config, name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        stalled.write_all(&hello).await.unwrap();
    }
    // Silent connections hold nothing but their socket.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(&hub.addr).await.unwrap());
    }
    // Garbage on the main port is dropped.
    let mut garbage = TcpStream::connect(&hub.addr).await.unwrap();
    garbage.write_all(&random_bytes(64 * 1024)).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "garbage connection was not closed");
    // A fake agent preface followed by garbage is dropped too.
    let mut fake = TcpStream::connect(&hub.addr).await.unwrap();
    fake.write_all(b"BURROW1\nE\x00\x01garbage-instead-of-http2")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), fake.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "fake agent was not dropped");
    // An HTTP request for an unknown name gets a 404 from the hub.
    let mut http = TcpStream::connect(&hub.addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), http.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    // An oversized request head is refused rather than buffered.
    let mut huge = TcpStream::connect(&hub.addr).await.unwrap();
    let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let _ = huge.write_all(&head).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), huge.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "oversized head was not refused");

    // The tunnel still carries data intact, by public port and by name on the main port.
    let data = random_bytes(2 << 20);
    assert_eq!(round_trip(&public, &data).await, data);
    let request = b"GET /by-name HTTP/1.1\r\nHost: steady.localhost\r\n\r\n";
    assert_eq!(
        round_trip(&hub.addr, request).await,
        request,
        "Host routing reaches the tunnel, bytes untouched"
    );
    let closed = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a stalled TLS handshake was not dropped");
    drop(silent);
}

/// On SIGTERM an agent stops taking new connections but lets running ones finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_connections() {
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose(
        "tls",
        "alice",
        &echo,
        &["--name", "drain", "--public", "--shutdown-timeout", "20s"],
    );
    let public = str_of(&agent.ready().await, "public_address");
    let mut open = TcpStream::connect(&public).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();

    agent.signal("-TERM");
    // The running connection still works after the signal...
    open.write_all(b"pong").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "agent exited while a connection was open"
    );
    // ...and the agent exits cleanly once it closes.
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    drop(open);
    assert_eq!(agent.exit_status(Duration::from_secs(20)).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_hub_port_is_used_and_conflicts_are_refused() {
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let port = hub.range.0 + 5;
    let mut agent = hub.expose(
        "tls",
        "alice",
        &echo,
        &["--name", "fixed", "--public", "--hub-port", &port.to_string()],
    );
    let ready = agent.ready().await;
    assert!(str_of(&ready, "public_address").ends_with(&format!(":{port}")));
    let mut clash = hub.expose(
        "tls",
        "alice",
        &echo,
        &["--name", "other", "--public", "--hub-port", &port.to_string()],
    );
    let status = clash.exit_status(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1), "{}", clash.stderr_text());
    assert!(clash.stderr_text().contains("taken"), "{}", clash.stderr_text());
    let mut outside = hub.expose(
        "tls",
        "alice",
        &echo,
        &["--name", "outside", "--public", "--hub-port", "80"],
    );
    assert_eq!(outside.exit_status(Duration::from_secs(20)).await.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_strings_follow_the_target_port() {
    let hub = TestHub::start(&[]).await;
    // Nothing needs to listen on the target for registration.
    let mut pg = hub.expose("tls", "alice", "127.0.0.1:5432", &["--name", "pg", "--public"]);
    assert!(str_of(&pg.ready().await, "connection_string").starts_with("postgresql://"));
    let mut web = hub.expose(
        "tls",
        "alice",
        "8080",
        &["--name", "web", "--public", "--protocol", "http"],
    );
    let ready = web.ready().await;
    assert!(str_of(&ready, "connection_string").starts_with("http://"));
    assert!(str_of(&ready, "url").starts_with("http://web.localhost:"), "{ready}");
    assert_eq!(str_of(&ready, "agent_id").len(), 36);
}

/// A tunnel whose agent stays away past the grace period ends: its port closes, and the
/// name is free for a new tunnel with a new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_after_the_grace_period() {
    let hub = TestHub::start(&["--lease-grace", "1s"]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose("tls", "alice", &echo, &["--name", "brief", "--public"]);
    let before = agent.ready().await;
    let public = str_of(&before, "public_address");
    agent.kill().await;
    // Until the lease ends the port still accepts (visitors wait for the agent); afterwards
    // it refuses. Poll with connects that are dropped at once.
    let mut refused = false;
    for _ in 0..100 {
        match TcpStream::connect(&public).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(refused, "public port still open 10 s after a 1 s lease grace");
    let mut again = hub.expose("tls", "alice", &echo, &["--name", "brief", "--public"]);
    let after = again.ready().await;
    assert_ne!(
        before["tunnel_id"], after["tunnel_id"],
        "an expired lease is not resumed"
    );
}

#[tokio::test]
async fn a_corrupt_state_database_is_a_clear_start_up_error() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("burrow.db"), b"not a database at all, just text").unwrap();
    let mut hub = common::Proc::spawn(&[
        "hub".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.path().to_str().unwrap().into(),
        "--auth".into(),
        "alice:alice-key".into(),
    ]);
    let status = hub.exit_status(std::time::Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1));
    let stderr = hub.stderr_text();
    assert!(
        stderr.contains("state database") && stderr.contains("burrow.db"),
        "{stderr}"
    );
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read(data.path().join("burrow.db")).unwrap(),
        b"not a database at all, just text"
    );
}
