//! The hub role: the main port (agents and routed visitors), per-tunnel public ports, the
//! registry of tunnels and the persistent store, composed and started by [`Hub::start`].

mod api;
pub(crate) mod http_framing;
mod listener;
mod public;
pub mod registry;
mod session;
mod share_visitors;
pub mod shares;
pub mod sniffing;
mod tunnel;

pub use sniffing::DEFAULT_PENDING_PER_SOURCE;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::store::{SqliteStore, Store};
use crate::tls;
use crate::types::{AgentId, Secret, UserName};
use crate::wire::{HubMsg, RefuseCode, TunnelInfo, TunnelSpec};
use registry::Registry;

/// Everything the hub needs, already validated (the CLI builds it).
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub listen: SocketAddr,
    pub domain: String,
    pub public_host: String,
    pub port_range: (u16, u16),
    pub cert: Option<(PathBuf, PathBuf)>,
    pub data_dir: PathBuf,
    pub users: Vec<(UserName, Secret)>,
    pub allow_plaintext: bool,
    /// How long a tunnel whose agent went away keeps its id, name and port.
    pub lease_grace: Duration,
    /// How long a visitor waits for a reconnecting agent before being refused.
    pub visitor_wait: Duration,
    /// Idle expiry and flow bound for UDP tunnels' public ports.
    pub udp: crate::udp::UdpLimits,
    /// A lane must present its session's token this quickly after its preface.
    pub lane_token_deadline: Duration,
    /// Sources whose PROXY protocol headers are believed (`--trusted-proxies`).
    pub trusted_proxies: Vec<crate::types::Cidr>,
    /// Connections one source address may have in protocol detection at once.
    pub pending_per_source: usize,
    /// Failed REST authentications one address may make per minute before it gets 429.
    pub auth_failures_per_minute: u32,
    /// The settings `/configz` lists (`name`, `value`), secrets redacted.
    pub settings: Vec<(String, String)>,
}

