//! PAC routing end to end: `expose --forward-proxy` and `reach --http-proxy` (the binary)
//! with an origin and counting upstream proxies on 127.0.0.1.

mod common;

use std::time::Duration;

use common::proxies::{self, connect_and_get, get};
use common::{str_of, Proc, TestHub};

const WAIT: Duration = Duration::from_secs(20);

/// A file holding `pac`, for `--pac`.
fn pac_file(dir: &tempfile::TempDir, pac: &str) -> String {
    let path = dir.path().join("routes.pac");
    std::fs::write(&path, pac).unwrap();
    path.to_str().unwrap().to_string()
}

/// `expose --forward-proxy --name NAME` with `extra`, once ready.
async fn forward_proxy(hub: &TestHub, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "expose".to_string(),
        "--forward-proxy".into(),
        "--name".into(),
        name.into(),
    ];
    args.extend(hub.agent_args("quic", "alice"));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut expose = Proc::spawn(&args);
    expose.ready().await;
    expose
}

/// `reach TUNNEL --http-proxy 127.0.0.1:0` with `extra`; the proxy's address once ready.
async fn local_proxy(hub: &TestHub, tunnel: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--http-proxy", "127.0.0.1:0", "--log-level", "info"];
    args.extend_from_slice(extra);
    let mut reach = hub.reach("quic", "alice", tunnel, &args);
    let ready = reach.ready().await;
    let address = str_of(&ready, "local_address");
    (reach, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pac_everything_goes_through_the_tunnel() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let _expose = forward_proxy(&hub, "office", &[]).await;
    let (_reach, proxy) = local_proxy(&hub, "office", &[]).await;

    let answer = get(&proxy, &format!("http://{}/a?b=1", origin.addr)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, format!("origin GET /a?b=1 host={} body=", origin.addr));
    // Clients come and go; the connection to the origin stays and serves them in turn.
    for n in 0..5 {
        let again = get(&proxy, &format!("http://{}/again/{n}", origin.addr)).await;
        assert_eq!(again.status, 200, "{again:?}");
    }
    assert_eq!(origin.connections.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Keep-alive: a POST and a GET on one client connection.
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    let url = format!("http://{}/form", origin.addr);
    tcp.write_all(
        format!(
            "POST {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello",
            origin.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let first = proxies::read_answer(&mut tcp).await;
    assert!(first.body.ends_with("body=hello"), "{first:?}");
    tcp.write_all(format!("GET {url}2 HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let second = proxies::read_answer(&mut tcp).await;
    assert!(second.body.starts_with("origin GET /form2"), "{second:?}");

    // CONNECT, then HTTP inside the tunnel it made.
    let (connected, through) = connect_and_get(&proxy, &origin.addr, "/inside").await;
    assert_eq!(connected.status, 200);
    assert!(through.unwrap().body.starts_with("origin GET /inside"));

    // An upgrade: 101, then bytes both ways on the same connection.
    use tokio::io::AsyncReadExt;
    let mut ws = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    let upgrade = format!(
        "GET http://{0}/ws HTTP/1.1\r\nHost: {0}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        origin.addr
    );
    ws.write_all(upgrade.as_bytes()).await.unwrap();
    let switched = proxies::read_answer(&mut ws).await;
    assert_eq!(switched.status, 101);
    ws.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    tokio::time::timeout(WAIT, ws.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");

    // A real client: curl through the proxy, plain and with CONNECT.
    common::require_tool("curl", "curl");
    for tunnel_flag in [&[][..], &["--proxytunnel"][..]] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-x", &format!("http://{proxy}")])
            .args(tunnel_flag)
            .arg(format!("http://{}/curl", origin.addr))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("origin GET /curl"),
            "{out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pac_routes_direct_proxy_socks_and_tunnel() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let (http, https, socks) = (
        proxies::http_proxy(None).await,
        proxies::https_proxy(&hub.data.path().join("certs")).await,
        proxies::socks5_proxy().await,
    );
    // The forward proxy's own upstream counts what the tunnel carried.
    let behind_tunnel = proxies::http_proxy(None).await;
    let _expose = forward_proxy(&hub, "office", &["--proxy", &format!("http://{}", behind_tunnel.addr)]).await;
    // CONNECT requests are told apart by their destination: one origin per upstream.
    let (via_http, via_https, via_socks) = (
        proxies::origin("").await,
        proxies::origin("").await,
        proxies::origin("").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let pac = format!(
        r#"function FindProxyForURL(url, host) {{
             if (shExpMatch(url, "*/direct/*")) return "DIRECT";
             if (shExpMatch(url, "*/http/*") || url == "https://{}/") return "PROXY {}";
             if (shExpMatch(url, "*/https/*") || url == "https://{}/") return "HTTPS {}";
             if (shExpMatch(url, "*/socks/*") || url == "https://{}/") return "SOCKS5 {}";
             return "TUNNEL";
           }}"#,
        via_http.addr, http.addr, via_https.addr, https.addr, via_socks.addr, socks.addr
    );
    let (_reach, proxy) = local_proxy(&hub, "office", &["--pac", &pac_file(&dir, &pac)]).await;

    for (path, counter) in [
        ("direct", None),
        ("http", Some(&http)),
        ("https", Some(&https)),
        ("socks", Some(&socks)),
        ("tunnel", Some(&behind_tunnel)),
    ] {
        let before = counter.map(|c| c.count());
        let answer = get(&proxy, &format!("http://{}/{path}/x", origin.addr)).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(
            answer.body.starts_with(&format!("origin GET /{path}/x")),
            "{path}: {answer:?}"
        );
        if let (Some(counter), Some(before)) = (counter, before) {
            assert_eq!(counter.count(), before + 1, "{path} went through its proxy");
        }
    }
    // Nothing but the tunnel's request reached the proxy behind the tunnel.
    assert_eq!(behind_tunnel.count(), 1);
    assert_eq!(http.count() + https.count() + socks.count(), 3);

    // CONNECT through each kind of upstream.
    for (destination, counter) in [(&via_http, &http), (&via_https, &https), (&via_socks, &socks)] {
        let before = counter.count();
        let (connected, through) = connect_and_get(&proxy, &destination.addr, "/c").await;
        assert_eq!(connected.status, 200, "{connected:?}");
        assert!(through.unwrap().body.starts_with("origin GET /c"));
        assert_eq!(counter.count(), before + 1);
    }
    let (connected, through) = connect_and_get(&proxy, &origin.addr, "/c").await;
    assert_eq!(connected.status, 200, "{connected:?}");
    assert!(through.unwrap().body.starts_with("origin GET /c"));
    assert_eq!(behind_tunnel.count(), 2, "CONNECT to https://host:port/ goes TUNNEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_entry_is_skipped_for_its_retry_window() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let _expose = forward_proxy(&hub, "office", &[]).await;
    // The first entry's port has nothing on it until the window has passed.
    let first = proxies::dead_address();
    let dir = tempfile::tempdir().unwrap();
    let pac = format!(r#"function FindProxyForURL(url, host) {{ return "PROXY {first}; DIRECT"; }}"#);
    let (reach, proxy) = local_proxy(&hub, "office", &["--pac", &pac_file(&dir, &pac), "--pac-retry", "1s"]).await;
    let failures = || reach.stderr_text().matches("route failed, trying the next").count();

    for n in 1..=3 {
        let answer = get(&proxy, &format!("http://{}/{n}", origin.addr)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(failures(), 1, "tried once, then skipped: {}", reach.stderr_text());

    // Once its window has passed, the entry is tried again, and now it answers.
    let revived = proxies::http_proxy_at(&first, None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = get(&proxy, &format!("http://{}/after", origin.addr)).await;
    assert!(answer.body.starts_with("origin GET /after"), "{answer:?}");
    assert_eq!(revived.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_lists_come_before_the_pac() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let behind_tunnel = proxies::http_proxy(None).await;
    let upstream = proxies::http_proxy(None).await;
    let _expose = forward_proxy(&hub, "office", &["--proxy", &format!("http://{}", behind_tunnel.addr)]).await;
    let dir = tempfile::tempdir().unwrap();
    // The PAC sends everything to `upstream`; the lists override it by host.
    let pac = format!(
        r#"function FindProxyForURL(url, host) {{ return "PROXY {}"; }}"#,
        upstream.addr
    );
    let (reach, proxy) = local_proxy(
        &hub,
        "office",
        &[
            "--pac",
            &pac_file(&dir, &pac),
            "--deny-domains",
            r".*\.ads\.test,tracker\.test",
            "--direct-domains",
            r"localhost,127\.0\.0",
            "--tunnel-domains",
            r"127\.0\.0\.1",
        ],
    )
    .await;
    let port = origin.addr.rsplit(':').next().unwrap();

    let denied = get(&proxy, "http://x.ads.test/").await;
    assert_eq!(denied.status, 403);
    assert!(denied.error().contains("--deny-domains"), "{denied:?}");
    assert!(reach.stderr_text().contains("x.ads.test is denied"));
    let (refused, _) = connect_and_get(&proxy, "tracker.test:443", "/").await;
    assert_eq!(refused.status, 403);

    let direct = get(&proxy, &format!("http://localhost:{port}/d")).await;
    assert!(direct.body.starts_with("origin GET /d"), "{direct:?}");
    assert_eq!((upstream.count(), behind_tunnel.count()), (0, 0));

    // On the tunnel list, and not on the direct one: `127\.0\.0` matches only whole hosts.
    let tunneled = get(&proxy, &format!("http://127.0.0.1:{port}/t")).await;
    assert!(tunneled.body.starts_with("origin GET /t"), "{tunneled:?}");
    assert_eq!((upstream.count(), behind_tunnel.count()), (0, 1));

    // Neither list names 127.0.0.2 (`127\.0\.0` is anchored), so the PAC decides.
    get(&proxy, &format!("http://127.0.0.2:{port}/p")).await;
    assert_eq!((upstream.count(), behind_tunnel.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pac_fetched_over_http_and_a_looping_one() {
    let hub = TestHub::start(&[]).await;
    let pac = r#"function FindProxyForURL(url, host) {
                   if (host == "loop.test") { while (true) {} }
                   if (host == "throw.test") { throw new Error("no route for " + host); }
                   return "TUNNEL";
                 }"#;
    let origin = proxies::origin(pac).await;
    let _expose = forward_proxy(&hub, "office", &[]).await;
    let pac_url = format!("http://{}/proxy.pac", origin.addr);
    let mut reach = hub.reach(
        "quic",
        "alice",
        "office",
        &[
            "--http-proxy",
            "127.0.0.1:0",
            "--pac",
            &pac_url,
            "--api-address",
            "127.0.0.1:0",
        ],
    );
    let ready = reach.ready().await;
    let proxy = str_of(&ready, "local_address");
    let fetched = origin.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetched, 1, "the PAC was fetched once at start-up");
    // The operational API serves the script in use.
    let served = get(&proxy, &format!("http://{}/pac", str_of(&ready, "api_address"))).await;
    assert_eq!(served.body, pac);
    assert_eq!(served.headers["content-type"], "application/x-ns-proxy-autoconfig");

    let looped = get(&proxy, "http://loop.test/").await;
    assert_eq!(looped.status, 502);
    assert!(looped.error().contains("deadline"), "{looped:?}");
    let threw = get(&proxy, "http://throw.test/").await;
    assert_eq!(threw.status, 502);
    assert!(threw.error().contains("no route for throw.test"), "{threw:?}");
    let served = get(&proxy, &format!("http://{}/after", origin.addr)).await;
    assert_eq!(served.status, 200, "the next request is served: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_a_user_can_act_on() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let guarded = proxies::http_proxy(Some("carol:s3cret")).await;
    let silent = proxies::silent_proxy().await;
    let _expose = forward_proxy(&hub, "office", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let pac = format!(
        r#"function FindProxyForURL(url, host) {{
             if (host == "guarded.test" || url == "https://guarded.test/") return "PROXY {}";
             if (host == "silent.test") return "PROXY {}";
             if (host == "dead.test") return "PROXY {}";
             return "DIRECT";
           }}"#,
        guarded.addr,
        silent.addr,
        proxies::dead_address()
    );
    let (_reach, proxy) = local_proxy(
        &hub,
        "office",
        &["--pac", &pac_file(&dir, &pac), "--proxy-timeout", "1s"],
    )
    .await;

    let auth = get(&proxy, "http://guarded.test/").await;
    assert_eq!(auth.status, 407, "{auth:?}");
    assert_eq!(
        auth.headers.get("proxy-authenticate").map(String::as_str),
        Some("Basic realm=\"test\"")
    );
    assert!(auth.error().contains("requires authentication"), "{auth:?}");
    let (auth_connect, _) = connect_and_get(&proxy, "guarded.test:443", "/").await;
    assert_eq!(auth_connect.status, 407, "{auth_connect:?}");
    assert!(auth_connect.headers.contains_key("proxy-authenticate"));

    let timeout = get(&proxy, "http://silent.test/").await;
    assert_eq!(timeout.status, 504, "{timeout:?}");
    assert!(timeout.error().contains("no answer within"), "{timeout:?}");

    let dial = get(&proxy, "http://dead.test/").await;
    assert_eq!(dial.status, 502, "{dial:?}");
    assert!(dial.error().contains("cannot connect"), "{dial:?}");

    // The exposed proxy's own credentials for its upstream.
    let _creds = forward_proxy(
        &hub,
        "with-creds",
        &["--proxy", &format!("http://carol:s3cret@{}", guarded.addr)],
    )
    .await;
    let (_reach2, proxy2) = local_proxy(&hub, "with-creds", &[]).await;
    let before = guarded.count();
    let answer = get(&proxy2, &format!("http://{}/authed", origin.addr)).await;
    assert!(answer.body.starts_with("origin GET /authed"), "{answer:?}");
    let (connected, through) = connect_and_get(&proxy2, &origin.addr, "/authed-connect").await;
    assert_eq!(connected.status, 200, "{connected:?}");
    assert!(through.unwrap().body.starts_with("origin GET /authed-connect"));
    assert_eq!(guarded.count(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_meeting_a_closing_connection_is_sent_again_and_a_post_is_not() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::stale_origin().await;
    let _expose = forward_proxy(&hub, "office", &[]).await;
    let (_reach, proxy) = local_proxy(&hub, "office", &[]).await;

    // The exposed proxy keeps its connection to the origin for the next request, which the
    // origin then drops: the GET goes again on a new connection and is answered.
    let mut n = 0;
    while origin.dropped().is_empty() {
        assert!(
            n < 20,
            "no request went on a kept-alive connection: {:?}",
            origin.answered()
        );
        let answer = get(&proxy, &format!("http://{}/get/{n}", origin.addr)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, &*format!("answered /get/{n}"))
        );
        n += 1;
    }
    let dropped = origin.dropped();
    assert!(
        dropped[0].starts_with("/get/") && origin.answered().contains(&dropped[0]),
        "{dropped:?}"
    );

    // A POST is never sent twice: the one the origin drops is answered 502, with the cause.
    use tokio::io::AsyncWriteExt;
    for m in 0..20 {
        let path = format!("/post/{m}");
        let mut tcp = tokio::net::TcpStream::connect(&proxy).await.unwrap();
        let head = format!(
            "POST http://{0}{path} HTTP/1.1\r\nHost: {0}\r\nContent-Length: 4\r\n\r\nbody",
            origin.addr
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = proxies::read_answer(&mut tcp).await;
        if !origin.dropped().contains(&path) {
            assert_eq!(answer.status, 200, "{answer:?}");
            continue;
        }
        assert_eq!(answer.status, 502, "{answer:?}");
        assert!(answer.error().starts_with("DIRECT: "), "{answer:?}");
        assert!(!origin.answered().contains(&path), "{:?}", origin.answered());
        return;
    }
    panic!("no POST went on a kept-alive connection: {:?}", origin.answered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_entries_name_other_forward_proxies_and_plain_tunnels_are_refused() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let (a, b) = (proxies::http_proxy(None).await, proxies::http_proxy(None).await);
    let _site_a = forward_proxy(&hub, "site-a", &["--proxy", &format!("http://{}", a.addr)]).await;
    let _site_b = forward_proxy(&hub, "site-b", &["--proxy", &format!("http://{}", b.addr)]).await;
    let dir = tempfile::tempdir().unwrap();
    let pac =
        r#"function FindProxyForURL(url, host) { return shExpMatch(url, "*/b/*") ? "TUNNEL site-b" : "TUNNEL"; }"#;
    let (_reach, proxy) = local_proxy(&hub, "site-a", &["--pac", &pac_file(&dir, pac)]).await;
    get(&proxy, &format!("http://{}/a/1", origin.addr)).await;
    get(&proxy, &format!("http://{}/b/1", origin.addr)).await;
    get(&proxy, &format!("http://{}/b/2", origin.addr)).await;
    assert_eq!((a.count(), b.count()), (1, 2));

    // A tunnel that is not a forward proxy: exit 2 at start-up with the reason.
    let mut plain = hub.expose("quic", "alice", &origin.addr, &["--name", "plain"]);
    plain.ready().await;
    let mut refused = hub.reach("quic", "alice", "plain", &["--http-proxy", "127.0.0.1:0"]);
    assert_eq!(refused.exit_status(WAIT).await.code(), Some(2));
    assert!(
        refused.stderr_text().contains("not a forward proxy"),
        "{}",
        refused.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposed_proxy_routes_by_its_own_pac_and_lists() {
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let inner = proxies::socks5_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let pac = format!(
        r#"function FindProxyForURL(url, host) {{ return shExpMatch(url, "*/inner/*") ? "SOCKS5 {}" : "DIRECT"; }}"#,
        inner.addr
    );
    let _expose = forward_proxy(
        &hub,
        "office",
        &["--pac", &pac_file(&dir, &pac), "--deny-domains", r"secret\.test"],
    )
    .await;
    let (_reach, proxy) = local_proxy(&hub, "office", &[]).await;
    let direct = get(&proxy, &format!("http://{}/plain/1", origin.addr)).await;
    assert!(direct.body.starts_with("origin GET /plain/1"), "{direct:?}");
    assert_eq!(inner.count(), 0);
    let via_inner = get(&proxy, &format!("http://{}/inner/1", origin.addr)).await;
    assert!(via_inner.body.starts_with("origin GET /inner/1"), "{via_inner:?}");
    assert_eq!(inner.count(), 1);
    // The exposed proxy's refusal reaches the client through the tunnel as it was.
    let denied = get(&proxy, "http://secret.test/").await;
    assert_eq!(denied.status, 403);
    assert!(denied.error().contains("secret.test is denied"), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_an_answer_or_a_close_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = TestHub::start(&[]).await;
    let origin = proxies::origin("").await;
    let _expose = forward_proxy(&hub, "office", &[]).await;
    let (_reach, proxy) = local_proxy(&hub, "office", &[]).await;

    // A head larger than the proxy buffers: 431, and the connection ends.
    let mut huge = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    let request = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        origin.addr,
        "a".repeat(200 << 10)
    );
    let _ = huge.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, huge.read_to_end(&mut answer)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Garbage: 400 and a close.
    let mut garbage = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\x05hello\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, garbage.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Origin-form (not a proxy request): 400 naming why.
    let mut tcp = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    tcp.write_all(b"GET /only-a-path HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let not_proxy = proxies::read_answer(&mut tcp).await;
    assert_eq!(not_proxy.status, 400);
    assert!(not_proxy.error().contains("absolute"), "{not_proxy:?}");

    // A client that sends half a head and stalls holds its own connection only.
    let mut slow = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    slow.write_all(b"GET http://x/ HTTP/1.1\r\nHo").await.unwrap();
    let served = get(&proxy, &format!("http://{}/meanwhile", origin.addr)).await;
    assert_eq!(served.status, 200);
    drop(slow);
}
