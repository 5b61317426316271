//! What each subcommand does: turn parsed flags into the library's configurations, start the
//! role, print its ready line (text or `--json`), and handle SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;

use crate::agent::{self, AgentConfig, AgentError};
use crate::cli::{self, AgentArgs, CertsCommand, Command, ExposeArgs, HubArgs, LogArgs, LogFormat, ReachArgs};
use crate::hub::{Hub, HubConfig};
use crate::shutdown::Shutdown;
use crate::types::{AgentId, Secret, TransportKind, TunnelName, UserName};
use crate::udp::UdpLimits;
use crate::wire::TunnelSpec;

/// A failed run: the message for stderr and the process exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }
}

impl From<AgentError> for Failure {
    fn from(e: AgentError) -> Self {
        Self {
            code: e.exit_code() as u8,
            message: e.to_string(),
        }
    }
}

/// Runs `command`; `settings` are its flags as `/configz` shows them.
pub async fn run(command: Command, settings: Vec<(String, String)>) -> Result<(), Failure> {
    match command {
        Command::Hub(args) => run_hub(args, settings).await,
        Command::Expose(args) => run_expose(args, settings).await,
        Command::Reach(args) => run_reach(args, settings).await,
        Command::Certs(CertsCommand::Init { dir, hosts }) => {
            crate::tls::generate_certs(&dir, &hosts).map_err(Failure::runtime)?;
            emit(&format!(
                "wrote ca.pem, ca.key, server.pem, server.key to {}",
                dir.display()
            ));
            Ok(())
        }
        Command::Pac(cli::PacCommand::Eval { pac, ca, my_ip, urls }) => {
            pac_eval(&pac, ca.as_deref(), my_ip, &urls).await
        }
        Command::Tunnels(command) => tunnels(command).await,
        Command::Share(args) => share(args).await,
    }
}

