//! The HTTP/1.1 forward proxy both agents run: `reach --http-proxy` for local programs, and
//! `expose --forward-proxy` inside a private network. Absolute-form requests, CONNECT,
//! keep-alive and upgrades (WebSocket) on hyper; where each request goes is `route.rs`;
//! how each route is dialed is `upstream.rs`. Errors a user can act on are answered with a
//! status and an `X-Burrow-Error` header naming the cause, and logged.

mod idle;
pub mod route;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::pac::pool::PacPool;
use crate::pac::result::Route;
use idle::{Hop, Idle, Key};
use route::{Decision, DomainLists, RetryWindow};
use upstream::{BoxIo, DialError, ProxyUrl};

/// How long a client may take to send a request head.
pub(crate) const HEADER_DEADLINE: Duration = Duration::from_secs(30);
/// The most a client's request head may buffer.
pub(crate) const MAX_HEAD: usize = 64 << 10;
/// The header naming why the proxy answered with an error.
pub const ERROR_HEADER: &str = "x-burrow-error";

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Opens streams to the forward proxies of tunnels (`TUNNEL` routes): only `reach` has them.
pub trait TunnelDialer: Send + Sync {
    /// A stream to tunnel `name` (`None`: the one the proxy was started for), for `client`.
    fn open<'a>(
        &'a self,
        name: Option<&'a str>,
        client: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<BoxIo, String>> + Send + 'a>>;
}

/// Everything a forward proxy is configured with.
pub struct ProxySettings {
    pub lists: DomainLists,
    pub pac: Option<PacPool>,
    /// The routes without a PAC: `TUNNEL` on `reach`; `--proxy` or `DIRECT` on `expose`.
    pub default: Vec<Route>,
    /// `--proxy URL`: its credentials go with every route to its address.
    pub upstream: Option<ProxyUrl>,
    pub tunnels: Option<Arc<dyn TunnelDialer>>,
    /// Roots for `HTTPS` upstream proxies.
    pub tls: Arc<rustls::ClientConfig>,
    /// How long a route may take to connect, and an upstream to answer a request.
    pub timeout: Duration,
    /// How long a route that failed to connect is skipped (`--pac-retry`).
    pub retry: Duration,
}

pub struct ForwardProxy {
    settings: ProxySettings,
    retry: RetryWindow,
    idle: Arc<Idle>,
}

impl std::fmt::Debug for ForwardProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("default", &self.settings.default)
            .field("pac", &self.settings.pac.is_some())
            .finish_non_exhaustive()
    }
}

/// Where one request goes, read off its request line.
struct Destination {
    /// `HOST:PORT`, as dialed.
    authority: String,
    /// Lower case, without brackets.
    host: String,
    port: u16,
    /// What the PAC is asked about.
    url: String,
}

impl Destination {
    fn of(request: &Request<Incoming>) -> Result<Self, &'static str> {
        let uri = request.uri();
        let connect = request.method() == Method::CONNECT;
        let default_port = match (connect, uri.scheme_str()) {
            (true, _) => 443,
            (false, Some(s)) if s.eq_ignore_ascii_case("http") => 80,
            (false, Some(_)) => return Err("only http:// URLs can be proxied; use CONNECT for the rest"),
            (false, None) => return Err("not a proxy request: the request line needs an absolute http:// URL"),
        };
        let authority = uri.authority().ok_or("the request names no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err("the request names no host");
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Self {
            authority: format!("{bracketed}:{port}"),
            url: route::pac_url(connect, authority.as_str(), &uri.to_string()),
            host,
            port,
        })
    }
}

/// A route's stream, ready for the request.
struct Opened {
    io: BoxIo,
    /// The next hop is a proxy: requests go in absolute form.
    to_proxy: bool,
    /// `Proxy-Authorization` for that proxy, from `--proxy`.
    authorization: Option<String>,
}

impl ForwardProxy {
    pub fn new(settings: ProxySettings) -> Self {
        let retry = RetryWindow::new(settings.retry);
        Self {
            settings,
            retry,
            idle: Arc::default(),
        }
    }

    /// The PAC script routing requests, if any.
    pub fn pac_script(&self) -> Option<&str> {
        self.settings.pac.as_ref().map(PacPool::script)
    }