impl HubConfig {
    /// The embedded defaults, for tests and `burrow hub` without flags.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            domain: "localhost".into(),
            public_host: "localhost".into(),
            port_range: (20000, 20999),
            cert: None,
            data_dir,
            users: Vec::new(),
            allow_plaintext: false,
            lease_grace: Duration::from_secs(60),
            visitor_wait: Duration::from_secs(5),
            udp: crate::udp::UdpLimits::default(),
            lane_token_deadline: crate::carrier::lanes::TOKEN_DEADLINE,
            trusted_proxies: Vec::new(),
            pending_per_source: DEFAULT_PENDING_PER_SOURCE,
            auth_failures_per_minute: 10,
            settings: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("creating data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The state database could not be opened: corrupt, locked, or not writable.
    #[error("state database {path}: {source} (move it aside to start afresh, or fix its permissions)")]
    StoreOpen {
        path: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// State shared by every task of a running hub.
pub(crate) struct Shared {
    pub config: Arc<HubConfig>,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub tls: tokio_rustls::TlsAcceptor,
    pub shutdown: Shutdown,
    pub next_session: AtomicU64,
    pub udp_stats: Arc<crate::udp::UdpStats>,
    /// Idle lanes of TCP and TLS `expose` sessions, by token.
    pub lanes: crate::carrier::lanes::LaneBook,
    /// The live `expose` session of each connected agent, for tunnels the hub asks it to
    /// serve ([`Hub::expose_on`]).
    pub agents: std::sync::Mutex<std::collections::HashMap<AgentId, ExposeSession>>,
    /// Trusted proxies and the per-source budget of connections in protocol detection, for
    /// the main port and public ports alike.
    pub sniffing: Arc<sniffing::Sniffing>,
    /// The hub's own HTTPS on the main port (SNI `--domain` or `--public-host`).
    pub https: tokio_rustls::TlsAcceptor,
    /// The operational API, served on `--api-address` and on the main port by the hub's name.
    pub ops: std::sync::OnceLock<Arc<crate::ops::Ops>>,
    /// Agent sessions open now, by role (`expose`, `reach`).
    pub sessions: Arc<SessionCounts>,
    /// Every agent session open now, for the API's list of agents.
    pub connected: std::sync::Mutex<std::collections::HashMap<registry::SessionId, ConnectedAgent>>,
    /// Every share, by token digest.
    pub shares: shares::ShareBook,
    /// `connect` requests waiting for their agent's answer, by request number.
    pub listens:
        std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<crate::wire::ListenOutcome>>>,
    pub next_listen: AtomicU64,
}

/// An agent session as the REST API lists it.
#[derive(Clone, Debug)]
pub(crate) struct ConnectedAgent {
    pub id: AgentId,
    pub user: UserName,
    pub role: crate::wire::Role,
    pub hostname: String,
    pub version: String,
    pub transport: crate::mux::Transport,
    /// Unix seconds.
    pub connected_at: u64,
    /// The session's control stream, for what the API asks of the agent.
    pub control: tokio::sync::mpsc::UnboundedSender<HubMsg>,
}

/// Agent sessions open now, by role.
#[derive(Default)]
pub struct SessionCounts {
    pub expose: std::sync::atomic::AtomicU64,
    pub reach: std::sync::atomic::AtomicU64,
}

/// What the hub needs to place another tunnel on a connected `expose` agent.
#[derive(Clone)]
pub(crate) struct ExposeSession {
    pub user: UserName,
    pub member: registry::Member,
}

/// A running hub.
pub struct Hub {
    /// The main port actually bound (useful with port 0).
    pub listen: SocketAddr,
    /// The QUIC endpoint on the main port, closed explicitly on exit (see [`Hub::close`]).
    quic: Option<quinn::Endpoint>,
    /// Credentials generated on first start, to be printed once.
    pub generated_admin: Option<(UserName, Secret)>,
    pub shutdown: Shutdown,
    shared: Arc<Shared>,
}

impl Hub {
    /// Prepares the data dir, certificates and users, binds the main port (TCP and UDP) and
    /// starts serving. Returns once every listener is up.
    pub async fn start(config: HubConfig) -> Result<Self, HubError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HubError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (cert, key) = match &config.cert {
            Some(pair) => pair.clone(),
            None => generated_certificate(&config)?,
        };
        let tls_config = tls::server_config(&cert, &key)?;
        let https = tokio_rustls::TlsAcceptor::from(tls::https_server_config(&cert, &key)?);

        let store: Arc<dyn Store> =
            Arc::new(
                SqliteStore::open(&config.data_dir)
                    .await
                    .map_err(|source| HubError::StoreOpen {
                        path: config.data_dir.join("burrow.db"),
                        source,
                    })?,
            );
        for (user, key) in &config.users {
            store.put_user(user, key).await?;
        }
        let mut generated_admin = None;
        if store.user_count().await? == 0 {
            let user: UserName = "admin".parse().expect("valid user name");
            let key = Secret::generate();
            store.put_user(&user, &key).await?;
            generated_admin = Some((user, key));
        }

        let tcp = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| HubError::Bind {
                addr: config.listen,
                source,
            })?;
        let listen = tcp.local_addr().map_err(|source| HubError::Bind {
            addr: config.listen,
            source,
        })?;
        // Without UDP the hub still serves TLS and plain-TCP agents (`--transport auto`
        // falls back to TLS), so a taken UDP port is a warning, not a failure.
        let quic = match crate::mux::quic::server_endpoint(tls_config.clone(), listen) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                tracing::warn!(%listen, error = %e, "cannot bind the QUIC endpoint; QUIC agents will fall back to TLS");
                None
            }
        };