/// Logs to stderr. Colour only on a terminal and never with `NO_COLOR` set, so log files
/// stay plain text. A failed write (a closed pipe, a full disk) drops the line: logging
/// must never stop the process, least of all its shutdown.
pub fn init_logging(log: &LogArgs) {
    use std::io::IsTerminal;
    // The level was checked when the flag was parsed (`cli::parse_log_filter`).
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .log_internal_errors(false)
        .with_writer(|| LossyStderr);
    let _ = match log.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// stderr whose write errors are dropped (see [`init_logging`]).
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `burrow pac eval`: one result line per URL. A script that does not load is a usage
/// error (exit 2) before any output; a call that fails stops the batch (exit 1).
async fn pac_eval(
    source: &str,
    ca: Option<&std::path::Path>,
    my_ip: Option<std::net::IpAddr>,
    urls: &[String],
) -> Result<(), Failure> {
    init_logging(&cli::LogArgs {
        log_level: "info".into(),
        log_format: cli::LogFormat::Text,
    });
    let tls = crate::tls::web_client_config(ca).map_err(|e| Failure::usage(e.to_string()))?;
    let script = crate::pac::source::load(source, tls).await.map_err(Failure::usage)?;
    let my_ip = my_ip.unwrap_or_else(crate::pac::my_ip_address);
    let pac = crate::pac::Pac::load(&script, &crate::pac::Sandbox::system(my_ip))
        .map_err(|e| Failure::usage(e.to_string()))?;
    for url in urls {
        let host = crate::pac::source::host_of(url).ok_or_else(|| Failure::usage(format!("{url:?} is not a URL")))?;
        let result = pac
            .find_proxy(url, &host)
            .map_err(|e| Failure::runtime(format!("{url}: {e}")))?;
        emit(&result);
    }
    Ok(())
}

/// `burrow tunnels ...`: one REST call (two when a name is resolved), printed as a table,
/// fields, or the API's JSON with `--json`.
async fn tunnels(command: cli::TunnelsCommand) -> Result<(), Failure> {
    use crate::client::RestClient;
    let args = command.agent();
    let config = agent_config(args, None)?;
    let json = args.json;
    let client = RestClient::new(config, args.ca.as_deref()).map_err(|e| Failure::usage(e.to_string()))?;
    let print = |value: &serde_json::Value, human: String| emit(&if json { value.to_string() } else { human });
    match &command {
        cli::TunnelsCommand::List { .. } => {
            let tunnels = client.tunnels().await.map_err(client_failure)?;
            print(&serde_json::json!(tunnels), crate::client::table(&tunnels));
        }
        cli::TunnelsCommand::Get { tunnel, .. } => {
            let value = client.get(tunnel).await.map_err(client_failure)?;
            print(&value, crate::client::details(&value));
        }
        cli::TunnelsCommand::Jobs { tunnel, .. } => {
            let value = client.jobs(tunnel).await.map_err(client_failure)?;
            print(&value, value["jobs_running"].to_string());
        }
        cli::TunnelsCommand::Stop { tunnel, .. } => {
            let value = client.stop(tunnel).await.map_err(client_failure)?;
            let human = format!(
                "stopped tunnel {} ({} connections were open)",
                value["id"].as_str().unwrap_or(tunnel),
                value["jobs_running"]
            );
            print(&value, human);
        }
    }
    Ok(())
}

/// `burrow share TUNNEL`: makes the share through the REST API and prints its link (with
/// `--json`, the API's whole answer).
async fn share(args: cli::ShareArgs) -> Result<(), Failure> {
    use crate::client::RestClient;
    let config = agent_config(&args.agent, None)?;
    let client = RestClient::new(config, args.agent.ca.as_deref()).map_err(|e| Failure::usage(e.to_string()))?;
    let id = client.resolve(&args.tunnel).await.map_err(client_failure)?;
    let mut body = json!({
        "name": args.name.clone().unwrap_or_else(|| args.tunnel.clone()),
        "expiresIn": args.expires,
    });
    if let Some(description) = &args.description {
        body["description"] = json!(description);
    }
    if !args.methods.is_empty() {
        body["allowedMethods"] = json!(args.methods);
    }
    if let Some(rate) = args.rate_limit {
        body["rateLimitPerMin"] = json!(rate);
    }
    let made = client
        .call_with(http::Method::POST, &format!("/api/v1/tunnels/{id}/shares"), Some(body))
        .await
        .map_err(client_failure)?;
    let url = made["shareUrl"].as_str().unwrap_or_default();
    emit(&if args.agent.json {
        made.to_string()
    } else {
        url.to_string()
    });
    Ok(())
}

/// A REST client's failure as the process ends on it: exit 2 for what the user must fix.
fn client_failure(e: crate::client::ClientError) -> Failure {
    match e {
        crate::client::ClientError::Usage(message) => Failure::usage(message),
        crate::client::ClientError::Failed(message) => Failure::runtime(message),
    }
}

/// Whether an agent shows its live status: on a terminal, without `--json`.
fn live_console(json: bool) -> bool {
    use std::io::IsTerminal;
    !json && std::io::stdout().is_terminal()
}

/// Binds `--api-address` and serves `ops` there. Returns the address bound.
async fn serve_ops(address: &str, ops: std::sync::Arc<crate::ops::Ops>) -> Result<std::net::SocketAddr, Failure> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Failure::usage(format!("--api-address {address}: {e}")))?;
    let bound = listener.local_addr().map_err(Failure::runtime)?;
    ops.spawn(listener);
    tracing::info!(address = %bound, "operational API listening");
    Ok(bound)
}

