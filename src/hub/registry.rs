//! The hub's live view of tunnels: who serves each one (members, pools), leases that keep a
//! tunnel's id, name and port while its agent is away, and public port allocation.
//!
//! Persistent fields live in the [`Store`]; this module owns what exists only while the hub
//! runs. One mutex guards the maps; nothing async happens while it is held.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::tunnel::TunnelState;
pub use super::tunnel::{Member, ProtocolCounts, SessionId, Tunnel};
use super::HubConfig;
use crate::store::{unix_now, Store, TunnelRecord};
use crate::types::{Protocol, TunnelId, TunnelName, UserName};
use crate::wire::{HubMsg, RefuseCode, TunnelInfo, TunnelSpec};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegisterError {
    pub code: RefuseCode,
    pub message: String,
}

impl RegisterError {
    fn new(code: RefuseCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Default)]
struct Maps {
    tunnels: HashMap<TunnelId, Arc<Tunnel>>,
    by_name: HashMap<(UserName, TunnelName), TunnelId>,
    /// Public tunnels by name: whoever holds `<name>.<domain>` (leases included).
    public_names: HashMap<TunnelName, TunnelId>,
    /// Bound public ports as (port, is_udp): a tcp and a udp tunnel may share a number.
    ports: HashSet<(u16, bool)>,
}

impl Maps {
    /// Removes `tunnel` from the maps (not its port, which the caller frees with its socket).
    fn forget(&mut self, tunnel: &Tunnel) {
        self.tunnels.remove(&tunnel.id);
        let name = tunnel.name();
        if self.public_names.get(&name) == Some(&tunnel.id) {
            self.public_names.remove(&name);
        }
        self.by_name.remove(&(tunnel.owner.clone(), name));
    }
}

pub struct Registry {
    maps: Mutex<Maps>,
    store: Arc<dyn Store>,
    config: Arc<HubConfig>,
    /// Starts the visitor accept loop of a public port; provided by the hub so this module
    /// stays free of data-plane code.
    spawn_public: Box<dyn Fn(Arc<Tunnel>, PublicSocket) -> tokio::task::JoinHandle<()> + Send + Sync>,
    /// Tunnels created and ended, for webhooks.
    pub events: tokio::sync::broadcast::Sender<TunnelEvent>,
}

