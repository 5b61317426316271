//! Shares under `/api/v1`: `POST/GET /tunnels/{id}/shares` and `DELETE /shares/{id}`. The
//! link (`shareUrl`) is shown once, in the answer to `POST`: the hub keeps only a digest of
//! its token. A share's use is enforced where visitors arrive (`hub/share_visitors.rs`,
//! `reach --share`); its rules are `hub/shares.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tunnels::{json_object, owned, rfc3339, unprocessable, ErrorBody};
use super::{Api, ApiError, Caller, Shared};
use crate::hub::shares::{Expiry, Share, ShareRecord, ShareToken, RATE_LIMITS};
use crate::types::Protocol;

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/tunnels/{id}/shares", get(list).post(create))
        .route("/api/v1/shares/{id}", delete(revoke))
}

/// `POST /api/v1/tunnels/{id}/shares`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewShare {
    /// 1-100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// `1h`, `24h`, `7d`, `30d` or `never`.
    #[schema(pattern = r"^(1h|24h|7d|30d|never)$")]
    expires_in: String,
    /// HTTP methods to allow (http and auto tunnels only); every method when absent.
    #[schema(min_items = 1, inline, value_type = Option<Vec<HttpMethod>>)]
    allowed_methods: Option<Vec<String>>,
    /// Requests (HTTP) or connections (TCP) per sliding minute; unlimited when absent.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    rate_limit_per_min: Option<f64>,
}

/// An HTTP method name (upper case, as on the wire).
#[derive(ToSchema)]
#[schema(pattern = r"^[A-Z]{1,20}$")]
#[allow(dead_code)]
pub struct HttpMethod(String);

/// A share.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiShare {
    /// 32 lowercase hex digits (not the token).
    id: String,
    tunnel_id: String,
    name: String,
    description: Option<String>,
    /// The link to hand out: only in the answer to `POST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    share_url: Option<String>,
    /// RFC 3339, UTC; `null` for a share that never expires.
    expires_at: Option<String>,
    allowed_methods: Option<Vec<String>>,
    rate_limit_per_min: Option<u32>,
    /// `active`, `expired` or `revoked`.
    status: String,
    created_at: String,
    revoked_at: Option<String>,
}

/// `{"shares": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct ShareList {
    shares: Vec<ApiShare>,
}

pub fn api_share(share: &Share) -> ApiShare {
    let record = &share.record;
    let status = match share.standing(crate::store::unix_now()) {
        Ok(()) => "active",
        Err(crate::hub::shares::Refusal::Revoked) => "revoked",
        Err(_) => "expired",
    };
    ApiShare {
        id: record.id.clone(),
        tunnel_id: record.tunnel.to_string(),
        name: record.name.clone(),
        description: record.description.clone(),
        share_url: None,
        expires_at: record.expires.map(rfc3339),
        allowed_methods: record.methods.clone(),
        rate_limit_per_min: record.rate_per_min,
        status: status.into(),
        created_at: rfc3339(record.created),
        revoked_at: share.revoked_at().map(rfc3339),
    }
}

/// The link of a share: `http(s)://` at the main port where the hub serves it, `tcp://`
/// for tunnels used with `reach --share`.
fn share_url(shared: &Shared, protocol: Protocol, token: &ShareToken) -> String {
    let scheme = match protocol {
        Protocol::Http | Protocol::Auto => "http",
        Protocol::Https => "https",
        Protocol::Tcp | Protocol::Udp => "tcp",
    };
    let config = &shared.config;
    format!(
        "{scheme}://{}.{}:{}",
        token.expose(),
        config.domain,
        config.listen.port()
    )
}

