//! What routing needs of a TLS ClientHello (server name, ALPN offers), read from the bytes
//! without terminating TLS; and the one alert the hub sends to a ClientHello it cannot route.
//!
//! Only the framing of handshake records and the fields of the ClientHello are read here:
//! nothing is negotiated, decrypted or answered but the plaintext alert below.

use super::Parsed;

/// What a ClientHello says about where it is going.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The `server_name` extension's host name, lower-cased.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHello {
    pub fn offers(&self, protocol: &[u8]) -> bool {
        self.alpn.iter().any(|p| p == protocol)
    }
}

const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// The largest TLS plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// Whether `buf` can still be the start of a TLS handshake record: content type 22, major
/// version 3, a minor version up to TLS 1.3's record versions. `None` until 3 bytes arrived.
pub fn starts_like_tls(buf: &[u8]) -> Option<bool> {
    let expected = [CONTENT_HANDSHAKE, 3];
    let n = buf.len().min(2);
    if buf[..n] != expected[..n] {
        return Some(false);
    }
    buf.get(2).map(|minor| *minor <= 4)
}

/// Parses the ClientHello at the start of `buf`, which may span several handshake records.
/// `limit` bounds the bytes looked at: a hello that does not end within it is `Invalid`.
pub fn parse_client_hello(buf: &[u8], limit: usize) -> Parsed<ClientHello> {
    let buf = &buf[..buf.len().min(limit)];
    let full = buf.len() == limit;
    // The handshake message, gathered from the records' fragments. Nearly every client sends
    // it in one record, which is then read in place.
    let mut gathered: Vec<u8> = Vec::new();
    let mut rest = buf;
    let mut first: Option<&[u8]> = None;
    loop {
        if rest.len() < 5 {
            return need_more(full);
        }
        if rest[0] != CONTENT_HANDSHAKE || rest[1] != 3 {
            return Parsed::Invalid("not a TLS handshake record");
        }
        let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if length == 0 || length > MAX_RECORD {
            return Parsed::Invalid("TLS record length out of range");
        }
        let Some(fragment) = rest.get(5..5 + length) else {
            return need_more(full);
        };
        rest = &rest[5 + length..];
        let message: &[u8] = match first {
            None if gathered.is_empty() => {
                first = Some(fragment);
                fragment
            }
            _ => {
                if let Some(f) = first.take() {
                    gathered.extend_from_slice(f);
                }
                gathered.extend_from_slice(fragment);
                &gathered
            }
        };
        if message.len() < 4 {
            continue;
        }
        if message[0] != HANDSHAKE_CLIENT_HELLO {
            return Parsed::Invalid("first handshake message is not a ClientHello");
        }
        let body_len = usize::from(message[1]) << 16 | usize::from(message[2]) << 8 | usize::from(message[3]);
        if body_len + 4 > limit {
            return Parsed::Invalid("ClientHello larger than the sniff limit");
        }
        if let Some(body) = message.get(4..4 + body_len) {
            return match read_hello(body) {
                Some(hello) => Parsed::Complete(hello),
                None => Parsed::Invalid("malformed ClientHello"),
            };
        }
    }
}

fn need_more<T>(full: bool) -> Parsed<T> {
    if full {
        Parsed::Invalid("ClientHello larger than the sniff limit")
    } else {
        Parsed::NeedMore
    }
}

/// A bounds-checked cursor over big-endian fields.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn read_hello(body: &[u8]) -> Option<ClientHello> {
    let mut c = Cursor(body);
    c.take(2 + 32)?; // legacy_version, random
    c.vec8()?; // legacy_session_id
    c.vec16()?; // cipher_suites
    c.vec8()?; // legacy_compression_methods
    let mut hello = ClientHello::default();
    if c.is_empty() {
        return Some(hello); // no extensions at all (SSL 3-era clients)
    }
    let mut extensions = Cursor(c.vec16()?);
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        match kind {
            EXT_SERVER_NAME => hello.sni = read_server_name(data)?,
            EXT_ALPN => hello.alpn = read_alpn(data)?,
            _ => {}
        }
    }
    Some(hello)
}

