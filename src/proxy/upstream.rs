//! The ways a forward proxy reaches a request's destination, one small piece each: a TCP
//! dial (DIRECT), an HTTP proxy's CONNECT (over TCP, or TLS for `HTTPS` proxies), a SOCKS5
//! handshake (RFC 1928, with RFC 1929 credentials), and `--proxy URL` itself.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sniff::replay::Replay;
use crate::types::Secret;

/// Any byte stream a request can travel on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// The largest response head an upstream proxy may send to a CONNECT.
const MAX_CONNECT_RESPONSE: usize = 16 << 10;

/// Why a route did not lead to the destination.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Nothing answered, or the connection broke: the route is skipped for its retry window.
    #[error("{0}")]
    Failed(String),
    /// The upstream proxy wants credentials: its 407 goes back to the client as it is.
    #[error("the upstream proxy {proxy} requires authentication (407)")]
    ProxyAuth {
        proxy: String,
        /// Its `Proxy-Authenticate` challenges.
        challenges: Vec<String>,
    },
    /// The upstream proxy answered, but refused the destination.
    #[error("the upstream proxy {proxy} answered {status} to CONNECT")]
    Refused { proxy: String, status: u16 },
}

/// An upstream proxy given with `--proxy URL`: `http://`, `https://` or `socks5://`,
/// optionally with `user:password@`.
#[derive(Clone, Debug)]
pub struct ProxyUrl {
    pub kind: ProxyKind,
    /// `HOST:PORT`.
    pub address: String,
    pub credentials: Option<(String, Secret)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Http,
    Https,
    Socks5,
}

impl std::str::FromStr for ProxyUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a URL (http://HOST:PORT, https://, socks5://)"))?;
        let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (ProxyKind::Http, 80),
            "https" => (ProxyKind::Https, 443),
            "socks5" | "socks5h" | "socks" => (ProxyKind::Socks5, 1080),
            other => return Err(format!("{url:?}: unknown proxy scheme {other:?} (http, https, socks5)")),
        };
        let authority = rest.trim_end_matches('/');
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((user_info, host_port)) => {
                let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
                (Some((user.to_string(), Secret::new(password.to_string()))), host_port)
            }
            None => (None, authority),
        };
        if host_port.is_empty() || host_port.contains('/') {
            return Err(format!("{url:?}: the proxy address is not HOST:PORT"));
        }
        let address = match super::route::split_authority(host_port) {
            (_, Some(_)) => host_port.to_string(),
            (host, None) if host.contains(':') => format!("[{host}]:{default_port}"),
            (host, None) => format!("{host}:{default_port}"),
        };
        Ok(Self {
            kind,
            address,
            credentials,
        })
    }
}

/// `Proxy-Authorization` for `credentials`.
pub fn basic_authorization((user, password): &(String, Secret)) -> String {
    use base64::Engine;
    let pair = format!("{user}:{}", password.expose());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// A TCP connection to `address` (`HOST:PORT`).
pub async fn dial(address: &str) -> Result<TcpStream, DialError> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| DialError::Failed(format!("cannot connect to {address}: {e}")))?;
    crate::relay::configure_tcp(&tcp);
    Ok(tcp)
}