        let mut config = config;
        config.listen = listen;
        let config = Arc::new(config);
        let shutdown = Shutdown::new();
        let udp_stats = Arc::new(crate::udp::UdpStats::default());
        let sniffing = Arc::new(sniffing::Sniffing::new(
            config.trusted_proxies.clone(),
            config.pending_per_source,
        ));
        let registry = Registry::new(store.clone(), config.clone(), {
            let context = public::PublicContext {
                shutdown: shutdown.clone(),
                visitor_wait: config.visitor_wait,
                udp: config.udp,
                udp_stats: udp_stats.clone(),
                sniffing: sniffing.clone(),
            };
            move |tunnel, socket| public::spawn_public_listener(tunnel, socket, context.clone())
        });
        let lanes = crate::carrier::lanes::LaneBook::new(config.lane_token_deadline);
        let shared = Arc::new(Shared {
            config,
            store,
            registry,
            tls: tokio_rustls::TlsAcceptor::from(tls_config),
            shutdown: shutdown.clone(),
            next_session: AtomicU64::new(1),
            udp_stats,
            lanes,
            agents: Default::default(),
            sniffing,
            https,
            ops: Default::default(),
            sessions: Default::default(),
            connected: Default::default(),
            shares: Default::default(),
            listens: Default::default(),
            next_listen: AtomicU64::new(1),
        });
        for record in shared.store.shares().await? {
            shared.shares.insert(Arc::new(shares::Share::new(record)));
        }
        let _ = shared.ops.set(Arc::new(ops_of(&shared)));
        let restored = shared.registry.restore().await?;
        for id in shared.store.paused_tunnels().await? {
            if let Some(tunnel) = shared.registry.get(id) {
                tunnel.paused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if restored > 0 {
            tracing::info!(restored, "tunnels from the previous run wait for their agents");
        }
        tokio::spawn(listener::serve_tcp(shared.clone(), tcp));
        if let Some(quic) = &quic {
            tokio::spawn(listener::serve_quic(shared.clone(), quic.clone()));
        }
        tracing::info!(%listen, domain = %shared.config.domain, "hub listening");
        Ok(Self {
            listen,
            quic,
            generated_admin,
            shutdown,
            shared,
        })
    }

    /// Closes every QUIC connection with a CONNECTION_CLOSE before the process exits, so QUIC
    /// agents see the hub go at once instead of after their idle timeout (TLS and TCP agents
    /// see their sockets close with the process).
    pub async fn close(&self) {
        if let Some(quic) = &self.quic {
            quic.close(0u32.into(), b"hub shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), quic.wait_idle()).await;
        }
    }

    /// Places another tunnel on the connection of the `expose` agent `agent`: registers `spec`
    /// for that agent's user, by the rules its own `Register` follows, and tells the agent to
    /// serve `spec.target` for it. The agent re-registers the tunnel whenever it reconnects.
    pub async fn expose_on(&self, agent: AgentId, spec: TunnelSpec) -> Result<TunnelInfo, registry::RegisterError> {
        self.shared.expose_on(agent, None, spec).await
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// Counters of every UDP flow through this hub.
    pub fn udp_stats(&self) -> &Arc<crate::udp::UdpStats> {
        &self.shared.udp_stats
    }

    /// The hub's operational API, for `--api-address` (the main port serves it by the hub's
    /// own name already).
    pub fn ops(&self) -> Arc<crate::ops::Ops> {
        self.shared.ops.get().expect("set at start").clone()
    }
}

/// The hub's operational API: its view, its settings, and its metric families (read from the
/// registry at each scrape). What it holds of the hub is weak, as the hub holds it.
fn ops_of(shared: &Arc<Shared>) -> crate::ops::Ops {
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register_collector(Box::new(crate::metrics::Common {
        udp: shared.udp_stats.clone(),
    }));
    let weak = Arc::downgrade(shared);
    metrics.register_collector(Box::new(crate::metrics::Hub {
        registry: shared.registry.clone(),
        sniffing: shared.sniffing.clone(),
        sessions: shared.sessions.clone(),
        lanes: Arc::new(move || weak.upgrade().map_or(0, |s| s.lanes.idle_total())),
    }));
    let view = Arc::new(HubView {
        shared: Arc::downgrade(shared),
    });
    crate::ops::Ops::new(view, shared.config.settings.clone(), metrics).with_routes(api::router(shared))
}

impl Shared {
    /// Places the tunnel `spec` on the connected `expose` agent `agent` (of `owner`, when
    /// given): registered as if the agent had asked, and announced to it.
    pub async fn expose_on(
        &self,
        agent: AgentId,
        owner: Option<&UserName>,
        spec: TunnelSpec,
    ) -> Result<TunnelInfo, registry::RegisterError> {
        let session = self
            .agents
            .lock()
            .expect("agent sessions lock")
            .get(&agent)
            .filter(|listed| owner.is_none_or(|owner| &listed.user == owner))
            .cloned();
        let Some(ExposeSession { user, member }) = session else {
            return Err(registry::RegisterError {
                code: RefuseCode::NotFound,
                message: format!("agent {agent} is not connected as an expose agent"),
            });
        };
        let control = member.control.clone();
        let tunnel = self.registry.register(&user, spec.clone(), member).await?;
        let info = self.registry.info(&tunnel);
        let spec = TunnelSpec {
            name: Some(info.name.clone()),
            ..spec
        };
        // A closed channel means the session just ended; the tunnel waits for the agent as
        // any tunnel whose agent went away does.
        let _ = control.send(HubMsg::Exposed {
            tunnel: info.clone(),
            spec,
        });
        Ok(info)
    }

    /// Agents connected now, of either role.
    fn agent_count(&self) -> usize {
        self.connected.lock().expect("connected agents lock").len()
    }
}

struct HubView {
    shared: std::sync::Weak<Shared>,
}

impl crate::ops::RoleView for HubView {
    /// The hub exists only once its listeners are up and its store is open.
    fn ready(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| !s.shutdown.is_draining())
    }

    fn healthy(&self) -> bool {
        true
    }

    fn info(&self) -> serde_json::Value {
        let Some(shared) = self.shared.upgrade() else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "listen": shared.config.listen.to_string(),
            "domain": shared.config.domain,
            // Tunnels with an agent connected now (not those waiting out a lease).
            "tunnels": shared.registry.tunnels().iter().filter(|t| t.member_count() > 0).count(),
            "agents": shared.agent_count(),
        })
    }
}

