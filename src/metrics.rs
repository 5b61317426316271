//! The `burrow_*` metric families, in one place. Nothing here sits on the data path: the
//! data path keeps plain atomic counters (per tunnel, per UDP socket set, per agent), and
//! the collectors below read them when `/metrics` is scraped, so a tunnel's series exist
//! exactly while the tunnel does.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::hub::registry::{ProtocolCounts, Tunnel};
use crate::sniff::Detected;
use crate::udp::UdpStats;

/// A scrape in the format the client asked for: OpenMetrics when its `Accept` names it,
/// else the Prometheus text format. Returns the content type and the body.
pub fn render(registry: &Registry, accept: &str) -> Result<(&'static str, String), fmt::Error> {
    let mut body = String::new();
    if accept.contains("application/openmetrics-text") {
        prometheus_client::encoding::text::encode(&mut body, registry)?;
        Ok(("application/openmetrics-text; version=1.0.0; charset=utf-8", body))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, registry)?;
        Ok(("text/plain; version=0.0.4; charset=utf-8", body))
    }
}

/// Writes one family: a descriptor, then a sample per label set.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => sample.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// One unlabelled sample.
fn single(encoder: &mut DescriptorEncoder, name: &str, help: &str, kind: MetricType, value: u64) -> fmt::Result {
    family(encoder, name, help, kind, [([] as [(&str, &str); 0], value)])
}

/// What every role reports: build, process CPU, memory and descriptors, and UDP counters.
pub struct Common {
    pub udp: Arc<UdpStats>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Common")
    }
}

impl Collector for Common {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("BURROW_COMMIT")),
        ];
        family(
            &mut encoder,
            "burrow_build_info",
            "The running build.",
            MetricType::Gauge,
            [(build, 1)],
        )?;
        let process = ProcessStats::read();
        if let Some(cpu) = process.cpu_seconds {
            let mut metric = encoder.encode_descriptor(
                "burrow_process_cpu_seconds",
                "CPU time the process has used, user and system.",
                None,
                MetricType::Counter,
            )?;
            metric.encode_counter::<NoLabelSet, _, u64>(&cpu, None)?;
        }
        if let Some(rss) = process.resident_bytes {
            let help = "Resident memory of the process.";
            single(
                &mut encoder,
                "burrow_process_resident_memory_bytes",
                help,
                MetricType::Gauge,
                rss,
            )?;
        }
        if let Some(fds) = process.open_fds {
            let help = "File descriptors the process holds open.";
            single(&mut encoder, "burrow_process_open_fds", help, MetricType::Gauge, fds)?;
        }
        let udp = &self.udp;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        family(
            &mut encoder,
            "burrow_udp_datagrams",
            "UDP datagrams carried, by direction (in: from clients toward targets).",
            MetricType::Counter,
            [
                ([("direction", "in")], load(&udp.datagrams_in)),
                ([("direction", "out")], load(&udp.datagrams_out)),
            ],
        )?;
        family(
            &mut encoder,
            "burrow_udp_drops",
            "UDP datagrams dropped, by reason.",
            MetricType::Counter,
            [
                ("too_large", &udp.drop_too_large),
                ("queue_full", &udp.drop_queue_full),
                ("reordered", &udp.drop_reordered),
                ("unknown_flow", &udp.drop_unknown_flow),
                ("flow_limit", &udp.drop_flow_limit),
                ("malformed", &udp.drop_malformed),
            ]
            .map(|(reason, counter)| ([("reason", reason)], load(counter))),
        )
    }
}

/// Process figures from `/proc/self` (Linux); `None` where they cannot be read.
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
}

impl ProcessStats {
    fn read() -> Self {
        // Fields 14 and 15 of /proc/self/stat (after the parenthesised name) are user and
        // system time in clock ticks; the kernel's USER_HZ is 100 on every Linux build.
        const TICKS_PER_SECOND: f64 = 100.0;
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let cpu_seconds = stat.as_deref().and_then(|stat| {
            let after_name = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after_name.split(' ').collect();
            let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / TICKS_PER_SECOND)
        });
        let resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64);
        Self {
            cpu_seconds,
            resident_bytes,
            open_fds,
        }
    }
}

/// The hub's families: tunnels and agents, the main port's sniffing, lanes, and per tunnel
/// its connections and bytes.
pub struct Hub {
    pub registry: Arc<crate::hub::registry::Registry>,
    pub sniffing: Arc<crate::hub::sniffing::Sniffing>,
    pub sessions: Arc<crate::hub::SessionCounts>,
    /// Idle lanes over all sessions.
    pub lanes: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("metrics::Hub")
    }
}