    /// Serves one client connection (keep-alive: any number of requests) until it closes.
    pub async fn serve<T>(self: Arc<Self>, io: T, client: String)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let (proxy, client) = (proxy.clone(), client.clone());
            async move { Ok::<_, Infallible>(proxy.handle(request, &client).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_DEADLINE)
            .max_buf_size(MAX_HEAD)
            .preserve_header_case(true)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(e) = served.await {
            tracing::debug!(error = %e, "proxy client connection ended with an error");
        }
    }

    async fn handle(&self, request: Request<Incoming>, client: &str) -> Response<Body> {
        let destination = match Destination::of(&request) {
            Ok(destination) => destination,
            Err(why) => return refuse(StatusCode::BAD_REQUEST, client, request.uri(), why),
        };
        let routes = match self.decide(&destination).await {
            Decision::Routes(routes) => routes,
            Decision::Deny => {
                let why = format!("{} is denied by --deny-domains", destination.host);
                return refuse(StatusCode::FORBIDDEN, client, request.uri(), &why);
            }
            Decision::PacFailed(why) => {
                let why = format!("the PAC failed for {}: {why}", destination.url);
                return refuse(StatusCode::BAD_GATEWAY, client, request.uri(), &why);
            }
        };
        let connect = request.method() == Method::CONNECT;
        let reusable = !connect && !wants_upgrade(&request);
        let mut request = request.map(BodyExt::boxed);
        let timeout = self.settings.timeout;
        let mut failure = (StatusCode::BAD_GATEWAY, String::from("no route to try"));
        for route in self.retry.order(routes) {
            let key = Idle::key(&route, &destination.authority);
            if let Some(hop) = reusable.then(|| self.idle.take(&key)).flatten() {
                match self
                    .forward(request, &route, hop, key.clone(), &destination, client)
                    .await
                {
                    Ok(response) => return response,
                    // The idle connection closed before taking the request, or before
                    // answering one that may be sent again: dial afresh.
                    Err(again) => request = again,
                }
            }
            let opened = tokio::time::timeout(timeout, self.open(&route, &destination, connect, client)).await;
            match opened {
                Ok(Ok(opened)) => {
                    self.retry.succeeded(&route);
                    tracing::debug!(%client, destination = destination.authority, %route, "proxying");
                    if connect {
                        return tunnel(request, opened.io);
                    }
                    let uri = request.uri().clone();
                    let hop = match handshake(opened).await {
                        Ok(hop) => hop,
                        Err(e) => return refuse(StatusCode::BAD_GATEWAY, client, &uri, &format!("{route}: {e}")),
                    };
                    return match self.forward(request, &route, hop, key, &destination, client).await {
                        Ok(response) => response,
                        Err(_) => {
                            let why = format!("{route}: the connection closed before the request was sent");
                            refuse(StatusCode::BAD_GATEWAY, client, &uri, &why)
                        }
                    };
                }
                Ok(Err(DialError::ProxyAuth { proxy, challenges })) => {
                    return proxy_auth_required(&proxy, &challenges, client, request.uri());
                }
                Ok(Err(e)) => {
                    tracing::info!(%client, %route, "route failed, trying the next: {e}");
                    self.retry.failed(&route);
                    failure = (StatusCode::BAD_GATEWAY, format!("{route}: {e}"));
                }
                Err(_) => {
                    self.retry.failed(&route);
                    let why = format!("{route}: no connection to {} within {timeout:?}", destination.authority);
                    failure = (StatusCode::GATEWAY_TIMEOUT, why);
                }
            }
        }
        refuse(failure.0, client, request.uri(), &failure.1)
    }

    async fn decide(&self, destination: &Destination) -> Decision {
        let settings = &self.settings;
        if let Some(listed) = route::by_lists(&settings.lists, &destination.host) {
            return listed;
        }
        match &settings.pac {
            Some(pac) => {
                let answer = pac.find_proxy(&destination.url, &destination.host).await;
                route::from_pac(answer.map_err(|e| e.to_string()))
            }
            None => Decision::Routes(settings.default.clone()),
        }
    }

