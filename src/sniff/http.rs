//! HTTP/1 request heads: whether a connection speaks HTTP, and the `Host` it asks for.

use super::Parsed;

/// Request heads with more header lines than this are not routed.
const MAX_HEADERS: usize = 100;
/// The longest method taken for HTTP (`VERSION-CONTROL`, `BASELINE-CONTROL` are 15 and 16).
const MAX_METHOD: usize = 20;

/// What the hub needs of a request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The `Host` header without its port, lower-cased; `None` when absent.
    pub host: Option<String>,
}

/// Parses a whole request head at the start of `buf` (bounded by the caller's buffer).
pub fn parse_head(buf: &[u8]) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|h| strip_port(h.trim()).trim_end_matches('.').to_ascii_lowercase());
            Parsed::Complete(RequestHead { host })
        }
        Ok(httparse::Status::Partial) => Parsed::NeedMore,
        Err(_) => Parsed::Invalid("malformed HTTP request head"),
    }
}

/// Whether `buf` starts with an HTTP/1 request line (`METHOD TARGET HTTP/x.y`), decided as
/// soon as the line is complete or broken. `None` while it may still become one. Looking at
/// the whole line keeps text protocols whose commands also start with a capitalised word
/// (Redis' inline `SET k v`, SMTP's `EHLO`) out of HTTP.
pub fn starts_like_http(buf: &[u8]) -> Option<bool> {
    // HTTP/2 with prior knowledge (h2c) opens with a request line of its own.
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
    if buf.len() >= 3 && buf.starts_with(&H2_PREFACE[..buf.len().min(H2_PREFACE.len())]) {
        return (buf.len() >= H2_PREFACE.len()).then_some(true);
    }
    // Methods are upper-case words in practice (RFC 9110 and its registry): a client whose
    // first bytes cannot begin one is decided at once, rather than after the silent-client
    // deadline, however short its first message.
    let method = &buf[..buf.iter().position(|b| *b == b' ').unwrap_or(buf.len())];
    let is_method_byte = |b: &u8| b.is_ascii_uppercase() || *b == b'-' || *b == b'_';
    if method.len() > MAX_METHOD || !method.iter().all(is_method_byte) || (buf.first() == Some(&b' ')) {
        return Some(false);
    }
    let mut no_headers = [httparse::EMPTY_HEADER; 0];
    let mut request = httparse::Request::new(&mut no_headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Some(true),
        Ok(httparse::Status::Partial) => request.version.map(|_| true),
        // The request line parsed, then the first header line found no room.
        Err(httparse::Error::TooManyHeaders) => Some(true),
        Err(_) => Some(false),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_extracted_and_partial_heads_wait() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: Web.localhost:7443\r\n"),
            Parsed::NeedMore
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: Web.localhost:7443\r\n\r\n"),
            Parsed::Complete(RequestHead {
                host: Some("web.localhost".into())
            })
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nhost: [::1]:80\r\n\r\n"),
            Parsed::Complete(RequestHead {
                host: Some("::1".into())
            })
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\n\r\n"),
            Parsed::Complete(RequestHead { host: None })
        );
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn request_lines_are_told_from_other_text_protocols() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"PROPFIND /dav HTTP/1.1\r\n",
        ] {
            assert_eq!(
                starts_like_http(http),
                Some(true),
                "{:?}",
                String::from_utf8_lossy(http)
            );
        }
        for undecided in [
            &b""[..],
            b"G",
            b"GET",
            b"GET /index",
            b"GET / HTTP/1.",
            b"MKCOL /x HTTP/1",
        ] {
            assert_eq!(
                starts_like_http(undecided),
                None,
                "{:?}",
                String::from_utf8_lossy(undecided)
            );
        }
        for other in [
            &b"SET k v\r\n"[..],
            b"PING\r\n",
            b"EHLO mail.example\r\n",
            b"\x16\x03\x01",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"x",
            b"get / HTTP/1.1\r\n",
            b" GET",
            b"*1\r\n$4\r\nPING\r\n",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        ] {
            assert_eq!(
                starts_like_http(other),
                Some(false),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
