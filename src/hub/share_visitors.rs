//! Visitors through shares on the main port. HTTP (plain, or TLS the hub ends with its own
//! `*.<domain>` certificate) is served request by request, so every request of a kept-alive
//! connection is checked against the share (method, rate, expiry, revocation) before it is
//! sent on the tunnel; TLS to an `https` tunnel's share is passed through untouched and
//! checked once, as one connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::registry::Tunnel;
use super::shares::{Moment, Refusal, Share};
use super::Shared;
use crate::carrier::Peer;
use crate::proxy::{self, Body};
use crate::sniff::Detected;

/// The upstream side of one visitor connection: an HTTP/1.1 client connection on a stream
/// to the tunnel's agent, opened at the first admitted request and kept while it lasts.
type Upstream = tokio::sync::Mutex<Option<SendRequest<Incoming>>>;

/// Serves an HTTP visitor of `share` until it closes, one request at a time.
pub async fn serve_http<T>(shared: Arc<Shared>, share: Arc<Share>, io: T, peer: Peer)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream: Arc<Upstream> = Arc::default();
    let shared_for_drain = shared.clone();
    let service = hyper::service::service_fn(move |request| {
        let (shared, share, upstream, peer) = (shared.clone(), share.clone(), upstream.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(&shared, &share, &upstream, &peer, request).await) }
    });
    let draining = shared_for_drain.shutdown.clone();
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy::HEADER_DEADLINE)
        .max_buf_size(proxy::MAX_HEAD)
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    // A draining hub lets the request in flight finish and closes the connection after it,
    // so an idle kept-alive visitor does not hold the drain until its timeout.
    let ended = tokio::select! {
        ended = served.as_mut() => ended,
        _ = draining.draining() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "share visitor connection ended with an error");
    }
}

async fn handle(
    shared: &Shared,
    share: &Share,
    upstream: &Upstream,
    peer: &Peer,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let id = &share.record.id;
    if let Err(refusal) = share.admit(Moment::now(), Some(request.method().as_str())) {
        tracing::info!(share = %id, %peer, method = %request.method(), "share refused a request: {refusal}");
        return refused(&refusal);
    }
    let Some(tunnel) = shared.registry.get(share.record.tunnel) else {
        return answer(
            StatusCode::GONE,
            "tunnel_ended",
            "the tunnel behind this share has ended",
        );
    };
    if tunnel.is_paused() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "paused",
            "the tunnel is paused by its owner",
        );
    }
    let upgrade = proxy::wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let mut upstream = upstream.lock().await;
    // The agent's side may have closed after an answer (`Connection: close`): open anew.
    if upstream.as_ref().is_none_or(|sender| sender.is_closed()) {
        match open(shared, &tunnel, peer).await {
            Ok(sender) => *upstream = Some(sender),
            Err(response) => return response,
        }
    }
    let Some(sender) = upstream.as_mut() else {
        return answer(StatusCode::BAD_GATEWAY, "no_upstream", "no connection to the agent");
    };
    if sender.ready().await.is_err() {
        *upstream = None;
        return answer(
            StatusCode::BAD_GATEWAY,
            "upstream_closed",
            "the agent's side closed the connection",
        );
    }
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(share = %id, %peer, error = %e, "request through a share failed");
            *upstream = None;
            return answer(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                &format!("the tunnel's target: {e}"),
            );
        }
    };
    if let Some(client_side) = upgrade {
        proxy::join_upgrade(client_side, &mut response);
    }
    response.map(|body| body.boxed())
}

/// A stream to a member of `tunnel` with an HTTP/1.1 client on it; the stream counts as one
/// of the tunnel's connections for as long as it is open.
async fn open(shared: &Shared, tunnel: &Arc<Tunnel>, peer: &Peer) -> Result<SendRequest<Incoming>, Response<Body>> {
    let unavailable = |why: &str| answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why);
    let Some(member) = tunnel.pick_member(shared.config.visitor_wait).await else {
        return Err(unavailable(
            "no agent is connected (it may be reconnecting); try again shortly",
        ));
    };
    let stream = member
        .link
        .open_to(tunnel.id.into(), peer)
        .await
        .map_err(|_| unavailable("the agent's connection is failing; try again shortly"))?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(Counted {
            inner: stream,
            tunnel: tunnel.clone(),
        }))
        .await
        .map_err(|e| answer(StatusCode::BAD_GATEWAY, "upstream_failed", &e.to_string()))?;
    tunnel.connections.count(Detected::Http);
    tunnel.open.count(Detected::Http);
    let (tunnel, guard) = (tunnel.clone(), shared.shutdown.track());
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(tunnel = %tunnel.id, error = %e, "share stream ended with an error");
        }
        tunnel.open.leave(Detected::Http);
        drop(guard);
    });
    Ok(sender)
}

/// A stream to the agent whose bytes count toward the tunnel's `bytes_in` (written: the
/// visitors' requests) and `bytes_out` (read: the answers), as they pass.
struct Counted<T> {
    inner: T,
    tunnel: Arc<Tunnel>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.tunnel.bytes_out.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(written)) = &polled {
            self.tunnel.bytes_in.fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TLS visitor of an `https` tunnel's share: admitted as one connection, then passed
/// through to the tunnel like a visitor routed by name.
pub fn admit_tls(share: &Share, peer: &Peer) -> bool {
    match share.admit(Moment::now(), None) {
        Ok(()) => true,
        Err(refusal) => {
            tracing::info!(share = %share.record.id, %peer, "share refused a TLS connection: {refusal}");
            false
        }
    }
}

/// The answer to a request a share refused: 405 with `Allow`, 429 with `Retry-After`, 410.
fn refused(refusal: &Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = answer(status, refusal.code(), &refusal.to_string());
    let headers = response.headers_mut();
    match refusal {
        Refusal::Method { allowed } => {
            headers.insert(header::ALLOW, proxy::header_value(allowed));
        }
        Refusal::RateLimited { retry_after, .. } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        Refusal::Revoked | Refusal::Expired => {}
    }
    response
}

/// The hub's own JSON answer, `{"error", "code"}`, as on the rest of the main port.
fn answer(status: StatusCode, code: &str, why: &str) -> Response<Body> {
    let body = crate::answer::json_error_body(code, why);
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
