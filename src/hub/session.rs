//! One agent connection on the hub: the hello and credential check, then the control loop
//! (register tunnels for `expose`, resolve them for `reach`) until the connection ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::public;
use super::registry::{Member, SessionId};
use super::shares::{Share, ShareToken};
use super::{ExposeSession, Shared};
use crate::carrier::lanes::LaneKind;
use crate::carrier::AgentLink;
use crate::mux::{self, MuxConn, Transport};
use crate::types::Secret;
use crate::wire::io::{read_frame, write_frame};
use crate::wire::{AgentMsg, ConnKind, Hello, HubMsg, RefuseCode, Role, PREFACE, PROTOCOL_VERSION};

const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// Preface plus HTTP/2 handshake; a real agent needs one round trip.
const SETUP_DEADLINE: Duration = Duration::from_secs(5);

/// Reads the preface and the byte after it that says what the connection is, bounded in time.
pub async fn read_preface<T: AsyncRead + Unpin>(io: &mut T, peer: SocketAddr) -> Option<ConnKind> {
    let mut preface = [0u8; PREFACE.len() + 1];
    match tokio::time::timeout(SETUP_DEADLINE, io.read_exact(&mut preface)).await {
        Ok(Ok(_)) if &preface[..PREFACE.len()] == PREFACE => {}
        _ => {
            tracing::debug!(%peer, "agent preface missing or malformed");
            return None;
        }
    }
    let kind = ConnKind::from_byte(preface[PREFACE.len()]);
    if kind.is_none() {
        tracing::debug!(%peer, "unknown connection kind after the preface");
    }
    kind
}

/// A TLS or plain-TCP agent after its preface: runs HTTP/2 with the hub as the client for
/// `expose` agents (it opens the streams) and the server for `reach`.
pub async fn serve_stream_agent<T>(shared: Arc<Shared>, io: T, peer: SocketAddr, transport: Transport, role: Role)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let setup = async {
        match role {
            Role::Expose => mux::h2::client(io, transport).await,
            Role::Reach => mux::h2::server(io, transport).await,
        }
    };
    // A peer that sends the preface and then stalls or garbles HTTP/2 is dropped here.
    match tokio::time::timeout(SETUP_DEADLINE, setup).await {
        Ok(Ok(conn)) => serve_agent(shared, conn, peer).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP/2 set-up with agent failed"),
        Err(_) => tracing::debug!(%peer, "HTTP/2 set-up with agent timed out"),
    }
}

/// One agent session, in a span of its own: peer and transport, then who the agent is once
/// its hello says so.
pub async fn serve_agent(shared: Arc<Shared>, conn: MuxConn, peer: SocketAddr) {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "agent_session",
        %peer,
        transport = %conn.transport,
        user = Empty,
        agent = Empty,
        role = Empty,
        session = Empty
    );
    tracing::Instrument::instrument(serve_session(shared, conn, peer), span).await
}

