//! Sans-IO protocol detection on the hub's shared port: classify the first bytes of a
//! connection (agent preface, TLS ClientHello, plain HTTP) without consuming them.
//!
//! The caller accumulates bytes up to [`MAX_SNIFF`] under a deadline and calls [`classify`]
//! after each read; the bytes are then replayed to whoever handles the connection
//! ([`Replay`]), so nothing a client sent is lost.

mod replay;

pub use replay::Replay;

use crate::wire::{ALPN, PREFACE};

/// Cap on the bytes held while classifying; a ClientHello or request head larger than this is
/// refused rather than buffered.
pub const MAX_SNIFF: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough bytes to decide yet.
    NeedMore,
    /// A plain-TCP agent (`--transport tcp`).
    PlainAgent,
    /// A TLS ClientHello; `agent` when it offers ALPN `burrow/1`.
    Tls { sni: Option<String>, agent: bool },
    /// A plain HTTP/1 request head with its `Host` (port stripped, lower-cased).
    Http { host: Option<String> },
    /// None of the above.
    Unknown,
}

pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    if PREFACE.starts_with(&buf[..buf.len().min(PREFACE.len())]) {
        return if buf.len() >= PREFACE.len() {
            Verdict::PlainAgent
        } else {
            Verdict::NeedMore
        };
    }
    if buf[0] == 0x16 {
        return classify_tls(buf);
    }
    if buf[0].is_ascii_uppercase() {
        return classify_http(buf);
    }
    Verdict::Unknown
}

fn classify_tls(buf: &[u8]) -> Verdict {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut reader = buf;
    if acceptor.read_tls(&mut reader).is_err() {
        return Verdict::Unknown;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let sni = hello.server_name().map(str::to_ascii_lowercase);
            let agent = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ALPN));
            Verdict::Tls { sni, agent }
        }
        Ok(None) if buf.len() < MAX_SNIFF => Verdict::NeedMore,
        _ => Verdict::Unknown,
    }
}

fn classify_http(buf: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|h| strip_port(h.trim()).to_ascii_lowercase());
            Verdict::Http { host }
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_SNIFF => Verdict::NeedMore,
        _ => Verdict::Unknown,
    }
}

/// Whether a connection's first bytes are an HTTP/1 request, perhaps not complete yet: such
/// a visitor is answered with an HTTP error when its tunnel cannot serve it.
pub fn starts_like_http(buf: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| buf.starts_with(m))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map(|h| &h[1..]).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_agent_preface_is_recognised_even_when_split() {
        assert_eq!(classify(&PREFACE[..3]), Verdict::NeedMore);
        assert_eq!(classify(PREFACE), Verdict::PlainAgent);
    }

    #[test]
    fn http_host_is_extracted_and_partial_heads_wait() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: Web.localhost:7443\r\n"),
            Verdict::NeedMore
        );
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: Web.localhost:7443\r\n\r\n"),
            Verdict::Http {
                host: Some("web.localhost".into())
            }
        );
    }

    #[test]
    fn http_starts_are_recognised_before_the_head_is_complete() {
        assert!(starts_like_http(b"GET /x HTTP/1.1\r\nHo"));
        assert!(starts_like_http(b"POST / HTTP/1.1\r\n\r\n"));
        assert!(!starts_like_http(b"\x16\x03\x01"));
        assert!(!starts_like_http(b"GETX"));
        assert!(!starts_like_http(b""));
    }

    #[test]
    fn garbage_is_unknown_and_oversized_heads_are_refused() {
        assert_eq!(classify(b"\x00\x01\x02garbage"), Verdict::Unknown);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_SNIFF + 1, b'a');
        assert_eq!(classify(&big), Verdict::Unknown);
        assert_eq!(classify(b"\x16\x03\x01\x00\x05garbage"), Verdict::Unknown);
    }

    #[test]
    fn tls_client_hello_yields_sni_and_alpn() {
        crate::tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        let dir = tempfile::tempdir().unwrap();
        crate::tls::generate_certs(dir.path(), &["localhost".into()]).unwrap();
        for c in crate::tls::load_certs(&dir.path().join("ca.pem")).unwrap() {
            roots.add(c).unwrap();
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let mut conn =
            rustls::ClientConnection::new(std::sync::Arc::new(config), "web.localhost".try_into().unwrap()).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        assert_eq!(classify(&hello[..10]), Verdict::NeedMore);
        assert_eq!(
            classify(&hello),
            Verdict::Tls {
                sni: Some("web.localhost".into()),
                agent: true
            }
        );
    }
}
