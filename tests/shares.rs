//! Shares end to end through the binary: every request of a kept-alive connection checked
//! (405, 429 with `Retry-After`, 410 once revoked) before it reaches the target, the same
//! over TLS the hub ends, expiry and persistence across restarts, and `reach --share` for a
//! tcp tunnel with its connections counted.

mod common;

use std::time::Duration;

use common::proxies::{origin, read_answer, read_pipelined, Answer};
use common::rest::{call, json, next, send, webhook_receiver};
use common::{str_of, TestHub};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
const ALICE: &str = "alice:alice-key";
const BOB: &str = "bob:bob-key";

/// `POST /api/v1/tunnels/{tunnel}/shares` as alice; the answer's status and JSON.
async fn make_share(api: &str, tunnel: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/tunnels/{tunnel}/shares");
    let answer = send(api, "POST", &path, Some(ALICE), &body.to_string()).await;
    (answer.status, serde_json::from_str(&answer.body).unwrap_or(Value::Null))
}

/// The `<token>.<domain>:<port>` authority of a share URL.
fn authority(share_url: &str) -> String {
    share_url.split("://").nth(1).unwrap().trim_end_matches('/').to_string()
}

/// One request on a kept-alive connection to the main port.
async fn request(tcp: &mut TcpStream, method: &str, host: &str, path: &str) -> Answer {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    read_answer(tcp).await
}

