//! Sauce Labs' own Node.js API client (`saucelabs` on npm, pointed at the hub with its
//! `host` option) lists, reads, counts the jobs of and deletes a tunnel on a running hub.
//! `.ci/run` installs the package into `target/ci-tools/npm`; `BURROW_SAUCELABS_NODE_PATH`
//! may name another `node_modules`.

mod common;

use std::time::Duration;

use common::{str_of, TestHub};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn node_modules() -> String {
    let path = std::env::var("BURROW_SAUCELABS_NODE_PATH")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-tools/npm/node_modules").to_string());
    assert!(
        std::path::Path::new(&path).join("saucelabs").is_dir(),
        "the npm package saucelabs is not in {path}: npm install --prefix target/ci-tools/npm saucelabs@9.1.0 (.ci/run does)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_node_client_works_against_the_hub() {
    common::require_tool("node", "nodejs");
    let node_path = node_modules();
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let target = common::echo_server().await;
    let mut web = hub.expose("quic", "alice", &target, &["--name", "web"]);
    let id = str_of(&web.ready().await, "tunnel_id");
    // One connection held open through the tunnel: a running job.
    let mut reach = hub.reach("quic", "alice", "web", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    let mut held = tokio::net::TcpStream::connect(&local).await.unwrap();
    held.write_all(b"job").await.unwrap();
    let mut echoed = [0u8; 3];
    held.read_exact(&mut echoed).await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/rest/sauce-client.js");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .args([script, &format!("http://{api}"), "alice", "alice-key"])
            .env("NODE_PATH", &node_path)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["ids"], serde_json::json!([id]));
    assert_eq!(seen["full"][0]["tunnel_identifier"], "web");
    assert_eq!(seen["full"][0]["status"], "running");
    assert_eq!(seen["shared"], serde_json::json!({"alice": [id]}));
    assert_eq!(seen["one"]["id"], id.as_str());
    assert_eq!(seen["one"]["is_ready"], true);
    assert_eq!(
        seen["deleted"],
        serde_json::json!({"result": true, "id": id, "jobs_running": 1})
    );
    assert_eq!(seen["after"], serde_json::json!([]));
    assert_eq!(web.exit_status(Duration::from_secs(20)).await.code(), Some(0));
    drop((held, reach));
}
