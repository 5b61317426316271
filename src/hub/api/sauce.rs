//! Sauce Connect's REST endpoints under `/rest/v1`, with Sauce's shapes (snake_case, epoch
//! seconds): tunnel lists, a tunnel, its running jobs, stopping it, and the public versions
//! endpoint with this build's version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{Api, ApiError, Caller, Shared};
use crate::hub::registry::Tunnel;
use crate::store::TunnelRecord;
use crate::types::{TunnelId, UserName};

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/rest/v1/public/tunnels/info/versions", get(versions))
        .route("/rest/v1/{username}/tunnels", get(list))
        .route("/rest/v1/{username}/tunnels/{id}", get(one).delete(stop))
        .route("/rest/v1/{username}/tunnels/{id}/num_jobs", get(num_jobs))
}

/// The path's user must be the caller: anyone else's tunnels are not found.
fn own_path(caller: &UserName, username: &str) -> Result<(), ApiError> {
    if caller.as_str() == username {
        Ok(())
    } else {
        Err(ApiError::not_found("user"))
    }
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A tunnel as Sauce Connect's API shows it.
fn sauce_tunnel(shared: &Shared, record: &TunnelRecord, live: Option<&Tunnel>) -> Value {
    let (status, is_ready) = match (record.shutdown_time, live) {
        (Some(_), _) => ("terminated", false),
        // Paused is still running to Sauce clients, but not ready.
        (None, Some(tunnel)) if tunnel.member_count() > 0 => ("running", !tunnel.is_paused()),
        _ => ("booting", false),
    };
    let extra_info = json!({
        "protocol": record.protocol,
        "target": record.target,
        "public": record.public,
        "pool": record.pool,
        "hub_port": record.hub_port,
    });
    json!({
        "id": record.id,
        "owner": record.owner,
        "tunnel_identifier": record.name,
        "status": status,
        "is_ready": is_ready,
        "creation_time": record.creation_time,
        "launch_time": record.launch_time,
        "last_connected": record.last_connected,
        "shutdown_time": record.shutdown_time,
        "shutdown_reason": record.shutdown_reason,
        "user_shutdown": record.user_shutdown,
        "shared_tunnel": record.shared_all,
        "metadata": record.metadata,
        "host": shared.config.public_host,
        "ssh_port": shared.config.listen.port(),
        "ip_address": null,
        "team_ids": [],
        "domain_names": null,
        "direct_domains": null,
        "no_ssl_bump_domains": null,
        "vm_version": "",
        "use_kgp": false,
        "use_caching_proxy": null,
        "no_proxy_caching": false,
        "extra_info": extra_info.to_string(),
    })
}

/// `GET /rest/v1/{username}/tunnels[?full=true][&all=true][&filter=one_per_pool|v2alpha]`.
async fn list(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(username): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    own_path(&caller, &username)?;
    let shared = api.shared()?;
    let (full, all) = (flag(&query, "full"), flag(&query, "all"));
    // Each tunnel is already one per pool: a pool is one tunnel with several agents. No
    // tunnel here runs Sauce's v2alpha VM.
    let keep_any = match query.get("filter").map(String::as_str) {
        None | Some("") | Some("one_per_pool") => true,
        Some("v2alpha") => false,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_filter",
                format!("unknown filter {other:?}: one_per_pool or v2alpha"),
            ))
        }
    };
    let mut tunnels: Vec<Arc<Tunnel>> = shared
        .registry
        .tunnels()
        .into_iter()
        .filter(|t| {
            keep_any
                && if all {
                    t.reachable_by(&caller)
                } else {
                    t.owner == caller
                }
        })
        .collect();
    tunnels.sort_by_key(|t| (t.owner.to_string(), t.name().to_string()));
    let shown = |t: &Arc<Tunnel>| {
        if full {
            sauce_tunnel(&shared, &t.record(), Some(t))
        } else {
            json!(t.id)
        }
    };
    if all {
        let mut by_owner: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        by_owner.entry(caller.to_string()).or_default();
        for t in &tunnels {
            by_owner.entry(t.owner.to_string()).or_default().push(shown(t));
        }
        return Ok(Json(json!(by_owner)));
    }
    Ok(Json(Value::Array(tunnels.iter().map(shown).collect())))
}

/// A tunnel the caller may see: live, or ended and still on record.
async fn visible(
    shared: &Shared,
    caller: &UserName,
    id: &str,
) -> Result<(TunnelRecord, Option<Arc<Tunnel>>), ApiError> {
    let id: TunnelId = id.parse().map_err(|_| ApiError::not_found("tunnel"))?;
    if let Some(tunnel) = shared.registry.get(id).filter(|t| t.reachable_by(caller)) {
        return Ok((tunnel.record(), Some(tunnel)));
    }
    match shared.store.tunnel(id).await.map_err(ApiError::internal)? {
        Some(record) if &record.owner == caller || record.shared_all => Ok((record, None)),
        _ => Err(ApiError::not_found("tunnel")),
    }
}

/// `GET /rest/v1/{username}/tunnels/{id}`.
async fn one(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path((username, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own_path(&caller, &username)?;
    let shared = api.shared()?;
    let (record, live) = visible(&shared, &caller, &id).await?;
    Ok(Json(sauce_tunnel(&shared, &record, live.as_deref())))
}

/// `GET /rest/v1/{username}/tunnels/{id}/num_jobs`: connections open through it now.
async fn num_jobs(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path((username, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own_path(&caller, &username)?;
    let shared = api.shared()?;
    let (record, live) = visible(&shared, &caller, &id).await?;
    let jobs = live.map_or(0, |t| t.jobs());
    Ok(Json(json!({"id": record.id, "jobs_running": jobs})))
}

/// `DELETE /rest/v1/{username}/tunnels/{id}`: its agents are told to stop serving it, and
/// it ends (its record stays, `terminated`). Only its owner may stop it.
async fn stop(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path((username, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own_path(&caller, &username)?;
    let shared = api.shared()?;
    let tunnel = super::tunnels::owned(&shared, &caller, &id)?;
    let jobs = super::stop_tunnel(&shared, &tunnel, &caller).await;
    Ok(Json(json!({"result": true, "id": tunnel.id, "jobs_running": jobs})))
}

/// `GET /rest/v1/public/tunnels/info/versions[?client_version=..][&client_host=..][&all=true]`
/// (no authentication). burrow is built from source: there are no downloads to point at, and
/// the answer says so.
async fn versions(Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    let latest = env!("CARGO_PKG_VERSION");
    if flag(&query, "all") {
        return Json(json!({ "all_downloads": { latest: {} } }));
    }
    let mut warning = vec![format!(
        "burrow {latest} is built from source (cargo build --release); there are no downloads"
    )];
    match query.get("client_version") {
        Some(version) if version != latest => {
            warning.push(format!("client version {version} is not the latest version {latest}"))
        }
        _ => {}
    }
    Json(json!({
        "downloads": {},
        "info_url": null,
        "latest_version": latest,
        "warning": warning,
    }))
}
