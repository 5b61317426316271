//! On a terminal, `expose` draws its live status and redraws it as traffic flows; driven in
//! a pseudo-terminal by util-linux's `script`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(20);

/// Reads `out` until what was read contains `want`; returns everything read so far.
async fn read_until(out: &mut tokio::process::ChildStdout, seen: &mut String, want: &str) {
    let found = async {
        while !seen.contains(want) {
            let mut buf = [0u8; 4096];
            let n = out.read(&mut buf).await.unwrap();
            assert!(n > 0, "the console ended before showing {want:?}:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    if tokio::time::timeout(WAIT, found).await.is_err() {
        panic!("the console never showed {want:?}:\n{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_on_a_terminal_shows_a_live_status() {
    require_tool("script", "bsdutils");
    let hub = TestHub::start(&[]).await;
    let echo = echo_server().await;
    let mut args = vec![env!("CARGO_BIN_EXE_burrow").to_string(), "expose".into(), echo.clone()];
    args.extend(hub.agent_args("quic", "alice").into_iter().filter(|a| a != "--json"));
    args.extend(["--name", "live", "--public", "--protocol", "tcp"].map(String::from));
    let command = args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
    let mut script = tokio::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = script.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut out, &mut seen, "connections   open 0   total 0").await;
    assert!(seen.contains("online over quic"), "{seen}");
    assert!(seen.contains("\x1b[H\x1b[J"), "drawn in place");
    let public = seen
        .split("public address: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the ready lines name the public address")
        .replace("localhost", "127.0.0.1");
    assert_eq!(
        round_trip(&public, b"through the console").await,
        b"through the console"
    );
    read_until(&mut out, &mut seen, "connections   open 0   total 1").await;
    let last = seen.rsplit("\x1b[H\x1b[J").next().unwrap();
    assert!(last.contains("traffic       in 19 B"), "{last}");
    script.kill().await.unwrap();
}
