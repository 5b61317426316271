//! One port for everything: protocol detection on the main port and on public ports, PROXY
//! protocol in (from trusted proxies) and out (`--proxy-protocol`), the public-name
//! namespace, and the per-source budget of connections in detection. Hub and agents run
//! in-process so the tests can read the per-tunnel counters; visitors are curl, rustls and
//! raw sockets.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use burrow::agent::AgentConfig;
use burrow::hub::Hub;
use burrow::shutdown::Shutdown;
use burrow::sniff::proxy::{self, ProxyStart, ProxyVersion};
use burrow::sniff::Detected;
use burrow::types::{AgentId, Protocol, Secret, TransportKind};
use burrow::wire::{TunnelInfo, TunnelSpec};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

/// A trusted proxy's address, and an address that is not trusted.
const TRUSTED: &str = "127.0.0.2";
const STRANGER: &str = "127.0.0.3";

async fn hub(configure: impl FnOnce(&mut burrow::hub::HubConfig)) -> (Hub, tempfile::TempDir) {
    let (mut config, data) = in_process_hub(&["alice", "bob"], Some(26000));
    config.trusted_proxies = vec![TRUSTED.parse().unwrap()];
    configure(&mut config);
    (Hub::start(config).await.unwrap(), data)
}

/// Exposes `spec` for `user` from an in-process agent over QUIC; returns what the hub said.
async fn expose(hub: &Hub, data: &tempfile::TempDir, user: &str, spec: TunnelSpec) -> TunnelInfo {
    let ca = data.path().join("certs").join(burrow::tls::CA_CERT);
    let config = AgentConfig {
        hub: hub.listen.to_string(),
        user: user.parse().unwrap(),
        access_key: Secret::new(format!("{user}-key")),
        share: None,
        agent_id: AgentId::random(),
        transport: TransportKind::Quic,
        tls: Some(burrow::tls::client_config(Some(&ca)).unwrap()),
        shutdown_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(10),
        udp: Default::default(),
        udp_stats: Default::default(),
        link: Default::default(),
        forward_proxy: None,
        lanes: 0,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        let result = burrow::agent::expose::run(
            config,
            spec,
            Shutdown::new(),
            move |up: burrow::agent::SessionUp<'_>| {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(up.info.clone());
                }
            },
        )
        .await;
        if let Err(e) = result {
            eprintln!("expose ended: {e}");
        }
    });
    tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("tunnel ready")
        .expect("agent running")
}

fn public_spec(name: &str, protocol: Protocol, target: &str) -> TunnelSpec {
    TunnelSpec {
        name: Some(name.parse().unwrap()),
        protocol,
        public: true,
        ..TunnelSpec::tcp(target)
    }
}