/// A forward proxy's settings from its flags. `upstream` is `expose --proxy`; without a
/// PAC, requests go through it, else DIRECT (`expose`) or through the tunnel (`reach`,
/// whose `tunnels` the agent adds once connected).
async fn proxy_settings(
    routing: &cli::ProxyArgs,
    tunnel_domains: &[String],
    upstream: Option<&str>,
    ca: Option<&std::path::Path>,
    reach: bool,
) -> Result<crate::proxy::ProxySettings, Failure> {
    use crate::pac::result::Route;
    use crate::proxy::route::{DomainList, DomainLists};
    use crate::proxy::upstream::{ProxyKind, ProxyUrl};
    let list =
        |flag: &str, patterns: &[String]| DomainList::new(patterns).map_err(|e| Failure::usage(format!("{flag}: {e}")));
    let lists = DomainLists {
        deny: list("--deny-domains", &routing.deny_domains)?,
        direct: list("--direct-domains", &routing.direct_domains)?,
        tunnel: list("--tunnel-domains", tunnel_domains)?,
    };
    let tls = crate::tls::web_client_config(ca).map_err(|e| Failure::usage(e.to_string()))?;
    let upstream: Option<ProxyUrl> = upstream
        .map(str::parse)
        .transpose()
        .map_err(|e| Failure::usage(format!("--proxy {e}")))?;
    let default = match (&upstream, reach) {
        (_, true) => vec![Route::Tunnel(None)],
        (Some(proxy), false) => vec![match proxy.kind {
            ProxyKind::Http => Route::Http(proxy.address.clone()),
            ProxyKind::Https => Route::Https(proxy.address.clone()),
            ProxyKind::Socks5 => Route::Socks5(proxy.address.clone()),
        }],
        (None, false) => vec![Route::Direct],
    };
    let pac = match &routing.pac {
        Some(source) => {
            let script = crate::pac::source::load(source, tls.clone())
                .await
                .map_err(Failure::usage)?;
            let sandbox = crate::pac::Sandbox::system(crate::pac::my_ip_address());
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            let pool = crate::pac::pool::PacPool::start(&script, sandbox, workers)
                .map_err(|e| Failure::usage(format!("--pac {source}: {e}")))?;
            Some(pool)
        }
        None => None,
    };
    Ok(crate::proxy::ProxySettings {
        lists,
        pac,
        default,
        upstream,
        tunnels: None,
        tls,
        timeout: routing.proxy_timeout,
        retry: routing.pac_retry,
    })
}

/// Prints a line on stdout and flushes it, so scripts waiting for it see it at once. A
/// closed stdout is ignored.
pub fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// First signal: begin draining. Second: exit at once.
fn handle_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        for first in [true, false] {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if first {
                crate::notify::notify("STOPPING=1");
                shutdown.begin();
                tracing::info!("shutting down; a second signal exits at once");
            } else {
                std::process::exit(1);
            }
        }
    });
}

async fn run_hub(args: HubArgs, settings: Vec<(String, String)>) -> Result<(), Failure> {
    let mut config = HubConfig::new(args.listen, args.data_dir.clone());
    config.settings = settings;
    config.public_host = args.public_host.clone().unwrap_or_else(|| args.domain.clone());
    config.domain = args.domain;
    config.port_range = args.port_range;
    config.cert = args.cert.zip(args.key);
    config.allow_plaintext = args.allow_plaintext;
    config.lease_grace = args.lease_grace;
    config.trusted_proxies = args.trusted_proxies;
    config.pending_per_source = args.max_unclassified_per_source;
    config.auth_failures_per_minute = args.auth_failures_per_minute;
    config.udp = UdpLimits {
        idle_timeout: args.udp_idle_timeout,
        max_flows: args.udp_max_flows,
    };
    for entry in &args.auth {
        let (user, key) = entry
            .split_once(':')
            .ok_or_else(|| Failure::usage(format!("--auth {entry:?} is not USER:KEY")))?;
        let user: UserName = user.parse().map_err(|e| Failure::usage(format!("--auth: {e}")))?;
        if key.is_empty() {
            return Err(Failure::usage(format!("--auth for {user}: the key is empty")));
        }
        config.users.push((user, Secret::new(key)));
    }
    let hub = Hub::start(config).await.map_err(Failure::runtime)?;
    if let Some((user, key)) = &hub.generated_admin {
        if args.json {
            emit(&json!({"event": "credentials", "user": user, "access_key": key.expose()}).to_string());
        } else {
            emit(&format!(
                "generated admin credentials (shown once): user {user}, access key {}",
                key.expose()
            ));
        }
    }
    let api_address = match &args.api_address {
        Some(address) => Some(serve_ops(address, hub.ops()).await?.to_string()),
        None => None,
    };
    let config = hub.config();
    if args.json {
        emit(
            &json!({"event": "ready", "listen": hub.listen.to_string(), "api_address": api_address, "domain": config.domain})
                .to_string(),
        );
    } else {
        emit(&format!(
            "burrow hub listening on {} (tcp+udp), domain {}, data in {}; agents use --ca {}",
            hub.listen,
            config.domain,
            config.data_dir.display(),
            config.data_dir.join("certs").join(crate::tls::CA_CERT).display()
        ));
    }
    crate::notify::notify("READY=1");
    handle_signals(hub.shutdown.clone());
    hub.shutdown.draining().await;
    let active = hub.shutdown.active();
    if active > 0 {
        tracing::info!(active, timeout = ?args.shutdown_timeout, "draining connections");
        hub.shutdown.wait_idle(args.shutdown_timeout).await;
    }
    hub.close().await;
    Ok(())
}

