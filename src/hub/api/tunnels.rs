//! The Tunnels API under `/api/v1` (camelCase, RFC 3339 times): the caller's live tunnels,
//! one tunnel, stopping it, placing a new one on a connected agent, the connected agents;
//! and `/api/v1/openapi.json`, generated from these handlers and
//! types (utoipa), so the document cannot drift from the code.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{Api, ApiError, Caller, Shared};
use crate::hub::registry::Tunnel;
use crate::types::{TunnelId, UserName};

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/tunnels", get(list).post(create))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/tunnels/{id}", get(one).delete(stop).patch(update))
        .route("/api/v1/openapi.json", get(openapi))
}

/// A live tunnel.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiTunnel {
    /// 32 lowercase hex digits.
    id: String,
    name: String,
    owner: String,
    /// `auto`, `tcp`, `udp`, `http` or `https`.
    protocol: String,
    /// What the agent connects to (`forward-proxy` for a forward-proxy tunnel).
    target: String,
    public: bool,
    /// The public port, for public tunnels.
    hub_port: Option<u16>,
    public_address: Option<String>,
    /// `http(s)://<name>.<domain>:<port>` for public http, https and auto tunnels.
    url: Option<String>,
    connection_string: Option<String>,
    status: TunnelStatus,
    pool: bool,
    metadata: BTreeMap<String, String>,
    /// The agents serving it now.
    agent_ids: Vec<String>,
    /// Connections open through it now.
    jobs_running: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// RFC 3339, UTC.
    created_at: String,
    last_connected_at: Option<String>,
}

/// `connecting` while no agent serves the tunnel (its lease is waiting), `paused` while its
/// owner has it refuse new connections, else `active`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunnelStatus {
    Connecting,
    Active,
    Paused,
}

/// `{"tunnels": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct TunnelList {
    tunnels: Vec<ApiTunnel>,
}

/// Every error: a message and a stable code.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: String,
    code: String,
}

