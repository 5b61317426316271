//! Visitors through shares on the main port. HTTP (plain, or TLS the hub ends with its own
//! `*.<domain>` certificate) is relayed as bytes, as routing by name does, while
//! `http_framing` finds where each request and response begins and ends: every request of a
//! kept-alive connection is checked against the share (method, rate, expiry, revocation)
//! before its bytes go on to the tunnel, and a refusal is answered in its turn, after the
//! answers to the requests before it. TLS to an `https` tunnel's share is passed through
//! untouched and checked once, as one connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::sync::{mpsc, oneshot};

use super::http_framing::{self, BodyFramer, BodyKind, FrameError, HeadScan, RequestHead};
use super::registry::Tunnel;
use super::shares::{Moment, Refusal, Share};
use super::Shared;
use crate::carrier::Peer;
use crate::mux::{MuxRecv, MuxSend};
use crate::relay::{ChunkRead, ChunkWrite, RelayEnd};
use crate::shutdown::ConnectionGuard;
use crate::sniff::Detected;

/// How long a visitor may take to send a request head, once it has begun one.
const HEAD_DEADLINE: Duration = crate::proxy::HEADER_DEADLINE;
/// Requests read ahead of their answers (pipelining) before the visitor is read no further.
const READ_AHEAD: usize = 16;
/// After the last answer, how long and how much of what the visitor still sends is read.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// What the answering side is to do next, in the order requests arrived.
enum Pending {
    /// The stream to the agent was opened: its answers arrive here.
    Opened(MuxRecv, OpenStream),
    /// A request went to the agent: pass on its answer (1xx ones first). Upgrade requests
    /// learn whether the agent switched protocols.
    Forwarded {
        to_head: bool,
        switched: Option<oneshot::Sender<bool>>,
    },
    /// The hub answers this request itself, and closes after it if `close`.
    Refused { answer: Bytes, close: bool },
}

/// Serves an HTTP visitor of `share` until it closes. `early` is what the visitor sent
/// before it was routed here.
pub async fn serve_http<V: RelayEnd>(shared: Arc<Shared>, share: Arc<Share>, visitor: V, early: BytesMut, peer: Peer) {
    let (from_visitor, to_visitor) = visitor.into_halves();
    let (queue, pending) = mpsc::channel(READ_AHEAD);
    let requests = read_requests(&shared, &share, &peer, from_visitor, early, queue);
    let answers = write_answers(to_visitor, pending);
    tokio::pin!(requests, answers);
    tokio::select! {
        () = &mut answers => {
            // Nothing more will be answered; let the visitor see the end before closing.
            let _ = tokio::time::timeout(LINGER, requests).await;
        }
        () = &mut requests => answers.await,
    }
}

/// The visitor's side: reads each request head, admits it or queues the hub's refusal, and
/// sends admitted requests on one stream to the agent, opened at the first of them.
async fn read_requests(
    shared: &Shared,
    share: &Share,
    peer: &Peer,
    mut from: impl ChunkRead,
    mut buf: BytesMut,
    queue: mpsc::Sender<Pending>,
) {
    let mut to_agent: Option<(MuxSend, Arc<Tunnel>)> = None;
    let draining = shared.shutdown.draining();
    tokio::pin!(draining);
    // The hub's last answer, when it ends the connection itself.
    let last: Option<Pending> = loop {
        let head_len = match read_head(&mut from, &mut buf, draining.as_mut()).await {
            Ok(Some(len)) => len,
            Ok(None) => break None,
            Err(refusal) => break Some(refusal),
        };
        let head = match http_framing::parse_request(&buf[..head_len]) {
            Ok(head) => head,
            Err(e) => {
                tracing::debug!(share = %share.record.id, %peer, error = %e, "refusing a malformed request");
                let refusal = refuse(StatusCode::BAD_REQUEST, "bad_request", &e.to_string(), &[], true);
                break Some(refusal);
            }
        };
        if let Err(refused) = admit(shared, share, peer, &head) {
            if matches!(refused, Pending::Refused { close: true, .. }) {
                break Some(refused);
            }
            if queue.send(refused).await.is_err() {
                break None;
            }
            let _ = buf.split_to(head_len);
            continue;
        }
        if to_agent.is_none() {
            match open(shared, share, peer).await {
                Ok((send, recv, opened)) => {
                    let tunnel = opened.tunnel.clone();
                    if queue.send(Pending::Opened(recv, opened)).await.is_err() {
                        break None;
                    }
                    to_agent = Some((send, tunnel));
                }
                Err(refusal) => break Some(refusal),
            }
        }
        let Some((send, tunnel)) = to_agent.as_mut() else {
            break None;
        };
        let (switched, decision) = match head.upgrade {
            true => Some(oneshot::channel()).unzip(),
            false => (None, None),
        };
        let forwarded = Pending::Forwarded {
            to_head: head.is_head(),
            switched,
        };
        if queue.send(forwarded).await.is_err() {
            break None;
        }
        if let Err(e) = pass_message(&mut from, send, &mut buf, head_len, head.body, &tunnel.bytes_in).await {
            tracing::debug!(share = %share.record.id, %peer, error = %e, "a request through a share ended early");
            break None;
        }
        if let Some(decision) = decision {
            if decision.await == Ok(true) {
                // The protocol switched: from here on the bytes are the upgraded protocol's.
                let _ = pass_rest(&mut from, send, &mut buf, &tunnel.bytes_in).await;
                break None;
            }
        }
        if head.close {
            break None;
        }
    };
    if let Some((mut send, _)) = to_agent {
        let _ = send.finish();
    }
    if let Some(last) = last {
        close_with(last, &queue, &mut from).await;
    }
}