fn code(answer: &Answer) -> String {
    let body: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    body["code"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_checks_every_request_of_a_kept_alive_connection() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let web = origin("").await;
    let (hook, mut delivered) = webhook_receiver().await;
    let body = serde_json::json!({"url": hook, "events": ["share.created"]}).to_string();
    assert_eq!(
        send(&api, "POST", "/api/v1/webhooks", Some(ALICE), &body).await.status,
        201
    );
    let mut agent = hub.expose("quic", "alice", &web.addr, &["--name", "web", "--protocol", "http"]);
    let tunnel = str_of(&agent.ready().await, "tunnel_id");

    let (status, share) = make_share(
        &api,
        &tunnel,
        serde_json::json!({"name": "review", "expiresIn": "1h", "allowedMethods": ["GET", "head"], "rateLimitPerMin": 3}),
    )
    .await;
    assert_eq!(status, 201, "{share}");
    let url = str_of(&share, "shareUrl");
    let host = authority(&url);
    let token = host.split('.').next().unwrap().to_string();
    assert!(url.starts_with("http://"), "{url}");
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{url}"
    );
    assert_eq!(share["allowedMethods"], serde_json::json!(["GET", "HEAD"]));
    assert_eq!(share["status"], "active");
    assert!(share["expiresAt"].as_str().unwrap().ends_with('Z'));

    // The webhook hears of it (its first delivery is answered 500 and retried).
    let first = next(&mut delivered).await;
    let retried = next(&mut delivered).await;
    assert_eq!(first.body, retried.body);
    let event: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(event["event"], "share.created");
    assert_eq!(event["data"]["id"], share["id"]);
    assert!(!first.body.contains(&token), "the link is not in the event");

    // One connection: allowed, a refused method (not counted), two more, then the limit.
    let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
    let ok = request(&mut tcp, "GET", &host, "/first").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        ok.body.starts_with(&format!("origin GET /first host={host}")),
        "{}",
        ok.body
    );
    let refused = request(&mut tcp, "POST", &host, "/write").await;
    assert_eq!((refused.status, code(&refused).as_str()), (405, "method_not_allowed"));
    assert_eq!(refused.headers.get("allow").map(String::as_str), Some("GET, HEAD"));
    for path in ["/second", "/third"] {
        assert_eq!(request(&mut tcp, "GET", &host, path).await.status, 200);
    }
    let limited = request(&mut tcp, "GET", &host, "/fourth").await;
    assert_eq!((limited.status, code(&limited).as_str()), (429, "rate_limited"));
    let retry: u64 = limited.headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        web.requests.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "refused requests never reach the target"
    );

    // The owner lists it without its link; bob sees nothing of it.
    let path = format!("/api/v1/tunnels/{tunnel}/shares");
    let (status, listed) = json(&api, "GET", &path, ALICE).await;
    assert_eq!(status, 200);
    assert_eq!(listed["shares"].as_array().unwrap().len(), 1);
    assert!(listed["shares"][0].get("shareUrl").is_none());
    assert_eq!(call(&api, "GET", &path, Some(BOB)).await.status, 404);
    let share_id = str_of(&share, "id");
    let revoke = format!("/api/v1/shares/{share_id}");
    assert_eq!(call(&api, "DELETE", &revoke, Some(BOB)).await.status, 404);
    let (status, _) = make_share(
        &api,
        &"0".repeat(32),
        serde_json::json!({"name": "x", "expiresIn": "1h"}),
    )
    .await;
    assert_eq!(status, 404);

    // Revoked: the same kept-alive connection gets 410, and so does a new one.
    assert_eq!(call(&api, "DELETE", &revoke, Some(ALICE)).await.status, 204);
    let gone = request(&mut tcp, "GET", &host, "/after").await;
    assert_eq!((gone.status, code(&gone).as_str()), (410, "revoked"));
    let mut fresh = TcpStream::connect(&hub.addr).await.unwrap();
    assert_eq!(request(&mut fresh, "GET", &host, "/").await.status, 410);
    let (_, listed) = json(&api, "GET", &path, ALICE).await;
    assert_eq!(listed["shares"][0]["status"], "revoked");

    // A token no share has is no tunnel's name either.
    let unknown = format!("{}.localhost", "ab".repeat(16));
    let mut other = TcpStream::connect(&hub.addr).await.unwrap();
    assert_eq!(request(&mut other, "GET", &unknown, "/").await.status, 404);
    assert!(!hub.proc.stderr_text().contains(&token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_is_served_over_tls_and_validated() {
    common::require_tool("curl", "curl");
    // OpenSSL (curl) takes no wildcard directly under a single label such as `localhost`.
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0", "--domain", "burrow.test"]).await;
    let api = hub.api_address.clone().unwrap();
    let web = origin("").await;
    let mut agent = hub.expose("tls", "alice", &web.addr, &["--name", "site"]);
    let tunnel = str_of(&agent.ready().await, "tunnel_id");
    let (status, share) = make_share(&api, &tunnel, serde_json::json!({"name": "open", "expiresIn": "never"})).await;
    assert_eq!(status, 201);
    assert!(share["expiresAt"].is_null());
    let host = authority(&str_of(&share, "shareUrl"));
    let (name, port) = host.split_once(':').unwrap();

    // curl over TLS to the share's name: the hub ends TLS with its *.<domain> certificate.
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", &hub.ca()])
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(["-X", "DELETE", &format!("https://{host}/over-tls")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with(&format!("origin DELETE /over-tls host={host}")),
        "{text} {output:?}"
    );

    // Bad input is 400 or 422 with a JSON error, never a share.
    for (body, expected) in [
        (serde_json::json!({"name": "x", "expiresIn": "2h"}), 422),
        (serde_json::json!({"name": "", "expiresIn": "1h"}), 422),
        (
            serde_json::json!({"name": "x", "expiresIn": "1h", "rateLimitPerMin": 0}),
            422,
        ),
        (
            serde_json::json!({"name": "x", "expiresIn": "1h", "rateLimitPerMin": 1001}),
            422,
        ),
        (
            serde_json::json!({"name": "x", "expiresIn": "1h", "allowedMethods": []}),
            422,
        ),
        (
            serde_json::json!({"name": "x", "expiresIn": "1h", "allowedMethods": ["GE T"]}),
            422,
        ),
        (serde_json::json!({"name": "x"}), 400),
        (serde_json::json!(["x", "1h"]), 400),
    ] {
        let (status, answer) = make_share(&api, &tunnel, body.clone()).await;
        assert_eq!(status, expected, "{body} → {answer}");
        assert!(answer["code"].is_string(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_expires_and_outlives_a_hub_restart() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let web = origin("").await;
    let mut agent = hub.expose("quic", "alice", &web.addr, &["--name", "web"]);
    let tunnel = str_of(&agent.ready().await, "tunnel_id");
    let (_, share) = make_share(&api, &tunnel, serde_json::json!({"name": "day", "expiresIn": "24h"})).await;
    let host = authority(&str_of(&share, "shareUrl"));

    // After a restart (the agent reconnects to its lease), the link still works.
    let hub = hub.stop_and_restart(&["--api-address", "127.0.0.1:0"]).await;
    let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
    let answer = request(&mut tcp, "GET", &host, "/again").await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // A draining hub closes the idle kept-alive visitor instead of waiting out its 30 s
    // drain for it. Then the hub's clock passes the expiry (moved in the store while the
    // hub is down): 410.
    let data = hub.data.path().join("burrow.db");
    let mut hub = hub;
    hub.proc.signal("-TERM");
    assert!(hub.proc.exit_status(WAIT).await.success());
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "the idle visitor was closed: {read:?}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE shares SET expires = 1000")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let hub = hub.restart().await;
    let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
    let expired = request(&mut tcp, "GET", &host, "/late").await;
    assert_eq!((expired.status, code(&expired).as_str()), (410, "expired"));
    let api = hub.api_address.clone().unwrap();
    let (_, listed) = json(&api, "GET", &format!("/api/v1/tunnels/{tunnel}/shares"), ALICE).await;
    assert_eq!(listed["shares"][0]["status"], "expired");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_with_a_share_link_counts_connections() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let echo = common::echo_server().await;
    let mut agent = hub.expose("quic", "alice", &echo, &["--name", "db", "--protocol", "tcp"]);
    let tunnel = str_of(&agent.ready().await, "tunnel_id");

    // `burrow share` prints the link.
    let mut args = vec!["share".to_string(), "db".into(), "--expires".into(), "7d".into()];
    args.extend(["--rate-limit".into(), "2".into()]);
    args.extend(hub.agent_args("quic", "alice").into_iter().filter(|a| a != "--json"));
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(&args)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let url = String::from_utf8(printed.stdout).unwrap().trim().to_string();
    let mut missing = args.clone();
    missing[1] = "nope".into();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
        .args(&missing)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nope"), "{refused:?}");
    assert!(
        url.starts_with("tcp://") && url.ends_with(&format!(".localhost:{}", hub.addr.split(':').nth(1).unwrap())),
        "{url}"
    );

    // No credentials: the link is enough.
    let reach_args = |url: &str| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "reach".into(),
            "--share".into(),
            url.into(),
            "--hub".into(),
            hub.addr.clone(),
        ];
        args.extend([
            "--ca".into(),
            hub.ca(),
            "--json".into(),
            "--log-level".into(),
            "warn".into(),
        ]);
        args
    };
    let mut reach = common::Proc::spawn(&reach_args(&url));
    let local = str_of(&reach.ready().await, "local_address");
    for round in 0..2 {
        let data = format!("round {round}").into_bytes();
        assert_eq!(common::round_trip(&local, &data).await, data);
    }
    let third = common::try_round_trip(&local, b"third").await;
    assert!(
        third.map_or(true, |echoed| echoed.is_empty()),
        "the third connection in a minute is refused"
    );

    // A share that limits methods cannot be used with reach, nor can a revoked one.
    let (_, limited) = make_share(
        &api,
        &tunnel,
        serde_json::json!({"name": "m", "expiresIn": "1h", "allowedMethods": ["GET"]}),
    )
    .await;
    assert_eq!(
        limited["code"], "invalid",
        "methods need an http or auto tunnel: {limited}"
    );
    let (_, other) = make_share(&api, &tunnel, serde_json::json!({"name": "o", "expiresIn": "1h"})).await;
    let revoke = format!("/api/v1/shares/{}", str_of(&other, "id"));
    assert_eq!(call(&api, "DELETE", &revoke, Some(ALICE)).await.status, 204);
    let mut refused = common::Proc::spawn(&reach_args(&str_of(&other, "shareUrl")));
    let status = refused.exit_status(WAIT).await;
    assert_eq!(status.code(), Some(2), "{}", refused.stderr_text());
    assert!(refused.stderr_text().contains("revoked"), "{}", refused.stderr_text());
    let bogus = format!("tcp://{}.localhost:1", "cd".repeat(16));
    let mut refused = common::Proc::spawn(&reach_args(&bogus));
    assert_eq!(refused.exit_status(WAIT).await.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_through_a_share_is_joined_and_its_stream_counted() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let web = origin("").await;
    let mut agent = hub.expose("quic", "alice", &web.addr, &["--name", "ws", "--protocol", "http"]);
    let tunnel = str_of(&agent.ready().await, "tunnel_id");
    let (_, share) = make_share(&api, &tunnel, serde_json::json!({"name": "ws", "expiresIn": "1h"})).await;
    let host = authority(&str_of(&share, "shareUrl"));
    let jobs = || async {
        let (_, one) = json(&api, "GET", &format!("/api/v1/tunnels/{tunnel}"), ALICE).await;
        one["jobsRunning"].as_u64().unwrap()
    };

    // A kept-alive visitor holds one stream to the agent, and lets it go when it leaves.
    let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
    assert_eq!(request(&mut tcp, "GET", &host, "/").await.status, 200);
    assert_eq!(request(&mut tcp, "GET", &host, "/again").await.status, 200);
    assert_eq!(jobs().await, 1);
    let (_, counted) = json(&api, "GET", &format!("/api/v1/tunnels/{tunnel}"), ALICE).await;
    let (bytes_in, bytes_out) = (
        counted["bytesIn"].as_u64().unwrap(),
        counted["bytesOut"].as_u64().unwrap(),
    );
    assert!(
        bytes_in > 2 * 40 && bytes_out > 2 * 40,
        "both requests and answers counted: {counted}"
    );
    drop(tcp);
    let deadline = tokio::time::Instant::now() + WAIT;
    while jobs().await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stream was never let go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An upgrade: 101 from the origin, then bytes both ways.
    let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
    let head = format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let switched = read_answer(&mut tcp).await;
    assert_eq!(switched.status, 101, "{switched:?}");
    tcp.write_all(b"ping through a share").await.unwrap();
    let mut echoed = [0u8; 20];
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through a share");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_ambiguous_ones_refused() {
    let hub = TestHub::start(&["--api-address", "127.0.0.1:0"]).await;
    let api = hub.api_address.clone().unwrap();
    let web = origin("").await;
    let mut agent = hub.expose("quic", "alice", &web.addr, &["--name", "web", "--protocol", "http"]);
    let tunnel = str_of(&agent.ready().await, "tunnel_id");
    let allowed = serde_json::json!({"name": "pipe", "expiresIn": "1h", "allowedMethods": ["GET", "POST"]});
    let (_, share) = make_share(&api, &tunnel, allowed).await;
    let host = authority(&str_of(&share, "shareUrl"));
    let served = || web.requests.load(std::sync::atomic::Ordering::SeqCst);

    // Three requests in one write: the refusal in the middle is answered in its turn.
    let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
    let pipelined = format!(
        "GET /one HTTP/1.1\r\nHost: {host}\r\n\r\nDELETE /two HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /three HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc"
    );
    tcp.write_all(pipelined.as_bytes()).await.unwrap();
    let answers = read_pipelined(&mut tcp, 3).await;
    let (first, second, third) = (&answers[0], &answers[1], &answers[2]);
    assert!(first.body.starts_with("origin GET /one"), "{first:?}");
    assert_eq!((second.status, code(second).as_str()), (405, "method_not_allowed"));
    assert!(
        third.body.starts_with("origin POST /three") && third.body.ends_with("body=abc"),
        "{third:?}"
    );
    assert_eq!(served(), 2);

    // A refused request with a body ends the connection after its answer.
    let refused = format!("DELETE /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc");
    tcp.write_all(refused.as_bytes()).await.unwrap();
    let answer = read_answer(&mut tcp).await;
    assert_eq!(
        (answer.status, answer.headers.get("connection").map(String::as_str)),
        (405, Some("close"))
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed after the refusal: {read:?}");

    // Framing two servers could read differently never reaches the target: a body declared
    // twice (which hides a second request inside the first), or a look-alike header.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let ambiguous = [
        format!("POST /four HTTP/1.1\r\nHost: {host}\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /five HTTP/1.1\r\nHost: {host}\r\nContent_Length: 35\r\n\r\n{smuggled}"),
        format!("POST /six HTTP/1.1\r\nHost: {host}\r\nX: a\nContent-Length: 35\r\n\r\n{smuggled}"),
    ];
    for request in ambiguous {
        let mut tcp = TcpStream::connect(&hub.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut tcp).await;
        assert_eq!(
            (answer.status, code(&answer).as_str()),
            (400, "bad_request"),
            "{request:?}"
        );
    }
    assert_eq!(served(), 2, "no ambiguous request reached the target");
}
