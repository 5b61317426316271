//! Under systemd (`NOTIFY_SOCKET` set) the hub and agents send `READY=1` once they carry
//! traffic and `STOPPING=1` when a signal starts their drain, on a real datagram socket.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::UnixDatagram;

const WAIT: Duration = Duration::from_secs(20);

async fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("a notification")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_expose_tell_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap())];

    let data = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "hub",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--auth",
        "alice:alice-key",
        "--port-range",
        "26900-26909",
        "--json",
        "--log-level",
        "warn",
    ]
    .map(String::from)
    .to_vec();
    let mut hub = Proc::spawn_env(&args, &env);
    let ready = hub.ready().await;
    assert_eq!(next_state(&socket).await, "READY=1");

    let test_hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut args = vec!["expose".to_string(), echo];
    args.extend(test_hub.agent_args("quic", "alice"));
    let mut agent = Proc::spawn_env(&args, &env);
    agent.ready().await;
    assert_eq!(
        next_state(&socket).await,
        "READY=1",
        "the agent, once its tunnel is ready"
    );
    agent.signal("-TERM");
    assert_eq!(next_state(&socket).await, "STOPPING=1");
    let _ = agent.exit_status(WAIT).await;

    hub.signal("-TERM");
    assert_eq!(next_state(&socket).await, "STOPPING=1");
    assert!(hub.exit_status(WAIT).await.success(), "{ready}");
}
