//! HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): reading the header a load
//! balancer puts before its client's bytes, and writing one for an exposed service.
//!
//! Reference: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;

/// A header read off the front of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header takes; the client's own data follows.
    pub len: usize,
    /// The client and the address it connected to; `None` for a `LOCAL` (v2) or `UNKNOWN`
    /// (v1) header, which a proxy sends for its own health checks.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// What the start of a connection is, as far as the PROXY protocol goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyStart {
    /// Not a PROXY header: the bytes are the client's own.
    Absent,
    /// A header has begun but is not complete.
    NeedMore,
    /// A whole header.
    Header(ProxyHeader),
    /// It starts like a header but breaks the format.
    Invalid(&'static str),
}

pub fn parse(buf: &[u8]) -> ProxyStart {
    if prefix_of(buf, b"PROXY ") {
        return if buf.len() < 6 {
            ProxyStart::NeedMore
        } else {
            parse_v1(buf)
        };
    }
    if prefix_of(buf, V2_SIGNATURE) {
        return if buf.len() < 12 {
            ProxyStart::NeedMore
        } else {
            parse_v2(buf)
        };
    }
    ProxyStart::Absent
}

/// Whether `buf` and `signature` agree on their common length (and `buf` is not empty).
fn prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    n > 0 && buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> ProxyStart {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            ProxyStart::Invalid("PROXY v1 line longer than 107 bytes")
        } else {
            ProxyStart::NeedMore
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[6..end]) else {
        return ProxyStart::Invalid("PROXY v1 line is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let addresses = match fields.as_slice() {
        ["UNKNOWN", ..] => None,
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            match (ip_of(src, v4), ip_of(dst, v4), port_of(sport), port_of(dport)) {
                (Some(src), Some(dst), Some(sport), Some(dport)) => {
                    Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport)))
                }
                _ => return ProxyStart::Invalid("PROXY v1 addresses are malformed"),
            }
        }
        _ => return ProxyStart::Invalid("PROXY v1 line is malformed"),
    };
    ProxyStart::Header(ProxyHeader { len, addresses })
}

fn ip_of(s: &str, v4: bool) -> Option<IpAddr> {
    if v4 {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A port in decimal without leading zeros, as the format requires.
fn port_of(s: &str) -> Option<u16> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> ProxyStart {
    if buf.len() < 16 {
        return ProxyStart::NeedMore;
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return ProxyStart::Invalid("PROXY v2 header of an unknown version");
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return ProxyStart::Invalid("PROXY v2 header with an unknown command"),
    };
    let family = buf[13];
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body_len;
    let Some(body) = buf.get(16..len) else {
        return ProxyStart::NeedMore;
    };
    if local {
        return ProxyStart::Header(ProxyHeader { len, addresses: None });
    }
    let addresses = match family {
        // TCP or UDP over IPv4
        0x11 | 0x12 => {
            let Some(a) = body.get(..12) else {
                return ProxyStart::Invalid("PROXY v2 IPv4 addresses are truncated");
            };
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Some((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10))))
        }
        // TCP or UDP over IPv6
        0x21 | 0x22 => {
            let Some(a) = body.get(..36) else {
                return ProxyStart::Invalid("PROXY v2 IPv6 addresses are truncated");
            };
            let ip = |at: usize| {
                let octets: [u8; 16] = a[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Some((SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34))))
        }
        // UNSPEC or UNIX sockets: the connection's own addresses stand.
        0x00 | 0x31 | 0x32 => None,
        _ => return ProxyStart::Invalid("PROXY v2 header with an unknown address family"),
    };
    ProxyStart::Header(ProxyHeader { len, addresses })
}

/// Which header an exposed service wants before its visitor's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// The header telling a service that `client` connected to `server`. A pair of different
/// families is written as IPv6, IPv4 addresses mapped; without addresses, v1's `UNKNOWN`
/// and v2's `LOCAL`.
pub fn encode(version: ProxyVersion, addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let addresses = addresses.map(|(client, server)| match (client, server) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (client, server),
        _ => (as_v6(client), as_v6(server)),
    });
    match version {
        ProxyVersion::V1 => match addresses {
            Some((c, s)) => {
                let family = if c.is_ipv4() { "TCP4" } else { "TCP6" };
                format!("PROXY {family} {} {} {} {}\r\n", c.ip(), s.ip(), c.port(), s.port()).into_bytes()
            }
            None => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        ProxyVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            match addresses {
                Some((c, s)) => {
                    out.push(0x21); // version 2, PROXY
                    let mut body = Vec::with_capacity(36);
                    match (c.ip(), s.ip()) {
                        (IpAddr::V4(ci), IpAddr::V4(si)) => {
                            out.push(0x11);
                            body.extend_from_slice(&ci.octets());
                            body.extend_from_slice(&si.octets());
                        }
                        (ci, si) => {
                            out.push(0x21);
                            body.extend_from_slice(&v6_of(ci).octets());
                            body.extend_from_slice(&v6_of(si).octets());
                        }
                    }
                    body.extend_from_slice(&c.port().to_be_bytes());
                    body.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
                    out.extend_from_slice(&body);
                }
                None => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
            }
            out
        }
    }
}

