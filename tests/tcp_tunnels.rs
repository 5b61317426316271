//! End to end: TCP tunnels through a real hub and real agents on every transport.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Public port: a 16 MiB upload is hashed by the target after the visitor's half-close, and
/// an 8 MiB echo comes back byte-identical.
async fn public_port_carries_bulk_intact_with_half_close(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let sink = hashing_sink().await;
    let mut agent = hub.expose(transport, "alice", &sink, &["--name", "sink", "--public"]);
    let ready = agent.ready().await;
    let public = str_of(&ready, "public_address");
    assert!(str_of(&ready, "connection_string").starts_with("tcp://"));

    let upload = random_bytes(16 << 20);
    let reply = round_trip(&public, &upload).await;
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("{} {}", sha256_hex(&upload), upload.len())
    );

    let echo = echo_server().await;
    let mut echo_agent = hub.expose(transport, "alice", &echo, &["--name", "echo", "--public"]);
    let public = str_of(&echo_agent.ready().await, "public_address");
    let data = random_bytes(8 << 20);
    let back = round_trip(&public, &data).await;
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
}

/// A private tunnel has no public address and is reached through `reach`, half-close included.
async fn reach_carries_a_private_tunnel(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let sink = hashing_sink().await;
    let mut agent = hub.expose(transport, "alice", &sink, &["--name", "private-sink"]);
    let ready = agent.ready().await;
    assert!(
        ready["public_address"].is_null(),
        "private tunnel has no public port: {ready}"
    );
    let mut reach = hub.reach(transport, "alice", "private-sink", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    let upload = random_bytes(4 << 20);
    let reply = round_trip(&local, &upload).await;
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("{} {}", sha256_hex(&upload), upload.len())
    );
}

/// 1000 connections at once over one agent connection, each with its own payload.
async fn thousand_concurrent_streams(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose(transport, "alice", &echo, &["--name", "many", "--public"]);
    let public = str_of(&agent.ready().await, "public_address");
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let public = public.clone();
        tasks.push(tokio::spawn(async move {
            let payload: Vec<u8> = (0..2048u32).map(|j| (i.wrapping_mul(31) ^ j) as u8).collect();
            match try_round_trip(&public, &payload).await {
                Ok(back) if back == payload => None,
                Ok(back) => Some(format!(
                    "stream {i}: {} bytes back, not the {} sent",
                    back.len(),
                    payload.len()
                )),
                Err(e) => Some(format!("stream {i}: {e}")),
            }
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 streams failed, e.g. {:?}\nhub stderr:\n{}\nagent stderr:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        hub.proc.stderr_text(),
        agent.stderr_text()
    );
}

/// What the kernel may hold between a stalled reader and the target: a send and a receive
/// buffer on each of the three TCP hops (target to agent, agent to hub on a lane or the
/// agent's connection, hub to visitor), each as large as autotuning allows on this machine
/// (`tcp_rmem` reaches 32 MiB on some). A connection that moves onto a lane after its first
/// bytes went multiplexed can fill the lane's buffers as well as the others, which a fixed
/// 40 MiB bound failed once. burrow's own part on top is small (one relay buffer per
/// direction and the HTTP/2 stream window); unbounded buffering would grow past any bound in
/// the 20 s the test waits.
fn kernel_buffer_bound() -> u64 {
    let max_of = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|line| line.split_whitespace().last()?.parse().ok())
            .unwrap_or(8 << 20)
    };
    3 * (max_of("tcp_rmem") + max_of("tcp_wmem"))
}

/// A visitor that stops reading stalls only its own stream: the target is held back after a
/// bounded amount, and another connection on the same tunnel keeps flowing.
async fn slow_reader_gets_backpressure_on_its_stream_only(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let (firehose, written) = firehose_server().await;
    let mut agent = hub.expose(transport, "alice", &firehose, &["--name", "hose", "--public"]);
    let public = str_of(&agent.ready().await, "public_address");

    let mut stalled = TcpStream::connect(&public).await.unwrap();
    // Wait (bounded) until the stalled connection's pile-up stops growing.
    let mut last = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written.load(Ordering::SeqCst);
        if now > 0 && now == last {
            break;
        }
        last = now;
    }
    let held = written.load(Ordering::SeqCst);
    eprintln!("{transport}: {held} bytes accepted from the target behind a stalled reader");
    assert!(held > 0, "the firehose never started");
    let bound = kernel_buffer_bound() + (8 << 20);
    assert!(
        held < bound,
        "{held} bytes piled up behind a stalled reader (bound {bound}): buffering is not bounded"
    );
    // burrow's own share of the pile-up stays small: code (a debug build is large), and on
    // QUIC its flow-control windows (16 MB send and receive per connection, `mux/quic.rs`).
    let rss_kb = |child: &tokio::process::Child| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().expect("running"))).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    };
    let resident = rss_kb(&hub.proc.child) + rss_kb(&agent.child);
    eprintln!("{transport}: hub + agent resident {resident} kB");
    assert!(
        resident < 96 << 10,
        "hub + agent hold {resident} kB behind a stalled reader"
    );

    let mut flowing = TcpStream::connect(&public).await.unwrap();
    let mut buf = vec![0u8; 4 << 20];
    tokio::time::timeout(Duration::from_secs(20), flowing.read_exact(&mut buf))
        .await
        .expect("a second stream on the same tunnel must flow while the first is stalled")
        .unwrap();
    assert!(buf.iter().all(|b| *b == 7));

    // And the stalled one resumes when read.
    let mut buf = vec![0u8; 1 << 20];
    tokio::time::timeout(Duration::from_secs(20), stalled.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
}

