//! Lanes on the agent: a few idle plain-TCP data connections kept dialed to the hub so a
//! visitor can be spliced straight through (see `hub/lanes.rs`). Each lane carries one
//! forwarded connection or UDP flow and is then replaced; the multiplexed connection stays
//! the fallback and carries everything else (control, `reach` flows).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::expose::{connect_target, serve_udp_flow, StreamContext};
use super::Backoff;
use crate::mux::Lifetime;
use crate::shutdown::Shutdown;
use crate::types::LaneToken;
use crate::udp::UdpFlow;
use crate::wire::io::read_stream_header;
use crate::wire::{ConnKind, StreamKind, PREFACE};

const DIAL_DEADLINE: Duration = Duration::from_secs(5);

/// Keeps `count` idle lanes dialed until the session ends or the agent drains. Lanes that
/// are carrying a connection then go on until it finishes; idle ones close.
pub async fn keep_lanes(
    hub: SocketAddr,
    token: LaneToken,
    count: usize,
    context: Arc<StreamContext>,
    lifetime: Lifetime,
    shutdown: Shutdown,
) {
    // Each lane reports once, when it stops being idle (used or closed).
    let (not_idle_tx, mut not_idle) = mpsc::unbounded_channel::<()>();
    let mut idle = 0usize;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut retry_at = None;
    loop {
        while idle < count && retry_at.is_none() {
            match dial_lane(hub, token).await {
                Ok(lane) => {
                    idle += 1;
                    backoff.reset();
                    tokio::spawn(serve_lane(
                        lane,
                        context.clone(),
                        not_idle_tx.clone(),
                        lifetime.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "dialing a lane failed; streams use the shared connection");
                    retry_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                }
            }
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = not_idle.recv() => idle -= 1,
            _ = retry => retry_at = None,
            _ = lifetime.closed() => return,
            _ = shutdown.draining() => return,
        }
    }
}

async fn dial_lane(hub: SocketAddr, token: LaneToken) -> std::io::Result<TcpStream> {
    let dial = async {
        let mut lane = TcpStream::connect(hub).await?;
        lane.set_nodelay(true)?;
        let mut hello = Vec::with_capacity(PREFACE.len() + 1 + token.0.len());
        hello.extend_from_slice(PREFACE);
        hello.push(ConnKind::Lane.byte());
        hello.extend_from_slice(&token.0);
        lane.write_all(&hello).await?;
        Ok(lane)
    };
    tokio::time::timeout(DIAL_DEADLINE, dial)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Waits (idle) for the hub to send a stream header, then connects the target and splices.
async fn serve_lane(
    mut lane: TcpStream,
    context: Arc<StreamContext>,
    not_idle: mpsc::UnboundedSender<()>,
    lifetime: Lifetime,
    shutdown: Shutdown,
) {
    let header = tokio::select! {
        header = read_stream_header(&mut lane) => header,
        _ = lifetime.closed() => return,
        _ = shutdown.draining() => return,
    };
    let _ = not_idle.send(());
    let header = match header {
        Ok(header) => header,
        Err(e) => {
            tracing::debug!(error = %e, "lane closed before use");
            return;
        }
    };
    let _guard = shutdown.track();
    if header.kind == StreamKind::Udp {
        serve_udp_flow(&context, |sink, stats| match UdpFlow::on_lane(lane, sink, stats) {
            Ok(flow) => Some(flow),
            Err(e) => {
                tracing::debug!(error = %e, "cannot carry a UDP flow on a lane");
                None
            }
        })
        .await;
        return;
    }
    let Some(upstream) = connect_target(&context.target, &header.peer).await else {
        return;
    };
    if let Err(e) = crate::relay::relay_sockets(upstream, lane).await {
        tracing::info!(peer = %header.peer, error = %e, "relay ended with an error");
    }
}