/// Reads until `buf` holds a whole request head: its length, or `None` when the visitor
/// ends (or the hub drains) between requests. An idle kept-alive visitor may wait as long
/// as it likes; a head, once begun, must be whole within [`HEAD_DEADLINE`].
async fn read_head(
    from: &mut impl ChunkRead,
    buf: &mut BytesMut,
    mut draining: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Option<usize>, Pending> {
    let mut scan = HeadScan::default();
    let mut deadline = None;
    loop {
        match scan.find(buf) {
            Ok(Some(len)) => return Ok(Some(len)),
            Ok(None) => {}
            Err(FrameError::HeadTooLarge) => {
                let why = format!("the request head is longer than {} bytes", http_framing::MAX_HEAD);
                return Err(refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "head_too_large",
                    &why,
                    &[],
                    true,
                ));
            }
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &e.to_string(),
                    &[],
                    true,
                ))
            }
        }
        let chunk = if buf.is_empty() {
            tokio::select! {
                chunk = from.chunk() => chunk,
                () = draining.as_mut() => return Ok(None),
            }
        } else {
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEAD_DEADLINE);
            match tokio::time::timeout_at(deadline, from.chunk()).await {
                Ok(chunk) => chunk,
                Err(_) => {
                    let why = "the request head did not arrive in time";
                    return Err(refuse(StatusCode::REQUEST_TIMEOUT, "head_timeout", why, &[], true));
                }
            }
        };
        match chunk {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}

/// Passes on one message whose head is the first `head_len` bytes of `buf`: the head, then
/// its body as it arrives; what follows the message stays in `buf`. `Ok(true)` when `from`
/// ended, which ends a body read until close and nothing else.
async fn pass_message(
    from: &mut impl ChunkRead,
    to: &mut impl ChunkWrite,
    buf: &mut BytesMut,
    head_len: usize,
    body: BodyKind,
    counted: &AtomicU64,
) -> std::io::Result<bool> {
    let mut framer = BodyFramer::new(body);
    let mut ready = head_len;
    loop {
        let advance = framer.advance(&buf[ready..]).map_err(std::io::Error::other)?;
        ready += advance.used;
        if ready > 0 {
            counted.fetch_add(ready as u64, Ordering::Relaxed);
            to.write(buf.split_to(ready).freeze(), Vec::new()).await?;
            ready = 0;
        }
        if advance.done {
            return Ok(false);
        }
        match from.chunk().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None if body == BodyKind::UntilClose => return Ok(true),
            None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// After a switch of protocols: what is left in `buf`, then everything `from` sends, as it is.
async fn pass_rest(
    from: &mut impl ChunkRead,
    to: &mut impl ChunkWrite,
    buf: &mut BytesMut,
    counted: &AtomicU64,
) -> std::io::Result<()> {
    let early = std::mem::take(buf).freeze();
    counted.fetch_add(early.len() as u64, Ordering::Relaxed);
    if !early.is_empty() {
        to.write(early, Vec::new()).await?;
    }
    let moved = crate::relay::pipe(from, to, || {}).await?;
    counted.fetch_add(moved, Ordering::Relaxed);
    Ok(())
}

/// The agent's side: writes the answers in the order the requests came, passing each of the
/// agent's on as it arrives and the hub's own refusals in their turn.
async fn write_answers(mut to: impl ChunkWrite, mut pending: mpsc::Receiver<Pending>) {
    let mut agent: Option<(MuxRecv, OpenStream)> = None;
    let mut buf = BytesMut::new();
    while let Some(next) = pending.recv().await {
        let ended = match next {
            Pending::Opened(recv, opened) => {
                agent = Some((recv, opened));
                false
            }
            Pending::Refused { answer, close } => to.write(answer, Vec::new()).await.is_err() || close,
            Pending::Forwarded { to_head, switched } => match agent.as_mut() {
                Some((recv, opened)) => {
                    match pass_back(recv, &opened.tunnel, &mut to, &mut buf, to_head, switched).await {
                        Ok(Answered::Exchange) => false,
                        Ok(Answered::Last) => true,
                        Err(e) => {
                            tracing::debug!(tunnel = %opened.tunnel.id, error = %e, "an answer through a share ended early");
                            true
                        }
                    }
                }
                None => true,
            },
        };
        if ended {
            break;
        }
    }
    let _ = to.finish().await;
}

enum Answered {
    /// The exchange is over; the connection goes on.
    Exchange,
    /// Nothing more can be answered on this connection.
    Last,
}

/// Passes on the agent's answer to one request (any 1xx answers, then the final one); after
/// `101 Switching Protocols` to an upgrade request, everything the agent sends.
async fn pass_back(
    recv: &mut MuxRecv,
    tunnel: &Tunnel,
    to: &mut impl ChunkWrite,
    buf: &mut BytesMut,
    to_head: bool,
    mut switched: Option<oneshot::Sender<bool>>,
) -> std::io::Result<Answered> {
    loop {
        let mut scan = HeadScan::default();
        let head_len = loop {
            if let Some(len) = scan.find(buf).map_err(std::io::Error::other)? {
                break len;
            }
            match recv.chunk().await? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => return Ok(Answered::Last),
            }
        };
        let head = http_framing::parse_response(&buf[..head_len], to_head).map_err(std::io::Error::other)?;
        if head.status == 101 {
            let Some(switched) = switched.take() else {
                return Err(std::io::Error::other(
                    "101 Switching Protocols to a request that asked for no upgrade",
                ));
            };
            let _ = switched.send(true);
            pass_rest(recv, to, buf, &tunnel.bytes_out).await?;
            return Ok(Answered::Last);
        }
        // An answer read until the agent closes is the last one.
        if pass_message(recv, to, buf, head_len, head.body, &tunnel.bytes_out).await? {
            return Ok(Answered::Last);
        }
        if !head.is_interim() {
            if let Some(switched) = switched {
                let _ = switched.send(false);
            }
            return Ok(Answered::Exchange);
        }
    }
}

/// Whether the share lets this request through now: `Err` is the hub's answer instead. A
/// refused request's body is not read, so a refusal of one with a body ends the connection.
fn admit(shared: &Shared, share: &Share, peer: &Peer, head: &RequestHead) -> Result<(), Pending> {
    let close = head.close || head.body != BodyKind::Empty;
    if head.method == "CONNECT" {
        let why = "CONNECT is not carried through a share";
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            why,
            &[],
            true,
        ));
    }
    if let Err(refusal) = share.admit(Moment::now(), Some(&head.method)) {
        tracing::info!(share = %share.record.id, %peer, method = %head.method, "share refused a request: {refusal}");
        return Err(refused(&refusal, close));
    }
    match shared.registry.get(share.record.tunnel) {
        None => {
            let why = "the tunnel behind this share has ended";
            Err(refuse(StatusCode::GONE, "tunnel_ended", why, &[], true))
        }
        Some(tunnel) if tunnel.is_paused() => {
            let why = "the tunnel is paused by its owner";
            Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "paused", why, &[], close))
        }
        Some(_) => Ok(()),
    }
}

