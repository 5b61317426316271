//! The command line: clap derive structs and parsing of flag values into the library's
//! types; `config.rs` adds the `--config` file layer (flag > environment > file > default),
//! the `config-file` template and the `/configz` settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use crate::types::{Protocol, TransportKind};

mod config;

pub use config::{args_with_config, config_template, settings};

#[derive(Parser, Debug)]
#[command(
    name = "burrow",
    version = crate::VERSION,
    about = "A tunnel data-plane proxy: a hub on a public host, `expose` agents that publish local \
             services through it, and `reach` agents that give local programs a port leading to them.",
    args_override_self = true,
    propagate_version = true
)]
pub struct Cli {
    /// TOML config file whose keys are flag names (e.g. `hub = "hub.example:7443"`).
    #[arg(long, global = true, env = "BURROW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub: the main port for agents and visitors, public tunnel ports, state.
    Hub(HubArgs),
    /// Publish a local service (HOST:PORT or PORT) through the hub.
    Expose(ExposeArgs),
    /// Give local programs a port that leads to an exposed tunnel.
    Reach(ReachArgs),
    /// Make a share link for one of your tunnels and print it.
    Share(ShareArgs),
    /// List, inspect and stop your tunnels through the hub's REST API.
    #[command(subcommand)]
    Tunnels(TunnelsCommand),
    /// PAC files.
    #[command(subcommand)]
    Pac(PacCommand),
    /// Certificate utilities.
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log filter for stderr: error, warn, info, debug, trace, or a tracing directive
    /// such as `burrow=debug,quinn=warn`.
    #[arg(long, env = "BURROW_LOG_LEVEL", default_value = "info", value_parser = parse_log_filter)]
    pub log_level: String,
    /// Log line format on stderr: `text` (coloured only on a terminal without NO_COLOR) or
    /// `json`, one object per line.
    #[arg(long, env = "BURROW_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct HubArgs {
    #[command(subcommand)]
    pub action: Option<RoleAction>,
    /// Main port, TCP and UDP: agents, and visitors routed by Host/SNI.
    #[arg(long, env = "BURROW_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: std::net::SocketAddr,
    /// Tunnel hostnames are <name>.<domain>.
    #[arg(long, env = "BURROW_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Public per-tunnel ports, LO-HI.
    #[arg(long, env = "BURROW_PORT_RANGE", default_value = "20000-20999", value_parser = parse_port_range)]
    pub port_range: (u16, u16),
    /// Host printed in public addresses (default: --domain).
    #[arg(long, env = "BURROW_PUBLIC_HOST")]
    pub public_host: Option<String>,
    /// Hub TLS certificate (PEM); without it one is generated into <data-dir>/certs/.
    #[arg(long, env = "BURROW_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key for --cert (PEM).
    #[arg(long, env = "BURROW_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Persistent state: SQLite database and generated certificates.
    #[arg(long, env = "BURROW_DATA_DIR", default_value = "./burrow-data")]
    pub data_dir: PathBuf,
    /// Add a user, USER:KEY (repeatable; the key may contain any character, commas too).
    /// With no user at all an admin is generated. `BURROW_AUTH` holds one USER:KEY; list
    /// several in a config file (`auth = ["alice:KEY", "bob:KEY2"]`).
    #[arg(long, env = "BURROW_AUTH")]
    pub auth: Vec<String>,
    /// Accept `--transport tcp` (unencrypted) agents.
    #[arg(long, env = "BURROW_ALLOW_PLAINTEXT", value_parser = BoolishValueParser::new())]
    pub allow_plaintext: bool,
    /// Plain-HTTP listener for the REST and operational APIs.
    #[arg(long, env = "BURROW_API_ADDRESS")]
    pub api_address: Option<String>,
    /// Drain time on the first SIGINT/SIGTERM.
    #[arg(long, env = "BURROW_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Sources allowed to send PROXY protocol (v1 or v2) headers, ADDR or ADDR/PREFIX,
    /// comma-separated: their header's client address is the visitor's everywhere after. A
    /// header from anyone else is refused on the main port and is data on public ports.
    #[arg(long, env = "BURROW_TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDR,...")]
    pub trusted_proxies: Vec<crate::types::Cidr>,
    /// Connections one source address (an IPv6 /64) may have whose protocol is still being
    /// detected; more are refused while those are served. Trusted proxies are not limited.
    #[arg(long, env = "BURROW_MAX_UNCLASSIFIED_PER_SOURCE", default_value_t = crate::hub::DEFAULT_PENDING_PER_SOURCE)]
    pub max_unclassified_per_source: usize,
    /// Failed REST authentications one address may make per minute before it gets 429.
    #[arg(
        long,
        env = "BURROW_AUTH_FAILURES_PER_MINUTE",
        default_value = "10",
        value_name = "N"
    )]
    pub auth_failures_per_minute: u32,
    /// How long a tunnel whose agent disconnected keeps its id, name and port.
    #[arg(long, env = "BURROW_LEASE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub lease_grace: Duration,
    /// UDP tunnels: a flow with no datagram either way for this long is closed.
    #[arg(long, env = "BURROW_UDP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub udp_idle_timeout: Duration,
    /// UDP tunnels: most client flows per socket; new clients beyond it are dropped.
    #[arg(long, env = "BURROW_UDP_MAX_FLOWS", default_value = "4096")]
    pub udp_max_flows: usize,
    /// One JSON object per line on stdout.
    #[arg(long, env = "BURROW_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// How the process runs its async runtime.