/// The agent settings of the common flags. With `share` (`reach --share URL`) the link
/// stands in for credentials, and names the hub unless `--hub` does.
fn agent_config(args: &AgentArgs, share: Option<&str>) -> Result<AgentConfig, Failure> {
    init_logging(&args.log);
    let share = share
        .map(|url| {
            crate::hub::shares::ShareToken::from_url(url).ok_or_else(|| {
                Failure::usage(format!(
                    "--share {url:?} is not a share link (scheme://<token>.<domain>:<port>)"
                ))
            })
        })
        .transpose()?;
    let hub = match (&args.hub, &share) {
        (Some(hub), _) => hub.clone(),
        (None, Some((_, hub))) => hub.clone(),
        (None, None) => return Err(Failure::usage("no hub: pass --hub HOST:PORT (or set BURROW_HUB)")),
    };
    agent::session::split_host_port(&hub).map_err(|e| Failure::usage(format!("--hub: {e}")))?;
    let tls = match args.transport {
        TransportKind::Tcp => None,
        _ => Some(crate::tls::client_config(args.ca.as_deref()).map_err(|e| Failure::usage(e.to_string()))?),
    };
    let agent_id = match &args.agent_id {
        Some(id) => id.parse().map_err(|e| Failure::usage(format!("--agent-id: {e}")))?,
        None => persistent_agent_id(),
    };
    let (user, access_key, share) = match share {
        // The hub ignores user and key for a share's session.
        Some((token, _)) => (
            "share".parse().expect("a valid user name"),
            Secret::default(),
            Some(Secret::new(token.expose())),
        ),
        None => {
            let (user, key) = credentials(args)?;
            (user, key, None)
        }
    };
    Ok(AgentConfig {
        hub,
        user,
        access_key,
        share,
        connect_timeout: args.connect_timeout,
        agent_id,
        transport: args.transport,
        tls,
        shutdown_timeout: args.shutdown_timeout,
        udp: UdpLimits {
            idle_timeout: args.udp_idle_timeout,
            max_flows: args.udp_max_flows,
        },
        udp_stats: Default::default(),
        link: Default::default(),
        lanes: 0,
        forward_proxy: None,
    })
}

/// `--user` and the access key from `-k`, `--access-key-file` or the environment.
fn credentials(args: &AgentArgs) -> Result<(UserName, Secret), Failure> {
    let user: UserName = args
        .user
        .as_deref()
        .ok_or_else(|| Failure::usage("no user: pass -u USER (or set BURROW_USER)"))?
        .parse()
        .map_err(|e| Failure::usage(format!("--user: {e}")))?;
    let access_key = match (&args.access_key, &args.access_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("--access-key-file {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        (None, None) => {
            return Err(Failure::usage(
                "no access key: set BURROW_ACCESS_KEY, or pass --access-key-file FILE (or -k KEY)",
            ))
        }
    };
    if access_key.is_empty() {
        return Err(Failure::usage("the access key is empty"));
    }
    Ok((user, Secret::new(access_key)))
}

/// The agent id kept in `$XDG_STATE_HOME/burrow/agent-id` (or `~/.local/state/...`),
/// generated on first use. If it cannot be stored, this run uses a fresh one.
fn persistent_agent_id() -> AgentId {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("burrow"));
    let Some(dir) = dir else {
        return AgentId::random();
    };
    let path = dir.join("agent-id");
    if let Some(id) = std::fs::read_to_string(&path).ok().and_then(|s| s.parse().ok()) {
        return id;
    }
    let id = AgentId::random();
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, format!("{id}\n"))) {
        tracing::warn!(path = %path.display(), error = %e, "cannot store the agent id; using a fresh one");
    }
    id
}