/// `curl` with `args`, its stdout, and its stderr when it fails.
async fn curl(args: &[&str]) -> Result<String, String> {
    require_tool("curl", "curl");
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl finished")
    .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An HTTP/1.1 server answering every request with `tag` and the request path, keeping the
/// connection alive; a WebSocket upgrade is answered with 101 and the connection then echoes.
async fn http_server(tag: &'static str) -> String {
    spawn_target(move |mut stream| async move {
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            buf.drain(..head_end);
            if head.contains("upgrade: websocket") {
                let response = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                                sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&buf).await;
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                return;
            }
            let body = format!("{tag} {path}\n");
            let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}

/// Two http tunnels on the main port by `Host`, with keep-alive, and a WebSocket upgrade
/// through one of them; an unknown name gets the hub's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tunnels_are_routed_by_host_with_keep_alive_and_websockets() {
    let (hub, data) = hub(|_| {}).await;
    let port = hub.listen.port();
    let (web, api) = (http_server("web").await, http_server("api").await);
    let web_info = expose(&hub, &data, "alice", public_spec("web", Protocol::Http, &web)).await;
    expose(&hub, &data, "bob", public_spec("api", Protocol::Auto, &api)).await;
    let resolve = |name: &str| format!("{name}.localhost:{port}:127.0.0.1");
    let (web_resolve, api_resolve) = (resolve("web"), resolve("api"));
    let web_url = |path: &str| format!("http://web.localhost:{port}{path}");
    let api_url = format!("http://api.localhost:{port}/x");
    let both = curl(&["--resolve", &web_resolve, &web_url("/one"), &web_url("/two")])
        .await
        .unwrap();
    assert_eq!(
        both, "web /one\nweb /two\n",
        "two requests on one kept-alive connection"
    );
    assert_eq!(curl(&["--resolve", &api_resolve, &api_url]).await.unwrap(), "api /x\n");
    let tunnel = hub.registry().get(web_info.id).unwrap();
    assert_eq!(
        tunnel.connections.get(Detected::Http),
        1,
        "curl kept one connection alive"
    );

    let (nobody, nobody_url) = (resolve("nobody"), format!("http://nobody.localhost:{port}/"));
    let unknown = curl(&["--resolve", &nobody, &nobody_url, "-w", "%{http_code}"]).await;
    assert!(unknown.unwrap().ends_with("404"));

    let mut ws = TcpStream::connect(hub.listen).await.unwrap();
    let upgrade = "GET /chat HTTP/1.1\r\nHost: web.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    ws.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, ws.read(&mut head)).await.unwrap().unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // A masked text frame "hi", as a browser sends it, comes back byte for byte.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    ws.write_all(&frame).await.unwrap();
    let mut back = [0u8; 8];
    tokio::time::timeout(WAIT, ws.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, frame);
}

/// A TLS service with a certificate of its own for `host`, signed by a CA of its own:
/// answers each connection's request with `tag`. Returns the address and the CA's path.
async fn tls_server(tag: &'static str, host: &str, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    burrow::tls::generate_certs(dir, &[host.to_string()]).unwrap();
    let certs = burrow::tls::load_certs(&dir.join(burrow::tls::SERVER_CERT)).unwrap();
    let key = burrow::tls::load_key(&dir.join(burrow::tls::SERVER_KEY)).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let addr = spawn_target(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut head = [0u8; 1024];
            if tls.read(&mut head).await.is_err() {
                return;
            }
            let body = format!("{tag}\n");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (addr, dir.join(burrow::tls::CA_CERT))
}

/// An https tunnel is routed by SNI and its TLS passes through untouched: curl verifies the
/// service's own certificate with the service's CA. A name no tunnel serves gets the TLS
/// alert `unrecognized_name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_tunnels_pass_tls_through_and_unknown_names_get_an_alert() {
    let (hub, data) = hub(|_| {}).await;
    let port = hub.listen.port();
    let service_dir = tempfile::tempdir().unwrap();
    let (service, service_ca) = tls_server("secure service", "secure.localhost", service_dir.path()).await;
    let info = expose(&hub, &data, "alice", public_spec("secure", Protocol::Https, &service)).await;
    let resolve = format!("secure.localhost:{port}:127.0.0.1");
    let url = format!("https://secure.localhost:{port}/");
    let body = curl(&["--cacert", service_ca.to_str().unwrap(), "--resolve", &resolve, &url]).await;
    assert_eq!(body.unwrap(), "secure service\n");
    // The hub's own CA does not sign the service's certificate: the hub did not terminate TLS.
    let hub_ca = data.path().join("certs").join(burrow::tls::CA_CERT);
    assert!(
        curl(&["--cacert", hub_ca.to_str().unwrap(), "--resolve", &resolve, &url])
            .await
            .is_err()
    );
    // Its public port, too, passes TLS through.
    let public = format!("secure.localhost:{}:127.0.0.1", info.hub_port.unwrap());
    let url = format!("https://secure.localhost:{}/", info.hub_port.unwrap());
    assert_eq!(
        curl(&["--cacert", service_ca.to_str().unwrap(), "--resolve", &public, &url])
            .await
            .unwrap(),
        "secure service\n"
    );
    let tunnel = hub.registry().get(info.id).unwrap();
    assert_eq!(tunnel.connections.get(Detected::Tls), 3);

    let mut roots = rustls::RootCertStore::empty();
    for cert in burrow::tls::load_certs(&hub_ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(hub.listen).await.unwrap();
    let name = "nobody.localhost".try_into().unwrap();
    let err = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap_err();
    let alert = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).cloned();
    assert_eq!(
        alert,
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::UnrecognisedName)),
        "{err}"
    );
}

/// A target for an `auto` tunnel that speaks whatever its visitor does: HTTP requests get
/// an HTTP answer, other bytes are echoed, and a visitor silent for 100 ms gets a greeting
/// first, as MySQL or SMTP servers send.
async fn any_protocol_server() -> String {
    spawn_target(|mut stream| async move {
        let mut first = [0u8; 4096];
        let n = match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut first)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => {
                let _ = stream.write_all(b"220 greeting first\r\n").await;
                0
            }
        };
        if first[..n].starts_with(b"GET ") {
            let body = "http answer\n";
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            return;
        }
        let _ = stream.write_all(&first[..n]).await;
        let (mut r, mut w) = stream.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
}

