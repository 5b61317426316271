//! `burrow tunnels list|get|stop|jobs`: a client of the hub's Sauce Connect-compatible REST
//! API on its main port (HTTPS to the hub's own name, checked with `--ca`; plain HTTP with
//! `--transport tcp`), printing tables or, with `--json`, the API's JSON.

use std::sync::Arc;

use serde_json::Value;

use crate::agent::AgentConfig;
use crate::types::TransportKind;

/// What a REST call can fail with: exit 2 for what the user must fix, else 1.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// The REST API of the hub at `config.hub`, as `config.user`.
pub struct RestClient {
    config: AgentConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl RestClient {
    pub fn new(config: AgentConfig, ca: Option<&std::path::Path>) -> Result<Self, ClientError> {
        let tls = match config.transport {
            TransportKind::Tcp => None,
            _ => Some(crate::tls::web_client_config(ca).map_err(|e| ClientError::Usage(e.to_string()))?),
        };
        Ok(Self { config, tls })
    }

    /// `method path` with the user's credentials: the JSON answer of a 2xx, else the API's
    /// error message.
    pub async fn call(&self, method: http::Method, path: &str) -> Result<Value, ClientError> {
        self.call_with(method, path, None).await
    }

    /// `call` with a JSON body.
    pub async fn call_with(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        use base64::Engine;
        let hub = &self.config.hub;
        crate::agent::session::split_host_port(hub).map_err(|e| ClientError::Usage(e.to_string()))?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let credentials = format!("{}:{}", self.config.user, self.config.access_key.expose());
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let mut headers = vec![(http::header::AUTHORIZATION, authorization)];
        if body.is_some() {
            headers.push((http::header::CONTENT_TYPE, "application/json".to_string()));
        }
        let body = body.map_or_else(bytes::Bytes::new, |b| bytes::Bytes::from(b.to_string()));
        let url = format!("{scheme}://{hub}{path}");
        let reply = crate::http_client::request(method, &url, &headers, body, self.tls.clone(), 16 << 20)
            .await
            .map_err(|e| match e.starts_with("TLS to") {
                true => ClientError::Usage(format!("{e} (is --ca the hub's CA?)")),
                false => ClientError::Failed(format!("the hub at {hub}: {e}")),
            })?;
        let status = reply.status;
        let value: Value = serde_json::from_slice(&reply.body)
            .map_err(|_| ClientError::Failed(format!("the hub answered {status} with no JSON")))?;
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"].as_str().unwrap_or("no reason given").to_string();
        match status.as_u16() {
            401 => Err(ClientError::Usage(format!(
                "the hub refused the credentials: {message}"
            ))),
            404 | 422 => Err(ClientError::Usage(message)),
            _ => Err(ClientError::Failed(format!("{status}: {message}"))),
        }
    }

    fn user(&self) -> &str {
        self.config.user.as_str()
    }

    /// Every tunnel of the user, as Sauce objects.
    pub async fn tunnels(&self) -> Result<Vec<Value>, ClientError> {
        let listed = self
            .call(
                http::Method::GET,
                &format!("/rest/v1/{}/tunnels?full=true", self.user()),
            )
            .await?;
        Ok(listed.as_array().cloned().unwrap_or_default())
    }

    /// The id of the tunnel named `tunnel` (a name, or an id as it is).
    pub async fn resolve(&self, tunnel: &str) -> Result<String, ClientError> {
        if tunnel.len() == 32 && tunnel.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(tunnel.to_ascii_lowercase());
        }
        self.tunnels()
            .await?
            .iter()
            .find(|t| t["tunnel_identifier"] == tunnel)
            .and_then(|t| t["id"].as_str().map(str::to_string))
            .ok_or_else(|| ClientError::Usage(format!("no running tunnel named {tunnel}")))
    }

    /// `tunnels get`.
    pub async fn get(&self, tunnel: &str) -> Result<Value, ClientError> {
        let id = self.resolve(tunnel).await?;
        self.call(http::Method::GET, &format!("/rest/v1/{}/tunnels/{id}", self.user()))
            .await
    }

    /// `tunnels jobs`.
    pub async fn jobs(&self, tunnel: &str) -> Result<Value, ClientError> {
        let id = self.resolve(tunnel).await?;
        self.call(
            http::Method::GET,
            &format!("/rest/v1/{}/tunnels/{id}/num_jobs", self.user()),
        )
        .await
    }

    /// `tunnels stop`.
    pub async fn stop(&self, tunnel: &str) -> Result<Value, ClientError> {
        let id = self.resolve(tunnel).await?;
        self.call(http::Method::DELETE, &format!("/rest/v1/{}/tunnels/{id}", self.user()))
            .await
    }
}

/// `tunnels list` as a table.
pub fn table(tunnels: &[Value]) -> String {
    let rows: Vec<[String; 5]> = tunnels
        .iter()
        .map(|t| {
            let text = |key: &str| match &t[key] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            let extra: Value = t["extra_info"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let protocol = extra["protocol"].as_str().unwrap_or("-").to_string();
            [
                text("id"),
                text("tunnel_identifier"),
                protocol,
                text("status"),
                text("shared_tunnel"),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "PROTOCOL", "STATUS", "SHARED"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let line = |row: &[String; 5]| {
        row.iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(&header))
        .chain(rows.iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `tunnels get` as `key: value` lines, sorted.
pub fn details(tunnel: &Value) -> String {
    let Some(fields) = tunnel.as_object() else {
        return tunnel.to_string();
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    fields
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{key:<width$}  {value}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
