//! The agent roles: `expose` publishes a local service through the hub, `reach` gives local
//! programs a port that leads to an exposed service. `session.rs` dials the hub and performs
//! the hello; both roles reconnect with backoff when the connection drops.

pub mod expose;
mod lanes;
pub mod reach;
pub mod session;

pub use lanes::{MAX_BUSY_PLAIN_LANES, MAX_BUSY_TLS_LANES};

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
    pub agent_id: AgentId,
    pub transport: TransportKind,
    /// `None` only for `--transport tcp`, which needs no TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub shutdown_timeout: Duration,
    /// Idle expiry and flow bound for UDP flows this agent serves.
    pub udp: crate::udp::UdpLimits,
    pub udp_stats: Arc<crate::udp::UdpStats>,
    /// `expose` over TCP or TLS: idle lanes kept dialed (`--lanes`); 0 disables them.
    pub lanes: usize,
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
            AgentError::Transient(_) => 1,
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