/// Serves the operational API of an agent when `--api-address` asks for it, and says where.
/// The returned view is told the agent's tunnel once the hub has answered.
async fn agent_ops(
    args: &AgentArgs,
    config: &AgentConfig,
    shutdown: &Shutdown,
    settings: Vec<(String, String)>,
    pac: Option<String>,
) -> Result<(std::sync::Arc<agent::AgentView>, Option<std::net::SocketAddr>), Failure> {
    let view = std::sync::Arc::new(agent::AgentView {
        link: config.link.clone(),
        shutdown: shutdown.clone(),
        hub: config.hub.clone(),
        tunnel: Default::default(),
    });
    let mut bound = None;
    if let Some(address) = &args.api_address {
        let mut metrics = prometheus_client::registry::Registry::default();
        metrics.register_collector(Box::new(crate::metrics::Common {
            udp: config.udp_stats.clone(),
        }));
        metrics.register_collector(Box::new(crate::metrics::Agent {
            status: config.link.clone(),
        }));
        let ops = crate::ops::Ops::new(view.clone(), settings, metrics).with_pac(pac);
        bound = Some(serve_ops(address, std::sync::Arc::new(ops)).await?);
    }
    Ok((view, bound))
}

async fn run_expose(args: ExposeArgs, settings: Vec<(String, String)>) -> Result<(), Failure> {
    let config = AgentConfig {
        lanes: args.lanes,
        ..agent_config(&args.agent, None)?
    };
    let mut config = config;
    let (target, protocol) = if args.forward_proxy {
        if !matches!(
            args.protocol,
            crate::types::Protocol::Auto | crate::types::Protocol::Tcp
        ) {
            return Err(Failure::usage(
                "--forward-proxy: the proxy speaks HTTP over a tcp tunnel; leave --protocol out",
            ));
        }
        if args.proxy_protocol.is_some() {
            return Err(Failure::usage(
                "--proxy-protocol: a forward proxy has no target to send it to",
            ));
        }
        let settings = proxy_settings(
            &args.routing,
            &[],
            args.proxy.as_deref(),
            args.agent.ca.as_deref(),
            false,
        )
        .await?;
        config.forward_proxy = Some(std::sync::Arc::new(crate::proxy::ForwardProxy::new(settings)));
        // Requests are served on the multiplexed streams themselves.
        config.lanes = 0;
        (
            crate::wire::FORWARD_PROXY_TARGET.to_string(),
            crate::types::Protocol::Tcp,
        )
    } else {
        let routing = &args.routing;
        if routing.pac.is_some() || !routing.deny_domains.is_empty() || !routing.direct_domains.is_empty() {
            return Err(Failure::usage(
                "--pac, --deny-domains and --direct-domains route the requests of --forward-proxy",
            ));
        }
        let target = cli::parse_target(args.target.as_deref().unwrap_or_default()).map_err(Failure::usage)?;
        (target, args.protocol)
    };
    if args.proxy_protocol.is_some() && args.protocol == crate::types::Protocol::Udp {
        return Err(Failure::usage(
            "--proxy-protocol: a PROXY header goes before a TCP connection's bytes; udp tunnels carry datagrams",
        ));
    }
    let name: Option<TunnelName> = args
        .name
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| Failure::usage(format!("--name: {e}")))?;
    let shared_all = match args.shared.as_deref() {
        None => false,
        Some("all") => true,
        Some(other) => return Err(Failure::usage(format!("--shared {other:?}: only `all` is supported"))),
    };
    let mut metadata = BTreeMap::new();
    for pair in &args.metadata {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--metadata {pair:?} is not k=v")))?;
        metadata.insert(k.to_string(), v.to_string());
    }
    let spec = TunnelSpec {
        name,
        protocol,
        target: target.clone(),
        public: args.public,
        hub_port: args.hub_port,
        pool: args.pool,
        shared_all,
        metadata,
        proxy_protocol: args.proxy_protocol,
    };
    let json = args.agent.json;
    let agent_id = config.agent_id;
    let shutdown = Shutdown::new();
    let pac = config
        .forward_proxy
        .as_ref()
        .and_then(|p| p.pac_script())
        .map(str::to_string);
    let (view, api_address) = agent_ops(&args.agent, &config, &shutdown, settings, pac).await?;
    handle_signals(shutdown.clone());
    let console_shutdown = shutdown.clone();
    agent::expose::run(config, spec, shutdown, |up| {
        let info = up.info;
        *view.tunnel.lock().expect("agent view lock") = Some(info.clone());
        if !up.first {
            // Scripts watching a long-running agent learn of reconnections too.
            if json {
                emit(
                    &json!({"event": "reconnected", "tunnel_id": info.id, "name": info.name, "transport": up.transport.as_str()})
                        .to_string(),
                );
            }
            return;
        }
        crate::notify::notify("READY=1");
        if live_console(json) {
            let reachable = info.url.clone().or(info.public_address.clone());
            let forwarding = match reachable {
                Some(at) => format!("{at} -> {target}"),
                None => format!("burrow reach {} -> {target}", info.name),
            };
            agent::console::spawn(view.clone(), "expose", forwarding, console_shutdown.clone());
        }
        let connection = info
            .public_address
            .as_deref()
            .map(|a| info.protocol.connection_string(&target, a));
        if json {
            let mut line = json!({
                "event": "ready",
                "tunnel_id": info.id,
                "agent_id": agent_id,
                "name": info.name,
                "protocol": info.protocol,
                "public_address": info.public_address,
                "connection_string": connection,
                "transport": up.transport.as_str(),
            });
            if let Some(url) = &info.url {
                line["url"] = json!(url);
            }
            if let Some(api) = api_address {
                line["api_address"] = json!(api.to_string());
            }
            emit(&line.to_string());
        } else {
            emit(&format!(
                "tunnel {} ready (id {}, {} -> {target}, over {})",
                info.name,
                info.id,
                info.protocol.as_str(),
                up.transport
            ));
            match (&info.public_address, &connection) {
                (Some(address), Some(connection)) => {
                    emit(&format!("  public address: {address}\n  connect with:   {connection}"))
                }
                _ => emit(&format!("  private: reach it with `burrow reach {}`", info.name)),
            }
            if let Some(url) = &info.url {
                emit(&format!("  url:            {url}"));
            }
        }
    })
    .await
    .map_err(Failure::from)
}

