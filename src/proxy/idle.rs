//! Idle HTTP/1.1 connections to next hops, kept for the next request going the same way:
//! an origin (`DIRECT`, `SOCKS5`) by its address, a proxy or a tunnel by itself. A browser
//! or test suite behind the proxy makes many requests to few hosts; without reuse each one
//! paid a TCP handshake, and at a few thousand requests a second the closed connections'
//! TIME_WAIT states ran the machine out of ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::Body;
use crate::pac::result::Route;

/// Idle connections kept per next hop.
const PER_HOP: usize = 32;
/// Next hops with idle connections kept at most; beyond, a new one is not kept.
const HOPS: usize = 1024;
/// How long a connection may sit idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where an idle connection leads.
pub type Key = (Route, String);

/// A connection ready for a request, and how requests go on it.
pub struct Hop {
    pub sender: SendRequest<Body>,
    /// The next hop is a proxy: requests go in absolute form.
    pub to_proxy: bool,
    /// `Proxy-Authorization` for that proxy.
    pub authorization: Option<String>,
    /// The connection has carried a request before: its server may close it at any moment.
    pub reused: bool,
}

#[derive(Default)]
pub struct Idle {
    hops: Mutex<HashMap<Key, Vec<(Instant, Hop)>>>,
    /// Whether the task that closes connections idle too long runs.
    sweeping: std::sync::atomic::AtomicBool,
}

impl Idle {
    /// The key for requests to `authority` over `route`: a proxy takes requests for any
    /// destination, an origin only its own.
    pub fn key(route: &Route, authority: &str) -> Key {
        match route {
            Route::Direct | Route::Socks5(_) => (route.clone(), authority.to_string()),
            Route::Http(_) | Route::Https(_) | Route::Tunnel(_) => (route.clone(), String::new()),
        }
    }

    /// An idle connection for `key` that is still open, if there is one.
    pub fn take(&self, key: &Key) -> Option<Hop> {
        let mut hops = self.hops.lock().expect("idle lock");
        let idle = hops.get_mut(key)?;
        let found = std::iter::from_fn(|| idle.pop())
            .find(|(since, hop)| since.elapsed() < IDLE_TIMEOUT && !hop.sender.is_closed() && hop.sender.is_ready());
        if idle.is_empty() {
            hops.remove(key);
        }
        found.map(|(_, hop)| Hop { reused: true, ..hop })
    }

    /// Keeps `hop` for `key` once its response has been read to the end (or drops it, if
    /// its connection ends first). Connections idle past [`IDLE_TIMEOUT`] are closed.
    pub fn give_back(self: &Arc<Self>, key: Key, mut hop: Hop) {
        if !self.sweeping.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.sweep_every(IDLE_TIMEOUT / 4);
        }
        let idle = Arc::clone(self);
        tokio::spawn(async move {
            if hop.sender.ready().await.is_err() {
                return;
            }
            let mut hops = idle.hops.lock().expect("idle lock");
            if hops.len() >= HOPS && !hops.contains_key(&key) {
                return;
            }
            let kept = hops.entry(key).or_default();
            kept.retain(|(since, hop)| since.elapsed() < IDLE_TIMEOUT && !hop.sender.is_closed());
            if kept.len() < PER_HOP {
                kept.push((Instant::now(), hop));
            }
        });
    }

    /// Closes connections idle past [`IDLE_TIMEOUT`] every `period`, for as long as the proxy
    /// lives: one task for all of them (a timer per returned connection cost one sleeping
    /// task per request at tens of thousands of requests a second).
    fn sweep_every(self: &Arc<Self>, period: Duration) {
        let idle = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(idle) = idle.upgrade() else { return };
                let mut hops = idle.hops.lock().expect("idle lock");
                hops.retain(|_, kept| {
                    kept.retain(|(since, hop)| since.elapsed() < IDLE_TIMEOUT && !hop.sender.is_closed());
                    !kept.is_empty()
                });
            }
        });
    }
}
