//! burrow: one binary that is a tunnel hub, an `expose` agent and a `reach` agent.
//!
//! Map of the crate, following the data path:
//! - [`cli`] / [`app`]: flags, config layering, and what each subcommand runs; [`client`]:
//!   the REST client of `burrow tunnels`; [`http_client`]: the one HTTP request helper
//!   behind it, PAC fetching and webhooks.
//! - [`answer`]: HTTP errors the hub or an agent sends a visitor itself (404, 502, 503).
//! - [`wire`]: sans-IO control messages and stream headers between agents and the hub.
//! - [`mux`]: many streams over one agent connection — QUIC (quinn) or HTTP/2 over TLS/TCP.
//! - [`sniff`]: sans-IO classification of a connection's first bytes (ClientHello, request
//!   line and head, PROXY v1/v2), for the hub's main port and public ports alike;
//!   [`fuzzing`] holds a fuzz target for every parser of network input.
//! - [`carrier`]: the hub's link to one agent connection ([`carrier::AgentLink`]), which
//!   alone decides how a visitor or UDP flow travels (stream, lane, datagrams), and the
//!   lanes themselves.
//! - [`relay`]: the hot path copying bytes both ways with half-close and backpressure,
//!   splicing socket to socket on plain lanes (dedicated data connections, `carrier/lanes.rs`),
//!   moving connections from the multiplexer onto them once bulk (`relay/moving.rs`), the
//!   copy between any two byte streams (TLS lanes), and the options every relayed TCP
//!   connection gets (`relay/socket.rs`).
//! - [`udp`]: UDP flows over the multiplexer (QUIC datagrams or stream frames) or a lane of
//!   their own, and their sockets.
//! - [`hub`]: listeners, the tunnel registry with leases and pools, public ports, shares, the
//!   REST API.
//! - [`agent`]: dialing the hub, `expose` and `reach`, reconnection with backoff.
//! - [`store`]: SQLite state (users, tunnel records) that survives restarts.
//! - [`tls`]: certificate generation and rustls configurations.
//! - [`runtime`]: the async runtime, and its brief busy-polling before sleeping.
//! - [`shutdown`]: graceful drain on the first signal.
//! - [`ops`] / [`metrics`]: the operational API of every role (`--api-address`) and the
//!   `burrow_*` metric families it serves; [`notify`]: systemd readiness.
//! - [`pac`]: PAC scripts on QuickJS, their helpers and what their results mean, and the
//!   worker pool with its caches that serves a proxy.
//! - [`proxy`]: the HTTP/CONNECT forward proxy of `reach --http-proxy` and
//!   `expose --forward-proxy`: routing by domain lists and PAC, upstream dialers.
//! - [`types`]: newtypes for ids, names and secrets.
#![forbid(unsafe_code)]

/// The version `--version` prints: the package version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BURROW_COMMIT"), ")");

pub mod agent;
pub mod answer;
pub mod app;
pub mod carrier;
pub mod cli;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod http_client;
pub mod hub;
pub mod metrics;
pub mod mux;
pub mod notify;
pub mod ops;
pub mod pac;
pub mod proxy;
pub mod relay;
pub mod runtime;
pub mod shutdown;
pub mod sniff;
pub mod store;
pub mod tls;
pub mod types;
pub mod udp;
pub mod wire;