async fn serve_session(shared: Arc<Shared>, conn: MuxConn, peer: SocketAddr) {
    let plaintext = conn.transport == Transport::Tcp;
    let MuxConn {
        mut control,
        opener,
        acceptor,
        lifetime,
        transport,
    } = conn;
    let hello = match tokio::time::timeout(HELLO_DEADLINE, read_frame::<_, AgentMsg>(&mut control)).await {
        Ok(Ok(Some(AgentMsg::Hello(hello)))) => hello,
        other => {
            tracing::debug!(%peer, ?other, "agent did not start with a hello");
            lifetime.close("expected hello");
            return;
        }
    };
    let share = match check_hello(&shared, &hello, plaintext).await {
        Ok(share) => share,
        Err((code, message)) => {
            tracing::info!(%peer, user = %hello.user, ?code, "agent refused: {message}");
            let _ = write_frame(&mut control, &HubMsg::Refused { code, message }).await;
            let _ = control.shutdown().await;
            // Let the agent read the refusal and hang up first; QUIC discards unsent data on close.
            let _ = tokio::time::timeout(Duration::from_secs(5), lifetime.closed()).await;
            lifetime.close("refused");
            return;
        }
    };
    // A share's session acts for the share's owner, on the share's tunnel alone.
    let hello = match &share {
        Some(share) => Hello {
            user: share.record.owner.clone(),
            ..hello
        },
        None => hello,
    };
    // Lanes carry visitors to agents that serve tunnels.
    let lanes = LaneKind::for_transport(transport)
        .filter(|_| hello.role == Role::Expose)
        .map(|kind| shared.lanes.open(kind));
    let _close_lanes = lanes.as_ref().map(|(token, _)| CloseLanes(&shared.lanes, *token));
    if write_frame(
        &mut control,
        &HubMsg::Welcome {
            hub_version: env!("CARGO_PKG_VERSION").into(),
            lane_token: lanes.as_ref().map(|(token, _)| *token),
        },
    )
    .await
    .is_err()
    {
        return;
    }
    let session = SessionId(shared.next_session.fetch_add(1, Ordering::Relaxed));
    let span = tracing::Span::current();
    span.record("user", tracing::field::display(&hello.user));
    span.record("agent", tracing::field::display(&hello.agent_id));
    span.record("role", tracing::field::debug(hello.role));
    span.record("session", session.0);
    let _counted = SessionCounted::new(&shared.sessions, hello.role);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<HubMsg>();
    // A share's user is not one of the owner's agents.
    if share.is_none() {
        shared.connected.lock().expect("connected agents lock").insert(
            session,
            super::ConnectedAgent {
                id: hello.agent_id,
                user: hello.user.clone(),
                role: hello.role,
                hostname: hello.hostname.chars().take(255).collect(),
                version: hello.client_version.chars().take(64).collect(),
                transport,
                connected_at: crate::store::unix_now(),
                control: out_tx.clone(),
            },
        );
    }
    let datagrams = crate::udp::DatagramRouter::for_connection(&lifetime, shared.udp_stats.clone());
    tracing::info!(%peer, user = %hello.user, agent = %hello.agent_id, role = ?hello.role, %transport, ?session, "agent connected");

    let (mut control_rx, mut control_tx) = tokio::io::split(control);
    let member = opener
        .as_ref()
        .filter(|_| hello.role == Role::Expose)
        .map(|opener| Member {
            session,
            agent_id: hello.agent_id,
            link: Arc::new(AgentLink::new(
                transport,
                opener.clone(),
                datagrams.clone(),
                lanes.as_ref().map(|(_, pool)| pool.clone()),
            )),
            control: out_tx.clone(),
        });
    if let Some(member) = &member {
        let listed = ExposeSession {
            user: hello.user.clone(),
            member: member.clone(),
        };
        shared
            .agents
            .lock()
            .expect("agent sessions lock")
            .insert(hello.agent_id, listed);
    }
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if write_frame(&mut control_tx, &msg).await.is_err() {
                break;
            }
        }
    });

    if hello.role == Role::Reach {
        if let Some(mut acceptor) = acceptor {
            let reacher = match &share {
                Some(share) => public::Reacher::Share(share.clone()),
                None => public::Reacher::User(hello.user.clone()),
            };
            let (shared, datagrams) = (shared.clone(), datagrams.clone());
            let accepting = async move {
                while let Some(stream) = acceptor.accept().await {
                    let datagrams = datagrams.clone();
                    let served = public::serve_reach_stream(shared.clone(), reacher.clone(), stream, peer, datagrams);
                    tokio::spawn(tracing::Instrument::in_current_span(served));
                }
            };
            tokio::spawn(tracing::Instrument::in_current_span(accepting));
        }
    }

    // A draining hub tells its agents, so they reconnect as soon as it closes instead of
    // noticing only when a keep-alive times out.
    let going_away = {
        let (shutdown, out_tx) = (shared.shutdown.clone(), out_tx.clone());
        tokio::spawn(async move {
            shutdown.draining().await;
            let _ = out_tx.send(HubMsg::GoingAway {
                reason: "the hub is shutting down".into(),
            });
        })
    };
    let control_loop = async {
        loop {
            let msg = match read_frame::<_, AgentMsg>(&mut control_rx).await {
                Ok(Some(msg)) => msg,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "control stream error");
                    return;
                }
            };
            let reply = match (msg, hello.role, &member) {
                (AgentMsg::Register { spec }, Role::Expose, Some(member)) => {
                    match shared.registry.register(&hello.user, spec, member.clone()).await {
                        Ok(tunnel) => HubMsg::Registered {
                            tunnel: shared.registry.info(&tunnel),
                        },
                        Err(e) => HubMsg::Refused {
                            code: e.code,
                            message: e.message,
                        },
                    }
                }
                (AgentMsg::Resolve { .. }, Role::Reach, _) if share.is_some() => {
                    let share = share.as_ref().expect("a share session");
                    match shared.registry.get(share.record.tunnel) {
                        Some(found) => HubMsg::Resolved {
                            tunnel: shared.registry.info(&found),
                        },
                        None => HubMsg::Refused {
                            code: RefuseCode::NotFound,
                            message: "the tunnel behind this share has ended".into(),
                        },
                    }
                }
                (AgentMsg::Resolve { tunnel }, Role::Reach, _) => match shared.registry.resolve(&hello.user, &tunnel) {
                    Some(found) => HubMsg::Resolved {
                        tunnel: shared.registry.info(&found),
                    },
                    None => HubMsg::Refused {
                        code: RefuseCode::NotFound,
                        message: format!("no tunnel {tunnel:?} that user {} may reach", hello.user),
                    },
                },
                (AgentMsg::Listened { request, outcome }, Role::Reach, _) => {
                    let waiting = shared.listens.lock().expect("listens lock").remove(&request);
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(outcome);
                    }
                    continue;
                }
                (AgentMsg::Ping, _, _) => HubMsg::Pong,
                (AgentMsg::Draining, _, _) => {
                    // Out of every pool now; the connection stays up for running streams.
                    // Its idle lanes close, which tells the agent that no visitor is on its
                    // way on them (it keeps them open until then, see `agent/lanes.rs`).
                    tracing::info!(%peer, ?session, "agent draining");
                    forget_session(&shared, hello.agent_id, session);
                    shared.registry.session_ended(session);
                    if let Some((token, _)) = &lanes {
                        shared.lanes.close(*token);
                    }
                    continue;
                }
                (other, role, _) => HubMsg::Refused {
                    code: RefuseCode::BadRequest,
                    message: format!("unexpected message for a {role:?} agent: {other:?}"),
                },
            };
            if out_tx.send(reply).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = control_loop => {}
        _ = lifetime.closed() => {}
    }
    tracing::info!(%peer, user = %hello.user, ?session, "agent disconnected");
    forget_session(&shared, hello.agent_id, session);
    shared.connected.lock().expect("connected agents lock").remove(&session);
    shared.registry.session_ended(session);
    going_away.abort();
    writer.abort();
    lifetime.close("session ended");
}