#[derive(Args, Debug)]
pub struct RuntimeArgs {
    /// Opt-in: keep polling sockets this long after each piece of work before sleeping
    /// (e.g. 50us). Faster request/response where waking an idle CPU is slow, at the price
    /// of CPU time while traffic flows; off by default.
    #[arg(long, env = "BURROW_BUSY_POLL", value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub busy_poll: Duration,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The hub's main port, HOST:PORT (with `reach --share`: the host and port of the link
    /// without its first label, unless given).
    #[arg(long, env = "BURROW_HUB")]
    pub hub: Option<String>,
    /// User name the hub knows this agent by (not needed with `reach --share`).
    #[arg(short = 'u', long, env = "BURROW_USER")]
    pub user: Option<String>,
    /// Access key of --user. Prefer BURROW_ACCESS_KEY or --access-key-file: a key on the
    /// command line is visible to every local user in `ps`.
    #[arg(short = 'k', long, env = "BURROW_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,
    /// Read the access key from this file (its first line).
    #[arg(
        long,
        env = "BURROW_ACCESS_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "access_key"
    )]
    pub access_key_file: Option<PathBuf>,
    /// PEM CA bundle that signs the hub's certificate (else the system roots).
    #[arg(long, env = "BURROW_CA")]
    pub ca: Option<PathBuf>,
    /// Agent↔hub transport: auto tries QUIC then falls back to TLS; tcp is unencrypted.
    #[arg(long, env = "BURROW_TRANSPORT", value_enum, default_value = "auto")]
    pub transport: TransportKind,
    /// Local operational API.
    #[arg(long, env = "BURROW_API_ADDRESS")]
    pub api_address: Option<String>,
    /// One JSON object per line on stdout.
    #[arg(long, env = "BURROW_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Drain time on the first SIGINT/SIGTERM.
    #[arg(long, env = "BURROW_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// UDP tunnels: a flow with no datagram either way for this long is closed.
    #[arg(long, env = "BURROW_UDP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub udp_idle_timeout: Duration,
    /// UDP tunnels: most client flows per socket; new clients beyond it are dropped.
    #[arg(long, env = "BURROW_UDP_MAX_FLOWS", default_value = "4096")]
    pub udp_max_flows: usize,
    /// This agent's identity (default: generated once and kept in the state directory).
    #[arg(long, env = "BURROW_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Give up (exit 1) when the first connection to the hub has not succeeded by then;
    /// once connected, a lost connection is retried with backoff for as long as it takes.
    #[arg(long, env = "BURROW_CONNECT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
