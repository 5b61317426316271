//! Reading the first bytes of a connection to the hub for the sans-IO sniffers of `sniff/`,
//! on the main port and on public ports alike: a trusted proxy's PROXY header first, then as
//! much as the caller's decision needs, under a deadline and within the sniff buffer; and the
//! budget of connections per source address still being read this way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::net::TcpStream;

use crate::sniff::proxy::{self, ProxyStart};
use crate::sniff::MAX_SNIFF;
use crate::types::Cidr;

/// Connections one source address may have in classification at once, by default: room for
/// a load generator's or a NAT gateway's burst of a thousand connections (each classified
/// within a round trip of its first bytes), and a bound on what one address can hold in
/// sniff buffers: this many times [`MAX_SNIFF`], 16 MiB, from clients that send a large
/// undecided head slowly (a silent one holds no buffer).
pub const DEFAULT_PENDING_PER_SOURCE: usize = 1024;

/// Who may send PROXY headers, and how many connections per source may be in classification.
pub struct Sniffing {
    trusted: Vec<Cidr>,
    per_source: usize,
    pending: Mutex<HashMap<IpAddr, usize>>,
    /// What the main port's connections turned out to be, for metrics.
    outcomes: [AtomicU64; Outcome::ALL.len()],
}

/// What a connection to the main port was classified as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An agent or a lane, over TLS or plain TCP.
    Agent,
    /// TLS for a tunnel or the hub, by server name.
    Tls,
    /// HTTP for a tunnel or the hub, by `Host`.
    Http,
    /// Bytes that are none of these.
    Unknown,
    /// Nothing decisive before the deadline, or the client left.
    Undecided,
    /// Refused before classification: over its source's budget, or a PROXY header refused.
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Agent,
        Outcome::Tls,
        Outcome::Http,
        Outcome::Unknown,
        Outcome::Undecided,
        Outcome::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Agent => "agent",
            Outcome::Tls => "tls",
            Outcome::Http => "http",
            Outcome::Unknown => "unknown",
            Outcome::Undecided => "undecided",
            Outcome::Refused => "refused",
        }
    }
}

/// What was read off the front of a connection.
pub struct FirstBytes<V> {
    /// The caller's decision; `None` when the deadline passed, the client closed, or the
    /// sniff buffer filled before it decided.
    pub verdict: Option<V>,
    /// The client's own bytes read so far (a PROXY header taken off), to be replayed.
    pub bytes: BytesMut,
    /// The client: the socket's peer, or the source a trusted proxy's header gave.
    pub client: SocketAddr,
    /// Where it connected to: the socket's local address, or a trusted proxy's destination.
    pub visited: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    #[error("{0} connections from this address are already being classified")]
    Busy(usize),
    #[error("a PROXY header from an address not in --trusted-proxies")]
    UntrustedProxyHeader,
    #[error("bad PROXY header: {0}")]
    BadProxyHeader(&'static str),
    #[error("reading the first bytes: {0}")]
    Io(#[from] std::io::Error),
}

/// What a PROXY header from an address that is not trusted means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untrusted {
    /// The connection is refused (the main port: nothing legitimate starts that way).
    Refuse,
    /// The bytes are the client's own data (public ports: the service may speak anything).
    AsData,
}

impl Sniffing {
    pub fn new(trusted: Vec<Cidr>, per_source: usize) -> Self {
        Self {
            trusted,
            per_source: per_source.max(1),
            pending: Mutex::default(),
            outcomes: Default::default(),
        }
    }

    pub fn record(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Main-port connections by outcome since the hub started.
    pub fn outcomes(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        Outcome::ALL
            .into_iter()
            .map(|o| (o, self.outcomes[o as usize].load(Ordering::Relaxed)))
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|block| block.contains(ip))
    }

    /// Reads the start of `stream` from `peer` until `decide` returns a verdict, within
    /// `deadline` and [`MAX_SNIFF`] bytes. A trusted source's PROXY header (v1 or v2) is read
    /// and taken off first; one from anyone else is treated as `untrusted` says. Trusted
    /// proxies carry many clients, so only other sources count against the per-source budget.
    pub async fn read<V>(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        untrusted: Untrusted,
        deadline: Duration,
        mut decide: impl FnMut(&[u8]) -> Option<V>,
    ) -> Result<FirstBytes<V>, SniffError> {
        let trusted = self.is_trusted(peer.ip());
        let _slot = if trusted { None } else { Some(self.enter(peer.ip())?) };
        let mut first = FirstBytes {
            verdict: None,
            bytes: BytesMut::new(),
            client: peer,
            visited: stream.local_addr()?,
        };
        // Whether a PROXY header may still be at the front.
        let mut header_pending = trusted || untrusted == Untrusted::Refuse;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if header_pending && !first.bytes.is_empty() {
                match proxy::parse(&first.bytes) {
                    ProxyStart::Absent => header_pending = false,
                    ProxyStart::NeedMore => {}
                    ProxyStart::Header(header) if trusted => {
                        first.bytes.advance(header.len);
                        if let Some((client, visited)) = header.addresses {
                            first.client = client;
                            first.visited = visited;
                        }
                        header_pending = false;
                    }
                    ProxyStart::Invalid(why) if trusted => return Err(SniffError::BadProxyHeader(why)),
                    ProxyStart::Header(_) | ProxyStart::Invalid(_) => return Err(SniffError::UntrustedProxyHeader),
                }
            }
            if !header_pending && !first.bytes.is_empty() {
                first.verdict = decide(&first.bytes);
                if first.verdict.is_some() {
                    return Ok(first);
                }
            }
            let room = MAX_SNIFF - first.bytes.len().min(MAX_SNIFF);
            if room == 0 {
                return Ok(first);
            }
            // A silent client holds no buffer: it is allocated once bytes are there.
            let read = tokio::time::timeout_at(until, async {
                loop {
                    stream.readable().await?;
                    first.bytes.reserve(room.min(4096));
                    match stream.try_read_buf(&mut (&mut first.bytes).limit(room)) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        read => return read,
                    }
                }
            })
            .await;
            match read {
                Ok(Ok(0)) | Err(_) if header_pending && !first.bytes.is_empty() && trusted => {
                    return Err(SniffError::BadProxyHeader("the header did not end"))
                }
                Ok(Ok(0)) | Err(_) => return Ok(first),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Takes one of `ip`'s slots for a connection in classification. IPv6 sources count by
    /// their /64, the block one host usually has.
    fn enter(&self, ip: IpAddr) -> Result<PendingSlot<'_>, SniffError> {
        let source = match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            v4 => v4,
        };
        let mut pending = self.pending.lock().expect("pending sources lock");
        let count = pending.entry(source).or_default();
        if *count >= self.per_source {
            return Err(SniffError::Busy(*count));
        }
        *count += 1;
        Ok(PendingSlot { sniffing: self, source })
    }
}

