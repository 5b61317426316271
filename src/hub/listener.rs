//! The hub's main port: one TCP listener and one QUIC endpoint on the same address. TCP
//! connections are classified by their first bytes (agent, TLS by SNI, HTTP by Host; after a
//! trusted proxy's PROXY header) and handed on with those bytes replayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::registry::Tunnel;
use super::shares::Share;
use super::sniffing::{Outcome, Untrusted};
use super::{public, session, share_visitors, Shared};
use crate::carrier::Peer;
use crate::sniff::{self, Detected, Replay, Verdict};
use crate::types::Protocol;
use crate::wire::ConnKind;

/// A client that has not identified itself within this time is dropped.
const SNIFF_DEADLINE: Duration = Duration::from_secs(5);

pub async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    while let Some((stream, peer)) = shared.shutdown.accept(&listener, "main port").await {
        tokio::spawn(handle_tcp(shared.clone(), stream, peer));
    }
}

pub async fn serve_quic(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shared.shutdown.draining() => {
                // Refuse new connections at once rather than leave them unanswered.
                endpoint.set_server_config(None);
                return;
            }
        };
        let Some(incoming) = incoming else { return };
        let peer = incoming.remote_address();
        let shared = shared.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SNIFF_DEADLINE, crate::mux::quic::accept(incoming)).await {
                Ok(Ok(conn)) => session::serve_agent(shared, conn, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "QUIC handshake failed"),
                Err(_) => tracing::debug!(%peer, "QUIC handshake timed out"),
            }
        });
    }
}

async fn handle_tcp(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    crate::relay::configure_tcp(&stream);
    let classify = |buf: &[u8]| match sniff::classify(buf) {
        Verdict::NeedMore => None,
        verdict => Some(verdict),
    };
    let read = shared
        .sniffing
        .read(&mut stream, peer, Untrusted::Refuse, SNIFF_DEADLINE, classify);
    let first = match read.await {
        Ok(first) => first,
        Err(e) => {
            shared.sniffing.record(Outcome::Refused);
            tracing::debug!(%peer, error = %e, "closing a main-port connection");
            return;
        }
    };
    let Some(verdict) = first.verdict else {
        shared.sniffing.record(Outcome::Undecided);
        tracing::debug!(%peer, "no recognisable first bytes before the deadline");
        return;
    };
    shared.sniffing.record(match &verdict {
        Verdict::PlainAgent | Verdict::Tls { agent: true, .. } => Outcome::Agent,
        Verdict::Tls { .. } => Outcome::Tls,
        Verdict::Http { .. } => Outcome::Http,
        Verdict::Unknown | Verdict::NeedMore => Outcome::Unknown,
    });
    // From here on the client is who a trusted proxy said it is.
    let visitor = Peer::new(first.client, first.visited);
    let peer = first.client;
    let mut io = Replay::new(first.bytes, stream);
    let share = match &verdict {
        Verdict::Tls {
            agent: false,
            sni: Some(host),
            ..
        }
        | Verdict::Http { host: Some(host) } => shared.shares.find_by_host(host, &shared.config.domain),
        _ => None,
    };
    if let Some(share) = share {
        return serve_share(&shared, share, verdict, io, visitor).await;
    }
    match verdict {
        Verdict::PlainAgent => match session::read_preface(&mut io, peer).await {
            Some(ConnKind::Agent(role)) => {
                session::serve_stream_agent(shared, io, peer, crate::mux::Transport::Tcp, role).await
            }
            Some(ConnKind::Lane) => shared.lanes.admit_plain(io, peer).await,
            None => {}
        },
        // A client that starts a handshake and stalls is dropped like one that says nothing.
        Verdict::Tls { agent: true, .. } => match tokio::time::timeout(SNIFF_DEADLINE, shared.tls.accept(io)).await {
            Ok(Ok(mut tls)) => match session::read_preface(&mut tls, peer).await {
                Some(ConnKind::Agent(role)) => {
                    session::serve_stream_agent(shared, tls, peer, crate::mux::Transport::Tls, role).await
                }
                Some(ConnKind::Lane) => shared.lanes.admit_tls(tls, peer).await,
                None => {}
            },
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "agent TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "agent TLS handshake did not finish in time"),
        },
        // The hub's own name, or no name at all (a client that dialed the hub's address).
        Verdict::Tls { sni, .. } if sni.as_deref().is_none_or(|host| is_hub_name(&shared, host)) => {
            match tokio::time::timeout(SNIFF_DEADLINE, shared.https.accept(io)).await {
                Ok(Ok(tls)) => serve_api(&shared, tls, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake with the hub failed"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake with the hub did not finish in time"),
            }
        }
        Verdict::Tls {
            sni, record_version, ..
        } => {
            let tunnel = sni.as_deref().and_then(|host| routed_tunnel(&shared, host));
            match tunnel.filter(|t| t.protocol != Protocol::Http) {
                Some(tunnel) => carry_routed(&shared, tunnel, io, visitor, Detected::Tls).await,
                None => {
                    tracing::debug!(%peer, sni = sni.as_deref().unwrap_or("(none)"), "TLS for a name no tunnel serves");
                    let alert = sniff::tls::unrecognized_name_alert(record_version);
                    let _ = io.write_all(&alert).await;
                }
            }
        }
        Verdict::Http { host: Some(host) } if is_hub_name(&shared, &host) => serve_api(&shared, io, peer).await,
        Verdict::Http { host: Some(host) } => match routed_tunnel(&shared, &host) {
            Some(tunnel) if tunnel.protocol == Protocol::Https => {
                let why = format!("tunnel {} serves HTTPS: use https://{host}", tunnel.name());
                answer(io, 400, "Bad Request", "https_only", &why).await
            }
            Some(tunnel) => carry_routed(&shared, tunnel, io, visitor, Detected::Http).await,
            None => {
                answer(
                    io,
                    404,
                    "Not Found",
                    "not_found",
                    &format!("no tunnel is published at {host}"),
                )
                .await
            }
        },
        Verdict::Http { host: None } => answer(io, 404, "Not Found", "not_found", "request has no Host header").await,
        Verdict::Unknown | Verdict::NeedMore => {
            tracing::debug!(%peer, "unrecognised protocol on the main port; closing");
        }
    }
}