/// What happened to a tunnel, as its record then read.
#[derive(Clone, Debug)]
pub enum TunnelEvent {
    Created(TunnelRecord),
    Ended(TunnelRecord),
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<HubConfig>,
        spawn_public: impl Fn(Arc<Tunnel>, PublicSocket) -> tokio::task::JoinHandle<()> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            maps: Mutex::default(),
            store,
            config,
            spawn_public: Box::new(spawn_public),
            events: tokio::sync::broadcast::channel(1024).0,
        })
    }

    pub fn get(&self, id: TunnelId) -> Option<Arc<Tunnel>> {
        self.maps.lock().expect("registry lock").tunnels.get(&id).cloned()
    }

    /// Every tunnel the hub holds now, leases included.
    pub fn tunnels(&self) -> Vec<Arc<Tunnel>> {
        self.maps
            .lock()
            .expect("registry lock")
            .tunnels
            .values()
            .cloned()
            .collect()
    }

    pub fn tunnel_count(&self) -> usize {
        self.maps.lock().expect("registry lock").tunnels.len()
    }

    /// Finds a tunnel `user` may reach, by id or by name (their own first).
    pub fn resolve(&self, user: &UserName, name_or_id: &str) -> Option<Arc<Tunnel>> {
        let maps = self.maps.lock().expect("registry lock");
        let found = if let Ok(id) = name_or_id.parse::<TunnelId>() {
            maps.tunnels.get(&id).cloned()
        } else {
            let name: TunnelName = name_or_id.parse().ok()?;
            maps.by_name
                .get(&(user.clone(), name.clone()))
                .and_then(|id| maps.tunnels.get(id))
                .cloned()
                .or_else(|| {
                    maps.tunnels
                        .values()
                        .find(|t| t.name() == name && t.reachable_by(user))
                        .cloned()
                })
        };
        found.filter(|t| t.reachable_by(user))
    }

    /// The public TCP tunnel published as `<name>.<domain>` on the main port (one at most:
    /// public names are one namespace per hub, see [`Registry::register`]).
    pub fn public_by_name(&self, name: &TunnelName) -> Option<Arc<Tunnel>> {
        let maps = self.maps.lock().expect("registry lock");
        maps.public_names
            .get(name)
            .and_then(|id| maps.tunnels.get(id))
            .filter(|t| t.protocol != Protocol::Udp)
            .cloned()
    }

    pub fn info(&self, tunnel: &Tunnel) -> TunnelInfo {
        let record = tunnel.record();
        let public_port = record.hub_port.filter(|_| record.public);
        let public_address = public_port.map(|p| format!("{}:{p}", self.config.public_host));
        let url = match record.protocol {
            Protocol::Http | Protocol::Auto if record.public => Some(format!(
                "http://{}.{}:{}",
                record.name,
                self.config.domain,
                self.config.listen.port()
            )),
            Protocol::Https if record.public => Some(format!(
                "https://{}.{}:{}",
                record.name,
                self.config.domain,
                self.config.listen.port()
            )),
            _ => None,
        };
        TunnelInfo {
            id: record.id,
            name: record.name,
            protocol: record.protocol,
            hub_port: public_port,
            public_address,
            url,
            forward_proxy: record.target == crate::wire::FORWARD_PROXY_TARGET,
        }
    }

    /// Registers `member` as serving the tunnel `spec` describes. The same user's tunnel of the
    /// same name is taken over (keeping id and port) or, with `pool`, joined, if it was
    /// exposed with the same settings. Otherwise it ends, its public port and name route are
    /// gone before this returns, and a new tunnel takes its name: a lease never keeps a port
    /// open that the new settings do not ask for.
    pub async fn register(
        self: &Arc<Self>,
        owner: &UserName,
        spec: TunnelSpec,
        member: Member,
    ) -> Result<Arc<Tunnel>, RegisterError> {
        let name = spec.name.clone().unwrap_or_else(TunnelName::generate);
        let now = unix_now();
        let mut ended: Option<(Arc<Tunnel>, Option<tokio::task::JoinHandle<()>>)> = None;
        let (tunnel, replaced, created) = {
            let mut maps = self.maps.lock().expect("registry lock");
            if spec.public {
                let holder = maps.public_names.get(&name).and_then(|id| maps.tunnels.get(id));
                if holder.is_some_and(|t| &t.owner != owner) {
                    return Err(RegisterError::new(
                        RefuseCode::NameTaken,
                        format!(
                            "the public name {name}.{} is taken by another user's tunnel; choose another --name",
                            self.config.domain
                        ),
                    ));
                }
            }
            let existing = maps
                .by_name
                .get(&(owner.clone(), name.clone()))
                .and_then(|id| maps.tunnels.get(id))
                .cloned();
            let mut replaced = Vec::new();
            let kept = match existing {
                Some(tunnel) => {
                    let mut state = tunnel.state.lock().expect("tunnel lock");
                    let joins_pool = spec.pool && state.record.pool;
                    if same_settings(&state.record, &spec) {
                        if !joins_pool {
                            replaced = std::mem::take(&mut state.members);
                        }
                        state.members.retain(|m| m.session != member.session);
                        state.members.push(member.clone());
                        let record = &mut state.record;
                        record.target = spec.target.clone();
                        record.metadata = spec.metadata.clone();
                        record.pool = spec.pool;
                        record.launch_time = Some(now);
                        record.last_connected = Some(now);
                        drop(state);
                        Some(tunnel)
                    } else if joins_pool && !state.members.is_empty() {
                        return Err(RegisterError::new(
                            RefuseCode::BadRequest,
                            format!(
                                "pool {name} is exposed with other settings (public, protocol, --shared, \
                                 --hub-port); every member of a pool must use the same ones"
                            ),
                        ));
                    } else {
                        replaced = std::mem::take(&mut state.members);
                        let listener = state.listener.take();
                        if let Some(port) = state.record.hub_port {
                            maps.ports.remove(&(port, state.record.protocol == Protocol::Udp));
                        }
                        drop(state);
                        maps.forget(&tunnel);
                        ended = Some((tunnel, listener));
                        None
                    }
                }
                None => None,
            };
            match kept {
                Some(tunnel) => (tunnel, replaced, false),
                None => {
                    let hub_port = if spec.public {
                        let (port, listener) =
                            self.allocate_port(&mut maps, spec.hub_port, spec.protocol == Protocol::Udp)?;
                        Some((port, listener))
                    } else {
                        None
                    };
                    let record = TunnelRecord {
                        id: TunnelId::random(),
                        owner: owner.clone(),
                        name: name.clone(),
                        protocol: spec.protocol,
                        target: spec.target.clone(),
                        hub_port: hub_port.as_ref().map(|(p, _)| *p),
                        public: spec.public,
                        pool: spec.pool,
                        shared_all: spec.shared_all,
                        metadata: spec.metadata.clone(),
                        creation_time: now,
                        launch_time: Some(now),
                        last_connected: Some(now),
                        shutdown_time: None,
                        shutdown_reason: None,
                        user_shutdown: None,
                    };
                    let tunnel = self.insert(&mut maps, record, vec![member], hub_port.map(|(_, l)| l));
                    (tunnel, replaced, true)
                }
            }
        };
        if let Some((old, listener)) = ended {
            close_port(listener).await;
            let reason = "exposed again with other settings";
            tracing::info!(tunnel = %old.id, name = %old.name(), new = %tunnel.id, "{reason}: tunnel replaced");
            if let Err(e) = self.store.end_tunnel(old.id, reason, false).await {
                tracing::error!(tunnel = %old.id, error = %e, "could not record tunnel end");
            }
        }
        tunnel.member_joined.notify_waiters();
        for old in replaced {
            let _ = old.control.send(HubMsg::StopTunnel {
                id: tunnel.id,
                reason: "replaced by a newer agent with the same tunnel name".into(),
            });
        }
        let record = tunnel.record();
        let stored = if created {
            self.store.insert_tunnel(&record).await
        } else {
            self.store.touch_tunnel(&record).await
        };
        if let Err(e) = stored {
            tracing::error!(tunnel = %tunnel.id, error = %e, "could not persist tunnel");
        }
        if created {
            let _ = self.events.send(TunnelEvent::Created(record));
        }
        Ok(tunnel)
    }

    fn insert(
        &self,
        maps: &mut Maps,
        record: TunnelRecord,
        members: Vec<Member>,
        listener: Option<PublicSocket>,
    ) -> Arc<Tunnel> {
        let public = record.public;
        let tunnel = Arc::new(Tunnel {
            id: record.id,
            owner: record.owner.clone(),
            protocol: record.protocol,
            state: Mutex::new(TunnelState {
                record,
                members,
                lease_epoch: 0,
                listener: None,
            }),
            member_joined: Notify::new(),
            next_member: AtomicUsize::new(0),
            open: ProtocolCounts::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            lane_visitors: AtomicU64::new(0),
            paused: std::sync::atomic::AtomicBool::new(false),
            connections: ProtocolCounts::default(),
        });
        if let Some(listener) = listener {
            let handle = (self.spawn_public)(tunnel.clone(), listener);
            tunnel.state.lock().expect("tunnel lock").listener = Some(handle);
        }
        maps.by_name
            .insert((tunnel.owner.clone(), tunnel.name().clone()), tunnel.id);
        if public {
            maps.public_names.insert(tunnel.name().clone(), tunnel.id);
        }
        maps.tunnels.insert(tunnel.id, tunnel.clone());
        tunnel
    }

    /// Binds a public port: the requested one, or the first free one in `--port-range`.
    fn allocate_port(
        &self,
        maps: &mut Maps,
        requested: Option<u16>,
        udp: bool,
    ) -> Result<(u16, PublicSocket), RegisterError> {
        let (lo, hi) = self.config.port_range;
        let candidates: Vec<u16> = match requested {
            Some(p) if p < lo || p > hi => {
                return Err(RegisterError::new(
                    RefuseCode::BadRequest,
                    format!("hub port {p} is outside the hub's port range {lo}-{hi}"),
                ))
            }
            Some(p) if maps.ports.contains(&(p, udp)) => {
                return Err(RegisterError::new(
                    RefuseCode::Conflict,
                    format!("hub port {p} is taken"),
                ))
            }
            Some(p) => vec![p],
            None => (lo..=hi).filter(|p| !maps.ports.contains(&(*p, udp))).collect(),
        };
        for port in candidates {
            if let Ok(listener) = bind_public(self.config.listen.ip(), port, udp) {
                maps.ports.insert((port, udp));
                return Ok((port, listener));
            }
        }
        Err(RegisterError::new(
            RefuseCode::Conflict,
            match requested {
                Some(p) => format!("hub port {p} is in use on the hub"),
                None => format!("no free port left in the hub's port range {lo}-{hi}"),
            },
        ))
    }

    /// Removes a closed agent connection from every tunnel it served; tunnels left without
    /// members keep their lease for the grace period.
    pub fn session_ended(self: &Arc<Self>, session: SessionId) {
        let tunnels: Vec<Arc<Tunnel>> = self
            .maps
            .lock()
            .expect("registry lock")
            .tunnels
            .values()
            .cloned()
            .collect();
        for tunnel in tunnels {
            let epoch = {
                let mut state = tunnel.state.lock().expect("tunnel lock");
                let before = state.members.len();
                state.members.retain(|m| m.session != session);
                if before == state.members.len() || !state.members.is_empty() {
                    continue;
                }
                state.lease_epoch += 1;
                state.lease_epoch
            };
            tracing::info!(tunnel = %tunnel.id, name = %tunnel.name(), grace = ?self.config.lease_grace, "agent gone; lease held");
            self.start_lease_timer(tunnel, epoch);
        }
    }

    fn start_lease_timer(self: &Arc<Self>, tunnel: Arc<Tunnel>, epoch: u64) {
        let registry = Arc::clone(self);
        let grace = self.config.lease_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = {
                let state = tunnel.state.lock().expect("tunnel lock");
                state.members.is_empty() && state.lease_epoch == epoch
            };
            if expired {
                registry
                    .end(&tunnel, "lease expired: no agent reconnected", false)
                    .await;
            }
        });
    }

    /// Renames `tunnel`: the owner's other tunnels, and for a public tunnel every public
    /// one, must not have `name` already, and an agent must be connected to learn it (one
    /// reconnecting would register the old name again). Its members are told; the caller
    /// stores the record.
    pub fn rename(&self, tunnel: &Tunnel, name: TunnelName) -> Result<(), RegisterError> {
        let mut maps = self.maps.lock().expect("registry lock");
        if !maps.tunnels.contains_key(&tunnel.id) {
            return Err(RegisterError::new(RefuseCode::NotFound, "the tunnel has ended"));
        }
        let mut state = tunnel.state.lock().expect("tunnel lock");
        let old = state.record.name.clone();
        if old == name {
            return Ok(());
        }
        let taken = |id: Option<&TunnelId>| id.is_some_and(|id| *id != tunnel.id);
        if taken(maps.by_name.get(&(tunnel.owner.clone(), name.clone()))) {
            return Err(RegisterError::new(
                RefuseCode::Conflict,
                format!("you already have a tunnel named {name}"),
            ));
        }
        let public = state.record.public;
        if public && taken(maps.public_names.get(&name)) {
            return Err(RegisterError::new(
                RefuseCode::Conflict,
                format!("the public name {name}.{} is taken", self.config.domain),
            ));
        }
        if state.members.is_empty() {
            return Err(RegisterError::new(
                RefuseCode::Conflict,
                "no agent is connected to learn the new name; try again once it is back",
            ));
        }
        maps.by_name.remove(&(tunnel.owner.clone(), old.clone()));
        maps.by_name.insert((tunnel.owner.clone(), name.clone()), tunnel.id);
        if public {
            if maps.public_names.get(&old) == Some(&tunnel.id) {
                maps.public_names.remove(&old);
            }
            maps.public_names.insert(name.clone(), tunnel.id);
        }
        for member in &state.members {
            let _ = member.control.send(HubMsg::Renamed {
                id: tunnel.id,
                name: name.clone(),
            });
        }
        tracing::info!(tunnel = %tunnel.id, %old, new = %name, "tunnel renamed");
        state.record.name = name;
        Ok(())
    }

    /// Ends a tunnel for good: frees its name and port and records why.
    /// A tunnel that has ended already (replaced by a re-expose with other settings while its
    /// lease timer ran) is left alone: its name and port may belong to the new one by now.
    pub async fn end(&self, tunnel: &Tunnel, reason: &str, by_user: bool) {
        let port = {
            let mut maps = self.maps.lock().expect("registry lock");
            if !maps.tunnels.contains_key(&tunnel.id) {
                return;
            }
            maps.forget(tunnel);
            let mut state = tunnel.state.lock().expect("tunnel lock");
            let port = state.record.hub_port;
            if let Some(p) = port {
                maps.ports.remove(&(p, state.record.protocol == Protocol::Udp));
            }
            (port, state.listener.take())
        };
        let (port, listener) = port;
        close_port(listener).await;
        tracing::info!(tunnel = %tunnel.id, name = %tunnel.name(), ?port, reason, connections = %tunnel.connections, "tunnel ended");
        if let Err(e) = self.store.end_tunnel(tunnel.id, reason, by_user).await {
            tracing::error!(tunnel = %tunnel.id, error = %e, "could not record tunnel end");
        }
        let mut record = tunnel.record();
        record.shutdown_time = Some(crate::store::unix_now());
        record.shutdown_reason = Some(reason.to_string());
        record.user_shutdown = Some(by_user);
        let _ = self.events.send(TunnelEvent::Ended(record));
    }

    /// After a hub restart: tunnels that were live become leases waiting for their agents,
    /// with their public ports bound again so no one else takes them.
    pub async fn restore(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let records = self.store.live_tunnels().await?;
        let count = records.len();
        for mut record in records {
            let tunnel = {
                let mut maps = self.maps.lock().expect("registry lock");
                let udp = record.protocol == Protocol::Udp;
                let listener = match record.hub_port.filter(|_| record.public) {
                    Some(port) => match bind_public(self.config.listen.ip(), port, udp) {
                        Ok(listener) => {
                            maps.ports.insert((port, udp));
                            Some(listener)
                        }
                        Err(e) => {
                            tracing::warn!(tunnel = %record.id, port, error = %e, "cannot rebind public port");
                            record.hub_port = None;
                            None
                        }
                    },
                    None => None,
                };
                self.insert(&mut maps, record, Vec::new(), listener)
            };
            self.start_lease_timer(tunnel, 0);
        }
        Ok(count)
    }
}

