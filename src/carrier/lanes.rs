//! Lanes on the hub: dedicated data connections that an `expose` agent dials ahead of need,
//! plain TCP beside a `--transport tcp` session and TLS (rustls, like the session) beside a
//! TLS one. On a plain session every visitor starts multiplexed and moves onto an idle lane
//! once bulk (`relay/moving.rs`; framed, then spliced, see
//! [`crate::relay::relay_plain_lane`]); a lane whose connection ended cleanly is parked again.
//! On a TLS session a visitor that finds an idle lane is carried on it alone, and the lane
//! closes with the connection (a TLS connection is not used again after its close_notify).
//! With no idle lane a visitor stays on its multiplexed stream. Lanes pay for bulk transfers,
//! most on long paths where one multiplexed connection is bound by its windows
//! (`docs/benchmarks.md`).
//!
//! Each TCP or TLS `expose` session gets a [`LaneToken`] in its welcome and a [`LanePool`]
//! here; a lane proves which session it belongs to by sending the token after the preface,
//! over the same kind of connection as its session. QUIC sessions get none: their streams
//! are already independent.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::relay::{MovableLane, Transferred, WantBack};
use crate::sniff::Replay;
use crate::types::LaneToken;

/// Idle lanes one session may park on the hub; further offers are closed. Bounds what an
/// agent (authenticated, but maybe misbehaving) can hold open here.
pub const MAX_IDLE_LANES: usize = 64;

/// A lane must present its token this quickly after its preface, unless the hub's
/// configuration says otherwise.
pub const TOKEN_DEADLINE: Duration = Duration::from_secs(5);

/// A TLS lane after its handshake (the sniffed ClientHello was replayed into it).
pub type TlsLane = tokio_rustls::server::TlsStream<Replay<TcpStream>>;

/// A lane, of its session's kind. `T` is rustls' stream as this end has it: the server side
/// at the hub ([`TlsLane`]), the client side at the agent ([`DialedLane`]).
pub enum Lane<T = TlsLane> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// A lane as the agent dialed it.
pub type DialedLane = Lane<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> MovableLane for Lane<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn write_head(&mut self, head: &[u8], first: Option<&[u8]>) -> std::io::Result<()> {
        match self {
            Lane::Plain(lane) => lane.write_head(head, first).await,
            Lane::Tls(lane) => lane.write_head(head, first).await,
        }
    }

    async fn relay_at_hub(self, visitor: TcpStream, bulk_sent: bool) -> std::io::Result<(Transferred, Option<Self>)> {
        Ok(match self {
            Lane::Plain(lane) => {
                let (moved, lane) = lane.relay_at_hub(visitor, bulk_sent).await?;
                (moved, lane.map(Lane::Plain))
            }
            Lane::Tls(lane) => {
                let (moved, lane) = lane.relay_at_hub(visitor, bulk_sent).await?;
                (moved, lane.map(Lane::Tls))
            }
        })
    }

    async fn relay_at_agent(
        self,
        target: TcpStream,
        want_back: WantBack,
    ) -> std::io::Result<(Transferred, Option<Self>)> {
        Ok(match self {
            Lane::Plain(lane) => {
                let (moved, lane) = lane.relay_at_agent(target, want_back).await?;
                (moved, lane.map(Lane::Plain))
            }
            Lane::Tls(lane) => {
                let (moved, lane) = lane.relay_at_agent(target, want_back).await?;
                (moved, lane.map(Lane::Tls))
            }
        })
    }
}

impl Lane {
    fn socket(&self) -> &TcpStream {
        match self {
            Lane::Plain(tcp) => tcp,
            Lane::Tls(tls) => tls.get_ref().0.get_ref(),
        }
    }

    fn kind(&self) -> LaneKind {
        match self {
            Lane::Plain(_) => LaneKind::Plain,
            Lane::Tls(_) => LaneKind::Tls,
        }
    }
}

/// What a session's lanes are: the kind of its own connection, so a token learned over TLS
/// is never accepted on a plain connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneKind {
    Plain,
    Tls,
}

