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
    let mut args = vec!["expose".to_string(), "--forward-proxy".into(), "--name".into(), name.into()];
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

    // Keep-alive: a POST and a GET on one client connection.
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(&proxy).await.unwrap();
    let url = format!("http://{}/form", origin.addr);
    tcp.write_all(format!("POST {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello", origin.addr).as_bytes())
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
    tokio::time::timeout(WAIT, ws.read_exact(&mut echoed)).await.unwrap().unwrap();
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
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("origin GET /curl"), "{out:?}");
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
        assert!(answer.body.starts_with(&format!("origin GET /{path}/x")), "{path}: {answer:?}");
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