/// A stream to the agent, counted as one of the tunnel's open connections (and as one the
/// hub waits for when it drains) for as long as it lasts.
struct OpenStream {
    tunnel: Arc<Tunnel>,
    _draining: ConnectionGuard,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.tunnel.open.leave(Detected::Http);
    }
}

/// Opens a stream to a member of the share's tunnel.
async fn open(shared: &Shared, share: &Share, peer: &Peer) -> Result<(MuxSend, MuxRecv, OpenStream), Pending> {
    let unavailable = |why: &str| refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why, &[], true);
    let Some(tunnel) = shared.registry.get(share.record.tunnel) else {
        let why = "the tunnel behind this share has ended";
        return Err(refuse(StatusCode::GONE, "tunnel_ended", why, &[], true));
    };
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
    tunnel.connections.count(Detected::Http);
    tunnel.open.count(Detected::Http);
    let opened = OpenStream {
        tunnel,
        _draining: shared.shutdown.track(),
    };
    let (recv, send) = stream.into_split();
    Ok((send, recv, opened))
}

/// Queues the hub's last answer on this connection, then reads what the visitor still sends,
/// bounded in time and bytes: closing with unread data would reset the connection before
/// the visitor has read the answer.
async fn close_with(last: Pending, queue: &mpsc::Sender<Pending>, from: &mut impl ChunkRead) {
    if queue.send(last).await.is_err() {
        return;
    }
    let drain = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            match from.chunk().await {
                Ok(Some(chunk)) => total += chunk.len(),
                Ok(None) | Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
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
fn refused(refusal: &Refusal, close: bool) -> Pending {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let header = match refusal {
        Refusal::Method { allowed } => Some(("allow", allowed.clone())),
        Refusal::RateLimited { retry_after, .. } => Some(("retry-after", retry_after.to_string())),
        Refusal::Revoked | Refusal::Expired => None,
    };
    refuse(status, refusal.code(), &refusal.to_string(), header.as_slice(), close)
}

/// The hub's own JSON answer, `{"error", "code"}`, as on the rest of the main port.
fn refuse(status: StatusCode, code: &str, why: &str, headers: &[(&str, String)], close: bool) -> Pending {
    let body = crate::answer::json_error_body(code, why);
    let reason = status.canonical_reason().unwrap_or("");
    let answer = crate::answer::response(status.as_u16(), reason, "application/json", &body, headers, close);
    Pending::Refused {
        answer: Bytes::from(answer),
        close,
    }
}
