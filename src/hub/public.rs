//! Visitors: connections arriving on a tunnel's public port, routed by name on the main
//! port, or coming from a `reach` agent. Each becomes one stream to a member agent.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::registry::Tunnel;
use super::Shared;
use crate::mux::MuxStream;
use crate::shutdown::Shutdown;
use crate::types::UserName;
use crate::wire::{self, StreamHeader, StreamKind};

/// A reach agent must name its tunnel this quickly after opening a stream.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);

pub fn spawn_public_listener(
    tunnel: Arc<Tunnel>,
    listener: TcpListener,
    shutdown: Shutdown,
    visitor_wait: Duration,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.draining() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let guard = shutdown.track();
                    let tunnel = tunnel.clone();
                    tokio::spawn(async move {
                        serve_visitor(tunnel, stream, peer.to_string(), visitor_wait).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    tracing::warn!(tunnel = %tunnel.id, error = %e, "public port accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .abort_handle()
}

/// Carries one visitor connection to a member of `tunnel`.
pub async fn serve_visitor<T>(tunnel: Arc<Tunnel>, mut visitor: T, peer: String, wait: Duration)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some(member) = tunnel.pick_member(wait).await else {
        tracing::debug!(tunnel = %tunnel.id, %peer, "no agent serves the tunnel; refusing visitor");
        return;
    };
    let mut stream = match member.opener.open().await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(tunnel = %tunnel.id, error = %e, "opening a stream to the agent failed");
            return;
        }
    };
    let header = StreamHeader {
        kind: StreamKind::Tcp,
        tunnel: tunnel.id,
        peer: peer.clone(),
    };
    if stream.write_all(&header.encode()).await.is_err() {
        return;
    }
    tunnel.jobs.fetch_add(1, Ordering::Relaxed);
    let result = crate::relay::relay(&mut visitor, &mut stream).await;
    tunnel.jobs.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(moved) => {
            tunnel.bytes_in.fetch_add(moved.a_to_b, Ordering::Relaxed);
            tunnel.bytes_out.fetch_add(moved.b_to_a, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!(tunnel = %tunnel.id, %peer, error = %e, "visitor relay ended with an error")
        }
    }
}

/// A stream opened by a `reach` agent of `user`: its header names the tunnel.
pub async fn serve_reach_stream(shared: Arc<Shared>, user: UserName, mut stream: MuxStream, agent: SocketAddr) {
    let header = match tokio::time::timeout(HEADER_DEADLINE, wire::io::read_stream_header(&mut stream)).await {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => {
            tracing::debug!(%agent, error = %e, "bad stream header from reach agent");
            return;
        }
        Err(_) => return,
    };
    let tunnel = shared.registry.get(header.tunnel).filter(|t| t.reachable_by(&user));
    let Some(tunnel) = tunnel else {
        tracing::debug!(%agent, tunnel = %header.tunnel, %user, "reach stream for a tunnel the user may not reach");
        return;
    };
    let _guard = shared.shutdown.track();
    serve_visitor(tunnel, stream, header.peer, shared.config.visitor_wait).await;
}