async fn run_reach(args: ReachArgs, settings: Vec<(String, String)>) -> Result<(), Failure> {
    let config = agent_config(&args.agent, args.share.as_deref())?;
    let listen = match &args.http_proxy {
        Some(address) => {
            let settings = proxy_settings(
                &args.routing,
                &args.tunnel_domains,
                None,
                args.agent.ca.as_deref(),
                true,
            )
            .await?;
            agent::reach::Listen::HttpProxy {
                address: address.clone(),
                settings: Box::new(settings),
            }
        }
        None => {
            let routing = &args.routing;
            if routing.pac.is_some()
                || !routing.deny_domains.is_empty()
                || !routing.direct_domains.is_empty()
                || !args.tunnel_domains.is_empty()
            {
                return Err(Failure::usage(
                    "--pac and the domain lists route the requests of --http-proxy",
                ));
            }
            agent::reach::Listen::Port(args.local.clone())
        }
    };
    let json = args.agent.json;
    let shutdown = Shutdown::new();
    let pac = match &listen {
        agent::reach::Listen::HttpProxy { settings, .. } => settings.pac.as_ref().map(|p| p.script().to_string()),
        agent::reach::Listen::Port(_) => None,
    };
    let (view, api_address) = agent_ops(&args.agent, &config, &shutdown, settings, pac).await?;
    handle_signals(shutdown.clone());
    let console_shutdown = shutdown.clone();
    let proxying = matches!(listen, agent::reach::Listen::HttpProxy { .. });
    agent::reach::run(
        config,
        args.tunnel.unwrap_or_else(|| "share".into()),
        listen,
        shutdown,
        |info, local| {
            *view.tunnel.lock().expect("agent view lock") = Some(info.clone());
            crate::notify::notify("READY=1");
            if live_console(json) {
                let forwarding = format!("{local} -> tunnel {}", info.name);
                agent::console::spawn(view.clone(), "reach", forwarding, console_shutdown.clone());
            }
            if json {
                let mut line = json!({"event": "ready", "tunnel": info.name, "local_address": local.to_string()});
                if let Some(api) = api_address {
                    line["api_address"] = json!(api.to_string());
                }
                emit(&line.to_string());
            } else if proxying {
                emit(&format!(
                    "HTTP proxy at {local}, routing through tunnel {} (id {})",
                    info.name, info.id
                ));
            } else {
                emit(&format!("reaching tunnel {} (id {}) at {local}", info.name, info.id));
            }
        },
    )
    .await
    .map_err(Failure::from)
}
