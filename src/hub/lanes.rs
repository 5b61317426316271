//! Lanes on the hub: dedicated plain-TCP data connections that an `expose` agent dials ahead
//! of need. A visitor that finds an idle lane is spliced socket to socket onto it (see
//! [`crate::relay::relay_sockets`]) instead of being framed into the agent's HTTP/2
//! connection; with no idle lane it takes a multiplexed stream as before.
//!
//! Each plain-TCP `expose` session gets a [`LaneToken`] in its welcome and a [`LanePool`]
//! here; a lane proves which session it belongs to by sending the token after the preface.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::sniff::Replay;
use crate::types::LaneToken;

/// Idle lanes one session may park on the hub; further offers are closed. Bounds what an
/// agent (authenticated, but maybe misbehaving) can hold open here.
pub const MAX_IDLE_LANES: usize = 64;

/// A lane must present its token this quickly after its preface, unless the hub's
/// configuration says otherwise.
pub const TOKEN_DEADLINE: Duration = Duration::from_secs(5);

/// The idle lanes of one agent session, oldest first.
pub struct LanePool {
    idle: Mutex<VecDeque<TcpStream>>,
    /// How many are idle, for whoever wants to wait for lanes (tests, metrics).
    count: watch::Sender<usize>,
}

impl Default for LanePool {
    fn default() -> Self {
        Self {
            idle: Mutex::default(),
            count: watch::Sender::new(0),
        }
    }
}

impl LanePool {
    /// Parks a lane; returns it back when the pool is full.
    fn offer(&self, lane: TcpStream) -> Result<(), TcpStream> {
        let mut idle = self.idle.lock().expect("lane pool lock");
        if idle.len() >= MAX_IDLE_LANES {
            return Err(lane);
        }
        idle.push_back(lane);
        self.count.send_replace(idle.len());
        Ok(())
    }

    /// An idle lane that is still open, if there is one. A lane the agent has closed (or that
    /// sent anything, which an idle lane never does) is readable: it is dropped, not used.
    pub fn take(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().expect("lane pool lock");
        let mut found = None;
        while let Some(lane) = idle.pop_front() {
            match lane.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    found = Some(lane);
                    break;
                }
                _ => continue,
            }
        }
        self.count.send_replace(idle.len());
        found
    }

    fn close(&self) {
        self.idle.lock().expect("lane pool lock").clear();
        self.count.send_replace(0);
    }

    pub fn idle(&self) -> usize {
        *self.count.borrow()
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
    pub fn open(&self) -> (LaneToken, Arc<LanePool>) {
        let token = LaneToken::random();
        let pool = Arc::new(LanePool::default());
        self.pools.lock().expect("lane book lock").insert(token, pool.clone());
        (token, pool)
    }

    /// Forgets a session's token and closes its idle lanes (the agent sees them end).
    pub fn close(&self, token: LaneToken) {
        let pool = self.pools.lock().expect("lane book lock").remove(&token);
        if let Some(pool) = pool {
            pool.close();
        }
    }

    /// A connection that announced itself as a lane: reads its token and parks it with its
    /// session. Unknown tokens, slow or chatty lanes, and lanes over the cap are closed.
    pub async fn admit(&self, mut io: Replay<TcpStream>, peer: SocketAddr) {
        let mut token = [0u8; 16];
        match tokio::time::timeout(self.token_deadline, io.read_exact(&mut token)).await {
            Ok(Ok(_)) => {}
            _ => {
                tracing::debug!(%peer, "lane without a token; closing");
                return;
            }
        }
        let (unread, lane) = io.into_parts();
        if !unread.is_empty() {
            tracing::debug!(%peer, "lane sent bytes before it was used; closing");
            return;
        }
        let pool = self
            .pools
            .lock()
            .expect("lane book lock")
            .get(&LaneToken(token))
            .cloned();
        match pool {
            Some(pool) => {
                if pool.offer(lane).is_err() {
                    tracing::debug!(%peer, "lane pool full; closing the offered lane");
                }
            }
            None => tracing::debug!(%peer, "lane with an unknown token; closing"),
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
        let (token, pool) = book.open();

        let (mut stranger, hub_side) = lane_pair(&listener).await;
        stranger.write_all(&[7u8; 16]).await.unwrap();
        book.admit(Replay::new(Default::default(), hub_side), peer).await;
        assert_eq!(pool.idle(), 0, "a wrong token parks nothing");

        // A lane the agent closed while it was parked: its end of file is waiting.
        let (mut closed_lane, hub_side) = lane_pair(&listener).await;
        closed_lane.write_all(&token.0).await.unwrap();
        drop(closed_lane);
        hub_side.readable().await.unwrap();
        book.admit(Replay::new(Default::default(), hub_side), peer).await;
        let (mut live_lane, hub_side) = lane_pair(&listener).await;
        live_lane.write_all(&token.0).await.unwrap();
        book.admit(Replay::new(Default::default(), hub_side), peer).await;
        assert_eq!(pool.idle(), 2);

        let mut taken = pool.take().expect("the live lane is handed out");
        assert_eq!(pool.idle(), 0, "the closed lane was dropped on the way");
        taken.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        live_lane.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping", "the lane handed out is the one still open");
        assert!(pool.take().is_none());

        book.close(token);
        assert_eq!(pool.idle(), 0);
    }
}