/// Takes `session` out of the hub's list of expose sessions, unless the agent has already
/// connected again.
fn forget_session(shared: &Shared, agent: crate::types::AgentId, session: SessionId) {
    let mut agents = shared.agents.lock().expect("agent sessions lock");
    if agents
        .get(&agent)
        .is_some_and(|listed| listed.member.session == session)
    {
        agents.remove(&agent);
    }
}

/// Closes a session's lanes however the session ends.
struct CloseLanes<'a>(&'a crate::carrier::lanes::LaneBook, crate::types::LaneToken);

impl Drop for CloseLanes<'_> {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

/// Whether an agent's hello is accepted: `Err` with why not, else the share it presents.
async fn check_hello(
    shared: &Shared,
    hello: &Hello,
    plaintext: bool,
) -> Result<Option<Arc<Share>>, (RefuseCode, String)> {
    if hello.version != PROTOCOL_VERSION {
        return Err((
            RefuseCode::Version,
            format!(
                "agent protocol version {} is not supported (hub speaks {PROTOCOL_VERSION})",
                hello.version
            ),
        ));
    }
    if plaintext && !shared.config.allow_plaintext {
        return Err((
            RefuseCode::PlaintextNotAllowed,
            "this hub does not accept unencrypted agents (start it with --allow-plaintext)".into(),
        ));
    }
    if let Some(token) = &hello.share {
        return check_share(shared, hello.role, token).map(Some);
    }
    match shared.store.verify_user(&hello.user, &hello.access_key).await {
        Ok(true) => Ok(None),
        Ok(false) => Err((
            RefuseCode::Unauthorized,
            format!("invalid credentials for user {}", hello.user),
        )),
        Err(e) => {
            tracing::error!(error = %e, "credential check failed");
            Err((RefuseCode::Unauthorized, "credential check failed on the hub".into()))
        }
    }
}

/// The share a `reach --share` agent presents, if it may be used that way: a standing share
/// that does not limit HTTP methods (the hub cannot see methods in a `reach` connection).
fn check_share(shared: &Shared, role: Role, token: &Secret) -> Result<Arc<Share>, (RefuseCode, String)> {
    let unknown = || {
        (
            RefuseCode::Unauthorized,
            "this share link is not valid on this hub".to_string(),
        )
    };
    let share = ShareToken::from_label(token.expose())
        .and_then(|token| shared.shares.find(&token))
        .ok_or_else(unknown)?;
    if role != Role::Reach {
        return Err((RefuseCode::BadRequest, "a share link is for `burrow reach` only".into()));
    }
    share
        .standing(crate::store::unix_now())
        .map_err(|refusal| (RefuseCode::Unauthorized, refusal.to_string()))?;
    if share.limits_methods() {
        let why = "this share limits HTTP methods, which the hub checks only at its URL: open it there";
        return Err((RefuseCode::Unauthorized, why.into()));
    }
    Ok(share)
}

/// An agent session counted by role for as long as it lives (`burrow_agents_connected`).
struct SessionCounted(Arc<super::SessionCounts>, Role);

impl SessionCounted {
    fn new(counts: &Arc<super::SessionCounts>, role: Role) -> Self {
        Self::counter(counts, role).fetch_add(1, Ordering::Relaxed);
        Self(counts.clone(), role)
    }

    fn counter(counts: &super::SessionCounts, role: Role) -> &std::sync::atomic::AtomicU64 {
        match role {
            Role::Expose => &counts.expose,
            Role::Reach => &counts.reach,
        }
    }
}

impl Drop for SessionCounted {
    fn drop(&mut self) {
        Self::counter(&self.0, self.1).fetch_sub(1, Ordering::Relaxed);
    }
}
