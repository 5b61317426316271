//! What a new user meets in the first hour, end to end through the real binary: re-exposing a
//! name with other settings, certificate and connection failures that must end the agent,
//! a hub whose names change, HTTP errors from the tunnel itself, a hub restart, a fallback
//! to TLS and back, and the command line's own manners.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a plain HTTP request for `host` to `addr` and returns what comes back until EOF.
async fn http_get(addr: &str, host: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut back))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&back).into_owned()
}

/// curl's status code and body for `url`, with extra curl arguments.
async fn curl(url: &str, extra: &[&str]) -> (String, String) {
    require_tool("curl", "curl");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output(),
    )
    .await
    .expect("curl finishes")
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

async fn stop(agent: &mut Proc) {
    agent.signal("-TERM");
    assert!(agent.exit_status(Duration::from_secs(10)).await.success());
}

/// A loopback port with nothing listening on it (TCP or UDP).
async fn dead_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_exposing_a_public_name_as_private_closes_its_port_and_route_before_ready() {
    let hub = TestHub::start(&[]).await;
    let target = tag_server("served").await;
    let mut public = hub.expose("quic", "alice", &target, &["--name", "web", "--public"]);
    let ready = public.ready().await;
    let address = str_of(&ready, "public_address").replace("localhost", "127.0.0.1");
    assert_eq!(round_trip(&address, b"hi").await, b"served");
    assert!(http_get(&hub.addr, "web.localhost").await.ends_with("served"));
    stop(&mut public).await;

    // The same name again, private: the lease must not keep the public port or the route.
    let mut private = hub.expose("quic", "alice", &target, &["--name", "web"]);
    let ready = private.ready().await;
    assert!(ready["public_address"].is_null(), "{ready}");
    let refused = TcpStream::connect(&address).await;
    assert!(refused.is_err(), "the old public port {address} still accepts");
    let answer = http_get(&hub.addr, "web.localhost").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // The owner still reaches it privately.
    let mut reach = hub.reach("quic", "alice", "web", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    assert_eq!(round_trip(&local, b"hi").await, b"served");
    reach.kill().await;
    stop(&mut private).await;

    // And public again, asking for another port: it gets that port (`--hub-port` is not
    // ignored for a name that held another one).
    let (lo, _) = hub.range;
    let wanted = (lo + 7).to_string();
    let mut moved = hub.expose(
        "quic",
        "alice",
        &target,
        &["--name", "web", "--public", "--hub-port", &wanted],
    );
    let ready = moved.ready().await;
    assert!(
        str_of(&ready, "public_address").ends_with(&format!(":{wanted}")),
        "{ready}"
    );
    assert_eq!(round_trip(&format!("127.0.0.1:{wanted}"), b"hi").await, b"served");
    stop(&mut moved).await;

    // Another protocol: the TCP port closes (a udp tunnel binds a UDP port instead).
    let udp_target = udp_echo_server().await;
    let mut udp = hub.expose(
        "quic",
        "alice",
        &udp_target,
        &["--name", "web", "--public", "--protocol", "udp"],
    );
    let ready = udp.ready().await;
    assert_eq!(ready["protocol"], "udp", "{ready}");
    assert!(
        TcpStream::connect(format!("127.0.0.1:{wanted}")).await.is_err(),
        "the TCP port stayed open"
    );
    stop(&mut udp).await;

    // Shared with every user, then not: bob loses it at once.
    let mut shared = hub.expose("quic", "alice", &target, &["--name", "web", "--shared", "all"]);
    shared.ready().await;
    let mut bob = hub.reach("quic", "bob", "web", &[]);
    let local = str_of(&bob.ready().await, "local_address");
    assert_eq!(round_trip(&local, b"hi").await, b"served");
    bob.kill().await;
    stop(&mut shared).await;
    let mut unshared = hub.expose("quic", "alice", &target, &["--name", "web"]);
    unshared.ready().await;
    let mut bob = hub.reach("quic", "bob", "web", &[]);
    assert_eq!(bob.exit_status(Duration::from_secs(10)).await.code(), Some(2));
    unshared.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_hub_certificate_ends_the_agent_at_once_with_a_hint() {
    let hub = TestHub::start(&[]).await;
    let other = tempfile::tempdir().unwrap();
    let mut certs = Proc::spawn(&[
        "certs".into(),
        "init".into(),
        "--dir".into(),
        other.path().to_str().unwrap().into(),
        "--host".into(),
        "localhost".into(),
    ]);
    assert!(certs.exit_status(Duration::from_secs(10)).await.success());
    let other_ca = other.path().join("ca.pem").to_str().unwrap().to_string();

    // A CA of the same name but another key (regenerated), then no --ca at all (system roots).
    for (ca, reason) in [(Some(other_ca.as_str()), "BadSignature"), (None, "UnknownIssuer")] {
        for transport in ["auto", "quic", "tls"] {
            let mut args = vec!["expose".to_string(), "9".into()];
            args.extend(hub.agent_args("tcp", "alice")); // no --ca of the hub's
            args.extend(["--transport".into(), transport.into()]);
            if let Some(ca) = ca {
                args.extend(["--ca".into(), ca.into()]);
            }
            let started = Instant::now();
            let mut agent = Proc::spawn(&args);
            let error = agent.event("error", Duration::from_secs(2)).await;
            let status = agent.exit_status(Duration::from_secs(2)).await;
            assert_eq!(status.code(), Some(2), "{transport}: {}", agent.stderr_text());
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{transport}: {:?}",
                started.elapsed()
            );
            assert_eq!(error["code"], 2);
            let message = str_of(&error, "message");
            for part in ["cannot trust the hub", reason, "issued by", "--ca", "certs/ca.pem"] {
                assert!(message.contains(part), "{transport}: {part:?} missing in {message}");
            }
            let stderr = agent.stderr_text();
            assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hub_ends_the_first_connection_after_connect_timeout() {
    let nothing = dead_port().await;
    for role in ["expose", "reach"] {
        for hub in [nothing.as_str(), "no-such-host.invalid:7443"] {
            let args: Vec<String> = [
                role,
                if role == "expose" { "9" } else { "web" },
                "--hub",
                hub,
                "-u",
                "alice",
                "-k",
                "alice-key",
                "--connect-timeout",
                "2s",
                "--log-level",
                "error",
            ]
            .into_iter()
            .map(String::from)
            .collect();
            let started = Instant::now();
            let mut agent = Proc::spawn(&args);
            let status = agent.exit_status(Duration::from_secs(8)).await;
            let took = started.elapsed();
            assert_eq!(status.code(), Some(1), "{role} {hub}: {}", agent.stderr_text());
            assert!(
                took >= Duration::from_millis(1900),
                "{role} {hub}: gave up after {took:?}"
            );
            assert!(
                agent.stderr_text().contains("--connect-timeout"),
                "{}",
                agent.stderr_text()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_for_a_new_domain_reissues_its_certificate_from_the_kept_ca() {
    let hub = TestHub::start(&["--domain", "example.test"]).await;
    let ca_before = std::fs::read(hub.ca()).unwrap();
    let port = hub.addr.rsplit_once(':').unwrap().1.to_string();
    let by_name = |hub: &TestHub| -> Vec<String> {
        let mut args = vec!["expose".to_string(), "9".into()];
        args.extend(hub.agent_args("tls", "alice"));
        args.extend([
            "--hub".into(),
            format!("localhost:{port}"),
            "--connect-timeout".into(),
            "5s".into(),
        ]);
        args
    };
    let mut agent = Proc::spawn(&by_name(&hub));
    let status = agent.exit_status(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(2),
        "the certificate covers example.test, not localhost"
    );

    let hub = hub.stop_and_restart(&["--domain", "localhost"]).await;
    assert_eq!(std::fs::read(hub.ca()).unwrap(), ca_before, "the CA is kept");
    let mut agent = Proc::spawn(&by_name(&hub));
    agent.ready().await;
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_visitors_get_502_when_the_target_refuses_and_503_when_no_agent_serves() {
    let hub = TestHub::start(&[]).await;
    let nothing = dead_port().await;
    let mut agent = hub.expose(
        "quic",
        "alice",
        &nothing,
        &["--name", "web", "--public", "--protocol", "http"],
    );
    let public = str_of(&agent.ready().await, "public_address").replace("localhost", "127.0.0.1");
    let routed = format!("http://{}/", hub.addr);
    for (url, extra) in [
        (format!("http://{public}/"), vec![]),
        (routed.clone(), vec!["-H", "Host: web.localhost"]),
    ] {
        let (code, body) = curl(&url, &extra).await;
        assert_eq!(code, "502", "{url}: {body}");
        assert!(body.contains("tunnel web") && body.contains(&nothing), "{body}");
    }
    // A raw TCP visitor of a tcp tunnel whose target refuses is closed promptly.
    let mut raw = hub.expose(
        "quic",
        "alice",
        &nothing,
        &["--name", "raw", "--public", "--protocol", "tcp"],
    );
    let raw_public = str_of(&raw.ready().await, "public_address").replace("localhost", "127.0.0.1");
    let mut tcp = TcpStream::connect(&raw_public).await.unwrap();
    tcp.write_all(b"hello").await.unwrap();
    let mut back = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut back)).await;
    assert!(closed.is_ok() && back.is_empty(), "{closed:?} {back:?}");
    raw.kill().await;

    stop(&mut agent).await;
    for (url, extra) in [
        (format!("http://{public}/"), vec![]),
        (routed, vec!["-H", "Host: web.localhost"]),
    ] {
        let (code, body) = curl(&url, &extra).await;
        assert_eq!(code, "503", "{url}: {body}");
        assert!(body.contains("tunnel web") && body.contains("no agent"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reconnect_promptly_when_the_hub_restarts_cleanly() {
    let hub = TestHub::start(&[]).await;
    let target = echo_server().await;
    let mut quic = hub.expose("quic", "alice", &target, &["--name", "q", "--public"]);
    let mut tls = hub.expose("tls", "alice", &target, &["--name", "t", "--public"]);
    let mut addresses = Vec::new();
    for agent in [&mut quic, &mut tls] {
        addresses.push(str_of(&agent.ready().await, "public_address").replace("localhost", "127.0.0.1"));
    }
    let hub = hub.stop_and_restart(&[]).await;
    let back = Instant::now();
    for agent in [&mut quic, &mut tls] {
        let event = agent.event("reconnected", Duration::from_secs(10)).await;
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "{event} came {:?} after the hub was back",
            back.elapsed()
        );
    }
    for address in &addresses {
        assert_eq!(round_trip(address, b"again").await, b"again");
    }
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_agent_that_fell_back_to_tls_moves_back_to_quic() {
    let hub = TestHub::start(&[]).await;
    let gate = UdpGate::start(&hub.addr).await;
    let target = echo_server().await;
    let mut args = vec!["expose".to_string(), target];
    args.extend(hub.agent_args("auto", "alice"));
    args.extend([
        "--hub".into(),
        gate.addr.clone(),
        "--name".into(),
        "back".into(),
        "--public".into(),
        "--log-level".into(),
        "burrow=debug".into(),
    ]);
    let mut agent = Proc::spawn(&args);
    let ready = agent.ready().await;
    assert_eq!(ready["transport"], "tls", "{ready}");
    let public = str_of(&ready, "public_address").replace("localhost", "127.0.0.1");
    assert_eq!(round_trip(&public, b"over tls").await, b"over tls");

    gate.udp_open.store(true, std::sync::atomic::Ordering::SeqCst);
    let event = agent.event("reconnected", Duration::from_secs(15)).await;
    assert_eq!(event["transport"], "quic", "{event}");
    assert_eq!(round_trip(&public, b"over quic").await, b"over quic");
    agent.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stderr_on_a_closed_pipe_exits_within_the_drain_time() {
    let hub = TestHub::start(&[]).await;
    let target = echo_server().await;
    let mut args = vec!["expose".to_string(), target];
    args.extend(hub.agent_args("quic", "alice"));
    args.extend([
        "--log-level".into(),
        "debug".into(),
        "--shutdown-timeout".into(),
        "2s".into(),
    ]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reading end of stderr is gone, as after `| head -1`
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        READY_TIMEOUT,
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line),
    )
    .await
    .expect("ready line")
    .unwrap();
    assert!(line.contains("\"ready\""), "{line}");
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within the drain time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_checks_its_words_and_keeps_logs_plain() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
            .args(args)
            .env_remove("BURROW_CONFIG")
            .output()
            .unwrap()
    };
    let bad_level = run(&["hub", "--log-level", "verbose", "--listen", "127.0.0.1:0"]);
    assert_eq!(bad_level.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_level.stderr).contains("verbose"));

    let version = String::from_utf8(run(&["--version"]).stdout).unwrap();
    assert!(version.contains("(commit "), "{version}");

    let help = String::from_utf8(run(&["expose", "--help"]).stdout).unwrap();
    assert!(help.contains("burrow expose [OPTIONS] <TARGET>"), "{help}");
    for flag in [
        "--protocol <",
        "-u, --user",
        "-k, --access-key <",
        "--log-format <",
        "--access-key-file <",
        "--connect-timeout <",
    ] {
        let line = help
            .lines()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing"));
        let text = help.lines().nth(line + 1).unwrap_or_default();
        assert!(
            !text.trim().is_empty() && !text.trim().starts_with('-'),
            "{flag} has no help text: {text:?}"
        );
    }
    let help = String::from_utf8(run(&["certs", "init", "--help"]).stdout).unwrap();
    let dir = help.lines().find(|l| l.contains("--dir <DIR>")).unwrap_or_default();
    assert!(
        dir.split("<DIR>").nth(1).is_some_and(|text| !text.trim().is_empty()),
        "{help}"
    );

    // A hub log written to a file has no colour codes.
    let hub = TestHub::start(&["--log-level", "info", "--auth", "carol:k,ey=1"]).await;
    let log = hub.proc.stderr_text();
    assert!(log.contains("hub listening") && !log.contains('\x1b'), "{log}");

    // Boolean words from the environment, a key with a comma, the key from a file.
    let key_file = hub.data.path().join("carol.key");
    std::fs::write(&key_file, "k,ey=1\n").unwrap();
    let target = tag_server("env").await;
    let args: Vec<String> = [
        "expose",
        &target,
        "--hub",
        &hub.addr,
        "--ca",
        &hub.ca(),
        "-u",
        "carol",
        "--access-key-file",
        key_file.to_str().unwrap(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut agent = Proc::spawn_env(&args, &[("BURROW_PUBLIC", "1"), ("BURROW_JSON", "yes")]);
    let ready = agent.ready().await;
    let public = str_of(&ready, "public_address").replace("localhost", "127.0.0.1");
    assert_eq!(round_trip(&public, b"").await, b"env");
    agent.kill().await;
    let mut refused = Proc::spawn_env(&args, &[("BURROW_PUBLIC", "maybe"), ("BURROW_JSON", "1")]);
    let error = refused.event("error", Duration::from_secs(5)).await;
    assert_eq!(error["code"], 2, "{error}");
    assert_eq!(refused.exit_status(Duration::from_secs(5)).await.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_a_replaced_tunnel_does_not_take_its_successors_name() {
    let hub = TestHub::start(&["--lease-grace", "1s"]).await;
    let target = tag_server("kept").await;
    let mut public = hub.expose("quic", "alice", &target, &["--name", "web", "--public"]);
    public.ready().await;
    stop(&mut public).await; // the old tunnel's lease timer starts
    let mut private = hub.expose("quic", "alice", &target, &["--name", "web"]);
    let id = str_of(&private.ready().await, "tunnel_id");
    // The old lease runs out meanwhile; nothing signals that from outside the hub.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The successor still owns the name: the same settings get it back, id and all.
    stop(&mut private).await;
    let mut again = hub.expose("quic", "alice", &target, &["--name", "web"]);
    assert_eq!(str_of(&again.ready().await, "tunnel_id"), id);
    let mut reach = hub.reach("quic", "alice", "web", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    assert_eq!(round_trip(&local, b"hi").await, b"kept");
    reach.kill().await;
    again.kill().await;
}
