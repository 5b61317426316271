//! The hub's REST API, mounted beside the operational API: HTTP Basic authentication against
//! the store's hashed keys with a failed-attempt budget per source address, JSON errors, and
//! the Sauce Connect-compatible endpoints (`sauce.rs`), the Tunnels API (`tunnels.rs`),
//! `connect` (`connect.rs`), shares (`shares.rs`) and webhooks (`webhooks.rs`).

mod connect;
mod sauce;
mod shares;
mod tunnels;
mod webhooks;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::registry::Tunnel;
use super::Shared;
use crate::types::{Secret, UserName};
use crate::wire::HubMsg;

/// The window of the failed-authentication budget (`--auth-failures-per-minute`).
const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);

/// What the REST handlers share: the hub (weakly: the hub holds the API) and the failed
/// authentications by source.
pub struct Api {
    shared: Weak<Shared>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The REST routes, and the task that delivers the hub's tunnel events to webhooks.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    webhooks::spawn_dispatcher(Arc::downgrade(shared), shared.registry.events.subscribe());
    let api = Arc::new(Api {
        shared: Arc::downgrade(shared),
        failures: Mutex::default(),
    });
    sauce::router()
        .merge(tunnels::router())
        .merge(webhooks::router())
        .merge(shares::router())
        .merge(connect::router())
        .with_state(api)
}

/// The authenticated user.
pub struct Caller(UserName);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
        api.authenticate(&parts.headers, peer_of(peer)).await.map(Caller)
    }
}

/// Ends `tunnel` for good on the caller's word: its agents are told ("tunnel deleted by
/// the API"), and its record keeps "deleted via API". The connections open when it
/// stopped.
async fn stop_tunnel(shared: &Shared, tunnel: &Tunnel, caller: &UserName) -> u64 {
    let jobs = tunnel.jobs();
    for member in tunnel.take_members() {
        let _ = member.control.send(HubMsg::StopTunnel {
            id: tunnel.id,
            reason: "tunnel deleted by the API".into(),
        });
    }
    shared.registry.end(tunnel, "deleted via API", true).await;
    tracing::info!(tunnel = %tunnel.id, name = %tunnel.name(), user = %caller, "tunnel deleted through the REST API");
    jobs
}

/// A JSON error: `{"error": "...", "code": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the hub is stopping")
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "REST API failure");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({"error": self.message, "code": self.code}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"burrow\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl Api {
    fn shared(&self) -> Result<Arc<Shared>, ApiError> {
        self.shared.upgrade().ok_or_else(ApiError::unavailable)
    }

    /// Failed authentications one source may make per window before it gets 429.
    fn failure_budget(&self) -> u32 {
        self.shared.upgrade().map_or(0, |s| s.config.auth_failures_per_minute)
    }

    /// The caller named by HTTP Basic credentials the store accepts. A source past its budget
    /// of failures gets 429 before its credentials are even checked.
    async fn authenticate(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<UserName, ApiError> {
        let source = peer.map(|p| p.ip());
        if let Some(source) = source {
            let failures = self.failures.lock().expect("failures lock");
            if let Some((since, count)) = failures.get(&source) {
                let left = FAILED_AUTH_WINDOW.saturating_sub(since.elapsed());
                if *count >= self.failure_budget() && !left.is_zero() {
                    let mut error = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "too many failed authentications from this address",
                    );
                    error.retry_after = Some(left.as_secs().max(1));
                    return Err(error);
                }
            }
        }
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "valid HTTP Basic credentials are required",
            )
        };
        let Some((user, key)) = basic_credentials(headers) else {
            return Err(unauthorized());
        };
        let shared = self.shared()?;
        let verified = match user.parse::<UserName>() {
            Ok(name) => shared
                .store
                .verify_user(&name, &key)
                .await
                .map_err(ApiError::internal)?
                .then_some(name),
            Err(_) => None,
        };
        match (verified, source) {
            (Some(name), _) => Ok(name),
            (None, Some(source)) => {
                let mut failures = self.failures.lock().expect("failures lock");
                if failures.len() > 100_000 {
                    failures.retain(|_, (since, _)| since.elapsed() < FAILED_AUTH_WINDOW);
                }
                let entry = failures.entry(source).or_insert((Instant::now(), 0));
                if entry.0.elapsed() >= FAILED_AUTH_WINDOW {
                    *entry = (Instant::now(), 0);
                }
                entry.1 += 1;
                tracing::info!(%source, user, "REST authentication failed");
                Err(unauthorized())
            }
            (None, None) => Err(unauthorized()),
        }
    }
}

/// `Authorization: Basic base64(user:key)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Secret)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, key) = text.split_once(':')?;
    Some((user.to_string(), Secret::new(key)))
}

/// The client's address, when the server recorded it.
fn peer_of(info: Option<ConnectInfo<SocketAddr>>) -> Option<SocketAddr> {
    info.map(|ConnectInfo(addr)| addr)
}