#[command(
    override_usage = "burrow expose [OPTIONS] <TARGET>\n       burrow expose [OPTIONS] --forward-proxy\n       burrow expose config-file",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct ExposeArgs {
    #[command(subcommand)]
    pub action: Option<RoleAction>,
    /// HOST:PORT or PORT (= 127.0.0.1:PORT) of the service to publish; required unless
    /// --forward-proxy.
    #[arg(required_unless_present = "forward_proxy")]
    pub target: Option<String>,
    /// Tunnel name, 1-100 chars of [a-z0-9-]; generated when absent.
    #[arg(long, env = "BURROW_NAME")]
    pub name: Option<String>,
    /// What the target speaks: `auto` detects it per connection; `udp` carries datagrams;
    /// `http`/`https` route `<name>.<domain>` on the hub's main port.
    #[arg(long, env = "BURROW_PROTOCOL", value_enum, default_value = "auto")]
    pub protocol: Protocol,
    /// Ask for a specific public port.
    #[arg(long, env = "BURROW_HUB_PORT")]
    pub hub_port: Option<u16>,
    /// Open a public port that anyone may connect to.
    #[arg(long, env = "BURROW_PUBLIC", value_parser = BoolishValueParser::new())]
    pub public: bool,
    /// Join a pool: agents with one name share the load.
    #[arg(long, env = "BURROW_POOL", value_parser = BoolishValueParser::new())]
    pub pool: bool,
    /// Free-form metadata, k=v,...
    #[arg(long, env = "BURROW_METADATA", value_delimiter = ',')]
    pub metadata: Vec<String>,
    /// `all`: every user of the hub may reach this tunnel.
    #[arg(long, env = "BURROW_SHARED")]
    pub shared: Option<String>,
    /// TCP and TLS transports: dedicated data connections kept ready to the hub, each
    /// carrying one forwarded connection without the multiplexer (on tcp, connections move
    /// onto one once they carry bulk data); 0 disables them.
    #[arg(long, env = "BURROW_LANES", default_value = "4")]
    pub lanes: usize,
    /// Send a PROXY protocol header (v1 text or v2 binary) with the visitor's address to the
    /// target before its first byte, so the service logs the visitor rather than this agent.
    #[arg(long, env = "BURROW_PROXY_PROTOCOL", value_enum, value_name = "VERSION")]
    pub proxy_protocol: Option<crate::sniff::proxy::ProxyVersion>,
    /// Instead of TARGET, expose this agent's HTTP forward proxy (HTTP and CONNECT): each
    /// request reached through the tunnel is executed inside this agent's network, DIRECT or
    /// through an upstream proxy (--proxy, or per request by --pac).
    #[arg(long, env = "BURROW_FORWARD_PROXY", value_parser = BoolishValueParser::new(), conflicts_with = "target")]
    pub forward_proxy: bool,
    /// --forward-proxy: send every request through this upstream proxy
    /// (http://[USER:PASSWORD@]HOST:PORT, https://..., socks5://...), except --direct-domains.
    #[arg(
        long,
        env = "BURROW_PROXY",
        value_name = "URL",
        requires = "forward_proxy",
        conflicts_with = "pac"
    )]
    pub proxy: Option<String>,
    #[command(flatten)]
    pub routing: ProxyArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// How a forward proxy routes requests (`expose --forward-proxy`, `reach --http-proxy`).
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// PAC file deciding each request's route: a path, an http(s):// URL (fetched at
    /// start-up), a data: URL, or - for standard input.
    #[arg(long, env = "BURROW_PAC", value_name = "SRC")]
    pub pac: Option<String>,
    /// Hosts refused with 403: regular expressions matched against the whole host name.
    #[arg(long, env = "BURROW_DENY_DOMAINS", value_delimiter = ',', value_name = "RE,...")]
    pub deny_domains: Vec<String>,
    /// Hosts always connected DIRECT, before the PAC is asked.
    #[arg(long, env = "BURROW_DIRECT_DOMAINS", value_delimiter = ',', value_name = "RE,...")]
    pub direct_domains: Vec<String>,
    /// How long a route that failed to connect is skipped.
    #[arg(long, env = "BURROW_PAC_RETRY", default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub pac_retry: Duration,
    /// How long a route may take to connect, and an upstream to answer (then 504).
    #[arg(long, env = "BURROW_PROXY_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    pub proxy_timeout: Duration,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReachArgs {
    #[command(subcommand)]
    pub action: Option<RoleAction>,
    /// Tunnel name or id (with --share, the share's tunnel is reached whatever this says).
    #[arg(required_unless_present = "share")]
    pub tunnel: Option<String>,
    /// Local bind address; each connection goes through the tunnel.
    #[arg(long, env = "BURROW_LOCAL", default_value = "127.0.0.1:0")]
    pub local: String,
    /// Reach with a share link (`burrow share` prints one) instead of credentials; the
    /// share's rate limit counts connections.
    #[arg(long, env = "BURROW_SHARE", value_name = "URL")]
    pub share: Option<String>,
    /// Instead of one port: a local HTTP forward proxy (HTTP and CONNECT) at this address,
    /// routing each request by the domain lists and --pac; without a PAC everything goes
    /// through TUNNEL, which must be exposed with --forward-proxy.
    #[arg(long, env = "BURROW_HTTP_PROXY", value_name = "ADDR", conflicts_with = "local")]
    pub http_proxy: Option<String>,
    /// --http-proxy: hosts always sent through TUNNEL, before the PAC is asked.
    #[arg(long, env = "BURROW_TUNNEL_DOMAINS", value_delimiter = ',', value_name = "RE,...")]
    pub tunnel_domains: Vec<String>,
    #[command(flatten)]
    pub routing: ProxyArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// `burrow share TUNNEL`: a link that opens one tunnel without credentials.