/// TLS to an `HTTPS` proxy at `address`, checked against `config`'s roots.
pub async fn tls(io: TcpStream, address: &str, config: Arc<rustls::ClientConfig>) -> Result<BoxIo, DialError> {
    let (host, _) = super::route::split_authority(address);
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| DialError::Failed(format!("{host:?} is not a TLS server name")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(|e| DialError::Failed(format!("TLS to the proxy {address}: {e}")))?;
    Ok(Box::new(tls))
}

/// Asks the HTTP proxy on `io` (at `proxy`) for a tunnel to `authority`. Bytes the proxy
/// sent after its answer are kept in front of the returned stream.
pub async fn http_connect(
    mut io: BoxIo,
    proxy: &str,
    authority: &str,
    authorization: Option<&str>,
) -> Result<BoxIo, DialError> {
    let broken = |e: io::Error| DialError::Failed(format!("CONNECT through {proxy}: {e}"));
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await.map_err(broken)?;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        if head.len() >= MAX_CONNECT_RESPONSE {
            return Err(DialError::Failed(format!(
                "{proxy} sent an oversized answer to CONNECT"
            )));
        }
        if io.read_buf(&mut head).await.map_err(broken)? == 0 {
            return Err(DialError::Failed(format!("{proxy} closed the connection on CONNECT")));
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(&head)
            .map_err(|e| DialError::Failed(format!("{proxy} answered CONNECT with garbage: {e}")))?;
        let httparse::Status::Complete(length) = parsed else {
            continue;
        };
        let status = response.code.unwrap_or(0);
        return match status {
            200..=299 => {
                let _ = head.split_to(length);
                Ok(Box::new(Replay::new(head, io)))
            }
            407 => Err(DialError::ProxyAuth {
                proxy: proxy.to_string(),
                challenges: response
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("proxy-authenticate"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    .collect(),
            }),
            _ => Err(DialError::Refused {
                proxy: proxy.to_string(),
                status,
            }),
        };
    }
}

/// A SOCKS5 handshake on `io` (the proxy at `proxy`) for `host:port`. Names are sent to the
/// proxy unresolved, so it resolves them inside its own network.
pub async fn socks5_connect<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    proxy: &str,
    host: &str,
    port: u16,
    credentials: Option<&(String, Secret)>,
) -> Result<T, DialError> {
    let failed = |what: &str| DialError::Failed(format!("SOCKS5 proxy {proxy}: {what}"));
    let broken = |e: io::Error| DialError::Failed(format!("SOCKS5 proxy {proxy}: {e}"));
    let greeting: &[u8] = if credentials.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    io.write_all(greeting).await.map_err(broken)?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await.map_err(broken)?;
    match (choice, credentials) {
        ([5, 0], _) => {}
        ([5, 2], Some((user, password))) => {
            let password = password.expose();
            if user.len() > 255 || password.len() > 255 {
                return Err(failed("user name or password longer than 255 bytes"));
            }
            let mut auth = vec![1, user.len() as u8];
            auth.extend_from_slice(user.as_bytes());
            auth.push(password.len() as u8);
            auth.extend_from_slice(password.as_bytes());
            io.write_all(&auth).await.map_err(broken)?;
            let mut status = [0u8; 2];
            io.read_exact(&mut status).await.map_err(broken)?;
            if status[1] != 0 {
                return Err(failed("the user name and password were refused"));
            }
        }
        ([5, 0xff], _) | ([5, 2], None) => return Err(failed("no acceptable authentication method")),
        _ => return Err(failed("not a SOCKS5 answer")),
    }
    let mut request = vec![5, 1, 0];
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            request.push(1);
            request.extend_from_slice(&v4.octets());
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            request.push(4);
            request.extend_from_slice(&v6.octets());
        }
        Err(_) if host.len() <= 255 => {
            request.extend_from_slice(&[3, host.len() as u8]);
            request.extend_from_slice(host.as_bytes());
        }
        Err(_) => return Err(failed("host name longer than 255 bytes")),
    }
    request.extend_from_slice(&port.to_be_bytes());
    io.write_all(&request).await.map_err(broken)?;
    let mut reply = [0u8; 4];
    io.read_exact(&mut reply).await.map_err(broken)?;
    if reply[0] != 5 {
        return Err(failed("not a SOCKS5 answer"));
    }
    if reply[1] != 0 {
        let why = match reply[1] {
            2 => "connection not allowed by its rules",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            _ => "general failure",
        };
        return Err(failed(&format!("{host}:{port}: {why}")));
    }
    // The bound address, which nothing here needs.
    let skip = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(io.read_u8().await.map_err(broken)?) + 2,
        _ => return Err(failed("unknown address type in its answer")),
    };
    let mut bound = vec![0u8; skip];
    io.read_exact(&mut bound).await.map_err(broken)?;
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let url: ProxyUrl = "http://alice:s3cret@proxy.example:3128".parse().unwrap();
        assert_eq!(url.kind, ProxyKind::Http);
        assert_eq!(url.address, "proxy.example:3128");
        assert_eq!(
            basic_authorization(url.credentials.as_ref().unwrap()),
            "Basic YWxpY2U6czNjcmV0"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            "socks5://10.0.0.1".parse::<ProxyUrl>().unwrap().address,
            "10.0.0.1:1080"
        );
        assert_eq!("https://[::1]".parse::<ProxyUrl>().unwrap().address, "[::1]:443");
        assert!("ftp://x:1".parse::<ProxyUrl>().is_err());
        assert!("x:1".parse::<ProxyUrl>().is_err());
    }

    #[tokio::test]
    async fn socks5_handshakes_against_a_scripted_server() {
        let (client, mut server) = tokio::io::duplex(1024);
        let serve = tokio::spawn(async move {
            let mut greeting = [0u8; 4];
            server.read_exact(&mut greeting).await.unwrap();
            assert_eq!(greeting, [5, 2, 0, 2]);
            server.write_all(&[5, 2]).await.unwrap();
            let mut auth = [0u8; 1 + 1 + 1 + 1 + 2];
            server.read_exact(&mut auth).await.unwrap();
            assert_eq!(&auth, &[1, 1, b'u', 2, b'p', b'w']);
            server.write_all(&[1, 0]).await.unwrap();
            let mut request = [0u8; 4 + 1 + 9 + 2];
            server.read_exact(&mut request).await.unwrap();
            assert_eq!(&request[..5], &[5, 1, 0, 3, 9]);
            assert_eq!(&request[5..14], b"inner.lan");
            assert_eq!(&request[14..], &443u16.to_be_bytes());
            server
                .write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80, b'!'])
                .await
                .unwrap();
        });
        let credentials = ("u".to_string(), Secret::new("pw".to_string()));
        let mut io = socks5_connect(client, "socks", "inner.lan", 443, Some(&credentials))
            .await
            .unwrap();
        let mut first = [0u8; 1];
        io.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"!");
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn socks5_refusals_are_named() {
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut greeting = [0u8; 3];
            server.read_exact(&mut greeting).await.unwrap();
            server.write_all(&[5, 0]).await.unwrap();
            let mut request = [0u8; 10];
            server.read_exact(&mut request).await.unwrap();
            server.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        });
        let err = socks5_connect(client, "socks", "10.1.2.3", 80, None).await.unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
    }
}