/// Makes a share link for a tunnel the caller owns.
#[utoipa::path(
    post,
    path = "/api/v1/tunnels/{id}/shares",
    params(("id" = String, Path, description = "The tunnel's id")),
    request_body = NewShare,
    responses(
        (status = 201, description = "Made; `shareUrl` is shown this once", body = ApiShare),
        (status = 400, description = "Not a JSON object of the right shape", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such tunnel, or not the caller's", body = ErrorBody),
        (status = 422, description = "A value out of bounds, or methods for a tunnel whose requests the hub does not read", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn create(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ApiShare>), ApiError> {
    let new: NewShare = json_object(&body, "a new share")?;
    let name_chars = new.name.chars().count();
    if !(1..=100).contains(&name_chars) {
        return Err(unprocessable(format!("name: 1-100 characters, got {name_chars}")));
    }
    if new.description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(unprocessable("description: at most 500 characters".into()));
    }
    let expiry = Expiry::parse(&new.expires_in)
        .ok_or_else(|| unprocessable(format!("expiresIn {:?}: {}", new.expires_in, Expiry::NAMES)))?;
    let rate = match new.rate_limit_per_min {
        None => None,
        Some(rate) if rate.fract() == 0.0 && (1.0..=1000.0).contains(&rate) => Some(rate as u32),
        Some(rate) => {
            let (lo, hi) = (RATE_LIMITS.start(), RATE_LIMITS.end());
            return Err(unprocessable(format!(
                "rateLimitPerMin {rate}: a whole number {lo}-{hi}"
            )));
        }
    };
    let methods = match new.allowed_methods {
        None => None,
        Some(methods) if methods.is_empty() => return Err(unprocessable("allowedMethods: at least one".into())),
        Some(methods) => Some(
            methods
                .into_iter()
                .map(|m| {
                    let upper = m.to_ascii_uppercase();
                    let token = (1..=20).contains(&upper.len()) && upper.bytes().all(|b| b.is_ascii_uppercase());
                    token
                        .then_some(upper)
                        .ok_or_else(|| unprocessable(format!("allowedMethods: {m:?} is not a method name")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let shared = api.shared()?;
    let tunnel = owned(&shared, &caller, &id)?;
    if methods.is_some() && !matches!(tunnel.protocol, Protocol::Http | Protocol::Auto) {
        return Err(unprocessable(format!(
            "allowedMethods: the hub reads requests only of http and auto tunnels, and {} is {}",
            tunnel.name(),
            tunnel.protocol.as_str()
        )));
    }
    let token = ShareToken::generate();
    let now = crate::store::unix_now();
    let record = ShareRecord {
        id: hex::encode(rand::random::<[u8; 16]>()),
        tunnel: tunnel.id,
        owner: caller.clone(),
        name: new.name,
        description: new.description,
        methods,
        rate_per_min: rate,
        created: now,
        expires: expiry.at(now),
        revoked: None,
        digest: token.digest(),
    };
    shared.store.insert_share(&record).await.map_err(ApiError::internal)?;
    let share = Arc::new(Share::new(record));
    shared.shares.insert(share.clone());
    tracing::info!(share = share.record.id, tunnel = %tunnel.id, user = %caller, "share made");
    let listed = api_share(&share);
    let data = serde_json::to_value(&listed).unwrap_or_default();
    super::webhooks::emit(&shared, &caller, "share.created", data).await;
    let mut answer = listed;
    answer.share_url = Some(share_url(&shared, tunnel.protocol, &token));
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The shares of a tunnel the caller owns, revoked and expired ones included.
#[utoipa::path(
    get,
    path = "/api/v1/tunnels/{id}/shares",
    params(("id" = String, Path, description = "The tunnel's id")),
    responses(
        (status = 200, description = "The tunnel's shares, without their links", body = ShareList),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such tunnel, or not the caller's", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn list(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<ShareList>, ApiError> {
    let shared = api.shared()?;
    let tunnel = owned(&shared, &caller, &id)?;
    let shares = shared
        .shares
        .of_tunnel(tunnel.id)
        .iter()
        .map(|s| api_share(s))
        .collect();
    Ok(Json(ShareList { shares }))
}

/// Revokes one of the caller's shares: its link answers 410 from now on.
#[utoipa::path(
    delete,
    path = "/api/v1/shares/{id}",
    params(("id" = String, Path, description = "The share's id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such share, or not the caller's", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn revoke(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let shared = api.shared()?;
    let share = shared
        .shares
        .by_id(&caller, &id)
        .ok_or_else(|| ApiError::not_found("share"))?;
    let now = crate::store::unix_now();
    if share.revoke(now) {
        shared.store.revoke_share(&id, now).await.map_err(ApiError::internal)?;
        tracing::info!(share = id, user = %caller, "share revoked");
    }
    Ok(StatusCode::NO_CONTENT)
}