/// Whether a re-expose may keep a tunnel's id and port: the same visibility, protocol and
/// sharing, and no other public port asked for. Target and metadata may change.
fn same_settings(record: &TunnelRecord, spec: &TunnelSpec) -> bool {
    record.public == spec.public
        && record.protocol == spec.protocol
        && record.shared_all == spec.shared_all
        && match spec.hub_port {
            Some(port) if spec.public => record.hub_port == Some(port),
            _ => true,
        }
}

/// Stops serving a public port and waits until its socket is closed, so a visitor arriving
/// after this returns is refused by the kernel.
async fn close_port(listener: Option<tokio::task::JoinHandle<()>>) {
    if let Some(listener) = listener {
        listener.abort();
        let _ = listener.await;
    }
}

/// A bound public port, handed to the hub's data plane.
pub enum PublicSocket {
    Tcp(tokio::net::TcpListener),
    /// Non-blocking; the data plane registers it with the runtime.
    Udp(std::net::UdpSocket),
}

/// Binds a public port. TCP gets a deep accept queue: std's default backlog (128) overflowed
/// under a burst of 1000 simultaneous visitors and the kernel reset the excess connections.
fn bind_public(ip: IpAddr, port: u16, udp: bool) -> std::io::Result<PublicSocket> {
    let addr = SocketAddr::new(ip, port);
    if udp {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        return Ok(PublicSocket::Udp(socket));
    }
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(PublicSocket::Tcp(socket.listen(4096)?))
}
