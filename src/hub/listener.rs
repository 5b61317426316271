//! The hub's main port: one TCP listener and one QUIC endpoint on the same address. TCP
//! connections are classified by their first bytes (agent, TLS by SNI, HTTP by Host) and
//! handed on with those bytes replayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::{public, session, Shared};
use crate::sniff::{self, Replay, Verdict};
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
    let (verdict, buf) = match tokio::time::timeout(SNIFF_DEADLINE, sniff_stream(&mut stream)).await {
        Ok(Ok(sniffed)) => sniffed,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "read failed while sniffing");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no recognisable first bytes before the deadline");
            return;
        }
    };
    let mut io = Replay::new(buf, stream);
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
        Verdict::Tls { sni: Some(host), .. } => route_by_name(&shared, io, peer, &host, false).await,
        Verdict::Http { host: Some(host) } => route_by_name(&shared, io, peer, &host, true).await,
        Verdict::Http { host: None } => not_found(io, "request has no Host header").await,
        Verdict::Tls { sni: None, .. } | Verdict::Unknown | Verdict::NeedMore => {
            tracing::debug!(%peer, "unrecognised protocol on the main port; closing");
        }
    }
}

/// Reads until the first bytes can be classified or the sniff cap is reached.
async fn sniff_stream(stream: &mut TcpStream) -> std::io::Result<(Verdict, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= sniff::MAX_SNIFF || stream.read_buf(&mut buf).await? == 0 {
            return Ok((Verdict::Unknown, buf));
        }
        let verdict = sniff::classify(&buf);
        if verdict != Verdict::NeedMore {
            return Ok((verdict, buf));
        }
    }
}

/// Routes a visitor of `<name>.<domain>` to that public tunnel, bytes untouched.
async fn route_by_name(shared: &Arc<Shared>, io: Replay<TcpStream>, peer: SocketAddr, host: &str, http: bool) {
    let suffix = format!(".{}", shared.config.domain);
    let tunnel = host
        .strip_suffix(&suffix)
        .and_then(|label| label.parse().ok())
        .and_then(|name| shared.registry.public_by_name(&name));
    match tunnel {
        Some(tunnel) => {
            let (sniffed, tcp) = io.into_parts();
            let visitor = public::Visitor::Routed { sniffed, tcp, http };
            public::serve_visitor(tunnel, visitor, peer.to_string(), shared.config.visitor_wait).await
        }
        None if http => not_found(io, &format!("no tunnel is published at {host}")).await,
        None => tracing::debug!(%peer, host, "TLS for an unknown name; closing"),
    }
}

async fn not_found<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, why: &str) {
    let body = serde_json::json!({"error": why, "code": "not_found"}).to_string() + "\n";
    let response = crate::answer::http_response(404, "Not Found", "application/json", &body);
    crate::answer::answer_and_close(&mut io, &response).await;
}