/// A connection's place in its source's budget, given back when classification ends.
struct PendingSlot<'a> {
    sniffing: &'a Sniffing,
    source: IpAddr,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        let mut pending = self.sniffing.pending.lock().expect("pending sources lock");
        if let Some(count) = pending.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server, peer)
    }

    /// Reads `server`'s first line (its length is the verdict).
    async fn read_line(
        sniffing: &Sniffing,
        server: &mut TcpStream,
        peer: SocketAddr,
        untrusted: Untrusted,
        deadline: Duration,
    ) -> Result<FirstBytes<usize>, SniffError> {
        let decide_line = |buf: &[u8]| buf.iter().position(|b| *b == b'\n');
        sniffing.read(server, peer, untrusted, deadline, decide_line).await
    }

    #[tokio::test]
    async fn a_trusted_proxy_header_is_taken_off_and_names_the_client() {
        let sniffing = Sniffing::new(vec!["127.0.0.1".parse().unwrap()], 4);
        let (mut client, mut server, peer) = pair().await;
        client
            .write_all(b"PROXY TCP4 203.0.113.9 198.51.100.2 4000 443\r\nhello\n")
            .await
            .unwrap();
        let first = read_line(&sniffing, &mut server, peer, Untrusted::Refuse, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(first.verdict, Some(5));
        assert_eq!(&first.bytes[..], b"hello\n");
        assert_eq!(first.client, "203.0.113.9:4000".parse().unwrap());
        assert_eq!(first.visited, "198.51.100.2:443".parse().unwrap());
    }

    #[tokio::test]
    async fn an_untrusted_header_is_refused_or_kept_as_data() {
        let sniffing = Sniffing::new(vec!["10.0.0.0/8".parse().unwrap()], 4);
        let header = proxy::encode(
            proxy::ProxyVersion::V2,
            Some(("203.0.113.9:4000".parse().unwrap(), "198.51.100.2:443".parse().unwrap())),
        );
        let (mut client, mut server, peer) = pair().await;
        client.write_all(&header).await.unwrap();
        client.write_all(b"\n").await.unwrap();
        let refused = read_line(&sniffing, &mut server, peer, Untrusted::Refuse, Duration::from_secs(5)).await;
        assert!(matches!(refused, Err(SniffError::UntrustedProxyHeader)));

        let (mut client, mut server, peer) = pair().await;
        client.write_all(&header).await.unwrap();
        client.write_all(b"\n").await.unwrap();
        let kept = sniffing
            .read(&mut server, peer, Untrusted::AsData, Duration::from_secs(5), |b| {
                (b.len() > header.len()).then_some(())
            })
            .await
            .unwrap();
        assert_eq!(&kept.bytes[..header.len()], &header[..]);
        assert_eq!(kept.client, peer);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_undecided_at_the_deadline() {
        let sniffing = Sniffing::new(Vec::new(), 4);
        let (_client, mut server, peer) = pair().await;
        let first = read_line(
            &sniffing,
            &mut server,
            peer,
            Untrusted::AsData,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(first.verdict, None);
        assert!(first.bytes.is_empty());
    }

    #[tokio::test]
    async fn a_source_has_a_bounded_number_of_connections_in_classification() {
        let sniffing = Sniffing::new(Vec::new(), 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = sniffing.enter(ip).unwrap();
        let _b = sniffing.enter(ip).unwrap();
        assert!(matches!(sniffing.enter(ip), Err(SniffError::Busy(2))));
        let _other = sniffing.enter("192.0.2.2".parse().unwrap()).unwrap();
        drop(a);
        let _c = sniffing.enter(ip).unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let _d = sniffing.enter(v6).unwrap();
        let _e = sniffing.enter("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            sniffing.enter("2001:db8::ffff:3".parse().unwrap()).is_err(),
            "one /64 is one source"
        );
    }
}
