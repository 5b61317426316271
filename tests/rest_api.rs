//! The hub's Sauce Connect-compatible REST API (`/rest/v1`) through the binary: shapes
//! against golden files in `tests/testdata/rest/`, two users kept apart on every route,
//! authentication and its failure budget, and `DELETE` reaching the exposing agent.

mod common;

use std::time::Duration;

use common::proxies::Answer;
use common::rest::{call, json, next, send, webhook_receiver};
use common::{str_of, TestHub};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(20);

/// The values that differ between runs (ids, times, ports) replaced by placeholders.
fn normalized(mut value: Value) -> Value {
    match &mut value {
        Value::Array(items) => return Value::Array(items.drain(..).map(normalized).collect()),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let placeholder = match key.as_str() {
                    "id" => Some("<id>"),
                    "creation_time" | "launch_time" | "last_connected" | "shutdown_time" | "createdAt"
                    | "lastConnectedAt"
                        if !v.is_null() =>
                    {
                        Some("<time>")
                    }
                    "ssh_port" | "hubPort" if !v.is_null() => Some("<port>"),
                    "agentIds" => Some("<agents>"),
                    "publicAddress" | "connectionString" | "url" | "target" if !v.is_null() => Some("<address>"),
                    "extra_info" => Some("<extra>"),
                    _ => None,
                };
                match placeholder {
                    Some(p) => *v = Value::from(p),
                    None => *v = normalized(v.take()),
                }
            }
        }
        _ => {}
    }
    value
}