pub(super) fn rfc3339(seconds: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn api_tunnel(shared: &Shared, tunnel: &Tunnel) -> ApiTunnel {
    use std::sync::atomic::Ordering;
    let record = tunnel.record();
    let info = shared.registry.info(tunnel);
    let agents = tunnel.member_agents();
    ApiTunnel {
        id: record.id.to_string(),
        name: record.name.to_string(),
        owner: record.owner.to_string(),
        protocol: record.protocol.as_str().to_string(),
        connection_string: info
            .public_address
            .as_deref()
            .map(|address| record.protocol.connection_string(&record.target, address)),
        target: record.target,
        public: record.public,
        hub_port: info.hub_port,
        public_address: info.public_address,
        url: info.url,
        status: match (tunnel.is_paused(), agents.is_empty()) {
            (true, _) => TunnelStatus::Paused,
            (false, true) => TunnelStatus::Connecting,
            (false, false) => TunnelStatus::Active,
        },
        pool: record.pool,
        metadata: record.metadata,
        agent_ids: agents.iter().map(ToString::to_string).collect(),
        jobs_running: tunnel.jobs(),
        bytes_in: tunnel.bytes_in.load(Ordering::Relaxed),
        bytes_out: tunnel.bytes_out.load(Ordering::Relaxed),
        created_at: rfc3339(record.creation_time),
        last_connected_at: record.last_connected.map(rfc3339),
    }
}

/// A live tunnel the caller may see: their own, or one shared with every user.
pub(super) fn visible(shared: &Shared, caller: &UserName, id: &str) -> Result<Arc<Tunnel>, ApiError> {
    id.parse::<TunnelId>()
        .ok()
        .and_then(|id| shared.registry.get(id))
        .filter(|t| t.reachable_by(caller))
        .ok_or_else(|| ApiError::not_found("tunnel"))
}

/// A live tunnel the caller owns: what only the owner may change (anyone else gets 404).
pub(super) fn owned(shared: &Shared, caller: &UserName, id: &str) -> Result<Arc<Tunnel>, ApiError> {
    visible(shared, caller, id)
        .ok()
        .filter(|t| &t.owner == caller)
        .ok_or_else(|| ApiError::not_found("tunnel"))
}

/// The caller's live tunnels, and those shared with every user.
#[utoipa::path(
    get,
    path = "/api/v1/tunnels",
    responses(
        (status = 200, description = "The caller's tunnels", body = TunnelList),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
async fn list(State(api): State<Arc<Api>>, Caller(caller): Caller) -> Result<Json<TunnelList>, ApiError> {
    let shared = api.shared()?;
    let mut tunnels: Vec<Arc<Tunnel>> = shared
        .registry
        .tunnels()
        .into_iter()
        .filter(|t| t.reachable_by(&caller))
        .collect();
    tunnels.sort_by_key(|t| (t.owner.to_string(), t.name().to_string()));
    let tunnels = tunnels.iter().map(|t| api_tunnel(&shared, t)).collect();
    Ok(Json(TunnelList { tunnels }))
}

/// One live tunnel.
#[utoipa::path(
    get,
    path = "/api/v1/tunnels/{id}",
    params(("id" = String, Path, description = "The tunnel's id")),
    responses(
        (status = 200, description = "The tunnel", body = ApiTunnel),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such tunnel, or not the caller's", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
async fn one(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiTunnel>, ApiError> {
    let shared = api.shared()?;
    let tunnel = visible(&shared, &caller, &id)?;
    Ok(Json(api_tunnel(&shared, &tunnel)))
}

/// Stops a tunnel the caller owns: its agents are told and it ends (its record stays).
#[utoipa::path(
    delete,
    path = "/api/v1/tunnels/{id}",
    params(("id" = String, Path, description = "The tunnel's id")),
    responses(
        (status = 204, description = "Stopped"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such tunnel, or not the caller's", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
async fn stop(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let shared = api.shared()?;
    let tunnel = owned(&shared, &caller, &id)?;
    super::stop_tunnel(&shared, &tunnel, &caller).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/tunnels`: what to expose, and which of the caller's connected `expose`
/// agents serves it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewTunnel {
    /// `HOST:PORT` or `PORT` (= `127.0.0.1:PORT`), as the agent sees it.
    #[schema(
        pattern = r"^(.+:)?(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    target: String,
    /// The agent's `--agent-id`.
    agent_id: String,
    /// 1-100 of `[a-z0-9-]`; generated when absent.
    #[schema(pattern = r"^[a-z0-9-]{1,100}$")]
    name: Option<String>,
    /// `auto` (default), `tcp`, `udp`, `http` or `https`.
    #[schema(pattern = r"^(auto|tcp|udp|http|https)$")]
    protocol: Option<String>,
    public: Option<bool>,
    /// A port in the hub's `--port-range`.
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(default, deserialize_with = "integral_port")]
    hub_port: Option<u16>,
}

/// A port as JSON Schema's `integer` allows it: `415` or `415.0`.
fn integral_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let Some(value) = Option::<f64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if value.fract() == 0.0 && (0.0..=65535.0).contains(&value) {
        Ok(Some(value as u16))
    } else {
        Err(serde::de::Error::custom(format!("hubPort {value} is not a port")))
    }
}

/// A request body that must be a JSON object of `T`'s shape (serde would also take an
/// array of the fields in order): 400 naming `what` otherwise.
pub(super) fn json_object<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let malformed = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the body is not {what}: {why}"),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(malformed("not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

/// 422: a well-formed value that is not valid.
pub(super) fn unprocessable(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// Has a connected agent of the caller's expose a new tunnel over its connection.
#[utoipa::path(
    post,
    path = "/api/v1/tunnels",
    request_body = NewTunnel,
    responses(
        (status = 201, description = "Registered and announced to the agent", body = ApiTunnel),
        (status = 400, description = "Not a JSON object of the right shape", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such agent connected, or not the caller's", body = ErrorBody),
        (status = 409, description = "The name or port is taken, or the port is outside the hub's range", body = ErrorBody),
        (status = 422, description = "A value does not follow its pattern (name, protocol, target)", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
async fn create(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<ApiTunnel>), ApiError> {
    use crate::wire::{RefuseCode, TunnelSpec};
    let new: NewTunnel = json_object(&body, "a new tunnel")?;
    let target = crate::cli::parse_target(&new.target).map_err(unprocessable)?;
    let protocol = match new.protocol.as_deref() {
        None => crate::types::Protocol::Auto,
        Some(p) => p
            .parse()
            .map_err(|_| unprocessable(format!("protocol {p:?}: auto, tcp, udp, http or https")))?,
    };
    let name = new
        .name
        .as_deref()
        .map(str::parse::<crate::types::TunnelName>)
        .transpose()
        .map_err(|e| unprocessable(format!("name: {e}")))?;
    let agent: crate::types::AgentId = new.agent_id.parse().map_err(|_| ApiError::not_found("agent"))?;
    let shared = api.shared()?;
    if let Some(name) = &name {
        if shared
            .registry
            .resolve(&caller, name.as_str())
            .is_some_and(|t| t.owner == caller)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("you already have a tunnel named {name}"),
            ));
        }
    }
    let spec = TunnelSpec {
        name,
        protocol,
        public: new.public.unwrap_or(false),
        hub_port: new.hub_port,
        ..TunnelSpec::tcp(target)
    };
    let info = shared
        .expose_on(agent, Some(&caller), spec)
        .await
        .map_err(|e| match e.code {
            RefuseCode::NotFound => ApiError::not_found("agent"),
            RefuseCode::Conflict | RefuseCode::NameTaken => ApiError::new(StatusCode::CONFLICT, "conflict", e.message),
            _ => unprocessable(e.message),
        })?;
    let tunnel = shared
        .registry
        .get(info.id)
        .ok_or_else(|| ApiError::not_found("tunnel"))?;
    Ok((StatusCode::CREATED, Json(api_tunnel(&shared, &tunnel))))
}

/// A connected agent.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiAgent {
    /// Its `--agent-id`.
    id: String,
    user: String,
    /// `expose` or `reach`.
    role: String,
    hostname: String,
    version: String,
    /// `quic`, `tls` or `tcp`.
    transport: String,
    /// RFC 3339, UTC.
    connected_at: String,
    /// The ids of the tunnels it serves.
    tunnels: Vec<String>,
}

/// `{"agents": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct AgentList {
    agents: Vec<ApiAgent>,
}

/// The caller's agents connected now.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    responses(
        (status = 200, description = "The caller's connected agents", body = AgentList),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
async fn agents(State(api): State<Arc<Api>>, Caller(caller): Caller) -> Result<Json<AgentList>, ApiError> {
    let shared = api.shared()?;
    let connected: Vec<crate::hub::ConnectedAgent> = shared
        .connected
        .lock()
        .expect("connected agents lock")
        .values()
        .filter(|a| a.user == caller)
        .cloned()
        .collect();
    let tunnels = shared.registry.tunnels();
    let mut agents: Vec<ApiAgent> = connected
        .into_iter()
        .map(|agent| ApiAgent {
            id: agent.id.to_string(),
            user: agent.user.to_string(),
            role: format!("{:?}", agent.role).to_lowercase(),
            hostname: agent.hostname,
            version: agent.version,
            transport: agent.transport.as_str().to_string(),
            connected_at: rfc3339(agent.connected_at),
            tunnels: tunnels
                .iter()
                .filter(|t| t.owner == caller && t.member_agents().contains(&agent.id))
                .map(|t| t.id.to_string())
                .collect(),
        })
        .collect();
    agents.sort_by(|a, b| (&a.connected_at, &a.id).cmp(&(&b.connected_at, &b.id)));
    Ok(Json(AgentList { agents }))
}

/// `PATCH /api/v1/tunnels/{id}`: what to change.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelChange {
    /// A new name, 1-100 of `[a-z0-9-]`: the tunnel's agents are told, and a public
    /// tunnel's `<name>.<domain>` route moves with it.
    #[schema(pattern = r"^[a-z0-9-]{1,100}$")]
    name: Option<String>,
    /// `paused` refuses new connections and keeps running ones; `active` takes them again.
    #[schema(pattern = r"^(active|paused)$")]
    status: Option<String>,
    /// Replaces the tunnel's metadata.
    metadata: Option<BTreeMap<String, String>>,
}

/// Renames, pauses or resumes a tunnel the caller owns, or replaces its metadata.
#[utoipa::path(
    patch,
    path = "/api/v1/tunnels/{id}",
    params(("id" = String, Path, description = "The tunnel's id")),
    request_body = TunnelChange,
    responses(
        (status = 200, description = "The tunnel as changed", body = ApiTunnel),
        (status = 400, description = "Not a JSON object of the right shape", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such tunnel, or not the caller's", body = ErrorBody),
        (status = 409, description = "The name is taken, or no agent is connected to learn it", body = ErrorBody),
        (status = 422, description = "A status that is not active or paused, or a name that is not valid", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
async fn update(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApiTunnel>, ApiError> {
    let change: TunnelChange = json_object(&body, "a change")?;
    let paused = match change.status.as_deref() {
        None => None,
        Some("active") => Some(false),
        Some("paused") => Some(true),
        Some(other) => return Err(unprocessable(format!("status {other:?}: active or paused"))),
    };
    let name = change
        .name
        .as_deref()
        .map(str::parse::<crate::types::TunnelName>)
        .transpose()
        .map_err(|e| unprocessable(format!("name: {e}")))?;
    let shared = api.shared()?;
    let tunnel = owned(&shared, &caller, &id)?;
    if let Some(name) = name {
        shared.registry.rename(&tunnel, name).map_err(|e| match e.code {
            crate::wire::RefuseCode::NotFound => ApiError::not_found("tunnel"),
            _ => ApiError::new(StatusCode::CONFLICT, "conflict", e.message),
        })?;
        shared
            .store
            .touch_tunnel(&tunnel.record())
            .await
            .map_err(ApiError::internal)?;
    }
    let was_paused = tunnel.is_paused();
    if let Some(paused) = paused {
        tunnel.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
        shared
            .store
            .set_paused(tunnel.id, paused)
            .await
            .map_err(ApiError::internal)?;
        tracing::info!(tunnel = %tunnel.id, name = %tunnel.name(), paused, "tunnel status changed through the REST API");
    }
    if let Some(metadata) = change.metadata {
        tunnel.set_metadata(metadata);
        shared
            .store
            .touch_tunnel(&tunnel.record())
            .await
            .map_err(ApiError::internal)?;
    }
    let changed = api_tunnel(&shared, &tunnel);
    if paused.is_some_and(|paused| paused != was_paused) {
        let data = serde_json::to_value(&changed).unwrap_or_default();
        super::webhooks::emit(&shared, &caller, "tunnel.status", data).await;
    }
    Ok(Json(changed))
}

/// HTTP Basic, `user:access-key`, for every route but the document itself.
struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "burrow hub: Tunnels API", description = "Tunnels of the caller, as HTTP Basic names them."),
    paths(
        list,
        create,
        one,
        update,
        stop,
        agents,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::remove,
        super::shares::create,
        super::shares::list,
        super::shares::revoke,
        super::connect::connect
    ),
    components(schemas(
        ApiTunnel,
        TunnelStatus,
        TunnelList,
        NewTunnel,
        TunnelChange,
        ApiAgent,
        AgentList,
        ErrorBody,
        super::webhooks::NewWebhook,
        super::webhooks::WebhookEvent,
        super::webhooks::ApiWebhook,
        super::webhooks::WebhookList,
        super::shares::NewShare,
        super::shares::HttpMethod,
        super::shares::ApiShare,
        super::shares::ShareList,
        super::connect::ConnectRequest,
        super::connect::Connected
    )),
    modifiers(&BasicAuth)
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json` (no authentication).
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(document)
}