    /// Connects `route` toward `destination`; for CONNECT, through any proxy hop as well.
    async fn open(
        &self,
        route: &Route,
        destination: &Destination,
        connect: bool,
        client: &str,
    ) -> Result<Opened, DialError> {
        let authorization = |address: &str| {
            let upstream = self.settings.upstream.as_ref()?;
            (upstream.address == address)
                .then(|| upstream.credentials.as_ref().map(upstream::basic_authorization))
                .flatten()
        };
        let (io, proxy, authorization): (BoxIo, String, Option<String>) = match route {
            Route::Direct => {
                let io = upstream::dial(&destination.authority).await?;
                return Ok(Opened {
                    io: Box::new(io),
                    to_proxy: false,
                    authorization: None,
                });
            }
            Route::Socks5(address) => {
                let tcp = upstream::dial(address).await?;
                let credentials = self
                    .settings
                    .upstream
                    .as_ref()
                    .filter(|u| &u.address == address)
                    .and_then(|u| u.credentials.as_ref());
                let io =
                    upstream::socks5_connect(tcp, address, &destination.host, destination.port, credentials).await?;
                return Ok(Opened {
                    io: Box::new(io),
                    to_proxy: false,
                    authorization: None,
                });
            }
            Route::Http(address) => (
                Box::new(upstream::dial(address).await?),
                address.clone(),
                authorization(address),
            ),
            Route::Https(address) => {
                let tcp = upstream::dial(address).await?;
                let io = upstream::tls(tcp, address, self.settings.tls.clone()).await?;
                (io, address.clone(), authorization(address))
            }
            Route::Tunnel(name) => {
                let Some(tunnels) = &self.settings.tunnels else {
                    return Err(DialError::Failed(
                        "TUNNEL routes are for `reach --http-proxy`; this proxy has no tunnel".into(),
                    ));
                };
                let io = tunnels.open(name.as_deref(), client).await.map_err(DialError::Failed)?;
                let hop = name
                    .as_deref()
                    .map_or_else(|| "the tunnel".to_string(), |n| format!("tunnel {n}"));
                (io, hop, None)
            }
        };
        if connect {
            let io = upstream::http_connect(io, &proxy, &destination.authority, authorization.as_deref()).await?;
            return Ok(Opened {
                io,
                to_proxy: false,
                authorization: None,
            });
        }
        Ok(Opened {
            io,
            to_proxy: true,
            authorization,
        })
    }

    /// Sends a request on `hop` and streams the answer back; the connection goes back to the
    /// idle ones once the answer has been read. An upgrade (WebSocket) joins the two
    /// connections once both sides agreed to it. A request the connection closed before
    /// taking comes back as the error, to be sent elsewhere; so does a safe request without
    /// a body that a reused connection closed on before answering (RFC 9112 §9.3.1): a
    /// server may close a kept-alive connection just as a request reaches it.
    async fn forward(
        &self,
        mut request: Request<Body>,
        route: &Route,
        mut hop: Hop,
        key: Key,
        destination: &Destination,
        client: &str,
    ) -> Result<Response<Body>, Request<Body>> {
        let upgrade = wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
        let uri = request.uri().clone();
        let (head, body) = request.into_parts();
        let replay = (hop.reused && upgrade.is_none() && replayable(&head.method, &body)).then(|| head.clone());
        let mut request = Request::from_parts(head, body);
        prepare(&mut request, &hop, destination, upgrade.is_some());
        let timeout = self.settings.timeout;
        let mut response = match tokio::time::timeout(timeout, hop.sender.try_send_request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(mut e)) => {
                if let Some(unsent) = e.take_message() {
                    return Err(unsent);
                }
                if let Some(head) = replay {
                    tracing::debug!(%client, %uri, %route, error = %e.into_error(), "a kept-alive connection closed on the request; sending it again");
                    return Err(Request::from_parts(head, empty()));
                }
                let why = format!("{route}: {}", e.into_error());
                return Ok(refuse(StatusCode::BAD_GATEWAY, client, &uri, &why));
            }
            Err(_) => {
                let why = format!("{route}: no answer within {timeout:?}");
                return Ok(refuse(StatusCode::GATEWAY_TIMEOUT, client, &uri, &why));
            }
        };
        let to_proxy = hop.to_proxy;
        match upgrade {
            Some(client_side) => join_upgrade(client_side, &mut response),
            None => self.idle.give_back(key, hop),
        }
        if response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED && to_proxy {
            let why = format!("the upstream proxy {route} requires authentication (407)");
            tracing::warn!(%client, %uri, "{why}");
            response.headers_mut().insert(ERROR_HEADER, header_value(&why));
        }
        Ok(response.map(|body| body.boxed()))
    }
}

