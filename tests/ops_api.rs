//! The operational API (`--api-address`) of the hub and of `expose` and `reach` agents, run
//! as the real binary: every endpoint, readiness across connect, a hub restart and a drain,
//! `/configz` redaction, and metrics that move with traffic and vanish with their tunnel.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// `GET path` on `addr`: the status code and the body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(WAIT, exchange).await.unwrap().unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `path` until it answers `want` (the API's own readiness signal), bounded by WAIT.
async fn until_status(addr: &str, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = get(addr, path).await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} on {addr} stayed {status}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample of `family` whose labels include every one of `labels`.
fn sample(metrics: &str, family: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split(['{', ' ']).next() == Some(family) && labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `/metrics` until `family{labels}` reads `want` (counters of a connection are added
/// when it ends, just after its client saw the end).
async fn until_sample(api: &str, family: &str, labels: &[&str], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = get(api, "/metrics").await;
        if sample(&metrics, family, labels) == Some(want) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{family} {labels:?} never read {want}: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `promtool check metrics` (Prometheus' own linter) finds nothing wrong with a scrape.
async fn promtool_accepts(metrics: &str) {
    require_tool("promtool", "prometheus (.ci/run unpacks it with apt-get download)");
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(metrics.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_every_endpoint_and_metrics_follow_its_tunnels() {
    let mut hub = TestHub::start(&["--api-address", "127.0.0.1:0", "--lease-grace", "1s"]).await;
    let api = hub.api_address.clone().expect("the ready line names the API address");

    assert_eq!(get(&api, "/readyz").await, (200, "OK\n".into()));
    assert_eq!(get(&api, "/healthz").await.0, 200);
    let (status, index) = get(&api, "/").await;
    assert_eq!(status, 200);
    for path in [
        "/readyz", "/healthz", "/info", "/metrics", "/configz", "/pac", "/version",
    ] {
        assert!(index.contains(path), "the index lists {path}");
    }
    let version: serde_json::Value = serde_json::from_str(&get(&api, "/version").await.1).unwrap();
    for field in ["version", "commit", "rustc", "os", "arch"] {
        assert!(version[field].is_string(), "{version}");
    }
    assert_eq!(get(&api, "/pac").await.0, 404);
    let (_, configz) = get(&api, "/configz").await;
    assert!(configz.contains("auth=alice:xxxxx,bob:xxxxx"), "{configz}");
    assert!(!configz.contains("alice-key"), "{configz}");
    assert!(
        configz.contains("lease-grace=1s") && configz.contains("domain=localhost"),
        "{configz}"
    );
    let lines: Vec<&str> = configz.lines().collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "sorted: {configz}");

    // The main port answers the same API by the hub's own name: HTTPS with the hub's
    // certificate (by name, or by address without a name), and plain HTTP with that Host.
    require_tool("curl", "curl");
    let port = hub.addr.rsplit_once(':').unwrap().1.to_string();
    let ca = hub.ca();
    for url in [
        format!("https://localhost:{port}/readyz"),
        format!("https://127.0.0.1:{port}/readyz"),
        format!("http://localhost:{port}/readyz"),
    ] {
        let resolve = format!("localhost:{port}:127.0.0.1");
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &ca, "--resolve", &resolve, &url])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n", "{url}: {stderr}");
    }
    let echo = echo_server().await;
    let mut agent = hub.expose(
        "quic",
        "alice",
        &echo,
        &["--name", "counted", "--public", "--protocol", "auto"],
    );
    let public = str_of(&agent.ready().await, "public_address");
    let public = public.replace("localhost", "127.0.0.1");
    let info: serde_json::Value = serde_json::from_str(&get(&api, "/info").await.1).unwrap();
    assert_eq!(info["tunnels"], 1);
    assert_eq!(info["agents"], 1);
    assert_eq!(round_trip(&public, b"metrics move").await, b"metrics move");

    let bytes_in = ["tunnel=\"counted\"", "direction=\"in\""];
    let metrics = until_sample(&api, "burrow_tunnel_bytes_total", &bytes_in, 12.0).await;
    assert!(metrics.contains("burrow_build_info{"), "{metrics}");
    assert_eq!(sample(&metrics, "burrow_tunnels", &["state=\"active\""]), Some(1.0));
    assert_eq!(sample(&metrics, "burrow_agents_connected", &[]), Some(1.0));
    let tcp = ["tunnel=\"counted\"", "protocol=\"tcp\""];
    assert_eq!(
        sample(&metrics, "burrow_tunnel_connections_total", &tcp),
        Some(1.0),
        "{metrics}"
    );
    let tls = ["tunnel=\"counted\"", "protocol=\"tls\""];
    assert_eq!(
        sample(&metrics, "burrow_tunnel_connections_total", &tls),
        Some(0.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "burrow_process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&metrics, "burrow_process_open_fds", &[]).unwrap() > 0.0);
    assert!(
        metrics.contains("burrow_udp_drops_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
    promtool_accepts(&metrics).await;
    let count = |labels: &[&str]| sample(&metrics, "burrow_main_port_connections_total", labels).unwrap();
    assert!(
        count(&["outcome=\"tls\""]) >= 2.0 && count(&["outcome=\"http\""]) >= 1.0,
        "{metrics}"
    );
    let readyz = ["route=\"/readyz\"", "status=\"200\""];
    assert!(
        sample(&metrics, "burrow_api_requests_total", &readyz).unwrap() >= 4.0,
        "{metrics}"
    );

    // The tunnel's series go with it: the agent leaves and its lease runs out.
    agent.signal("-TERM");
    let _ = agent.exit_status(WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = get(&api, "/metrics").await;
        if !metrics.contains("tunnel=\"counted\"") {
            assert_eq!(sample(&metrics, "burrow_tunnels", &["state=\"active\""]), Some(0.0));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "series outlived the tunnel: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // OpenMetrics when asked for it.
    let mut tcp = TcpStream::connect(&api).await.unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: ops\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.contains("application/openmetrics-text"), "{response}");
    assert!(response.trim_end().ends_with("# EOF"), "{response}");

    // Draining: not ready from the first signal, while a connection keeps the hub up.
    let mut agent = hub.expose(
        "quic",
        "alice",
        &echo,
        &["--name", "held", "--public", "--protocol", "tcp"],
    );
    let public = str_of(&agent.ready().await, "public_address").replace("localhost", "127.0.0.1");
    let mut held = TcpStream::connect(&public).await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    tokio::time::timeout(WAIT, held.read_exact(&mut one))
        .await
        .unwrap()
        .unwrap();
    let held_open = ["tunnel=\"held\"", "protocol=\"tcp\""];
    until_sample(&api, "burrow_tunnel_connections_open", &held_open, 1.0).await;
    hub.proc.signal("-TERM");
    until_status(&api, "/readyz", 503).await;
    assert_eq!(get(&api, "/healthz").await.0, 200, "draining is healthy");
    // The drain ends with its last connection.
    drop(held);
    assert!(hub.proc.exit_status(WAIT).await.success());
    agent.kill().await;
}

/// An agent is ready once registered, not ready while it reconnects to a restarted hub, ready
/// again after, and not ready once it drains; `reach` serves the same API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_ready_only_while_connected() {
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut agent = hub.expose(
        "quic",
        "alice",
        &echo,
        &["--name", "watched", "--api-address", "127.0.0.1:0"],
    );
    let ready = agent.ready().await;
    let api = str_of(&ready, "api_address");
    assert_eq!(get(&api, "/readyz").await.0, 200);
    let info: serde_json::Value = serde_json::from_str(&get(&api, "/info").await.1).unwrap();
    assert_eq!(info["tunnel_name"], "watched");
    assert_eq!(info["tunnel_id"], ready["tunnel_id"]);
    assert_eq!(info["tunnel_server"], hub.addr.as_str());
    let (_, configz) = get(&api, "/configz").await;
    assert!(configz.contains("access-key=xxxxx"), "{configz}");
    assert!(!configz.contains("alice-key"), "{configz}");
    let (_, metrics) = get(&api, "/metrics").await;
    assert_eq!(
        sample(&metrics, "burrow_agent_connected", &["transport=\"quic\""]),
        Some(1.0),
        "{metrics}"
    );
    promtool_accepts(&metrics).await;

    // An agent over TLS keeps its lanes ready, and says so.
    let laned_args = ["--name", "laned", "--lanes", "3", "--api-address", "127.0.0.1:0"];
    let mut laned = hub.expose("tls", "alice", &echo, &laned_args);
    let laned_api = str_of(&laned.ready().await, "api_address");
    until_sample(&laned_api, "burrow_agent_lanes", &["state=\"idle\""], 3.0).await;
    let (_, metrics) = get(&laned_api, "/metrics").await;
    assert_eq!(
        sample(&metrics, "burrow_agent_connected", &["transport=\"tls\""]),
        Some(1.0),
        "{metrics}"
    );
    laned.kill().await;

    // A target that refuses is counted by reason.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let dead_args = [
        "--name",
        "dead",
        "--public",
        "--protocol",
        "tcp",
        "--api-address",
        "127.0.0.1:0",
    ];
    let mut dead = hub.expose("quic", "alice", &closed, &dead_args);
    let ready = dead.ready().await;
    let (dead_api, public) = (str_of(&ready, "api_address"), str_of(&ready, "public_address"));
    let _ = try_round_trip(&public.replace("localhost", "127.0.0.1"), b"x").await;
    until_sample(
        &dead_api,
        "burrow_agent_dial_errors_total",
        &["reason=\"refused\""],
        1.0,
    )
    .await;
    dead.kill().await;

    let mut reach = hub.reach("quic", "alice", "watched", &["--api-address", "127.0.0.1:0"]);
    let reach_api = str_of(&reach.ready().await, "api_address");
    assert_eq!(get(&reach_api, "/readyz").await.0, 200);
    // Every endpoint on both agents' APIs.
    for agent_api in [&api, &reach_api] {
        for (path, status) in [
            ("/", 200),
            ("/readyz", 200),
            ("/healthz", 200),
            ("/info", 200),
            ("/metrics", 200),
            ("/configz", 200),
            ("/version", 200),
            ("/pac", 404),
            ("/no-such-page", 404),
        ] {
            assert_eq!(get(agent_api, path).await.0, status, "{path} on {agent_api}");
        }
    }
    let reach_info: serde_json::Value = serde_json::from_str(&get(&reach_api, "/info").await.1).unwrap();
    assert_eq!(reach_info["tunnel_name"], "watched", "{reach_info}");

    // The hub restarts (a clean stop tells agents at once); the agent is not ready until it
    // is registered with the new one.
    let went_unready = tokio::spawn({
        let api = api.clone();
        async move { until_status(&api, "/readyz", 503).await }
    });
    let hub = hub.stop_and_restart(&[]).await;
    went_unready.await.unwrap();
    until_status(&api, "/readyz", 200).await;
    until_sample(&api, "burrow_agent_reconnects_total", &[], 1.0).await;
    until_status(&reach_api, "/readyz", 200).await;

    reach.kill().await;
    agent.signal("-TERM");
    let _ = agent.exit_status(WAIT).await;
    drop(hub);
}
