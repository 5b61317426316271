//! Peers of a forward proxy on 127.0.0.1: an HTTP origin, one whose connections go stale,
//! counting upstream proxies (HTTP, HTTPS, SOCKS5), a proxy that never answers, and a plain
//! HTTP/1.1 client that goes through a proxy.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(15);

/// Reads an HTTP head (up to its blank line); what came after it is returned too.
async fn read_head<R: AsyncRead + Unpin>(io: &mut R) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads into `body` until it holds `length` bytes; false if the connection ends first.
async fn read_body<R: AsyncRead + Unpin>(io: &mut R, body: &mut Vec<u8>, length: usize) -> bool {
    while body.len() < length {
        let mut more = [0u8; 4096];
        match io.read(&mut more).await {
            Ok(n) if n > 0 => body.extend_from_slice(&more[..n]),
            _ => return false,
        }
    }
    true
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An HTTP/1.1 origin with keep-alive (until a request says `Connection: close`). It answers `origin <METHOD> <target> host=<Host>
/// body=<body>`, `GET /proxy.pac` with `pac`, and an `Upgrade` request with 101, then echoes
/// bytes. Counts requests.
pub struct Origin {
    pub addr: String,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
}

pub async fn origin(pac: &str) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (counted, pac, accepted) = (requests.clone(), pac.to_string(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (counted, pac) = (counted.clone(), pac.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                loop {
                    let read = {
                        let mut io = (&pending[..]).chain(&mut tcp);
                        read_head(&mut io).await
                    };
                    let Some((head, mut rest)) = read else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut words = head.split_whitespace();
                    let (method, target) = (
                        words.next().unwrap_or("").to_string(),
                        words.next().unwrap_or("").to_string(),
                    );
                    let length: usize = header(&head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if !read_body(&mut tcp, &mut rest, length).await {
                        return;
                    }
                    let later = rest.split_off(length);
                    if header(&head, "upgrade").is_some() {
                        let _ = tcp
                            .write_all(
                                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
                            )
                            .await;
                        let _ = tcp.write_all(&later).await;
                        let (mut r, mut w) = tcp.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        return;
                    }
                    let body = if target.ends_with("/proxy.pac") {
                        pac.clone()
                    } else {
                        format!(
                            "origin {method} {target} host={} body={}",
                            header(&head, "host").unwrap_or("-"),
                            String::from_utf8_lossy(&rest)
                        )
                    };
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                        return;
                    }
                    pending = later;
                }
            });
        }
    });
    Origin {
        addr,
        requests,
        connections,
    }
}

/// An origin whose connections go stale after one request, as when a server's keep-alive
/// timeout ends just as the next request arrives: it answers the first request on each
/// connection (`answered <target>`, kept alive), then reads the next one and closes without
/// a word. Lists the targets it answered and those it dropped, in order.
pub struct StaleOrigin {
    pub addr: String,
    answered: Targets,
    dropped: Targets,
}

type Targets = Arc<std::sync::Mutex<Vec<String>>>;

impl StaleOrigin {
    pub fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }

    pub fn dropped(&self) -> Vec<String> {
        self.dropped.lock().unwrap().clone()
    }
}

pub async fn stale_origin() -> StaleOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (answered, dropped): (Targets, Targets) = Default::default();
    let (answers, drops) = (answered.clone(), dropped.clone());
    let target = |head: &str| head.split_whitespace().nth(1).unwrap_or("").to_string();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (answers, drops) = (answers.clone(), drops.clone());
            tokio::spawn(async move {
                let Some((head, mut body)) = read_head(&mut tcp).await else {
                    return;
                };
                let length: usize = header(&head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if !read_body(&mut tcp, &mut body, length).await {
                    return;
                }
                let answer = format!("answered {}", target(&head));
                answers.lock().unwrap().push(target(&head));
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
                if tcp.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                if let Some((next, _)) = read_head(&mut tcp).await {
                    drops.lock().unwrap().push(target(&next));
                }
            });
        }
    });
    StaleOrigin {
        addr,
        answered,
        dropped,
    }
}

/// A counting upstream proxy: CONNECT, and absolute-form requests forwarded with
/// `Connection: close`. With `credentials` (`user:password`), anything else gets 407.
pub struct CountingProxy {
    pub addr: String,
    pub requests: Arc<AtomicU64>,
    /// Where the TLS certificate of an HTTPS proxy was issued, kept alive with it.
    _certs: Option<tempfile::TempDir>,
}