#[derive(Args, Debug)]
pub struct ShareArgs {
    /// Tunnel name or id (one of yours).
    pub tunnel: String,
    /// How long the link works: 1h, 24h, 7d, 30d or never.
    #[arg(long, default_value = "24h", value_parser = ["1h", "24h", "7d", "30d", "never"])]
    pub expires: String,
    /// HTTP methods the link allows (http and auto tunnels; default: all).
    #[arg(long, value_delimiter = ',', value_name = "METHOD,...")]
    pub methods: Vec<String>,
    /// Requests (HTTP) or connections (TCP) per sliding minute, 1-1000 (default: no limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rate_limit: Option<u32>,
    /// The share's name, 1-100 characters (default: the tunnel's).
    #[arg(long)]
    pub name: Option<String>,
    /// A description, up to 500 characters.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// What a role's command can do besides running.
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAction {
    /// Print a commented TOML template of every setting with its default (for --config).
    ConfigFile,
}

#[derive(Subcommand, Debug)]
pub enum TunnelsCommand {
    /// Your running tunnels, one line each.
    List {
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// One tunnel (name or id), running or ended, field by field.
    Get {
        tunnel: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Stop a tunnel (name or id): its agent is told and the tunnel ends.
    Stop {
        tunnel: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// The connections open through a tunnel (name or id) now.
    Jobs {
        tunnel: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

impl TunnelsCommand {
    pub fn agent(&self) -> &AgentArgs {
        match self {
            TunnelsCommand::List { agent }
            | TunnelsCommand::Get { agent, .. }
            | TunnelsCommand::Stop { agent, .. }
            | TunnelsCommand::Jobs { agent, .. } => agent,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PacCommand {
    /// Print what a PAC file's FindProxyForURL returns for each URL, one line per URL.
    Eval {
        /// The PAC file: a path, an http(s):// URL, a `data:` URL, or `-` for standard input.
        #[arg(long, value_name = "SRC")]
        pac: String,
        /// PEM CA bundle trusted for an https:// PAC URL, besides the system's roots.
        #[arg(long, value_name = "FILE")]
        ca: Option<std::path::PathBuf>,
        /// What `myIpAddress()` returns (default: the first non-loopback IPv4 address of an
        /// interface that is up, else 127.0.0.1).
        #[arg(long, value_name = "IP")]
        my_ip: Option<std::net::IpAddr>,
        /// URLs to evaluate.
        #[arg(required = true)]
        urls: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Write ca.pem, ca.key, server.pem and server.key for the given hosts.
    Init {
        /// Directory to write the four PEM files into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name, `*.` wildcard or IP address (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
}

/// The boolean words accepted in `BURROW_*` variables for on/off flags, as clap's
/// `BoolishValueParser` reads them.
pub fn truthy(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "y" | "yes" | "t" | "true" | "on" => Some(true),
        "0" | "n" | "no" | "f" | "false" | "off" | "" => Some(false),
        _ => None,
    }
}

/// A level, or tracing directives (`target=level`, comma-separated). A bare word that is not
/// a level would be read by tracing as a target name and silently log nothing useful, so a
/// typo such as `verbose` is a usage error here.
pub fn parse_log_filter(s: &str) -> Result<String, String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let bad =
        |why: String| format!("--log-level {s:?}: {why} (use error, warn, info, debug, trace or target=level,...)");
    for directive in s.split(',').map(str::trim) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(bad(format!("{directive:?} is not a level")));
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| bad(e.to_string()))
}

/// Parses `30s`, `500ms`, `50us`, `2m`, `1h`, `7d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "us" | "µs" => value / 1_000_000.0,
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use us, ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range like 20000-20999");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u16, u16) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// `PORT` means `127.0.0.1:PORT`; otherwise `HOST:PORT` with a valid port.
pub fn parse_target(s: &str) -> Result<String, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(format!("target {s:?} is not HOST:PORT or PORT")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("50us").unwrap(), Duration::from_micros(50));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn log_filters_are_levels_or_directives() {
        assert!(parse_log_filter("debug").is_ok());
        assert!(parse_log_filter("WARN").is_ok());
        assert!(parse_log_filter("info,burrow=debug").is_ok());
        assert!(parse_log_filter("verbose").is_err());
        assert!(parse_log_filter("burrow=loud").is_err());
    }

    #[test]
    fn port_ranges_and_targets_are_validated() {
        assert_eq!(parse_port_range("20000-20999").unwrap(), (20000, 20999));
        assert!(parse_port_range("3-2").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert_eq!(parse_target("5432").unwrap(), "127.0.0.1:5432");
        assert_eq!(parse_target("db.internal:5432").unwrap(), "db.internal:5432");
        assert!(parse_target("db.internal").is_err());
        assert!(parse_target("host:99999").is_err());
    }
}