impl Collector for Hub {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let tunnels = self.registry.tunnels();
        let active = tunnels.iter().filter(|t| t.member_count() > 0).count() as u64;
        family(
            &mut encoder,
            "burrow_tunnels",
            "Tunnels by state: active (an agent serves it) or waiting (its lease holds it for a reconnecting agent).",
            MetricType::Gauge,
            [
                ([("state", "active")], active),
                ([("state", "waiting")], tunnels.len() as u64 - active),
            ],
        )?;
        let sessions = &self.sessions;
        family(
            &mut encoder,
            "burrow_agents_connected",
            "Agent connections open now, by role.",
            MetricType::Gauge,
            [
                ([("role", "expose")], sessions.expose.load(Ordering::Relaxed)),
                ([("role", "reach")], sessions.reach.load(Ordering::Relaxed)),
            ],
        )?;
        family(
            &mut encoder,
            "burrow_main_port_connections",
            "Connections to the main port by what their first bytes were.",
            MetricType::Counter,
            self.sniffing
                .outcomes()
                .map(|(outcome, n)| ([("outcome", outcome.as_str())], n)),
        )?;
        let help = "Idle lanes (data connections of TCP and TLS agents) ready for the next connection.";
        single(
            &mut encoder,
            "burrow_lanes_idle",
            help,
            MetricType::Gauge,
            (self.lanes)() as u64,
        )?;
        let help = "Connections and UDP flows carried on lanes rather than multiplexed streams.";
        let on_lanes = tunnels.iter().map(|t| t.lane_visitors.load(Ordering::Relaxed)).sum();
        single(
            &mut encoder,
            "burrow_lane_connections",
            help,
            MetricType::Counter,
            on_lanes,
        )?;
        let names: Vec<(String, String)> = tunnels
            .iter()
            .map(|t| (t.id.to_string(), t.name().to_string()))
            .collect();
        let labels = |i: usize| [("tunnel_id", names[i].0.as_str()), ("tunnel", names[i].1.as_str())];
        // One sample per tunnel and protocol of the counts `of` picks.
        let by_protocol = |of: fn(&Tunnel) -> &ProtocolCounts| {
            let labels = &labels;
            tunnels.iter().enumerate().flat_map(move |(i, t)| {
                Detected::ALL.map(|p| {
                    let [id, name] = labels(i);
                    ([id, name, ("protocol", p.as_str())], of(t).get(p))
                })
            })
        };
        family(
            &mut encoder,
            "burrow_tunnel_connections",
            "Connections carried by a tunnel, by the protocol detected on them.",
            MetricType::Counter,
            by_protocol(|t| &t.connections),
        )?;
        family(
            &mut encoder,
            "burrow_tunnel_connections_open",
            "Connections open now through a tunnel, by protocol.",
            MetricType::Gauge,
            by_protocol(|t| &t.open),
        )?;
        family(
            &mut encoder,
            "burrow_tunnel_bytes",
            "Bytes a tunnel carried, by direction (in: from visitors toward the agent).",
            MetricType::Counter,
            tunnels.iter().enumerate().flat_map(|(i, t)| {
                let [id, name] = labels(i);
                [
                    ([id, name, ("direction", "in")], t.bytes_in.load(Ordering::Relaxed)),
                    ([id, name, ("direction", "out")], t.bytes_out.load(Ordering::Relaxed)),
                ]
            }),
        )
    }
}

/// An agent's families: its link to the hub.
pub struct Agent {
    pub status: Arc<crate::agent::LinkStatus>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("metrics::Agent")
    }
}

impl Collector for Agent {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let status = &self.status;
        let transport = status.transport();
        family(
            &mut encoder,
            "burrow_agent_connected",
            "1 while the agent's connection to the hub is up, by the transport it uses.",
            MetricType::Gauge,
            ["quic", "tls", "tcp"].map(|t| ([("transport", t)], u64::from(transport == Some(t)))),
        )?;
        let help = "Connections to the hub lost and made again.";
        single(
            &mut encoder,
            "burrow_agent_reconnects",
            help,
            MetricType::Counter,
            status.reconnects(),
        )?;
        let help = "Connections the agent carried (expose: to its target; reach: from local clients).";
        let total = status.connections_total.load(Ordering::Relaxed);
        single(
            &mut encoder,
            "burrow_agent_connections",
            help,
            MetricType::Counter,
            total,
        )?;
        let help = "Connections the agent is carrying now.";
        let open = status.connections_open.load(Ordering::Relaxed);
        single(
            &mut encoder,
            "burrow_agent_connections_open",
            help,
            MetricType::Gauge,
            open,
        )?;
        family(
            &mut encoder,
            "burrow_agent_bytes",
            "Bytes the agent's connections moved, by direction (in: toward the target or the hub).",
            MetricType::Counter,
            [
                ([("direction", "in")], status.bytes_in.load(Ordering::Relaxed)),
                ([("direction", "out")], status.bytes_out.load(Ordering::Relaxed)),
            ],
        )?;
        family(
            &mut encoder,
            "burrow_agent_lanes",
            "An expose agent's lanes (TCP and TLS transports): idle, or carrying a connection.",
            MetricType::Gauge,
            [
                ([("state", "idle")], status.lanes_idle.load(Ordering::Relaxed)),
                ([("state", "busy")], status.lanes_busy.load(Ordering::Relaxed)),
            ],
        )?;
        family(
            &mut encoder,
            "burrow_agent_dial_errors",
            "Connections to the exposed target that failed, by reason.",
            MetricType::Counter,
            status
                .dial_errors()
                .map(|(reason, n)| ([("reason", reason.as_str())], n)),
        )
    }
}

/// API requests by route and status. The routes are the router's own patterns, so the
/// label set stays bounded whatever clients ask for.
#[derive(Debug, Default)]
pub struct ApiRequests(std::sync::Mutex<std::collections::BTreeMap<(String, u16), u64>>);

impl ApiRequests {
    pub fn count(&self, route: String, status: u16) {
        *self
            .0
            .lock()
            .expect("api requests lock")
            .entry((route, status))
            .or_default() += 1;
    }
}

impl Collector for ApiRequests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let counts = self.0.lock().expect("api requests lock").clone();
        let statuses: Vec<String> = counts.keys().map(|(_, status)| status.to_string()).collect();
        family(
            &mut encoder,
            "burrow_api_requests",
            "Requests to the operational and REST APIs, by route and status.",
            MetricType::Counter,
            counts
                .iter()
                .zip(&statuses)
                .map(|(((route, _), n), status)| ([("route", route.as_str()), ("status", status.as_str())], *n)),
        )
    }
}
