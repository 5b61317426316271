//! `POST /api/v1/tunnels/{id}/connect`: the programmatic `reach`. The hub asks one of the
//! caller's connected `reach` agents, over its control stream, to open a local listener
//! whose connections go to the tunnel, and answers once the agent listens.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::tunnels::{json_object, unprocessable, visible, ErrorBody};
use super::{Api, ApiError, Caller};
use crate::types::{AgentId, Protocol};
use crate::wire::{HubMsg, ListenOutcome, Role};

/// How long the agent may take to answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

pub fn router() -> Router<Arc<Api>> {
    Router::new().route("/api/v1/tunnels/{id}/connect", post(connect))
}

/// `POST /api/v1/tunnels/{id}/connect`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectRequest {
    /// The `--agent-id` of one of the caller's connected `reach` agents.
    agent_id: String,
    /// The port to listen on (127.0.0.1); by default the target's port if it is free on
    /// the agent's host, else any free port.
    #[schema(value_type = Option<u16>, minimum = 1, maximum = 65535)]
    local_port: Option<f64>,
}

/// Where the agent listens.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    /// For the tunnel's protocol, as `expose` prints it (`postgresql://127.0.0.1:5432`, ...).
    connection_string: String,
    local_port: u16,
}

/// Has a connected `reach` agent of the caller listen for a tunnel the caller may reach.
#[utoipa::path(
    post,
    path = "/api/v1/tunnels/{id}/connect",
    params(("id" = String, Path, description = "The tunnel's id")),
    request_body = ConnectRequest,
    responses(
        (status = 200, description = "The agent listens", body = Connected),
        (status = 400, description = "Not a JSON object of the right shape", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such tunnel or agent, or not the caller's", body = ErrorBody),
        (status = 409, description = "The port is taken on the agent's host", body = ErrorBody),
        (status = 422, description = "A port out of range, a udp tunnel, or an agent that is not a reach agent", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
        (status = 502, description = "The agent could not listen, or did not answer", body = ErrorBody),
    ),
    security(("basic" = []))
)]
pub async fn connect(
    State(api): State<Arc<Api>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Connected>, ApiError> {
    let request: ConnectRequest = json_object(&body, "a connect request")?;
    let exact = match request.local_port {
        None => None,
        Some(port) if port.fract() == 0.0 && (1.0..=65535.0).contains(&port) => Some(port as u16),
        Some(port) => return Err(unprocessable(format!("localPort {port}: a port, 1-65535"))),
    };
    let agent: AgentId = request.agent_id.parse().map_err(|_| ApiError::not_found("agent"))?;
    let shared = api.shared()?;
    let tunnel = visible(&shared, &caller, &id)?;
    if tunnel.protocol == Protocol::Udp {
        return Err(unprocessable(
            "connect listens for TCP; reach a udp tunnel with `burrow reach`".into(),
        ));
    }
    let session = shared
        .connected
        .lock()
        .expect("connected agents lock")
        .values()
        .find(|a| a.id == agent && a.user == caller)
        .cloned()
        .ok_or_else(|| ApiError::not_found("agent"))?;
    if session.role != Role::Reach {
        return Err(unprocessable(format!(
            "agent {agent} is an expose agent; connect needs a `burrow reach` agent"
        )));
    }
    let record = tunnel.record();
    let target_port = crate::types::target_port(&record.target).unwrap_or(0);
    let number = shared.next_listen.fetch_add(1, Ordering::Relaxed);
    let (answer_tx, answer) = tokio::sync::oneshot::channel();
    shared.listens.lock().expect("listens lock").insert(number, answer_tx);
    let asked = session.control.send(HubMsg::Listen {
        request: number,
        tunnel: tunnel.id,
        port: exact.unwrap_or(target_port),
        exact: exact.is_some(),
    });
    let outcome = match asked {
        Ok(()) => tokio::time::timeout(ANSWER_DEADLINE, answer)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    shared.listens.lock().expect("listens lock").remove(&number);
    match outcome {
        Some(ListenOutcome::Listening { port }) => {
            tracing::info!(tunnel = %tunnel.id, %agent, port, user = %caller, "agent listens for the tunnel at the API's request");
            let address = format!("127.0.0.1:{port}");
            Ok(Json(Connected {
                connection_string: record.protocol.connection_string(&record.target, &address),
                local_port: port,
            }))
        }
        Some(ListenOutcome::Taken { message }) => Err(ApiError::new(StatusCode::CONFLICT, "port_taken", message)),
        Some(ListenOutcome::Failed { message }) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_failed",
            format!("the agent could not listen: {message}"),
        )),
        None => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_silent",
            "the agent did not answer; it may be disconnecting",
        )),
    }
}