/// An HTTP/1.1 client connection on a route's stream.
async fn handshake(opened: Opened) -> Result<Hop, hyper::Error> {
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(opened.io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Hop {
        sender,
        to_proxy: opened.to_proxy,
        authorization: opened.authorization,
        reused: false,
    })
}

/// CONNECT: `200` now, then the client's bytes and the route's, both ways, once hyper hands
/// over the client's connection.
fn tunnel(request: Request<Body>, mut io: BoxIo) -> Response<Body> {
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut io).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT client left before its tunnel"),
        }
    });
    Response::new(empty())
}

/// Once both sides agreed to an upgrade (a `101` answer), joins the client's connection
/// and the upstream's, both ways, on a task of their own.
fn join_upgrade(client_side: hyper::upgrade::OnUpgrade, response: &mut Response<Incoming>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let upstream_side = hyper::upgrade::on(response);
    tokio::spawn(async move {
        if let (Ok(a), Ok(b)) = tokio::join!(client_side, upstream_side) {
            let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        }
    });
}

/// Whether a request may be sent a second time after a connection failed under it: a
/// method that asks for nothing to change, and no body to send again. The same narrow rule
/// as browsers' and Go's clients; `PUT` and `DELETE` are idempotent but not sent twice.
fn replayable(method: &Method, body: &Body) -> bool {
    use hyper::body::Body as _;
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE) && body.is_end_stream()
}

pub(crate) fn wants_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("upgrade")))
}

/// The request as the next hop wants it: origin form unless the hop is a proxy, no
/// hop-by-hop headers of ours, and the right `Proxy-Authorization`.
fn prepare(request: &mut Request<Body>, opened: &Hop, destination: &Destination, upgrade: bool) {
    let headers = request.headers_mut();
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
    if !upgrade {
        headers.remove(header::CONNECTION);
    }
    match (&opened.authorization, opened.to_proxy) {
        (Some(ours), _) => {
            headers.insert(header::PROXY_AUTHORIZATION, header_value(ours));
        }
        // The client's own credentials are for an upstream proxy, never for an origin.
        (None, false) => {
            headers.remove(header::PROXY_AUTHORIZATION);
        }
        (None, true) => {}
    }
    if !headers.contains_key(header::HOST) {
        let host = match destination.port {
            80 => destination.authority.trim_end_matches(":80").to_string(),
            _ => destination.authority.clone(),
        };
        headers.insert(header::HOST, header_value(&host));
    }
    // Absolute form to a proxy (rebuilt if an earlier hop's attempt made it origin form),
    // origin form to an origin.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let uri = match (opened.to_proxy, request.uri().scheme().is_some()) {
        (true, true) => return,
        (true, false) => format!("http://{}{path}", destination.authority),
        (false, _) => path,
    };
    *request.uri_mut() = uri.parse().unwrap_or_else(|_| Uri::from_static("/"));
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A header value from free text, with anything not visible ASCII replaced.
pub(crate) fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("burrow error"))
}

/// An error answer: the status, the cause in `X-Burrow-Error` and the body, and a log line.
fn refuse(status: StatusCode, client: &str, uri: &Uri, cause: &str) -> Response<Body> {
    if status.is_server_error() {
        tracing::warn!(%client, %uri, status = status.as_u16(), "{cause}");
    } else {
        tracing::info!(%client, %uri, status = status.as_u16(), "{cause}");
    }
    let mut response = Response::new(
        Full::new(Bytes::from(format!("burrow: {cause}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, header_value(cause));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An upstream proxy's 407 to our CONNECT, passed on with its challenges.
fn proxy_auth_required(proxy: &str, challenges: &[String], client: &str, uri: &Uri) -> Response<Body> {
    let why = format!("the upstream proxy {proxy} requires authentication (407)");
    let mut response = refuse(StatusCode::PROXY_AUTHENTICATION_REQUIRED, client, uri, &why);
    for challenge in challenges {
        response
            .headers_mut()
            .append(header::PROXY_AUTHENTICATE, header_value(challenge));
    }
    response
}
