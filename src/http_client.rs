//! One HTTP/1.1 request to an `http://` or `https://` URL, for the few places burrow is a
//! client itself: fetching PAC files, delivering webhooks, and `burrow tunnels`. TLS is
//! rustls with the roots the caller gives.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;

/// An answer: its status and (up to the caller's limit) its body.
pub struct Reply {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// `method url` with `headers` and `body`; the answer's body is read up to `limit` bytes.
/// `tls` checks `https://` servers (an `https://` URL without it is an error).
pub async fn request(
    method: http::Method,
    url: &str,
    headers: &[(http::header::HeaderName, String)],
    body: Bytes,
    tls: Option<Arc<rustls::ClientConfig>>,
    limit: usize,
) -> Result<Reply, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?}: http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| format!("{url:?} names no host"))?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let io: crate::proxy::upstream::BoxIo = if https {
        let tls = tls.ok_or("no TLS configuration for an https:// URL")?;
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {authority}: {e}"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, concat!("burrow/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{authority} did not answer: {e}"))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Reply { status, body })
}
