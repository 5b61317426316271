//! Sans-IO protocol detection: what the first bytes of a connection are, without consuming
//! them. One place for every port of the hub: the main port tells agents, TLS (by SNI) and
//! HTTP (by `Host`) apart ([`classify`]); a public port counts TLS, HTTP and other traffic
//! ([`detect`]); both read a trusted proxy's PROXY header first ([`proxy`]).
//!
//! The caller accumulates bytes up to [`MAX_SNIFF`] under a deadline and asks again after
//! each read; the bytes are then replayed to whoever handles the connection ([`Replay`]), so
//! nothing a client sent is lost.

pub mod http;
pub mod proxy;
pub mod replay;
pub mod tls;

pub use replay::Replay;

use crate::wire::{ALPN, PREFACE};

/// Cap on the bytes held while classifying; a ClientHello or request head larger than this is
/// refused rather than buffered.
pub const MAX_SNIFF: usize = 16 * 1024;

/// How far a parser got with the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Complete(T),
    NeedMore,
    Invalid(&'static str),
}

/// What a connection to the hub's main port is.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough bytes to decide yet.
    NeedMore,
    /// A plain-TCP agent (`--transport tcp`).
    PlainAgent,
    /// A TLS ClientHello; `agent` when it offers ALPN `burrow/1`. `record_version` is its
    /// record layer's version, which an alert in answer echoes.
    Tls {
        sni: Option<String>,
        agent: bool,
        record_version: [u8; 2],
    },
    /// A plain HTTP/1 request head with its `Host` (port stripped, lower-cased).
    Http { host: Option<String> },
    /// None of the above.
    Unknown,
}

/// Classifies a connection to the main port from its first bytes (after any PROXY header).
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
    match tls::starts_like_tls(buf) {
        None => return Verdict::NeedMore,
        Some(true) => {
            return match tls::parse_client_hello(buf, MAX_SNIFF) {
                Parsed::Complete(hello) => Verdict::Tls {
                    agent: hello.offers(ALPN),
                    sni: hello.sni,
                    record_version: [buf[1], buf[2]],
                },
                Parsed::NeedMore => Verdict::NeedMore,
                Parsed::Invalid(_) => Verdict::Unknown,
            }
        }
        Some(false) => {}
    }
    match http::parse_head(&buf[..buf.len().min(MAX_SNIFF)]) {
        Parsed::Complete(head) => Verdict::Http { host: head.host },
        Parsed::NeedMore if buf.len() < MAX_SNIFF => Verdict::NeedMore,
        _ => Verdict::Unknown,
    }
}

/// The protocol a public port's connection speaks, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detected {
    Tls,
    Http,
    /// Anything else, including a client that stayed silent (the server speaks first).
    Tcp,
}

impl Detected {
    pub const ALL: [Detected; 3] = [Detected::Tls, Detected::Http, Detected::Tcp];

    /// What a connection that is not sniffed counts as: its tunnel's declared protocol, `tcp`
    /// for `auto`.
    pub fn declared(protocol: crate::types::Protocol) -> Self {
        use crate::types::Protocol;
        match protocol {
            Protocol::Https => Detected::Tls,
            Protocol::Http => Detected::Http,
            Protocol::Auto | Protocol::Tcp | Protocol::Udp => Detected::Tcp,
        }
    }

    pub fn http_if(http: bool) -> Self {
        if http {
            Detected::Http
        } else {
            Detected::Tcp
        }
    }

    pub fn tls_if(tls: bool) -> Self {
        if tls {
            Detected::Tls
        } else {
            Detected::Tcp
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Detected::Tls => "tls",
            Detected::Http => "http",
            Detected::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Detected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Detects TLS (a handshake record), HTTP (a request line) or other from a connection's
/// first bytes; `None` while they may still become either. A full sniff buffer that has not
/// decided is other.
pub fn detect(buf: &[u8]) -> Option<Detected> {
    if buf.len() >= MAX_SNIFF {
        return Some(Detected::Tcp);
    }
    match tls::starts_like_tls(buf)? {
        true => Some(Detected::Tls),
        false => match http::starts_like_http(buf)? {
            true => Some(Detected::Http),
            false => Some(Detected::Tcp),
        },
    }
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
    fn garbage_is_unknown_and_oversized_heads_are_refused() {
        assert_eq!(classify(b"\x00\x01\x02garbage"), Verdict::Unknown);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_SNIFF + 1, b'a');
        assert_eq!(classify(&big), Verdict::Unknown);
        assert_eq!(classify(b"\x16\x03\x01\x00\x05garbage"), Verdict::Unknown);
    }

    #[test]
    fn public_ports_detect_tls_http_and_the_rest() {
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"\x16"), None);
        assert_eq!(detect(b"\x16\x03\x01\x02\x00"), Some(Detected::Tls));
        assert_eq!(detect(b"GET / HT"), None);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(detect(b"SSH-2.0-OpenSSH_9.2p1\r\n"), Some(Detected::Tcp));
        // A short first message that cannot begin a request is decided at its first byte.
        assert_eq!(detect(b"x"), Some(Detected::Tcp));
        // PostgreSQL's SSLRequest, sent before any TLS.
        assert_eq!(detect(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), Some(Detected::Tcp));
        assert_eq!(detect(&[b'A'; MAX_SNIFF]), Some(Detected::Tcp));
    }

    /// ClientHellos recorded from real clients (`tests/testdata/client-hellos/`, see its
    /// README), each fed whole and cut at every byte boundary: a cut is never mistaken for
    /// something else, and the whole yields the recorded server name and ALPN.
    #[test]
    fn recorded_client_hellos_classify_at_every_split() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/client-hellos");
        let manifest = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
        let mut seen = 0;
        for line in manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [file, sni, alpn] = fields[..] else {
                panic!("bad line {line:?}")
            };
            let hello = std::fs::read(dir.join(file)).unwrap();
            let sni = (sni != "-").then(|| sni.to_string());
            let alpn: Vec<Vec<u8>> = match alpn {
                "-" => Vec::new(),
                list => list.split(',').map(|p| p.as_bytes().to_vec()).collect(),
            };
            for cut in 0..hello.len() {
                let first = &hello[..cut];
                assert_eq!(classify(first), Verdict::NeedMore, "{file} cut at {cut}");
                assert_eq!(
                    detect(first),
                    if cut < 3 { None } else { Some(Detected::Tls) },
                    "{file} cut at {cut}"
                );
                assert_eq!(
                    tls::parse_client_hello(first, MAX_SNIFF),
                    Parsed::NeedMore,
                    "{file} cut at {cut}"
                );
            }
            let Parsed::Complete(parsed) = tls::parse_client_hello(&hello, MAX_SNIFF) else {
                panic!("{file} does not parse")
            };
            assert_eq!(parsed.sni, sni, "{file}");
            assert_eq!(parsed.alpn, alpn, "{file}");
            assert_eq!(
                classify(&hello),
                Verdict::Tls {
                    agent: parsed.offers(ALPN),
                    sni,
                    record_version: [hello[1], hello[2]],
                },
                "{file}"
            );
            seen += 1;
        }
        assert!(seen >= 7, "only {seen} recorded hellos");
    }
}