fn golden(name: &str, actual: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/rest")
        .join(name);
    let actual = normalized(actual.clone());
    if std::env::var_os("BURROW_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sauce_endpoints_keep_users_apart() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let (alice, bob) = ("alice:alice-key", "bob:bob-key");
    let target = common::echo_server().await;
    let mut web = hub.expose("quic", "alice", &target, &["--name", "web", "--metadata", "team=qa"]);
    let web_id = str_of(&web.ready().await, "tunnel_id");
    let mut shared = hub.expose("quic", "alice", &target, &["--name", "shared", "--shared", "all"]);
    let shared_id = str_of(&shared.ready().await, "tunnel_id");
    let mut db = hub.expose("quic", "bob", &target, &["--name", "db"]);
    let db_id = str_of(&db.ready().await, "tunnel_id");

    // Lists: ids, full objects, and by owner with the tunnels shared with the caller.
    let (status, ids) = json(&api, "GET", "/rest/v1/alice/tunnels", alice).await;
    assert_eq!(status, 200);
    let mut ids: Vec<String> = serde_json::from_value(ids).unwrap();
    ids.sort();
    let mut expected = vec![web_id.clone(), shared_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let (_, full) = json(&api, "GET", "/rest/v1/alice/tunnels?full=true", alice).await;
    golden("alice-full.json", &full);
    let (_, all) = json(&api, "GET", "/rest/v1/bob/tunnels?all=true", bob).await;
    assert_eq!(all, serde_json::json!({"alice": [shared_id], "bob": [db_id]}));
    let (_, one_per_pool) = json(&api, "GET", "/rest/v1/bob/tunnels?filter=one_per_pool", bob).await;
    assert_eq!(one_per_pool, serde_json::json!([db_id]));
    let (_, v2alpha) = json(&api, "GET", "/rest/v1/bob/tunnels?filter=v2alpha", bob).await;
    assert_eq!(v2alpha, serde_json::json!([]));
    let (status, bad) = json(&api, "GET", "/rest/v1/bob/tunnels?filter=nope", bob).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_filter")));

    // One tunnel and its jobs: a connection held open counts.
    let (status, one) = json(&api, "GET", &format!("/rest/v1/alice/tunnels/{web_id}"), alice).await;
    assert_eq!(status, 200);
    golden("tunnel.json", &one);
    let mut reach = hub.reach("quic", "alice", "web", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    let mut held = tokio::net::TcpStream::connect(&local).await.unwrap();
    held.write_all(b"hold").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_exact(&mut held, &mut echoed))
        .await
        .unwrap()
        .unwrap();
    let (_, jobs) = json(&api, "GET", &format!("/rest/v1/alice/tunnels/{web_id}/num_jobs"), alice).await;
    assert_eq!(jobs, serde_json::json!({"id": web_id, "jobs_running": 1}));

    // Anyone else's: not found, on every route; a shared tunnel is readable, not stoppable.
    for (method, path) in [
        ("GET", "/rest/v1/alice/tunnels".to_string()),
        ("GET", format!("/rest/v1/bob/tunnels/{web_id}")),
        ("GET", format!("/rest/v1/bob/tunnels/{web_id}/num_jobs")),
        ("DELETE", format!("/rest/v1/bob/tunnels/{web_id}")),
        ("DELETE", format!("/rest/v1/bob/tunnels/{shared_id}")),
        ("GET", "/rest/v1/bob/tunnels/not-an-id".to_string()),
    ] {
        let (status, body) = json(&api, method, &path, bob).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    let (status, _) = json(&api, "GET", &format!("/rest/v1/bob/tunnels/{shared_id}"), bob).await;
    assert_eq!(status, 200);

    // DELETE: the answer counts the running job, the agent is told and exits 0.
    let (status, deleted) = json(&api, "DELETE", &format!("/rest/v1/alice/tunnels/{web_id}"), alice).await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted,
        serde_json::json!({"result": true, "id": web_id, "jobs_running": 1})
    );
    assert_eq!(web.exit_status(WAIT).await.code(), Some(0));
    assert!(
        web.stderr_text().contains("tunnel deleted by the API"),
        "{}",
        web.stderr_text()
    );
    let (_, ids) = json(&api, "GET", "/rest/v1/alice/tunnels", alice).await;
    assert_eq!(ids, serde_json::json!([shared_id]));
    let (status, ended) = json(&api, "GET", &format!("/rest/v1/alice/tunnels/{web_id}"), alice).await;
    assert_eq!(status, 200);
    golden("tunnel-deleted.json", &ended);
    drop((held, reach, shared, db));

    // The ended record survives a restart.
    let hub = hub.restart().await;
    let api = hub.api_address.clone().unwrap();
    let (_, ended) = json(&api, "GET", &format!("/rest/v1/alice/tunnels/{web_id}"), alice).await;
    assert_eq!(ended["status"], "terminated");
    assert_eq!(ended["user_shutdown"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_the_public_versions() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();

    let versions = call(&api, "GET", "/rest/v1/public/tunnels/info/versions", None).await;
    assert_eq!(versions.status, 200);
    golden("versions.json", &serde_json::from_str(&versions.body).unwrap());
    let all = call(&api, "GET", "/rest/v1/public/tunnels/info/versions?all=true", None).await;
    let all: Value = serde_json::from_str(&all.body).unwrap();
    assert!(all["all_downloads"][env!("CARGO_PKG_VERSION")].is_object(), "{all}");

    let anonymous = call(&api, "GET", "/rest/v1/alice/tunnels", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.headers.get("www-authenticate").map(String::as_str),
        Some("Basic realm=\"burrow\"")
    );
    let body: Value = serde_json::from_str(&anonymous.body).unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(
        call(&api, "GET", "/rest/v1/alice/tunnels", Some("alice:alice-key"))
            .await
            .status,
        200
    );
    // The same API on the main port, by the hub's own name over HTTPS.
    common::require_tool("curl", "curl");
    let port = hub.addr.rsplit(':').next().unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &hub.ca(), "-u", "bob:bob-key"])
        .arg(format!("https://localhost:{port}/rest/v1/bob/tunnels"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]", "{out:?}");
    // Ten wrong keys from one address, then 429 with Retry-After even for the right one.
    for _ in 0..10 {
        assert_eq!(
            call(&api, "GET", "/rest/v1/alice/tunnels", Some("alice:wrong"))
                .await
                .status,
            401
        );
    }
    let limited = call(&api, "GET", "/rest/v1/alice/tunnels", Some("alice:alice-key")).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited.headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(!hub.proc.stderr_text().contains("wrong"), "keys never reach the log");
}

/// `burrow tunnels ...` with alice's credentials against `hub`.
fn tunnels(hub: &TestHub, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"));
    command.arg("tunnels").args(args);
    command.args(["--hub", &hub.addr, "-u", "alice", "-k", "alice-key", "--ca", &hub.ca()]);
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnels_command_is_a_client_of_the_api() {
    let hub = TestHub::start(&[]).await;
    let target = common::echo_server().await;
    let mut web = hub.expose("quic", "alice", &target, &["--name", "web", "--protocol", "tcp"]);
    let id = str_of(&web.ready().await, "tunnel_id");
    let text = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();

    let list = tunnels(&hub, &["list"]);
    assert!(list.status.success(), "{list:?}");
    let lines: Vec<String> = text(&list).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("STATUS"));
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row, [id.as_str(), "web", "tcp", "running", "false"]);

    let listed: Value = serde_json::from_str(&text(&tunnels(&hub, &["list", "--json"]))).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    let get = text(&tunnels(&hub, &["get", "web"]));
    assert!(
        get.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tunnel_identifier", "web"]),
        "{get}"
    );
    let jobs: Value = serde_json::from_str(&text(&tunnels(&hub, &["jobs", &id, "--json"]))).unwrap();
    assert_eq!(jobs, serde_json::json!({"id": id, "jobs_running": 0}));

    let missing = tunnels(&hub, &["get", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no running tunnel named nope"));
    let mut wrong = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"));
    wrong.args([
        "tunnels",
        "list",
        "--hub",
        &hub.addr,
        "-u",
        "alice",
        "-k",
        "wrong",
        "--ca",
        &hub.ca(),
    ]);
    assert_eq!(wrong.output().unwrap().status.code(), Some(2));

    let stop = tunnels(&hub, &["stop", "web"]);
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(
        text(&stop).trim(),
        format!("stopped tunnel {id} (0 connections were open)")
    );
    assert_eq!(web.exit_status(WAIT).await.code(), Some(0));
    assert_eq!(
        text(&tunnels(&hub, &["list"])).lines().count(),
        1,
        "only the header is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnels_api_lists_reads_and_stops_the_callers_tunnels() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let (alice, bob) = ("alice:alice-key", "bob:bob-key");
    let target = common::echo_server().await;
    let mut web = hub.expose(
        "quic",
        "alice",
        &target,
        &[
            "--name",
            "web",
            "--public",
            "--protocol",
            "http",
            "--metadata",
            "team=qa",
        ],
    );
    let ready = web.ready().await;
    let id = str_of(&ready, "tunnel_id");
    let mut db = hub.expose("quic", "bob", &target, &["--name", "db"]);
    let db_id = str_of(&db.ready().await, "tunnel_id");

    let (status, listed) = json(&api, "GET", "/api/v1/tunnels", alice).await;
    assert_eq!(status, 200);
    golden("api-tunnels.json", &listed);
    let tunnel = &listed["tunnels"][0];
    assert_eq!(tunnel["publicAddress"], ready["public_address"]);
    assert_eq!(tunnel["url"], ready["url"]);
    assert_eq!(tunnel["agentIds"], serde_json::json!([ready["agent_id"]]));
    assert!(tunnel["createdAt"].as_str().unwrap().ends_with('Z'));
    let (status, one) = json(&api, "GET", &format!("/api/v1/tunnels/{id}"), alice).await;
    assert_eq!((status, &one), (200, tunnel));

    // Bob sees only his own; alice's tunnel is not found for him, to read or to stop.
    let (_, bobs) = json(&api, "GET", "/api/v1/tunnels", bob).await;
    assert_eq!(bobs["tunnels"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["tunnels"][0]["id"], db_id.as_str());
    for method in ["GET", "DELETE"] {
        let (status, body) = json(&api, method, &format!("/api/v1/tunnels/{id}"), bob).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{method}");
    }

    let stopped = call(&api, "DELETE", &format!("/api/v1/tunnels/{id}"), Some(alice)).await;
    assert_eq!(stopped.status, 204);
    assert_eq!(web.exit_status(WAIT).await.code(), Some(0));
    assert_eq!(json(&api, "GET", &format!("/api/v1/tunnels/{id}"), alice).await.0, 404);
    let (_, listed) = json(&api, "GET", "/api/v1/tunnels", alice).await;
    assert_eq!(listed, serde_json::json!({"tunnels": []}));
    drop(db);

    // The document: OpenAPI 3.1, every route, no credentials needed.
    let document = call(&api, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(document.status, 200);
    let document: Value = serde_json::from_str(&document.body).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{document}");
    assert!(document["paths"]["/api/v1/tunnels"]["get"].is_object());
    assert!(document["paths"]["/api/v1/tunnels/{id}"]["delete"].is_object());
    assert!(document["paths"]["/api/v1/tunnels/{id}/shares"]["post"].is_object());
    assert!(document["paths"]["/api/v1/shares/{id}"]["delete"].is_object());
    assert!(document["components"]["schemas"]["ApiTunnel"]["properties"]["connectionString"].is_object());
    assert_eq!(document["components"]["securitySchemes"]["basic"]["scheme"], "basic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_tunnel_is_served_by_the_named_agent() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let (alice, bob) = ("alice:alice-key", "bob:bob-key");
    let (web, db) = (
        common::tag_server("served by web").await,
        common::tag_server("served by db").await,
    );
    let mut expose = hub.expose("quic", "alice", &web, &["--name", "web"]);
    let ready = expose.ready().await;
    let agent = str_of(&ready, "agent_id");

    // The agent in the list, with what it serves.
    let (status, agents) = json(&api, "GET", "/api/v1/agents", alice).await;
    assert_eq!(status, 200);
    let listed = &agents["agents"][0];
    assert_eq!(listed["id"], agent.as_str());
    assert_eq!(
        (listed["role"].as_str(), listed["transport"].as_str()),
        (Some("expose"), Some("quic"))
    );
    assert_eq!(listed["version"], env!("CARGO_PKG_VERSION"));
    assert!(!listed["hostname"].as_str().unwrap().is_empty());
    assert_eq!(listed["tunnels"], serde_json::json!([ready["tunnel_id"]]));
    assert_eq!(
        json(&api, "GET", "/api/v1/agents", bob).await.1,
        serde_json::json!({"agents": []})
    );

    // POST: the agent serves the new tunnel over its existing connection.
    let body = format!(r#"{{"target": "{db}", "agentId": "{agent}", "name": "db", "protocol": "tcp"}}"#);
    let created = send(&api, "POST", "/api/v1/tunnels", Some(alice), &body).await;
    assert_eq!(created.status, 201, "{created:?}");
    let tunnel: Value = serde_json::from_str(&created.body).unwrap();
    assert_eq!(
        (tunnel["name"].as_str(), tunnel["protocol"].as_str()),
        (Some("db"), Some("tcp"))
    );
    assert_eq!(tunnel["agentIds"], serde_json::json!([agent]));
    let mut reach = hub.reach("quic", "alice", "db", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    assert_eq!(common::round_trip(&local, b"").await, b"served by db");
    // `/info` counts agents of both roles, and tunnels with an agent now.
    let info: Value = serde_json::from_str(&call(&api, "GET", "/info", None).await.body).unwrap();
    assert_eq!(
        (info["agents"].as_u64(), info["tunnels"].as_u64()),
        (Some(2), Some(2)),
        "{info}"
    );

    // Errors: the same name (409), someone else's agent (404), bad JSON (400), bad values (422).
    let again = send(&api, "POST", "/api/v1/tunnels", Some(alice), &body).await;
    assert_eq!(again.status, 409, "{again:?}");
    let theirs = send(
        &api,
        "POST",
        "/api/v1/tunnels",
        Some(bob),
        &body.replace("\"db\"", "\"mine\""),
    )
    .await;
    assert_eq!(theirs.status, 404, "{theirs:?}");
    for (bad, status) in [
        ("{", 400),
        (r#"{"target": 5432, "agentId": "x"}"#, 400),
        (
            &body.replace("\"tcp\"", "\"ftp\"").replace("\"db\"", "\"db2\"") as &str,
            422,
        ),
        (&body.replace("\"db\"", "\"Not A Name\"") as &str, 422),
        (&body.replace(&db, "no-port").replace("\"db\"", "\"db3\"") as &str, 422),
    ] {
        let answer = send(&api, "POST", "/api/v1/tunnels", Some(alice), bad).await;
        assert_eq!(answer.status, status, "{bad}: {answer:?}");
        let error: Value = serde_json::from_str(&answer.body).unwrap();
        assert!(error["error"].is_string() && error["code"].is_string(), "{error}");
    }
    drop(reach);
}

/// The tunnel at `path` once an agent serves it again (after a hub restart), waiting a
/// bounded time; as it last read if none came back.
async fn once_served(api: &str, path: &str, auth: &str) -> Value {
    let mut tunnel = Value::Null;
    for _ in 0..200 {
        tunnel = json(api, "GET", path, auth).await.1;
        if tunnel["agentIds"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tunnel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tunnel_keeps_its_connections_and_refuses_new_ones() {
    use tokio::io::AsyncReadExt;
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let alice = "alice:alice-key";
    let target = common::echo_server().await;
    let mut web = hub.expose("quic", "alice", &target, &["--name", "web"]);
    let id = str_of(&web.ready().await, "tunnel_id");
    let mut reach = hub.reach("quic", "alice", "web", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    let mut running = tokio::net::TcpStream::connect(&local).await.unwrap();
    running.write_all(b"one").await.unwrap();
    let mut echoed = [0u8; 3];
    running.read_exact(&mut echoed).await.unwrap();

    let path = format!("/api/v1/tunnels/{id}");
    let paused = send(
        &api,
        "PATCH",
        &path,
        Some(alice),
        r#"{"status": "paused", "metadata": {"why": "deploy"}}"#,
    )
    .await;
    assert_eq!(paused.status, 200, "{paused:?}");
    let tunnel: Value = serde_json::from_str(&paused.body).unwrap();
    assert_eq!(
        (tunnel["status"].as_str(), &tunnel["metadata"]),
        (Some("paused"), &serde_json::json!({"why": "deploy"}))
    );
    let (_, sauce) = json(&api, "GET", &format!("/rest/v1/alice/tunnels/{id}"), alice).await;
    assert_eq!(
        (sauce["status"].as_str(), sauce["is_ready"].as_bool()),
        (Some("running"), Some(false))
    );

    // The running connection goes on; a new one is closed without a byte.
    running.write_all(b"two").await.unwrap();
    running.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"two");
    let refused = common::try_round_trip(&local, b"new").await.unwrap_or_default();
    assert!(refused.is_empty(), "a paused tunnel carried {refused:?}");

    // Paused it stays across a hub restart, for the agent that comes back.
    drop(running);
    let hub = hub.stop_and_restart(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    // The agent comes back on its own after the hub's goodbye; wait (bounded) until it has.
    let tunnel = once_served(&api, &path, alice).await;
    assert_eq!(tunnel["status"], "paused", "{tunnel}");
    let refused = common::try_round_trip(&local, b"new").await.unwrap_or_default();
    assert!(
        refused.is_empty(),
        "a paused tunnel carried {refused:?} after a restart"
    );

    let resumed = send(&api, "PATCH", &path, Some(alice), r#"{"status": "active"}"#).await;
    assert_eq!(resumed.status, 200);
    assert_eq!(common::round_trip(&local, b"again").await, b"again");

    for (bad, status) in [
        (r#"{"status": "stopped"}"#, 422),
        (r#"{"colour": "red"}"#, 400),
        ("[", 400),
    ] {
        assert_eq!(
            send(&api, "PATCH", &path, Some(alice), bad).await.status,
            status,
            "{bad}"
        );
    }
    assert_eq!(
        send(&api, "PATCH", &path, Some("bob:bob-key"), r#"{"status": "paused"}"#)
            .await
            .status,
        404
    );
    drop(reach);
    web.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_tunnel_moves_its_route_and_keeps_its_name_across_reconnects() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let (alice, bob) = ("alice:alice-key", "bob:bob-key");
    let target = common::tag_server("renamed").await;
    let mut web = hub.expose(
        "quic",
        "alice",
        &target,
        &["--name", "web", "--public", "--protocol", "tcp"],
    );
    let id = str_of(&web.ready().await, "tunnel_id");
    let mut db = hub.expose("quic", "alice", &target, &["--name", "db"]);
    db.ready().await;
    let path = format!("/api/v1/tunnels/{id}");

    let renamed = send(&api, "PATCH", &path, Some(alice), r#"{"name": "site"}"#).await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    let tunnel: Value = serde_json::from_str(&renamed.body).unwrap();
    assert_eq!(
        (tunnel["name"].as_str(), tunnel["id"].as_str()),
        (Some("site"), Some(id.as_str()))
    );
    let (_, sauce) = json(&api, "GET", &format!("/rest/v1/alice/tunnels/{id}"), alice).await;
    assert_eq!(sauce["tunnel_identifier"], "site");

    // Reached by the new name; the old one is free.
    let mut reach = hub.reach("quic", "alice", "site", &[]);
    let local = str_of(&reach.ready().await, "local_address");
    assert_eq!(common::round_trip(&local, b"").await, b"renamed");
    let mut gone = hub.reach("quic", "alice", "web", &[]);
    assert_eq!(gone.exit_status(WAIT).await.code(), Some(2));

    for (bad, status) in [
        (r#"{"name": "db"}"#, 409),
        (r#"{"name": "Not_A_Name"}"#, 422),
        (r#"{"name": ""}"#, 422),
    ] {
        let answer = send(&api, "PATCH", &path, Some(alice), bad).await;
        assert_eq!(answer.status, status, "{bad}: {answer:?}");
    }
    assert_eq!(
        send(&api, "PATCH", &path, Some(bob), r#"{"name": "x"}"#).await.status,
        404
    );

    // The agent learned the name: after a hub restart it takes the same tunnel back by it.
    drop(reach);
    let hub = hub.stop_and_restart(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let tunnel = once_served(&api, &path, alice).await;
    assert_eq!(
        (tunnel["name"].as_str(), tunnel["status"].as_str()),
        (Some("site"), Some("active")),
        "{tunnel}"
    );
    let (_, listed) = json(&api, "GET", "/api/v1/tunnels", alice).await;
    let mut names: Vec<&str> = listed["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["db", "site"], "no tunnel came back under the old name");
    web.kill().await;
    db.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_has_a_reach_agent_listen_for_a_tunnel() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let (alice, bob) = ("alice:alice-key", "bob:bob-key");
    let target = common::tag_server("through connect").await;
    let target_port = target.rsplit_once(':').unwrap().1.to_string();
    let mut db = hub.expose("quic", "alice", &target, &["--name", "db"]);
    let ready = db.ready().await;
    let (id, expose_agent) = (str_of(&ready, "tunnel_id"), str_of(&ready, "agent_id"));
    let mut other = hub.expose("quic", "alice", &target, &["--name", "other"]);
    other.ready().await;
    let reach_agent = "6f1c2a3b-4d5e-4f60-8172-93a4b5c6d7e8";
    let mut reach = hub.reach("tls", "alice", "other", &["--agent-id", reach_agent]);
    reach.ready().await;
    let path = format!("/api/v1/tunnels/{id}/connect");

    // The target's port is taken on this host (the target itself holds it): any free port.
    let body = format!(r#"{{"agentId": "{reach_agent}"}}"#);
    let answer = send(&api, "POST", &path, Some(alice), &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let connected: Value = serde_json::from_str(&answer.body).unwrap();
    let port = connected["localPort"].as_u64().unwrap();
    assert_eq!(connected["connectionString"], format!("tcp://127.0.0.1:{port}"));
    assert_eq!(
        common::round_trip(&format!("127.0.0.1:{port}"), b"").await,
        b"through connect"
    );

    for (body, status) in [
        (
            format!(r#"{{"agentId": "{reach_agent}", "localPort": {target_port}}}"#),
            409,
        ),
        (format!(r#"{{"agentId": "{reach_agent}", "localPort": 70000}}"#), 422),
        (format!(r#"{{"agentId": "{expose_agent}"}}"#), 422),
        (
            r#"{"agentId": "00000000-0000-4000-8000-000000000000"}"#.to_string(),
            404,
        ),
        (r#"{"agentId": "not-a-uuid"}"#.to_string(), 404),
        (r#"{"localPort": 1}"#.to_string(), 400),
    ] {
        let answer = send(&api, "POST", &path, Some(alice), &body).await;
        assert_eq!(answer.status, status, "{body}: {answer:?}");
    }
    let body = format!(r#"{{"agentId": "{reach_agent}"}}"#);
    assert_eq!(send(&api, "POST", &path, Some(bob), &body).await.status, 404);
    drop(reach);
    db.kill().await;
    other.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_kept() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let (alice, bob) = ("alice:alice-key", "bob:bob-key");
    let (url, mut received) = webhook_receiver().await;
    let body = format!(r#"{{"url": "{url}", "events": ["tunnel.created", "tunnel.status", "tunnel.deleted"]}}"#);
    let created = send(&api, "POST", "/api/v1/webhooks", Some(alice), &body).await;
    assert_eq!(created.status, 201, "{created:?}");
    let webhook: Value = serde_json::from_str(&created.body).unwrap();
    let secret = webhook["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32);
    for (bad, status) in [
        (r#"{"url": "ftp://x/", "events": ["tunnel.created"]}"#, 422),
        (
            &format!(r#"{{"url": "{url}", "events": ["tunnel.exploded"]}}"#) as &str,
            422,
        ),
        (&format!(r#"{{"url": "{url}", "events": []}}"#) as &str, 422),
        ("[]", 400),
    ] {
        assert_eq!(
            send(&api, "POST", "/api/v1/webhooks", Some(alice), bad).await.status,
            status,
            "{bad}"
        );
    }

    let signed = |delivery: &Answer| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let expected = format!(
            "sha256={}",
            hex::encode(aws_lc_rs::hmac::sign(&key, delivery.body.as_bytes()).as_ref())
        );
        delivery.headers.get("x-burrow-signature") == Some(&expected)
    };

    // tunnel.created: answered 500 first, delivered again (same event id) a second later.
    let target = common::echo_server().await;
    let mut web = hub.expose("quic", "alice", &target, &["--name", "web"]);
    let id = str_of(&web.ready().await, "tunnel_id");
    let (failed, retried) = (next(&mut received).await, next(&mut received).await);
    assert_eq!(failed.body, retried.body, "a retry sends the same event");
    assert!(signed(&retried), "{retried:?}");
    assert_eq!(retried.headers["content-type"], "application/json");
    let event: Value = serde_json::from_str(&retried.body).unwrap();
    assert_eq!(
        (event["event"].as_str(), event["data"]["id"].as_str()),
        (Some("tunnel.created"), Some(id.as_str()))
    );
    assert!(event["id"].is_string() && event["timestamp"].as_str().unwrap().ends_with('Z'));

    // Bob's tunnels are not alice's events; pausing and deleting alice's are.
    let mut db = hub.expose("quic", "bob", &target, &["--name", "db"]);
    db.ready().await;
    let path = format!("/api/v1/tunnels/{id}");
    assert_eq!(
        send(&api, "PATCH", &path, Some(alice), r#"{"status": "paused"}"#)
            .await
            .status,
        200
    );
    let status: Value = serde_json::from_str(&next(&mut received).await.body).unwrap();
    assert_eq!(
        (status["event"].as_str(), status["data"]["status"].as_str()),
        (Some("tunnel.status"), Some("paused"))
    );
    assert_eq!(call(&api, "DELETE", &path, Some(alice)).await.status, 204);
    let deleted = next(&mut received).await;
    assert!(signed(&deleted));
    let deleted: Value = serde_json::from_str(&deleted.body).unwrap();
    assert_eq!(
        (deleted["event"].as_str(), deleted["data"]["id"].as_str()),
        (Some("tunnel.deleted"), Some(id.as_str()))
    );
    web.exit_status(WAIT).await;
    drop(db);

    // Listed without the secret, to its owner only; kept across a restart; removable once.
    let hub = hub.restart().await;
    let api = hub.api_address.clone().unwrap();
    let (_, listed) = json(&api, "GET", "/api/v1/webhooks", alice).await;
    assert_eq!(listed["webhooks"][0]["url"], url.as_str());
    assert!(listed["webhooks"][0].get("secret").is_none(), "{listed}");
    assert_eq!(
        json(&api, "GET", "/api/v1/webhooks", bob).await.1,
        serde_json::json!({"webhooks": []})
    );
    let hook = format!("/api/v1/webhooks/{}", webhook["id"].as_str().unwrap());
    assert_eq!(call(&api, "DELETE", &hook, Some(bob)).await.status, 404);
    assert_eq!(call(&api, "DELETE", &hook, Some(alice)).await.status, 204);
    assert_eq!(call(&api, "DELETE", &hook, Some(alice)).await.status, 404);
    assert!(!hub.proc.stderr_text().contains(&secret), "secrets never reach the log");
}
