//! The operational API every role serves on `--api-address` (SPEC section 5): `/readyz`,
//! `/healthz`, `/info`, `/metrics`, `/configz`, `/pac`, `/version`, and an index at `/`. A
//! role contributes what only it knows through [`RoleView`]; the metric families are in
//! `metrics.rs`. The hub serves the same router on its main port, by its own name (HTTPS
//! with its certificate, or plain HTTP with that `Host`). The REST API mounts on it too.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

/// What one role tells the operational API.
pub trait RoleView: Send + Sync + 'static {
    /// Traffic can flow now: an agent is registered with the hub, a hub has its listeners up
    /// and its store open; false from the first signal of a drain, and while an agent
    /// reconnects.
    fn ready(&self) -> bool;
    /// The process does its job: false only when it cannot recover by itself.
    fn healthy(&self) -> bool;
    /// The `/info` document.
    fn info(&self) -> serde_json::Value;
}

/// Everything the operational API serves for one process.
pub struct Ops {
    role: Arc<dyn RoleView>,
    /// Requests answered, by route and status.
    requests: Arc<crate::metrics::ApiRequests>,
    /// `name=value` lines of `/configz`, secrets already redacted.
    settings: Vec<String>,
    metrics: Registry,
    /// The PAC script in use, if any.
    pac: Option<String>,
    /// The role's own routes beside these (the hub's REST API).
    rest: Option<Router>,
}

impl Ops {
    /// `settings` are `(flag, value)` pairs as the role runs with them; values of secret
    /// settings must already be redacted ([`redact`]).
    pub fn new(role: Arc<dyn RoleView>, settings: Vec<(String, String)>, mut metrics: Registry) -> Self {
        let mut settings: Vec<String> = settings.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        settings.sort();
        let requests = Arc::new(crate::metrics::ApiRequests::default());
        metrics.register_collector(Box::new(requests.clone()));
        Self {
            role,
            requests,
            settings,
            metrics,
            pac: None,
            rest: None,
        }
    }

    /// Serves `routes` beside the operational endpoints (their own state already given).
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.rest = Some(routes);
        self
    }

    /// Serves `script` at `/pac`.
    pub fn with_pac(mut self, script: Option<String>) -> Self {
        self.pac = script;
        self
    }

    pub fn router(self: Arc<Self>) -> Router {
        let router = Router::new()
            .route("/", get(index))
            .route("/readyz", get(readyz))
            .route("/healthz", get(healthz))
            .route("/info", get(info))
            .route("/metrics", get(metrics))
            .route("/configz", get(configz))
            .route("/pac", get(pac))
            .route("/version", get(version))
            .with_state(self.clone());
        let router = match &self.rest {
            Some(rest) => router.merge(rest.clone()),
            None => router,
        };
        router.route_layer(axum::middleware::from_fn_with_state(self, count_request))
    }

    /// Serves the API on one connection the hub's main port hands over (HTTP/1.1, kept
    /// alive for as long as the client likes).
    pub async fn serve_connection<T>(self: Arc<Self>, io: T, peer: std::net::SocketAddr)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // The client's address, as `axum::serve` records it for the listener's connections.
        let router = self.router().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = hyper_util::service::TowerToHyperService::new(router);
        let io = hyper_util::rt::TokioIo::new(io);
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await
        {
            tracing::debug!(error = %e, "an API connection on the main port ended with an error");
        }
    }

    /// Serves the API on `listener` until the process ends: it keeps answering while the
    /// role drains, so readiness can be seen to turn false.
    pub fn spawn(self: Arc<Self>, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let router = self.router();
        tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(error = %e, "the operational API stopped");
            }
        })
    }
}

/// A secret's value as `/configz` shows it: the part before a `:` (a user name) kept, the
/// rest hidden.
pub fn redact(value: &str) -> String {
    match value.split_once(':') {
        Some((user, _)) => format!("{user}:xxxxx"),
        None => "xxxxx".into(),
    }
}

type Api = State<Arc<Ops>>;

const INDEX: &str = "burrow operational API\n\
/readyz   200 when traffic can flow, else 503\n\
/healthz  200 while healthy, else 503\n\
/info     what this process is (JSON)\n\
/metrics  Prometheus text format (OpenMetrics when asked)\n\
/configz  the settings in use, secrets redacted\n\
/pac      the PAC script in use\n\
/version  build information (JSON)\n";

/// Counts each request by its route (the pattern, never the raw path: bounded labels) and
/// the status it got.
async fn count_request(
    State(ops): Api,
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = route.as_str().to_owned();
    let response = next.run(request).await;
    ops.requests.count(route, response.status().as_u16());
    response
}

async fn index() -> &'static str {
    INDEX
}

fn status(ok: bool) -> Response {
    if ok {
        (StatusCode::OK, "OK\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn readyz(State(ops): Api) -> Response {
    status(ops.role.ready())
}

async fn healthz(State(ops): Api) -> Response {
    status(ops.role.healthy())
}

async fn info(State(ops): Api) -> Response {
    axum::Json(ops.role.info()).into_response()
}

async fn metrics(State(ops): Api, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    match crate::metrics::render(&ops.metrics, accept) {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n").into_response(),
    }
}

async fn configz(State(ops): Api) -> Response {
    let mut body = ops.settings.join("\n");
    body.push('\n');
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn pac(State(ops): Api) -> Response {
    match &ops.pac {
        Some(script) => (
            [(header::CONTENT_TYPE, "application/x-ns-proxy-autoconfig")],
            script.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no PAC script in use\n").into_response(),
    }
}

async fn version() -> Response {
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("BURROW_COMMIT"),
        "rustc": env!("BURROW_RUSTC"),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_keep_only_the_user() {
        assert_eq!(redact("alice:s3cret"), "alice:xxxxx");
        assert_eq!(redact("s3cret"), "xxxxx");
    }
}