impl LaneKind {
    /// The lanes a connection of `transport` gets: its own kind of connection; none beside
    /// QUIC, whose streams are already independent.
    pub fn for_transport(transport: crate::mux::Transport) -> Option<Self> {
        match transport {
            crate::mux::Transport::Tcp => Some(LaneKind::Plain),
            crate::mux::Transport::Tls => Some(LaneKind::Tls),
            crate::mux::Transport::Quic => None,
        }
    }
}

/// Whether a parked lane is still open and has sent nothing (an idle lane never does): a lane
/// the agent closed is readable (its end of file, or its close_notify, is waiting).
fn is_quiet(lane: &Lane) -> bool {
    matches!(lane.socket().try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The idle lanes of one agent session, oldest first.
pub struct LanePool {
    kind: LaneKind,
    idle: Mutex<VecDeque<Lane>>,
    /// Set when the session ends: lanes coming back from a relay are closed, not parked.
    closed: AtomicBool,
    /// Lanes ever admitted (each a new connection).
    admitted: AtomicU64,
    /// How many are idle, for whoever wants to wait for lanes (tests, metrics).
    count: watch::Sender<usize>,
}

impl LanePool {
    fn new(kind: LaneKind) -> Self {
        Self {
            kind,
            idle: Mutex::default(),
            closed: Default::default(),
            admitted: Default::default(),
            count: watch::Sender::new(0),
        }
    }

    pub fn kind(&self) -> LaneKind {
        self.kind
    }

    /// Parks a lane; returns it back when the pool is full.
    fn offer(&self, lane: Lane) -> Result<(), Lane> {
        let mut idle = self.idle.lock().expect("lane pool lock");
        if idle.len() >= MAX_IDLE_LANES {
            return Err(lane);
        }
        idle.push_back(lane);
        self.count.send_replace(idle.len());
        Ok(())
    }

    /// A lane whose connection ended cleanly, parked again (see `relay::plain_lane`). Closed
    /// instead once the session is over or the pool is full.
    pub fn give_back(&self, lane: Lane) {
        if !self.closed.load(Ordering::Relaxed) {
            let _ = self.offer(lane);
        }
    }

    /// Lanes admitted since the session started.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// An idle lane that is still open, if there is one. Lanes found closed (or chatty) on
    /// the way are dropped, not used.
    pub fn take(&self) -> Option<Lane> {
        let mut idle = self.idle.lock().expect("lane pool lock");
        let mut found = None;
        while let Some(lane) = idle.pop_front() {
            if is_quiet(&lane) {
                found = Some(lane);
                break;
            }
        }
        self.count.send_replace(idle.len());
        found
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.lock().expect("lane pool lock").clear();
        self.count.send_replace(0);
    }

    pub fn idle(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until the pool is closed (its session ended or its agent drains).
    pub async fn wait_closed(&self) {
        let _ = self
            .count
            .subscribe()
            .wait_for(|_| self.closed.load(Ordering::Relaxed))
            .await;
    }

    /// Waits until at least `n` lanes are idle.
    pub async fn wait_idle(&self, n: usize) {
        let _ = self.count.subscribe().wait_for(|idle| *idle >= n).await;
    }
}

/// Every session's lane pool by token.
pub struct LaneBook {
    pools: Mutex<HashMap<LaneToken, Arc<LanePool>>>,
    token_deadline: Duration,
}

impl LaneBook {
    pub fn new(token_deadline: Duration) -> Self {
        Self {
            pools: Mutex::default(),
            token_deadline,
        }
    }

    /// A new token and its (empty) pool, for a session that starts.
    pub fn open(&self, kind: LaneKind) -> (LaneToken, Arc<LanePool>) {
        let token = LaneToken::random();
        let pool = Arc::new(LanePool::new(kind));
        self.pools.lock().expect("lane book lock").insert(token, pool.clone());
        (token, pool)
    }

    /// Idle lanes of every session.
    pub fn idle_total(&self) -> usize {
        self.pools
            .lock()
            .expect("lane book lock")
            .values()
            .map(|p| p.idle())
            .sum()
    }

    /// Forgets a session's token and closes its idle lanes (the agent sees them end).
    pub fn close(&self, token: LaneToken) {
        let pool = self.pools.lock().expect("lane book lock").remove(&token);
        if let Some(pool) = pool {
            pool.close();
        }
    }

    /// A plain connection that announced itself as a lane: reads its token and parks it with
    /// its session. Unknown tokens, slow or chatty lanes, and lanes over the cap are closed.
    pub async fn admit_plain(&self, mut io: Replay<TcpStream>, peer: SocketAddr) {
        let Some(token) = self.read_token(&mut io, peer).await else {
            return;
        };
        let (unread, lane) = io.into_parts();
        if !unread.is_empty() {
            tracing::debug!(%peer, "lane sent bytes before it was used; closing");
            return;
        }
        self.park(token, Lane::Plain(lane), peer);
    }

    /// The same for a lane that came over TLS (its handshake done by rustls).
    pub async fn admit_tls(&self, mut io: TlsLane, peer: SocketAddr) {
        if let Some(token) = self.read_token(&mut io, peer).await {
            self.park(token, Lane::Tls(Box::new(io)), peer);
        }
    }

    async fn read_token<T: AsyncRead + Unpin>(&self, io: &mut T, peer: SocketAddr) -> Option<LaneToken> {
        let mut token = [0u8; 16];
        match tokio::time::timeout(self.token_deadline, io.read_exact(&mut token)).await {
            Ok(Ok(_)) => Some(LaneToken(token)),
            _ => {
                tracing::debug!(%peer, "lane without a token; closing");
                None
            }
        }
    }

    /// Bytes a lane sends after its token are caught when it is taken (see [`is_quiet`]).
    fn park(&self, token: LaneToken, lane: Lane, peer: SocketAddr) {
        let pool = self.pools.lock().expect("lane book lock").get(&token).cloned();
        let Some(pool) = pool else {
            tracing::debug!(%peer, "lane with an unknown token; closing");
            return;
        };
        if pool.kind != lane.kind() {
            tracing::debug!(%peer, "lane is not the same kind of connection as its session; closing");
        } else if pool.offer(lane).is_err() {
            tracing::debug!(%peer, "lane pool full; closing the offered lane");
        } else {
            pool.admitted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn lane_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let agent_side = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (hub_side, _) = listener.accept().await.unwrap();
        (agent_side, hub_side)
    }

    #[tokio::test]
    async fn lanes_are_admitted_only_with_a_known_token_and_dead_ones_are_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let book = LaneBook::new(TOKEN_DEADLINE);
        let (token, pool) = book.open(LaneKind::Plain);

        let (mut stranger, hub_side) = lane_pair(&listener).await;
        stranger.write_all(&[7u8; 16]).await.unwrap();
        book.admit_plain(Replay::new(Default::default(), hub_side), peer).await;
        assert_eq!(pool.idle(), 0, "a wrong token parks nothing");

        // A lane the agent closed while it was parked: its end of file is waiting.
        let (mut closed_lane, hub_side) = lane_pair(&listener).await;
        closed_lane.write_all(&token.0).await.unwrap();
        drop(closed_lane);
        hub_side.readable().await.unwrap();
        book.admit_plain(Replay::new(Default::default(), hub_side), peer).await;
        let (mut live_lane, hub_side) = lane_pair(&listener).await;
        live_lane.write_all(&token.0).await.unwrap();
        book.admit_plain(Replay::new(Default::default(), hub_side), peer).await;
        assert_eq!(pool.idle(), 2);

        let Some(Lane::Plain(mut taken)) = pool.take() else {
            panic!("the live lane is handed out");
        };
        assert_eq!(pool.idle(), 0, "the closed lane was dropped on the way");
        taken.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        live_lane.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping", "the lane handed out is the one still open");
        assert!(pool.take().is_none());

        book.close(token);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_token_is_accepted_only_on_its_sessions_kind_of_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let book = LaneBook::new(TOKEN_DEADLINE);
        let (token, pool) = book.open(LaneKind::Tls);
        let (mut plain, hub_side) = lane_pair(&listener).await;
        plain.write_all(&token.0).await.unwrap();
        book.admit_plain(Replay::new(Default::default(), hub_side), peer).await;
        assert_eq!(
            pool.idle(),
            0,
            "a TLS session's token offered in plain text parks nothing"
        );
    }
}
