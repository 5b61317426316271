//! UDP tunnels: flows over the multiplexer (`flow.rs`) or on a lane of their own
//! (`lane.rs`), and the sockets at either end (`socket.rs`): a public or local UDP socket fanning out to one flow per client address,
//! and the expose side's connected socket toward the target.

mod flow;
mod lane;
mod socket;
mod state;

use std::sync::atomic::AtomicU64;

pub use flow::{DatagramRouter, FlowWatch, UdpFlow};
pub use socket::{connect_target, serve_udp_socket, serve_udp_target, splice_flows, FlowOpener, UdpLimits};
pub use state::Sink;

/// Counters for every UDP flow of a process, ready to be exported as metrics.
#[derive(Debug, Default)]
pub struct UdpStats {
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub flows_opened: AtomicU64,
    pub flows_expired: AtomicU64,
    /// Over 65,507 bytes: cannot be a UDP datagram.
    pub drop_too_large: AtomicU64,
    /// A flow's queue (or QUIC's datagram buffer) was full: the consumer is slower than the
    /// producer.
    pub drop_queue_full: AtomicU64,
    /// Arrived after a newer datagram of the same flow had been delivered.
    pub drop_reordered: AtomicU64,
    /// For a flow this side does not know (or no longer knows).
    pub drop_unknown_flow: AtomicU64,
    /// A new client while the socket already has `max_flows` flows.
    pub drop_flow_limit: AtomicU64,
    /// Garbled framing from the peer.
    pub drop_malformed: AtomicU64,
}
