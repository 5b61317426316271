//! Answers the hub or an agent gives a visitor itself, when no service does: an unknown
//! name (404), a tunnel without an agent (503), a target that refuses (502), a share that
//! refuses (405, 410, 429).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long, and how much, of the rest of a refused request is read before closing.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 64 * 1024;

/// A whole HTTP/1.1 response that closes the connection.
pub fn http_response(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    response(status, reason, content_type, body, &[], true)
}

/// A whole HTTP/1.1 response with `headers` besides its content headers; `close` ends the
/// connection after it (`connection: close`), otherwise it is kept alive.
pub fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    headers: &[(&str, String)],
    close: bool,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// The body of the hub's own JSON errors on the main port: `{"error": why, "code": code}`,
/// the shape the REST API answers with too.
pub fn json_error_body(code: &str, why: &str) -> String {
    serde_json::json!({"error": why, "code": code}).to_string() + "\n"
}

/// A plain-text HTTP error naming the tunnel and the cause, e.g. `502 Bad Gateway` with
/// "burrow: tunnel web: cannot connect to 127.0.0.1:8000 (connection refused)".
pub fn tunnel_error(status: u16, tunnel: &str, cause: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    http_response(
        status,
        reason,
        "text/plain; charset=utf-8",
        &format!("burrow: tunnel {tunnel}: {cause}\n"),
    )
}

/// Writes `response`, ends this direction, and reads (bounded in time and bytes) what the
/// client still sends: closing a socket with unread data resets the connection, and the
/// client could lose the answer before reading it.
pub async fn answer_and_close<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T, response: &[u8]) {
    if io.write_all(response).await.is_err() || io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < DRAIN_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}