impl CountingProxy {
    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve_proxy<T: AsyncRead + AsyncWrite + Unpin>(
    mut client: T,
    counted: Arc<AtomicU64>,
    credentials: Option<String>,
) {
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    counted.fetch_add(1, Ordering::SeqCst);
    if let Some(expected) = &credentials {
        use base64::Engine;
        let wanted = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(expected));
        if header(&head, "proxy-authorization") != Some(wanted.as_str()) {
            let _ = client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
    }
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method == "CONNECT" {
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            let _ = client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        let _ = upstream.write_all(&rest).await;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    let Some(after_scheme) = target.strip_prefix("http://") else {
        return;
    };
    let (authority, path) = after_scheme.split_at(after_scheme.find('/').unwrap_or(after_scheme.len()));
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let Ok(mut upstream) = TcpStream::connect(&authority).await else {
        return;
    };
    let mut forwarded = format!("{method} {} HTTP/1.1\r\n", if path.is_empty() { "/" } else { path });
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !name.starts_with("proxy-") && name != "connection" {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let _ = upstream.write_all(forwarded.as_bytes()).await;
    let _ = upstream.write_all(&rest).await;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

pub async fn http_proxy(credentials: Option<&str>) -> CountingProxy {
    http_proxy_at("127.0.0.1:0", credentials).await
}

/// The counting proxy on a given address.
pub async fn http_proxy_at(address: &str, credentials: Option<&str>) -> CountingProxy {
    let listener = TcpListener::bind(address).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let (counted, credentials) = (requests.clone(), credentials.map(str::to_string));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_proxy(tcp, counted.clone(), credentials.clone()));
        }
    });
    CountingProxy {
        addr,
        requests,
        _certs: None,
    }
}

/// The counting proxy behind TLS, with a certificate for 127.0.0.1 issued by the CA in
/// `ca_dir` (its `ca.pem` and `ca.key`).
pub async fn https_proxy(ca_dir: &std::path::Path) -> CountingProxy {
    let certs = tempfile::tempdir().unwrap();
    for file in [burrow::tls::CA_CERT, burrow::tls::CA_KEY] {
        std::fs::copy(ca_dir.join(file), certs.path().join(file)).unwrap();
    }
    burrow::tls::issue_server_cert(certs.path(), &["127.0.0.1".to_string()]).unwrap();
    let config = burrow::tls::https_server_config(
        &certs.path().join(burrow::tls::SERVER_CERT),
        &certs.path().join(burrow::tls::SERVER_KEY),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_proxy(tls, counted, None).await;
                }
            });
        }
    });
    CountingProxy {
        addr,
        requests,
        _certs: Some(certs),
    }
}

/// A counting SOCKS5 proxy without authentication.
pub async fn socks5_proxy() -> CountingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut greeting = [0u8; 2];
                client.read_exact(&mut greeting).await.ok()?;
                let mut methods = vec![0u8; greeting[1] as usize];
                client.read_exact(&mut methods).await.ok()?;
                client.write_all(&[5, 0]).await.ok()?;
                let mut request = [0u8; 4];
                client.read_exact(&mut request).await.ok()?;
                let host = match request[3] {
                    1 => {
                        let mut v4 = [0u8; 4];
                        client.read_exact(&mut v4).await.ok()?;
                        std::net::Ipv4Addr::from(v4).to_string()
                    }
                    3 => {
                        let len = client.read_u8().await.ok()?;
                        let mut name = vec![0u8; len as usize];
                        client.read_exact(&mut name).await.ok()?;
                        String::from_utf8(name).ok()?
                    }
                    _ => return None,
                };
                let port = client.read_u16().await.ok()?;
                counted.fetch_add(1, Ordering::SeqCst);
                let mut upstream = TcpStream::connect((host.as_str(), port)).await.ok()?;
                client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await.ok()?;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                Some(())
            });
        }
    });
    CountingProxy {
        addr,
        requests,
        _certs: None,
    }
}

/// A proxy that accepts connections and never answers.
pub async fn silent_proxy() -> CountingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    CountingProxy {
        addr,
        requests,
        _certs: None,
    }
}

/// A port nothing listens on.
pub fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// An answer as a client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.headers.get("x-burrow-error").map_or("", String::as_str)
    }
}

/// Reads one answer with a `Content-Length` body from `io`.
pub async fn read_answer<R: AsyncRead + Unpin>(io: &mut R) -> Answer {
    let (head, mut body) = tokio::time::timeout(WAIT, read_head(io))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while body.len() < length {
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, io.read(&mut more)).await.unwrap().unwrap();
        assert!(n > 0, "body cut short");
        body.extend_from_slice(&more[..n]);
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `count` answers to pipelined requests, which may arrive in one read (each needs a
/// `Content-Length`).
pub async fn read_pipelined<R: AsyncRead + Unpin>(io: &mut R, count: usize) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < count {
        let whole = buf.windows(4).position(|w| w == b"\r\n\r\n").and_then(|end| {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (buf.len() >= end + 4 + length).then_some((head, end + 4, length))
        });
        if let Some((head, start, length)) = whole {
            let body: Vec<u8> = buf.drain(..start + length).skip(start).collect();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            answers.push(Answer {
                status: head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            continue;
        }
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, io.read(&mut more))
            .await
            .expect("answers in time")
            .unwrap();
        assert!(n > 0, "closed after {} answers", answers.len());
        buf.extend_from_slice(&more[..n]);
    }
    answers
}

/// `GET url` through the proxy at `proxy`, on a connection of its own.
pub async fn get(proxy: &str, url: &str) -> Answer {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let host = url.split('/').nth(2).unwrap_or("");
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut tcp).await
}

/// `CONNECT authority` through the proxy; on 200, one request sent through the tunnel.
pub async fn connect_and_get(proxy: &str, authority: &str, path: &str) -> (Answer, Option<Answer>) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let answer = read_answer(&mut tcp).await;
    if answer.status != 200 {
        return (answer, None);
    }
    let inner = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(inner.as_bytes()).await.unwrap();
    let through = read_answer(&mut tcp).await;
    (answer, Some(through))
}