/// Whether `host` is the hub itself: `--domain` or `--public-host`.
fn is_hub_name(shared: &Shared, host: &str) -> bool {
    host == shared.config.domain || host == shared.config.public_host
}

/// The hub's own APIs, to a client that asked for the hub by name.
async fn serve_api<T>(shared: &Shared, io: T, peer: std::net::SocketAddr)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some(ops) = shared.ops.get() {
        ops.clone().serve_connection(io, peer).await;
    }
}

/// The public tunnel published as `host` (`<name>.<domain>`).
fn routed_tunnel(shared: &Shared, host: &str) -> Option<Arc<Tunnel>> {
    let label = host.strip_suffix(&shared.config.domain)?.strip_suffix('.')?;
    shared.registry.public_by_name(&label.parse().ok()?)
}

/// A visitor at a share's host (`<token>.<domain>`): an `https` tunnel's TLS passes through
/// as one admitted connection; anything else is HTTP the hub reads request by request (over
/// TLS it ends itself, with its `*.<domain>` certificate).
async fn serve_share(shared: &Arc<Shared>, share: Arc<Share>, verdict: Verdict, mut io: Replay<TcpStream>, peer: Peer) {
    let https_tunnel = shared
        .registry
        .get(share.record.tunnel)
        .filter(|t| t.protocol == Protocol::Https);
    tracing::debug!(share = %share.record.id, %peer, "visitor through a share");
    match (verdict, https_tunnel) {
        (Verdict::Tls { record_version, .. }, Some(tunnel)) => {
            if share_visitors::admit_tls(&share, &peer) {
                carry_routed(shared, tunnel, io, peer, Detected::Tls).await
            } else {
                let _ = io.write_all(&sniff::tls::unrecognized_name_alert(record_version)).await;
            }
        }
        (Verdict::Tls { .. }, None) => match tokio::time::timeout(SNIFF_DEADLINE, shared.https.accept(io)).await {
            Ok(Ok(tls)) => {
                share_visitors::serve_http(shared.clone(), share, Box::new(tls), BytesMut::new(), peer).await
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake for a share failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake for a share did not finish in time"),
        },
        (_, Some(_)) => {
            let why = "this share's tunnel serves HTTPS: use https:// with the same host";
            answer(io, 400, "Bad Request", "https_only", why).await
        }
        (_, None) => {
            let (sniffed, tcp) = io.into_parts();
            share_visitors::serve_http(shared.clone(), share, tcp, sniffed, peer).await
        }
    }
}

/// Carries a visitor routed by name to its tunnel, bytes untouched.
async fn carry_routed(shared: &Shared, tunnel: Arc<Tunnel>, io: Replay<TcpStream>, peer: Peer, detected: Detected) {
    tracing::debug!(tunnel = %tunnel.id, %peer, protocol = %detected, "routed by name");
    let (sniffed, tcp) = io.into_parts();
    let http = detected == Detected::Http;
    let visitor = public::Visitor::Routed { sniffed, tcp, http };
    public::serve_visitor(tunnel, visitor, peer, detected, shared.config.visitor_wait).await
}

/// The hub's own answer to an HTTP visitor: a JSON error with `code`.
async fn answer<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, status: u16, reason: &str, code: &str, why: &str) {
    let body = crate::answer::json_error_body(code, why);
    let response = crate::answer::http_response(status, reason, "application/json", &body);
    crate::answer::answer_and_close(&mut io, &response).await;
}
