//! Test harness: runs the real `burrow` binary (hub and agents) on 127.0.0.1 and provides
//! target services (echo, hashing sink, firehose) on real sockets.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod proxies;
pub mod rest;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Distinct public port ranges for hubs started by the tests of one binary, below Linux's
/// ephemeral range so they do not collide with outgoing connections.
static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

fn next_port_range() -> (u16, u16) {
    let n = NEXT_RANGE.fetch_add(1, Ordering::SeqCst);
    let base = 21000 + (std::process::id() as u16 % 40) * 200 + n * 10;
    (base, base + 9)
}

/// A running burrow process; killed when dropped.
pub struct Proc {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(args: &[String]) -> Proc {
        Self::spawn_env(args, &[])
    }

    /// Like [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_burrow"))
            .args(args)
            .envs(env.iter().copied())
            .env("XDG_STATE_HOME", dir.path())
            .env_remove("BURROW_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn burrow");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            stderr,
            _dir: dir,
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The first JSON line on stdout whose `event` is `ready`.
    pub async fn ready(&mut self) -> Value {
        self.event("ready", READY_TIMEOUT).await
    }

    /// The next JSON line on stdout whose `event` is `kind`, waiting at most `limit`.
    pub async fn event(&mut self, kind: &str, limit: Duration) -> Value {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == kind {
                        return Some(v);
                    }
                }
            }
            None
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Some(v)) => v,
            _ => panic!("no {kind} line within {limit:?}; stderr:\n{}", self.stderr_text()),
        }
    }

    pub async fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("process did not exit within {limit:?}; stderr:\n{}", self.stderr_text()),
        }
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

pub struct TestHub {
    pub proc: Proc,
    pub addr: String,
    /// The operational API's address, when the hub was started with `--api-address`.
    pub api_address: Option<String>,
    pub data: tempfile::TempDir,
    pub range: (u16, u16),
    extra: Vec<String>,
}

impl TestHub {
    pub async fn start(extra: &[&str]) -> TestHub {
        let data = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(data, "127.0.0.1:0".into(), next_port_range(), extra).await
    }