/// The certificate under `<data-dir>/certs/` for the domain, its wildcard, the public host
/// and the listen IP (loopback too when listening on all addresses). Generated with a CA on
/// first start; when a later start needs other names (a new `--domain`, `--public-host` or
/// `--listen` address) a new server certificate is issued from the kept CA, so agents'
/// `--ca` stays valid.
fn generated_certificate(config: &HubConfig) -> Result<(PathBuf, PathBuf), HubError> {
    let dir = config.data_dir.join("certs");
    let cert = dir.join(tls::SERVER_CERT);
    let key = dir.join(tls::SERVER_KEY);
    let mut hosts = vec![config.domain.clone(), format!("*.{}", config.domain)];
    if config.public_host != config.domain {
        hosts.push(config.public_host.clone());
    }
    let ip = config.listen.ip();
    if ip.is_unspecified() {
        hosts.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    } else {
        hosts.push(ip.to_string());
    }
    let have_ca = dir.join(tls::CA_CERT).exists() && dir.join(tls::CA_KEY).exists();
    if !have_ca {
        tls::generate_certs(&dir, &hosts)?;
        tracing::info!(certificate = %cert.display(), covers = %hosts.join(", "), "generated a CA and a server certificate");
        return Ok((cert, key));
    }
    let covered = if key.exists() {
        tls::certificate_names(&cert).unwrap_or_default()
    } else {
        Vec::new()
    };
    let missing: Vec<&String> = hosts.iter().filter(|h| !covered.contains(h)).collect();
    if missing.is_empty() {
        tracing::info!(certificate = %cert.display(), covers = %covered.join(", "), "server certificate");
    } else {
        tls::issue_server_cert(&dir, &hosts)?;
        tracing::warn!(
            certificate = %cert.display(),
            covers = %hosts.join(", "),
            was = %covered.join(", "),
            "issued a new server certificate from the kept CA: the names it must cover changed"
        );
    }
    Ok((cert, key))
}
