//! Webhooks: `POST/GET /api/v1/webhooks`, `DELETE /api/v1/webhooks/{id}`, and their delivery.
//! Each event is a POST of `{"id","event","timestamp","data"}` signed with
//! `X-Burrow-Signature: sha256=<hex HMAC-SHA256 of the body>`, retried with backoff on a
//! non-2xx answer or a 5 s timeout, on a task of its own so no API call waits for it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::tunnels::{json_object, ErrorBody};
use super::{Api, ApiError, Caller, Shared};
use crate::hub::registry::TunnelEvent;
use crate::store::WebhookRecord;
use crate::types::{Secret, UserName};

/// The events a webhook may ask for.
pub const EVENTS: [&str; 4] = ["tunnel.created", "tunnel.deleted", "tunnel.status", "share.created"];
/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries after the first attempt, waiting 1, 2 and 4 s.
const RETRIES: u32 = 3;

/// What a webhook URL may be: the handler checks the schema's pattern (a test keeps the two
/// texts equal; utoipa takes only a literal).
const URL_PATTERN: &str = r"^https?://[A-Za-z0-9.-]+(:(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$";

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}", delete(remove))
}

/// `POST /api/v1/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://`.
    #[schema(
        pattern = r"^https?://[A-Za-z0-9.-]+(:(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$"
    )]
    url: String,
    /// Any of `tunnel.created`, `tunnel.deleted`, `tunnel.status`, `share.created`.
    #[schema(min_items = 1, inline, value_type = Vec<WebhookEvent>)]
    events: Vec<String>,
}

/// An event name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum WebhookEvent {
    #[schema(rename = "tunnel.created")]
    TunnelCreated,
    #[schema(rename = "tunnel.deleted")]
    TunnelDeleted,
    #[schema(rename = "tunnel.status")]
    TunnelStatus,
    #[schema(rename = "share.created")]
    ShareCreated,
}

/// A webhook as listed (its secret is shown once, when it is created).
#[derive(Serialize, ToSchema)]
pub struct ApiWebhook {
    id: String,
    url: String,
    events: Vec<String>,
    /// Only in the answer to `POST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// `{"webhooks": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<ApiWebhook>,
}

fn listed(w: WebhookRecord) -> ApiWebhook {
    ApiWebhook {
        id: w.id,
        url: w.url,
        events: w.events,
        secret: None,
    }
}

/// Subscribes a URL to the caller's events.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    request_body = NewWebhook,
    responses(
        (status = 201, description = "Subscribed; the secret is shown this once", body = ApiWebhook),
        (status = 400, description = "Not a JSON object of the right shape", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 422, description = "A URL or event that is not valid", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn create(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<ApiWebhook>), ApiError> {
    let new: NewWebhook = json_object(&body, "a new webhook")?;
    let invalid = |why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", why);
    static URL: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(URL_PATTERN).expect("a valid pattern"));
    if !URL.is_match(&new.url) {
        return Err(invalid(format!(
            "url {:?}: http:// or https://, a host of letters, digits, dots and dashes, an optional port and path",
            new.url
        )));
    }
    if new.events.is_empty() {
        return Err(invalid("events: at least one".into()));
    }
    if let Some(unknown) = new.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(invalid(format!("event {unknown:?}: one of {}", EVENTS.join(", "))));
    }
    let record = WebhookRecord {
        id: hex::encode(rand::random::<[u8; 16]>()),
        owner: caller,
        url: new.url,
        events: new.events,
        secret: Secret::new(hex::encode(rand::random::<[u8; 32]>())),
        created: crate::store::unix_now(),
    };
    let shared = api.shared()?;
    shared.store.insert_webhook(&record).await.map_err(ApiError::internal)?;
    tracing::info!(webhook = record.id, user = %record.owner, url = record.url, "webhook subscribed");
    let secret = record.secret.expose().to_string();
    let mut answer = listed(record);
    answer.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The caller's webhooks.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    responses(
        (status = 200, description = "The caller's webhooks, without their secrets", body = WebhookList),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn list(State(api): State<Arc<Api>>, Caller(caller): Caller) -> Result<Json<WebhookList>, ApiError> {
    let shared = api.shared()?;
    let webhooks = shared.store.webhooks(&caller).await.map_err(ApiError::internal)?;
    Ok(Json(WebhookList {
        webhooks: webhooks.into_iter().map(listed).collect(),
    }))
}

/// Unsubscribes one of the caller's webhooks.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 204, description = "Unsubscribed"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such webhook, or not the caller's", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn remove(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let shared = api.shared()?;
    match shared
        .store
        .delete_webhook(&caller, &id)
        .await
        .map_err(ApiError::internal)?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("webhook")),
    }
}

