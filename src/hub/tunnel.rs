//! One tunnel as the hub holds it while it runs: its members (the agent connections
//! serving it, picked round-robin), its live counters, and its record behind one lock.
//! The registry (`registry.rs`) owns the maps that find tunnels and their lifecycle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::sniff::Detected;
use crate::store::TunnelRecord;
use crate::types::{AgentId, Protocol, TunnelId, TunnelName, UserName};
use crate::wire::HubMsg;

/// Identifies one agent connection to the hub (a reconnect is a new session).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

/// An agent connection serving a tunnel.
#[derive(Clone)]
pub struct Member {
    pub session: SessionId,
    pub agent_id: AgentId,
    /// How visitors and flows reach this member's agent.
    pub link: Arc<crate::carrier::AgentLink>,
    /// Messages to the agent's control stream (e.g. "you were replaced").
    pub control: mpsc::UnboundedSender<HubMsg>,
}

pub struct Tunnel {
    pub id: TunnelId,
    pub owner: UserName,
    /// What the tunnel carries; fixed for its life (a re-expose with another protocol is a
    /// new tunnel).
    pub protocol: Protocol,
    pub(super) state: Mutex<TunnelState>,
    /// Woken whenever a member joins, so visitors waiting out a reconnect can proceed.
    pub(super) member_joined: Notify,
    pub(super) next_member: AtomicUsize,
    /// Connections open now through this tunnel, by protocol.
    pub open: ProtocolCounts,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections and UDP flows carried on lanes rather than multiplexed streams, since the
    /// hub started.
    pub lane_visitors: AtomicU64,
    /// Paused through the API: new connections are refused, running ones go on.
    pub paused: std::sync::atomic::AtomicBool,
    /// Connections by the protocol detected on them (or declared by the tunnel).
    pub connections: ProtocolCounts,
}

/// Connections counted by protocol since the tunnel started.
#[derive(Default)]
pub struct ProtocolCounts([AtomicU64; 3]);

impl ProtocolCounts {
    pub fn count(&self, protocol: Detected) {
        self.0[protocol as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One fewer (for counts of what is open now).
    pub fn leave(&self, protocol: Detected) {
        self.0[protocol as usize].fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self, protocol: Detected) -> u64 {
        self.0[protocol as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        Detected::ALL.iter().map(|p| self.get(*p)).sum()
    }
}

impl std::fmt::Display for ProtocolCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = Detected::ALL.iter().map(|p| format!("{p}={}", self.get(*p))).collect();
        f.write_str(&counts.join(" "))
    }
}

pub(super) struct TunnelState {
    pub(super) record: TunnelRecord,
    pub(super) members: Vec<Member>,
    /// Bumped each time the tunnel loses its last member; a lease timer only ends the tunnel
    /// if the epoch it started in is still current.
    pub(super) lease_epoch: u64,
    /// The task serving the public port; the port closes when it ends (`registry::close_port`).
    pub(super) listener: Option<tokio::task::JoinHandle<()>>,
}

impl Tunnel {
    /// Connections open now (`jobs_running`).
    pub fn jobs(&self) -> u64 {
        self.open.total()
    }

    pub fn record(&self) -> TunnelRecord {
        self.state.lock().expect("tunnel lock").record.clone()
    }

    /// Its name now (the owner may rename it through the API).
    pub fn name(&self) -> TunnelName {
        self.state.lock().expect("tunnel lock").record.name.clone()
    }

    /// Removes every member, for a tunnel being stopped: the caller tells their agents.
    pub fn take_members(&self) -> Vec<Member> {
        std::mem::take(&mut self.state.lock().expect("tunnel lock").members)
    }

    /// Replaces the tunnel's metadata; the caller stores the record.
    pub fn set_metadata(&self, metadata: std::collections::BTreeMap<String, String>) {
        self.state.lock().expect("tunnel lock").record.metadata = metadata;
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The agents serving this tunnel now.
    pub fn member_agents(&self) -> Vec<AgentId> {
        let state = self.state.lock().expect("tunnel lock");
        state.members.iter().map(|m| m.agent_id).collect()
    }

    pub fn member_count(&self) -> usize {
        self.state.lock().expect("tunnel lock").members.len()
    }

    /// The lane pools of the members that have one.
    pub fn lane_pools(&self) -> Vec<Arc<crate::carrier::lanes::LanePool>> {
        let state = self.state.lock().expect("tunnel lock");
        state.members.iter().filter_map(|m| m.link.lanes().cloned()).collect()
    }

    /// Whether `user` may reach this tunnel through a `reach` agent.
    pub fn reachable_by(&self, user: &UserName) -> bool {
        &self.owner == user || self.state.lock().expect("tunnel lock").record.shared_all
    }

    /// A member to carry the next connection, round-robin over the pool. While the tunnel has
    /// no member (its agent is reconnecting) waits up to `wait` for one.
    pub async fn pick_member(&self, wait: Duration) -> Option<Member> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let joined = self.member_joined.notified();
            {
                let state = self.state.lock().expect("tunnel lock");
                if !state.members.is_empty() {
                    let i = self.next_member.fetch_add(1, Ordering::Relaxed) % state.members.len();
                    return Some(state.members[i].clone());
                }
            }
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                return None;
            }
        }
    }
}
