//! The Tunnels API under `/api/v1` (camelCase, RFC 3339 times): the caller's live tunnels,
//! one tunnel, stopping it; and `/api/v1/openapi.json`, generated from these handlers and
//! types (utoipa), so the document cannot drift from the code.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::{Api, ApiError, Caller, Shared};
use crate::hub::registry::Tunnel;
use crate::types::{TunnelId, UserName};

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/tunnels", get(list))
        .route("/api/v1/tunnels/{id}", get(one).delete(stop))
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

/// `connecting` while no agent serves the tunnel (its lease is waiting), else `active`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunnelStatus {
    Connecting,
    Active,
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

fn rfc3339(seconds: u64) -> String {
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
        status: if agents.is_empty() {
            TunnelStatus::Connecting
        } else {
            TunnelStatus::Active
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
fn visible(shared: &Shared, caller: &UserName, id: &str) -> Result<Arc<Tunnel>, ApiError> {
    id.parse::<TunnelId>()
        .ok()
        .and_then(|id| shared.registry.get(id))
        .filter(|t| t.reachable_by(caller))
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
    tunnels.sort_by_key(|t| (t.owner.to_string(), t.name.to_string()));
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
    let tunnel = visible(&shared, &caller, &id)?;
    if tunnel.owner != caller {
        return Err(ApiError::not_found("tunnel"));
    }
    super::stop_tunnel(&shared, &tunnel, &caller).await;
    Ok(StatusCode::NO_CONTENT)
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
    paths(list, one, stop),
    components(schemas(ApiTunnel, TunnelStatus, TunnelList, ErrorBody)),
    modifiers(&BasicAuth)
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json` (no authentication).
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(document)
}
