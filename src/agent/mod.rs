//! The agent roles: `expose` publishes a local service through the hub, `reach` gives local
//! programs a port that leads to an exposed service. `session.rs` dials the hub and performs
//! the hello; both roles reconnect with backoff when the connection drops.

pub mod console;
pub mod expose;
mod lanes;
pub mod reach;
pub mod session;
mod target;

pub use lanes::{MAX_BUSY_LANES, MAX_BUSY_TLS_LANES};

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::types::{AgentId, Secret, TransportKind, UserName};
use crate::wire::RefuseCode;

/// Settings shared by every agent role, already validated.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `HOST:PORT` of the hub's main port; HOST is also the TLS server name.
    pub hub: String,
    pub user: UserName,
    pub access_key: Secret,
    /// `reach --share`: the link's token, presented instead of the credentials.
    pub share: Option<Secret>,
    pub agent_id: AgentId,
    pub transport: TransportKind,
    /// `None` only for `--transport tcp`, which needs no TLS.
    pub tls: Option<crate::tls::ClientTls>,
    pub shutdown_timeout: Duration,
    /// Until the agent first connects, give up after this long (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Idle expiry and flow bound for UDP flows this agent serves.
    pub udp: crate::udp::UdpLimits,
    pub udp_stats: Arc<crate::udp::UdpStats>,
    /// `expose` over TCP or TLS: idle lanes kept dialed (`--lanes`); 0 disables them.
    pub lanes: usize,
    /// The state of the link to the hub, for readiness and metrics.
    pub link: Arc<LinkStatus>,
    /// `expose --forward-proxy`: the proxy that serves the streams of forward-proxy tunnels.
    pub forward_proxy: Option<Arc<crate::proxy::ForwardProxy>>,
}

/// What the operational API tells of an `expose` or `reach` agent.
pub struct AgentView {
    pub link: Arc<LinkStatus>,
    pub shutdown: crate::shutdown::Shutdown,
    /// `--hub`.
    pub hub: String,
    /// The agent's tunnel, once the hub has answered for it.
    pub tunnel: std::sync::Mutex<Option<crate::wire::TunnelInfo>>,
}

impl crate::ops::RoleView for AgentView {
    fn ready(&self) -> bool {
        self.link.is_up() && !self.shutdown.is_draining()
    }

    /// An agent whose link is down is reconnecting: not healthy until it is back.
    fn healthy(&self) -> bool {
        self.link.is_up()
    }

    fn info(&self) -> serde_json::Value {
        let tunnel = self.tunnel.lock().expect("agent view lock").clone();
        serde_json::json!({
            "tunnel_id": tunnel.as_ref().map(|t| t.id),
            "tunnel_name": tunnel.as_ref().map(|t| t.name.clone()),
            "tunnel_server": self.hub,
            "tunnel_host": tunnel.and_then(|t| t.public_address),
        })
    }
}

/// Whether an agent's link to the hub is up, over which transport, and how often it was
/// made again: what `/readyz` and `/metrics` tell of an agent.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// The live session's transport (`Transport as u8 + 1`); 0 while there is none.
    transport: AtomicU8,
    sessions: AtomicU64,
    reconnects: AtomicU64,
    /// Connections this agent carried (`expose`: from the hub to its target; `reach`: from
    /// local clients to the hub), and the bytes they moved once ended.
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    /// Toward the target (`expose`) or the hub (`reach`).
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// `expose`: connections to the target that failed, by [`DialError`].
    dial_errors: [AtomicU64; DialError::ALL.len()],
    /// `expose` over TCP or TLS: lanes dialed and waiting, and lanes carrying a connection.
    pub lanes_idle: AtomicU64,
    pub lanes_busy: AtomicU64,
}

/// Why an `expose` agent could not connect to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialError {
    Refused,
    Timeout,
    /// No route, no such host, or any other failure.
    Unreachable,
}

impl DialError {
    pub const ALL: [DialError; 3] = [DialError::Refused, DialError::Timeout, DialError::Unreachable];

    pub fn as_str(self) -> &'static str {
        match self {
            DialError::Refused => "refused",
            DialError::Timeout => "timeout",
            DialError::Unreachable => "unreachable",
        }
    }
}

impl LinkStatus {
    /// A session came up over `transport`.
    pub fn up(&self, transport: crate::mux::Transport) {
        if self.sessions.fetch_add(1, Ordering::Relaxed) > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.transport.store(transport as u8 + 1, Ordering::Relaxed);
    }

