//! Logs as an operator reads them: with `--log-format json --log-level debug`, a span per
//! agent session and per forwarded connection (tunnel, peer, transport) and the bytes moved
//! when a connection ends, on hub and agent; access keys never appear.

mod common;

use std::time::Duration;

use common::*;

const DEBUG_JSON: [&str; 4] = ["--log-level", "debug", "--log-format", "json"];

/// The first JSON log line whose message is `message`, waiting (bounded) for it.
async fn log_line(stderr: impl Fn() -> String, message: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = stderr().lines().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["fields"]["message"] == message).then_some(v)
        });
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {message:?} in:\n{}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_connections_are_spans_with_their_bytes_and_no_secrets() {
    let hub = TestHub::start(&DEBUG_JSON).await;
    let echo = echo_server().await;
    let mut extra = vec!["--name", "logged", "--public", "--protocol", "tcp"];
    extra.extend(DEBUG_JSON);
    let mut agent = hub.expose("quic", "alice", &echo, &extra);
    let public = str_of(&agent.ready().await, "public_address").replace("localhost", "127.0.0.1");
    assert_eq!(round_trip(&public, b"hello").await, b"hello");

    let closed = log_line(|| hub.proc.stderr_text(), "connection closed").await;
    assert_eq!(closed["fields"]["bytes_in"], 5, "{closed}");
    assert_eq!(closed["fields"]["bytes_out"], 5, "{closed}");
    assert_eq!(closed["span"]["tunnel"], "logged", "{closed}");
    assert_eq!(closed["span"]["transport"], "quic", "{closed}");
    assert!(
        closed["span"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{closed}"
    );
    let connected = log_line(|| hub.proc.stderr_text(), "agent connected").await;
    assert_eq!(connected["span"]["name"], "agent_session", "{connected}");
    assert_eq!(connected["span"]["user"], "alice", "{connected}");

    let served = log_line(|| agent.stderr_text(), "connection closed").await;
    assert_eq!(served["span"]["tunnel"], "logged", "{served}");
    assert_eq!(served["fields"]["bytes_in"], 5, "{served}");

    agent.signal("-TERM");
    let _ = agent.exit_status(Duration::from_secs(20)).await;
    for (who, text) in [("hub", hub.proc.stderr_text()), ("agent", agent.stderr_text())] {
        assert!(
            !text.contains("alice-key") && !text.contains("bob-key"),
            "{who} logged a key:\n{text}"
        );
    }
}