/// The first `host_name` entry; a name that is not printable ASCII makes the hello malformed.
fn read_server_name(data: &[u8]) -> Option<Option<String>> {
    let mut list = Cursor(Cursor(data).vec16()?);
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == 0 {
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return None;
            }
            let name = std::str::from_utf8(name).ok()?.trim_end_matches('.');
            return Some(Some(name.to_ascii_lowercase()));
        }
    }
    Some(None)
}

fn read_alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut list = Cursor(Cursor(data).vec16()?);
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let protocol = list.vec8()?;
        if protocol.is_empty() {
            return None;
        }
        protocols.push(protocol.to_vec());
    }
    Some(protocols)
}

/// The fatal `unrecognized_name` alert (RFC 6066 §3), sent in the clear in answer to a
/// ClientHello whose server name no tunnel serves, as a TLS server without that name would.
/// `record_version` echoes the ClientHello's record version. The codes are rustls' own.
pub fn unrecognized_name_alert(record_version: [u8; 2]) -> [u8; 7] {
    const FATAL: u8 = 2;
    [
        u8::from(rustls::ContentType::Alert),
        record_version[0],
        record_version[1],
        0,
        2,
        FATAL,
        u8::from(rustls::AlertDescription::UnrecognisedName),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hello with the given extensions, in one record.
    fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut message = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        message.extend_from_slice(&body);
        let mut record = vec![0x16, 3, 1, (message.len() >> 8) as u8, message.len() as u8];
        record.extend_from_slice(&message);
        record
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0, (name.len() >> 8) as u8, name.len() as u8];
        entry.extend_from_slice(name.as_bytes());
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (EXT_SERVER_NAME, data)
    }

    #[test]
    fn server_name_is_lower_cased_and_alpn_kept_in_order() {
        let alpn = (
            EXT_ALPN,
            vec![0, 12, 2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1'],
        );
        let hello = hello_with(&[sni("Web.Example.COM."), alpn]);
        let Parsed::Complete(parsed) = parse_client_hello(&hello, 16384) else {
            panic!("not parsed")
        };
        assert_eq!(parsed.sni.as_deref(), Some("web.example.com"));
        assert_eq!(parsed.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(parsed.offers(b"h2"));
    }

    #[test]
    fn a_hello_split_across_records_is_gathered() {
        let hello = hello_with(&[sni("a.localhost")]);
        let message = &hello[5..];
        let mut split = Vec::new();
        for part in [&message[..10], &message[10..11], &message[11..]] {
            split.extend_from_slice(&[0x16, 3, 1, 0, part.len() as u8]);
            split.extend_from_slice(part);
        }
        for cut in 0..split.len() {
            assert_eq!(parse_client_hello(&split[..cut], 16384), Parsed::NeedMore, "cut {cut}");
        }
        let Parsed::Complete(parsed) = parse_client_hello(&split, 16384) else {
            panic!("not parsed")
        };
        assert_eq!(parsed.sni.as_deref(), Some("a.localhost"));
    }

    #[test]
    fn malformed_and_oversized_hellos_are_invalid() {
        let mut hello = hello_with(&[sni("a.localhost")]);
        assert!(matches!(parse_client_hello(&hello, 40), Parsed::Invalid(_)));
        let n = hello.len();
        hello[n - 3] = 0; // a NUL inside the host name
        assert!(matches!(parse_client_hello(&hello, 16384), Parsed::Invalid(_)));
        assert!(matches!(
            parse_client_hello(b"\x16\x03\x01\x00\x00", 16384),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", 16384),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn record_starts_are_recognised_from_three_bytes() {
        assert_eq!(starts_like_tls(b""), None);
        assert_eq!(starts_like_tls(b"\x16"), None);
        assert_eq!(starts_like_tls(b"\x16\x03"), None);
        assert_eq!(starts_like_tls(b"\x16\x03\x01"), Some(true));
        assert_eq!(starts_like_tls(b"\x16\x04"), Some(false));
        assert_eq!(starts_like_tls(b"GET"), Some(false));
    }

    #[test]
    fn the_alert_is_a_fatal_unrecognized_name() {
        assert_eq!(unrecognized_name_alert([3, 1]), [0x15, 3, 1, 0, 2, 2, 112]);
    }
}