    /// The session ended; the agent is reconnecting or stopping.
    pub fn down(&self) {
        self.transport.store(0, Ordering::Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.transport.load(Ordering::Relaxed) != 0
    }

    /// `quic`, `tls` or `tcp` while a session is up.
    pub fn transport(&self) -> Option<&'static str> {
        use crate::mux::Transport;
        let all = [Transport::Quic, Transport::Tls, Transport::Tcp];
        let code = self.transport.load(Ordering::Relaxed);
        all.into_iter().find(|t| *t as u8 + 1 == code).map(Transport::as_str)
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub fn dial_failed(&self, reason: DialError) {
        self.dial_errors[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dial_errors(&self) -> impl Iterator<Item = (DialError, u64)> + '_ {
        DialError::ALL
            .into_iter()
            .map(|r| (r, self.dial_errors[r as usize].load(Ordering::Relaxed)))
    }

    /// Counts a connection for as long as the returned guard lives.
    pub fn connection(self: &Arc<Self>) -> OpenConnection {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// A connection an agent is carrying; counts the bytes it moved when it ends.
pub struct OpenConnection(Arc<LinkStatus>);

impl OpenConnection {
    pub fn moved(&self, bytes_in: u64, bytes_out: u64) {
        self.0.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.0.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session with the hub came up: the first time (`first`) the tunnel is ready, later it
/// is a reconnection.
pub struct SessionUp<'a> {
    pub info: &'a crate::wire::TunnelInfo,
    /// `quic`, `tls` or `tcp`.
    pub transport: crate::mux::Transport,
    pub first: bool,
}

/// `--connect-timeout`: until the agent has connected once, it tries to reach the hub
/// only until this deadline, then ends with exit code 1 and the last reason. Later
/// reconnections are not bounded.
pub(crate) struct FirstConnection {
    deadline: Option<tokio::time::Instant>,
}

impl FirstConnection {
    pub(crate) fn new(config: &AgentConfig) -> Self {
        Self {
            deadline: Some(tokio::time::Instant::now() + config.connect_timeout),
        }
    }

    /// Connected once: no deadline from now on.
    pub(crate) fn done(&mut self) {
        self.deadline = None;
    }

    /// Runs one attempt to reach the hub, cut off at the deadline.
    pub(crate) async fn attempt<T>(
        &self,
        config: &AgentConfig,
        attempt: impl std::future::Future<Output = Result<T, AgentError>>,
    ) -> Result<T, AgentError> {
        let Some(deadline) = self.deadline else {
            return attempt.await;
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or_else(|_| Err(give_up(config, "the hub did not answer in time")))
    }

    /// Waits `delay` before the next attempt, or fails with `last_error` if the deadline
    /// comes first.
    pub(crate) async fn pause(
        &self,
        config: &AgentConfig,
        delay: Duration,
        last_error: &AgentError,
    ) -> Result<(), AgentError> {
        match self.deadline {
            Some(deadline) if tokio::time::Instant::now() + delay >= deadline => {
                tokio::time::sleep_until(deadline).await;
                Err(give_up(config, &last_error.to_string()))
            }
            _ => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}

fn give_up(config: &AgentConfig, why: &str) -> AgentError {
    AgentError::GaveUp(format!(
        "no connection to the hub at {} within {:?} (--connect-timeout): {why}",
        config.hub, config.connect_timeout
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The hub said no; retrying will not help.
    #[error("{message}")]
    Refused { code: RefuseCode, message: String },
    /// The hub could not be reached or the connection broke; worth retrying.
    #[error("{0}")]
    Transient(String),
    /// Local misconfiguration (bad address, no TLS roots).
    #[error("{0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The first connection did not come up within `--connect-timeout`.
    #[error("{0}")]
    GaveUp(String),
}

impl AgentError {
    /// The process exit code for this failure (SPEC: 2 for usage/config errors and rejected
    /// credentials, 1 otherwise).
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Refused {
                code: RefuseCode::Conflict,
                ..
            } => 1,
            AgentError::Refused { .. } | AgentError::Config(_) | AgentError::Bind { .. } => 2,
            AgentError::Transient(_) | AgentError::GaveUp(_) => 1,
        }
    }
}

/// Exponential backoff with full jitter, so a hub restart is not met by every agent at once.
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { attempt: 0, base, cap }
    }

    /// The agents' pace for reaching the hub again: from 250 ms up to 15 s.
    pub fn for_reconnects() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(15))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniformly random in [ceiling/2, ceiling], where the ceiling doubles per
    /// attempt up to `cap`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays.last().unwrap() >= &Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