/// `--protocol auto` on a public port: HTTP, TLS and a server-first protocol in one run,
/// each carried untouched and counted by what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_public_ports_detect_and_count_http_tls_and_server_first_protocols() {
    let (hub, data) = hub(|_| {}).await;
    let target = any_protocol_server().await;
    let info = expose(&hub, &data, "alice", public_spec("mixed", Protocol::Auto, &target)).await;
    let public = format!("127.0.0.1:{}", info.hub_port.unwrap());

    assert_eq!(curl(&[&format!("http://{public}/")]).await.unwrap(), "http answer\n");

    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/client-hellos/curl-h2.bin"
    ))
    .unwrap();
    let mut tls = TcpStream::connect(&public).await.unwrap();
    tls.write_all(&hello).await.unwrap();
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(WAIT, tls.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, hello, "the ClientHello reached the target unchanged");

    let mut silent = TcpStream::connect(&public).await.unwrap();
    let mut greeting = [0u8; 20];
    tokio::time::timeout(WAIT, silent.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"220 greeting first\r\n");
    silent.write_all(b"QUIT\r\n").await.unwrap();
    let mut echo = [0u8; 6];
    tokio::time::timeout(WAIT, silent.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"QUIT\r\n");

    let tunnel = hub.registry().get(info.id).unwrap();
    let counts = Detected::ALL.map(|p| tunnel.connections.get(p));
    assert_eq!(counts, [1, 1, 1], "tls, http, tcp");
}

/// `http` and `https` public ports refuse what they do not carry: a non-HTTP head gets a
/// 400 naming the tunnel, plain HTTP to a TLS service a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_https_ports_refuse_other_protocols() {
    let (hub, data) = hub(|_| {}).await;
    let target = echo_server().await;
    let http = expose(&hub, &data, "alice", public_spec("plain", Protocol::Http, &target)).await;
    let https = expose(&hub, &data, "alice", public_spec("sealed", Protocol::Https, &target)).await;

    let mut garbage = TcpStream::connect(("127.0.0.1", http.hub_port.unwrap())).await.unwrap();
    garbage.write_all(b"HELO example\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, garbage.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("tunnel plain"), "{answer}");

    let mut plain = TcpStream::connect(("127.0.0.1", https.hub_port.unwrap()))
        .await
        .unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut nothing = Vec::new();
    let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut nothing))
        .await
        .unwrap();
    assert!(read.is_err() || nothing.is_empty(), "closed without an answer");
}

/// A target that reads the PROXY header its agent sends first, then one line, and answers
/// `<client> <visited> <line>`.
async fn proxy_reading_server() -> String {
    spawn_target(|mut stream| async move {
        let mut buf = Vec::new();
        let header = loop {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            match proxy::parse(&buf) {
                ProxyStart::NeedMore => continue,
                ProxyStart::Header(header) => break header,
                other => {
                    let _ = stream
                        .write_all(format!("no PROXY header: {other:?}\n").as_bytes())
                        .await;
                    return;
                }
            }
        };
        buf.drain(..header.len);
        while !buf.contains(&b'\n') {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let line = String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == b'\n').unwrap()]).into_owned();
        let (client, visited) = header.addresses.expect("addresses");
        let _ = stream
            .write_all(format!("{client} {visited} {line}\n").as_bytes())
            .await;
    })
}

