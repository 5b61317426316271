//! Where a PAC script comes from (a file, an `http(s)://` URL, a `data:` URL, standard input) and what a PAC
//! sees of a URL (its host, lower-cased).

use std::io::Read;

/// The largest PAC file fetched over HTTP.
const MAX_FETCHED: usize = 4 << 20;
/// How long fetching a PAC file may take.
const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The script `source` names: an `http(s)://` URL (fetched, checked against `tls`'s roots),
/// or what [`read`] reads.
pub async fn load(source: &str, tls: std::sync::Arc<rustls::ClientConfig>) -> Result<String, String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return tokio::time::timeout(FETCH_DEADLINE, fetch(source, tls))
            .await
            .unwrap_or_else(|_| Err(format!("fetching took longer than {FETCH_DEADLINE:?}")))
            .map_err(|e| format!("--pac {source}: {e}"));
    }
    read(source)
}

/// `GET url`: the body of a 2xx answer, up to [`MAX_FETCHED`] bytes of UTF-8.
async fn fetch(url: &str, tls: std::sync::Arc<rustls::ClientConfig>) -> Result<String, String> {
    let reply =
        crate::http_client::request(http::Method::GET, url, &[], bytes::Bytes::new(), Some(tls), MAX_FETCHED).await?;
    if !reply.status.is_success() {
        return Err(format!("the server answered {}", reply.status));
    }
    String::from_utf8(reply.body.to_vec()).map_err(|_| "the PAC file is not UTF-8 text".to_string())
}

/// The script `source` names: a path, `data:[type][;base64],DATA`, or `-` for standard
/// input; `http(s)://` sources are [`load`]ed.
pub fn read(source: &str) -> Result<String, String> {
    if source == "-" {
        let mut script = String::new();
        std::io::stdin()
            .read_to_string(&mut script)
            .map_err(|e| format!("--pac -: {e}"))?;
        return Ok(script);
    }
    if let Some(data) = source.strip_prefix("data:") {
        return data_url(data).ok_or_else(|| format!("--pac: {source:?} is not a data: URL of UTF-8 text"));
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        return Err(format!("--pac {source}: URLs are fetched by `load`"));
    }
    std::fs::read_to_string(source).map_err(|e| format!("--pac {source}: {e}"))
}

fn data_url(data: &str) -> Option<String> {
    let (meta, payload) = data.split_once(',')?;
    let bytes = if meta.ends_with(";base64") {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(payload.trim()).ok()?
    } else {
        percent_decode(payload)?
    };
    String::from_utf8(bytes).ok()
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The host a PAC is given for `url`: between `scheme://` (and any `user@`) and the port or
/// path, lower-cased, an IPv6 literal without its brackets.
pub fn host_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_urls_as_browsers_pass_them() {
        assert_eq!(
            host_of("http://WWW.Example.com:8080/a?b#c").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            host_of("https://user:pw@host.example/").as_deref(),
            Some("host.example")
        );
        assert_eq!(host_of("http://[2001:db8::1]:80/").as_deref(), Some("2001:db8::1"));
        assert_eq!(host_of("https://host.example").as_deref(), Some("host.example"));
        assert_eq!(host_of("not a url"), None);
        assert_eq!(host_of("http:///path"), None);
    }

    #[test]
    fn data_urls_decode_plain_and_base64() {
        assert_eq!(
            read("data:,function%20FindProxyForURL(u,h){return%20%22DIRECT%22;}").unwrap(),
            "function FindProxyForURL(u,h){return \"DIRECT\";}"
        );
        assert_eq!(
            read("data:application/x-ns-proxy-autoconfig;base64,ZnVuY3Rpb24gRmluZFByb3h5Rm9yVVJMKCl7fQ==").unwrap(),
            "function FindProxyForURL(){}"
        );
        assert!(read("data:nocomma").is_err());
    }
}