/// Sends `event` with `data` to every webhook of `owner` that asked for it, each on a task of
/// its own.
pub async fn emit(shared: &Shared, owner: &UserName, event: &'static str, data: Value) {
    let webhooks = match shared.store.webhooks(owner).await {
        Ok(webhooks) => webhooks,
        Err(e) => return tracing::error!(error = %e, "cannot read webhooks"),
    };
    for webhook in webhooks.into_iter().filter(|w| w.events.iter().any(|e| e == event)) {
        let body = json!({
            "id": hex::encode(rand::random::<[u8; 16]>()),
            "event": event,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": data,
        })
        .to_string();
        tokio::spawn(deliver(webhook, event, body));
    }
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.expose().as_bytes());
    format!("sha256={}", hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref()))
}

/// POSTs `body` until a 2xx answer, retrying after 1, 2 and 4 s.
async fn deliver(webhook: WebhookRecord, event: &'static str, body: String) {
    let signed = signature(&webhook.secret, body.as_bytes());
    let mut delay = Duration::from_secs(1);
    for attempt in 0..=RETRIES {
        let outcome = tokio::time::timeout(DELIVERY_TIMEOUT, post(&webhook.url, &body, &signed)).await;
        match outcome {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::debug!(webhook = webhook.id, event, attempt, "webhook delivered");
                return;
            }
            Ok(Ok(status)) => tracing::info!(
                webhook = webhook.id,
                event,
                attempt,
                status,
                "webhook answered with an error"
            ),
            Ok(Err(e)) => tracing::info!(webhook = webhook.id, event, attempt, error = %e, "webhook delivery failed"),
            Err(_) => tracing::info!(webhook = webhook.id, event, attempt, "webhook did not answer in time"),
        }
        if attempt < RETRIES {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::warn!(
        webhook = webhook.id,
        event,
        url = webhook.url,
        "webhook given up after {RETRIES} retries"
    );
}

/// One POST; the status of the answer.
async fn post(url: &str, body: &str, signature: &str) -> Result<u16, String> {
    let tls = url
        .starts_with("https://")
        .then(|| crate::tls::web_client_config(None))
        .transpose()
        .map_err(|e| e.to_string())?;
    let headers = [
        (http::header::CONTENT_TYPE, "application/json".to_string()),
        (
            http::header::HeaderName::from_static("x-burrow-signature"),
            signature.to_string(),
        ),
    ];
    let body = bytes::Bytes::from(body.to_string());
    let reply = crate::http_client::request(http::Method::POST, url, &headers, body, tls, 64 << 10).await?;
    Ok(reply.status.as_u16())
}

/// Turns the registry's tunnel events into webhook deliveries, for as long as the hub runs.
pub fn spawn_dispatcher(shared: Weak<Shared>, mut events: tokio::sync::broadcast::Receiver<TunnelEvent>) {
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "webhook events were dropped under load");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(shared) = shared.upgrade() else { return };
            let (name, record) = match event {
                TunnelEvent::Created(record) => ("tunnel.created", record),
                TunnelEvent::Ended(record) if record.user_shutdown == Some(true) => ("tunnel.deleted", record),
                TunnelEvent::Ended(record) => ("tunnel.status", record),
            };
            let data = event_data(&record);
            emit(&shared, &record.owner, name, data).await;
        }
    });
}

/// A tunnel in an event: its record's fields, camelCase as the Tunnels API names them.
pub fn event_data(record: &crate::store::TunnelRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "owner": record.owner,
        "protocol": record.protocol,
        "target": record.target,
        "public": record.public,
        "hubPort": record.hub_port,
        "pool": record.pool,
        "metadata": record.metadata,
        "status": if record.shutdown_time.is_some() { "ended" } else { "active" },
        "shutdownReason": record.shutdown_reason,
    })
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_handler_checks_the_documented_url_pattern() {
        let document = serde_json::to_value(super::super::tunnels::ApiDoc::openapi()).unwrap();
        let documented = &document["components"]["schemas"]["NewWebhook"]["properties"]["url"]["pattern"];
        assert_eq!(documented, super::URL_PATTERN);
        let url = regex::Regex::new(super::URL_PATTERN).unwrap();
        assert!(url.is_match("https://hooks.example:8443/burrow"));
        assert!(!url.is_match("https://QIu3KT9*"));
    }
}