/// Connects to `to` from the loopback address `from`, sends `bytes`, returns the answer.
async fn exchange_from(from: &str, to: SocketAddr, bytes: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut tcp = tokio::time::timeout(WAIT, socket.connect(to)).await.unwrap().unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// PROXY v1 and v2 headers on a public port and on the main port: a trusted proxy's names
/// the client everywhere after (here: in the v2 header the agent sends its target), anyone
/// else's is data on a public port and a refusal on the main port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_are_believed_only_from_trusted_proxies() {
    let (hub, data) = hub(|_| {}).await;
    let target = proxy_reading_server().await;
    let spec = TunnelSpec {
        proxy_protocol: Some(ProxyVersion::V2),
        ..public_spec("logged", Protocol::Auto, &target)
    };
    let info = expose(&hub, &data, "alice", spec).await;
    let public: SocketAddr = format!("127.0.0.1:{}", info.hub_port.unwrap()).parse().unwrap();
    let client: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let front: SocketAddr = "198.51.100.2:443".parse().unwrap();

    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let mut bytes = proxy::encode(version, Some((client, front)));
        bytes.extend_from_slice(b"hello\n");
        let answer = exchange_from(TRUSTED, public, &bytes).await;
        assert_eq!(
            answer,
            format!("{client} {front} hello\n"),
            "{version:?} from a trusted proxy"
        );

        // A stranger's header is its own data: the target's first line is the header's.
        let answer = exchange_from(STRANGER, public, &bytes).await;
        let first_line = match version {
            ProxyVersion::V1 => "PROXY TCP4 203.0.113.9 198.51.100.2 4000 443\r",
            ProxyVersion::V2 => "\r",
        };
        assert!(
            answer.starts_with(&format!("{STRANGER}:")),
            "{version:?} from a stranger: {answer}"
        );
        assert!(
            answer.ends_with(&format!(" {first_line}\n")),
            "{version:?} from a stranger: {answer:?}"
        );
    }

    // The main port, by Host.
    let request = b"GET /via-main HTTP/1.1\r\nHost: logged.localhost\r\n\r\n";
    let mut bytes = proxy::encode(ProxyVersion::V2, Some((client, front)));
    bytes.extend_from_slice(request);
    let answer = exchange_from(TRUSTED, hub.listen, &bytes).await;
    assert_eq!(answer, format!("{client} {front} GET /via-main HTTP/1.1\r\n"));
    let mut bytes = proxy::encode(ProxyVersion::V1, Some((client, front)));
    bytes.extend_from_slice(request);
    assert_eq!(
        exchange_from(STRANGER, hub.listen, &bytes).await,
        "",
        "refused: closed without an answer"
    );
    // Without a header, a stranger's request is routed as usual, under its own address.
    let answer = exchange_from(STRANGER, hub.listen, request).await;
    assert!(answer.starts_with(STRANGER), "{answer}");
}

/// `--proxy-protocol v1` writes the text header; the visited address is the public port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_names_the_visitor_and_the_public_port() {
    let (hub, data) = hub(|_| {}).await;
    let target = proxy_reading_server().await;
    let spec = TunnelSpec {
        proxy_protocol: Some(ProxyVersion::V1),
        ..public_spec("textual", Protocol::Tcp, &target)
    };
    let info = expose(&hub, &data, "alice", spec).await;
    let public: SocketAddr = format!("127.0.0.1:{}", info.hub_port.unwrap()).parse().unwrap();
    let answer = exchange_from(STRANGER, public, b"hi\n").await;
    let fields: Vec<&str> = answer.split(' ').collect();
    assert!(fields[0].starts_with(&format!("{STRANGER}:")), "{answer}");
    assert_eq!(fields[1], public.to_string(), "{answer}");
    assert_eq!(fields[2], "hi\n");
}

/// A source may have only so many connections in detection; the next is refused at once
/// while others (and other sources) are served, and a freed slot is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_too_many_undetected_connections_is_refused() {
    let (hub, _data) = hub(|config| config.pending_per_source = 2).await;
    let connect_from = |from: &'static str| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(hub.listen).await.unwrap()
    };
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(connect_from("127.0.0.4").await);
    }
    // Whichever the hub accepted last is closed at once; the other two wait for bytes.
    let refused = {
        let reads = silent.iter_mut().enumerate().map(|(i, tcp)| {
            Box::pin(async move {
                let mut buf = [0u8; 16];
                (i, tcp.read(&mut buf).await)
            })
        });
        let ((i, read), _, _) = tokio::time::timeout(WAIT, futures_util::future::select_all(reads))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the refused one is closed without an answer"
        );
        i
    };
    silent.remove(refused);

    let other = exchange_from(
        "127.0.0.5",
        hub.listen,
        b"GET / HTTP/1.1\r\nHost: none.localhost\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 404"), "another source is served: {other}");
    let first = &mut silent[0];
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: none.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, first.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "the waiting ones are served: {answer}"
    );
    drop(silent);
    let again = exchange_from(
        "127.0.0.4",
        hub.listen,
        b"GET / HTTP/1.1\r\nHost: none.localhost\r\n\r\n",
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 404"), "freed slots are used again: {again}");
}

/// Public names are one namespace per hub: bob cannot publish under alice's public name
/// (exit 2 naming the conflict), but may use it for a private tunnel of his own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_name_belongs_to_one_user() {
    let hub = TestHub::start(&[]).await;
    let target = echo_server().await;
    let mut alice = hub.expose("quic", "alice", &target, &["--name", "shop", "--public"]);
    alice.ready().await;
    let mut bob = hub.expose("quic", "bob", &target, &["--name", "shop", "--public"]);
    let status = bob.exit_status(WAIT).await;
    assert_eq!(status.code(), Some(2), "{}", bob.stderr_text());
    let stderr = bob.stderr_text();
    assert!(
        stderr.contains("shop.localhost") && stderr.contains("taken"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let mut bob_private = hub.expose("quic", "bob", &target, &["--name", "shop"]);
    bob_private.ready().await;
}