    async fn start_in(data: tempfile::TempDir, listen: String, range: (u16, u16), extra: Vec<String>) -> TestHub {
        let mut args: Vec<String> = vec![
            "hub".into(),
            "--listen".into(),
            listen,
            "--data-dir".into(),
            data.path().to_str().unwrap().into(),
            "--auth".into(),
            "alice:alice-key".into(),
            "--auth".into(),
            "bob:bob-key".into(),
            "--port-range".into(),
            format!("{}-{}", range.0, range.1),
            "--json".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn(&args);
        let ready = proc.ready().await;
        let addr = ready["listen"].as_str().unwrap().to_string();
        let api_address = ready["api_address"].as_str().map(str::to_string);
        TestHub {
            proc,
            addr,
            api_address,
            data,
            range,
            extra,
        }
    }

    /// Stops the hub with SIGTERM (a clean drain), waits for it to exit, and starts it again
    /// on the same port with the same state and `extra` flags instead of the first ones.
    pub async fn stop_and_restart(self, extra: &[&str]) -> TestHub {
        let TestHub {
            mut proc,
            addr,
            data,
            range,
            ..
        } = self;
        proc.signal("-TERM");
        assert!(proc.exit_status(Duration::from_secs(10)).await.success());
        let extra = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(data, addr, range, extra).await
    }

    /// Kills the hub (no drain) and starts it again on the same port with the same state.
    pub async fn restart(self) -> TestHub {
        let TestHub {
            mut proc,
            addr,
            data,
            range,
            extra,
            ..
        } = self;
        proc.kill().await;
        Self::start_in(data, addr, range, extra).await
    }

    pub fn ca(&self) -> String {
        self.data.path().join("certs/ca.pem").to_str().unwrap().into()
    }

    /// Agent flags for `user` over `transport`.
    pub fn agent_args(&self, transport: &str, user: &str) -> Vec<String> {
        let mut args = vec![
            "--hub".into(),
            self.addr.clone(),
            "--transport".into(),
            transport.into(),
            "-u".into(),
            user.into(),
            "-k".into(),
            format!("{user}-key"),
            "--json".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if transport != "tcp" {
            args.extend(["--ca".into(), self.ca()]);
        }
        args
    }

    pub fn expose(&self, transport: &str, user: &str, target: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["expose".to_string(), target.to_string()];
        args.extend(self.agent_args(transport, user));
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::spawn(&args)
    }

    pub fn reach(&self, transport: &str, user: &str, tunnel: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["reach".to_string(), tunnel.to_string()];
        args.extend(self.agent_args(transport, user));
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::spawn(&args)
    }
}

/// A listener for target services with a deep accept queue: tokio's default backlog (1024)
/// overflowed under the 1000-stream burst while the test runtime was busy, and the kernel
/// reset connections it could not queue.
fn target_listener() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// An in-process hub's configuration: the crypto provider installed, a fresh data dir, the
/// main port on 127.0.0.1:0 and each of `users` with the key `<user>-key`. With `port_base`,
/// public ports come from a block of ten above it, offset by the process id so that test
/// binaries running at once do not collide.
pub fn in_process_hub(users: &[&str], port_base: Option<u16>) -> (burrow::hub::HubConfig, tempfile::TempDir) {
    burrow::tls::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let mut config = burrow::hub::HubConfig::new("127.0.0.1:0".parse().unwrap(), data.path().to_path_buf());
    config.users = users
        .iter()
        .map(|user| (user.parse().unwrap(), burrow::types::Secret::new(format!("{user}-key"))))
        .collect();
    if let Some(base) = port_base {
        let base = base + (std::process::id() % 100) as u16 * 10;
        config.port_range = (base, base + 9);
    }
    (config, data)
}

/// A target service on loopback: each accepted connection is served by `serve` on a task of
/// its own. Returns the address.
pub fn spawn_target<Serve, Served>(serve: Serve) -> String
where
    Serve: Fn(TcpStream) -> Served + Send + 'static,
    Served: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = target_listener();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// An echo server: every connection gets its bytes back, and EOF after the client's EOF.
pub async fn echo_server() -> String {
    spawn_target(|stream| async move {
        let (mut r, mut w) = stream.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
}

/// A UDP echo server: every datagram goes back to where it came from.
pub async fn udp_echo_server() -> String {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A server that answers each connection with `tag` and closes: tells which target served.
pub async fn tag_server(tag: &'static str) -> String {
    spawn_target(move |mut stream| async move {
        let _ = stream.write_all(tag.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
}

/// A sink that reads until EOF, then replies with the SHA-256 (hex) and length of what it
/// read, and closes. Proves half-close travels: it can only answer after the client's EOF.
pub async fn hashing_sink() -> String {
    spawn_target(|mut stream| async move {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    ctx.update(&buf[..n]);
                    total += n as u64;
                }
                Err(_) => return,
            }
        }
        let reply = format!("{} {total}", hex::encode(ctx.finish().as_ref()));
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
}

/// A server that writes as fast as the connection accepts, counting bytes accepted by the
/// kernel, so a test can see how much a stalled reader lets pile up.
pub async fn firehose_server() -> (String, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let addr = spawn_target(move |mut stream| {
        let counter = counter.clone();
        async move {
            let chunk = vec![7u8; 64 * 1024];
            while let Ok(n) = stream.write(&chunk).await {
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    });
    (addr, written)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut data).unwrap();
    data
}

/// Sends `data` to `addr`, half-closes, and returns everything read back until EOF.
pub async fn round_trip(addr: &str, data: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut r, mut w) = stream.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back))
        .await
        .expect("round trip timed out")
        .unwrap();
    writer.await.unwrap();
    back
}

/// Like [`round_trip`] but tolerates a refused or reset connection (returns what arrived).
pub async fn try_round_trip(addr: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(data).await?;
    stream.shutdown().await?;
    let mut back = Vec::new();
    match tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut back)).await {
        Ok(r) => r.map(|_| back),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A forwarder standing between agents and a hub on one port number, TCP and UDP, like a
/// firewall: TCP always passes; UDP (QUIC) passes only while `udp_open` is set, and is
/// dropped otherwise.
pub struct UdpGate {
    pub addr: String,
    pub udp_open: Arc<std::sync::atomic::AtomicBool>,
}

impl UdpGate {
    pub async fn start(hub: &str) -> UdpGate {
        let hub: std::net::SocketAddr = hub.parse().unwrap();
        // One port number for both protocols: retry until a TCP port's UDP twin is free.
        let (tcp, udp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            if let Ok(udp) = tokio::net::UdpSocket::bind(tcp.local_addr().unwrap()).await {
                break (tcp, Arc::new(udp));
            }
        };
        let addr = tcp.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(hub).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        let udp_open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = udp_open.clone();
        tokio::spawn(async move {
            let mut upstreams: std::collections::HashMap<std::net::SocketAddr, Arc<tokio::net::UdpSocket>> =
                Default::default();
            let mut buf = vec![0u8; 65536];
            while let Ok((n, client)) = udp.recv_from(&mut buf).await {
                if !open.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstreams.entry(client).or_insert_with(|| {
                    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket.connect(hub).unwrap();
                    socket.set_nonblocking(true).unwrap();
                    let socket = Arc::new(tokio::net::UdpSocket::from_std(socket).unwrap());
                    let (back, udp, open) = (socket.clone(), udp.clone(), open.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = back.recv(&mut buf).await {
                            if open.load(Ordering::SeqCst) {
                                let _ = udp.send_to(&buf[..n], client).await;
                            }
                        }
                    });
                    socket
                });
                let _ = upstream.send(&buf[..n]).await;
            }
        });
        UdpGate { addr, udp_open }
    }
}

/// Fails the test unless `tool` is on the PATH, naming the Debian package that brings it
/// (`.ci/run` installs them): a test whose real client is missing must not pass unseen.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: apt-get install {package} (.ci/run does)"
    );
}

pub fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_string()
}
