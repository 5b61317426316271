//! Clients of the hub's REST API for tests: one request per connection with HTTP Basic,
//! and a webhook receiver.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::proxies::{read_answer, Answer};

const WAIT: Duration = Duration::from_secs(20);

/// One request on a connection of its own, with HTTP Basic `auth` if given.
pub async fn call(api: &str, method: &str, path: &str, auth: Option<&str>) -> Answer {
    send(api, method, path, auth, "").await
}

/// Like [`call`], with a JSON `body`.
pub async fn send(api: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> Answer {
    use base64::Engine;
    let mut tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n");
    if let Some(auth) = auth {
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
        request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut tcp).await
}

pub async fn json(api: &str, method: &str, path: &str, auth: &str) -> (u16, Value) {
    let answer = call(api, method, path, Some(auth)).await;
    let body = serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{path}: {e}: {answer:?}"));
    (answer.status, body)
}

/// The next webhook delivery, waiting a bounded time.
pub async fn next(received: &mut tokio::sync::mpsc::UnboundedReceiver<Answer>) -> Answer {
    tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("a delivery in time")
        .unwrap()
}

/// A webhook receiver: records each request's headers and body, answering 500 to the first
/// and 200 to the rest.
pub async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Answer>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/burrow", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut tcp, _)) = listener.accept().await {
            let received = read_answer(&mut tcp).await;
            let status = if std::mem::take(&mut first) {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = tcp
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                .await;
            let _ = tx.send(received);
        }
    });
    (url, rx)
}