async fn wrong_credentials_exit_2(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = echo_server().await;
    let mut args = vec!["expose".to_string(), echo];
    let mut agent_args = hub.agent_args(transport, "alice");
    let key = agent_args.iter().position(|a| a == "-k").unwrap() + 1;
    agent_args[key] = "wrong-key".into();
    args.extend(agent_args);
    let mut agent = Proc::spawn(&args);
    let status = agent.exit_status(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(2));
    let stderr = agent.stderr_text();
    assert!(stderr.contains("invalid credentials"), "{stderr}");
}

/// An agent killed without warning and started again gets its tunnel back: same id, name and
/// public port.
async fn restarted_agent_resumes_its_lease(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = echo_server().await;
    let mut first = hub.expose(transport, "alice", &echo, &["--name", "lease", "--public"]);
    let before = first.ready().await;
    first.kill().await;
    let mut second = hub.expose(transport, "alice", &echo, &["--name", "lease", "--public"]);
    let after = second.ready().await;
    for key in ["tunnel_id", "name", "public_address"] {
        assert_eq!(before[key], after[key], "{key} changed across the restart");
    }
    let data = random_bytes(1 << 20);
    assert_eq!(round_trip(&str_of(&after, "public_address"), &data).await, data);
}

/// The hub is killed and restarted with the same data dir: running agents reconnect, the
/// tunnel keeps its public port, and both the public port and `reach` work again.
async fn hub_restart_is_survived(transport: &str) {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose(transport, "alice", &echo, &["--name", "survivor", "--public"]);
    let public = str_of(&agent.ready().await, "public_address");
    let mut reach = hub.reach(transport, "alice", "survivor", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    assert_eq!(round_trip(&public, b"before").await, b"before");

    let _hub = hub.restart().await;
    // The agents reconnect with backoff; visitors arriving meanwhile wait or are refused.
    for addr in [&public, &local] {
        let mut ok = false;
        for _ in 0..60 {
            if let Ok(back) = try_round_trip(addr, b"after").await {
                if back == b"after" {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            ok,
            "{addr} did not work again after the hub restart; agent stderr:\n{}",
            agent.stderr_text()
        );
    }
}

/// The binary resolves host names (it links glibc statically, `link/cc`): an agent whose
/// target is `localhost:PORT` reaches it, over IPv6 or IPv4, whichever the name gives first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_named_by_host_name_is_reached() {
    let hub = TestHub::start(&["--allow-plaintext"]).await;
    let echo = echo_server().await;
    let port = echo.rsplit(':').next().unwrap();
    let target = format!("localhost:{port}");
    let mut agent = hub.expose("tcp", "alice", &target, &["--name", "named", "--public"]);
    let public = str_of(&agent.ready().await, "public_address");
    let data = random_bytes(64 << 10);
    assert_eq!(
        round_trip(&public, &data).await,
        data,
        "the echo through a named target"
    );
}

macro_rules! per_transport {
    ($($transport:ident),*) => {$(
        mod $transport {
            const T: &str = stringify!($transport);
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn public_port_carries_bulk_intact_with_half_close() { super::public_port_carries_bulk_intact_with_half_close(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reach_carries_a_private_tunnel() { super::reach_carries_a_private_tunnel(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn thousand_concurrent_streams() { super::thousand_concurrent_streams(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn slow_reader_gets_backpressure_on_its_stream_only() { super::slow_reader_gets_backpressure_on_its_stream_only(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wrong_credentials_exit_2() { super::wrong_credentials_exit_2(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restarted_agent_resumes_its_lease() { super::restarted_agent_resumes_its_lease(T).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hub_restart_is_survived() { super::hub_restart_is_survived(T).await }
        }
    )*};
}

per_transport!(tls, quic, tcp);