fn v6_of(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(v6_of(addr.ip())), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The examples of the specification's section 2.1.
    #[test]
    fn v1_examples_of_the_specification() {
        let line = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\nGET /";
        assert_eq!(
            parse(line),
            ProxyStart::Header(ProxyHeader {
                len: 56,
                addresses: Some((addr("255.255.255.255:65535"), addr("255.255.255.255:65535")))
            })
        );
        let line = b"PROXY TCP6 ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert!(matches!(parse(line), ProxyStart::Invalid(_)));
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 443\r\n";
        assert_eq!(
            parse(line),
            ProxyStart::Header(ProxyHeader {
                len: line.len(),
                addresses: Some((addr("[2001:db8::1]:51234"), addr("[2001:db8::2]:443")))
            })
        );
        for unknown in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        ] {
            assert_eq!(
                parse(unknown),
                ProxyStart::Header(ProxyHeader {
                    len: unknown.len(),
                    addresses: None
                })
            );
        }
    }

    #[test]
    fn v1_is_read_when_whole_and_refused_when_broken() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut]), ProxyStart::NeedMore, "cut {cut}");
        }
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 70000\r\n",
            b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), ProxyStart::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(matches!(parse(&long), ProxyStart::Invalid(_)));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), ProxyStart::Absent);
        assert_eq!(parse(b"PROXZ"), ProxyStart::Absent);
        assert_eq!(parse(b""), ProxyStart::Absent);
    }

    /// The v2 layout of the specification's section 2.2: IPv4 and IPv6 TCP, LOCAL, TLVs
    /// (skipped), UNSPEC.
    #[test]
    fn v2_headers_of_every_family() {
        let mut v4 = V2_SIGNATURE.to_vec();
        v4.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
        v4.extend_from_slice(&[10, 0, 0, 1, 192, 168, 1, 1, 0xc3, 0x50, 0x01, 0xbb]);
        v4.extend_from_slice(&[0x04, 0, 4, b'a', b'b', b'c', b'd']); // a TLV (PP2_TYPE_NOOP)
        v4.extend_from_slice(b"payload");
        assert_eq!(
            parse(&v4),
            ProxyStart::Header(ProxyHeader {
                len: 16 + 19,
                addresses: Some((addr("10.0.0.1:50000"), addr("192.168.1.1:443")))
            })
        );
        for cut in 1..16 + 19 {
            assert_eq!(parse(&v4[..cut]), ProxyStart::NeedMore, "cut {cut}");
        }
        let v6 = encode(
            ProxyVersion::V2,
            Some((addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2"))),
        );
        assert_eq!(
            parse(&v6),
            ProxyStart::Header(ProxyHeader {
                len: 52,
                addresses: Some((addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")))
            })
        );
        let local = encode(ProxyVersion::V2, None);
        assert_eq!(
            parse(&local),
            ProxyStart::Header(ProxyHeader {
                len: 16,
                addresses: None
            })
        );
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(
            parse(&unspec),
            ProxyStart::Header(ProxyHeader {
                len: 16,
                addresses: None
            })
        );
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(matches!(parse(&bad_version), ProxyStart::Invalid(_)));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), ProxyStart::Invalid(_)));
    }

    #[test]
    fn written_headers_read_back() {
        let pairs = [
            Some((addr("203.0.113.7:40000"), addr("198.51.100.1:20001"))),
            Some((addr("[2001:db8::7]:40000"), addr("[2001:db8::1]:443"))),
            Some((addr("203.0.113.7:40000"), addr("[2001:db8::1]:443"))),
            None,
        ];
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for pair in pairs {
                let header = encode(version, pair);
                let ProxyStart::Header(read) = parse(&header) else {
                    panic!("{version:?} {pair:?} does not read back")
                };
                assert_eq!(read.len, header.len());
                let expected = pair.map(|(c, s)| match (c, s) {
                    (SocketAddr::V4(_), SocketAddr::V6(_)) => (as_v6(c), s),
                    _ => (c, s),
                });
                assert_eq!(read.addresses, expected);
            }
        }
        assert_eq!(
            encode(
                ProxyVersion::V1,
                Some((addr("203.0.113.7:40000"), addr("198.51.100.1:20001")))
            ),
            b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 20001\r\n"
        );
    }
}
