//! Sans-IO wire formats between agents and the hub: control messages, stream headers and the
//! length-prefixed framing that carries them.
//!
//! Everything here is pure encode/decode on byte slices so it can be fuzzed and unit-tested
//! without sockets; `io.rs` adds the two thin async helpers that read and write frames.

pub mod datagram;
pub mod io;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{AgentId, LaneToken, Protocol, Secret, TunnelId, TunnelName, UserName};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 2;

/// ALPN identifier of the agent protocol, on QUIC and on TLS.
pub const ALPN: &[u8] = b"burrow/1";

/// First bytes a plain-TCP (`--transport tcp`) agent sends, so the hub's shared port can tell
/// it from HTTP and TLS visitors. Also sent inside TLS, followed by the role byte.
pub const PREFACE: &[u8; 8] = b"BURROW1\n";

/// Control frames are small JSON documents; anything larger is a protocol violation.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// Why a frame or header could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("control frame of {0} bytes exceeds the {MAX_CONTROL_FRAME}-byte limit")]
    FrameTooLarge(usize),
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown stream kind {0}")]
    UnknownStreamKind(u8),
    #[error("stream header peer address is not UTF-8")]
    BadPeerAddr,
    #[error("stream header tunnel name is not UTF-8")]
    BadTunnelName,
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Which side of the tunnel an agent connection serves. It decides who opens data streams:
/// the hub opens them toward `expose` agents, `reach` agents open them toward the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Expose,
    Reach,
}

impl Role {
    pub fn byte(self) -> u8 {
        match self {
            Role::Expose => b'E',
            Role::Reach => b'R',
        }
    }
}

/// What a connection that sent the [`PREFACE`] is, from the byte after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// An agent's multiplexed connection (control stream plus data streams).
    Agent(Role),
    /// A lane: a dedicated data connection offered by an `expose` agent, followed by its
    /// 16-byte [`LaneToken`]. It then carries forwarded connections
    /// one at a time, each headed by a [`StreamHeader`], with no multiplexer in between (on a
    /// plain lane framed as `relay/plain_lane.rs` says).
    Lane,
}

impl ConnKind {
    /// `M` since multiplexed connections move onto plain lanes once bulk (a lane may then
    /// carry [`StreamKind::Moved`]); before that `F` (framed, reused lanes) and `L`
    /// (unframed). A hub and an agent of different kinds refuse each other's lanes instead of
    /// misreading them (the agent then uses its multiplexed connection only).
    pub const LANE_BYTE: u8 = b'M';

    pub fn byte(self) -> u8 {
        match self {
            ConnKind::Agent(role) => role.byte(),
            ConnKind::Lane => Self::LANE_BYTE,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        [
            ConnKind::Agent(Role::Expose),
            ConnKind::Agent(Role::Reach),
            ConnKind::Lane,
        ]
        .into_iter()
        .find(|kind| kind.byte() == b)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub user: UserName,
    pub access_key: Secret,
    pub agent_id: AgentId,
    pub role: Role,
    /// The agent's host name and burrow version, for the hub's list of agents.
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub client_version: String,
    /// `reach --share`: the share's token. The hub then ignores `user` and `access_key` and
    /// lets the session reach the share's tunnel alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<Secret>,
}

/// The target of a tunnel that exposes its agent's forward proxy (`expose --forward-proxy`):
/// not an address (it has no port), so no real target is ever taken for it.
pub const FORWARD_PROXY_TARGET: &str = "forward-proxy";

/// What an `expose` agent asks the hub to publish.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TunnelSpec {
    pub name: Option<TunnelName>,
    pub protocol: Protocol,
    pub target: String,
    pub public: bool,
    pub hub_port: Option<u16>,
    pub pool: bool,
    pub shared_all: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The PROXY protocol header the agent puts before each visitor's bytes to the target;
    /// the agent's own business (the hub passes it on when it places a tunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<crate::sniff::proxy::ProxyVersion>,
}

impl TunnelSpec {
    /// A private TCP tunnel to `target` with a generated name; adjust with struct update.
    pub fn tcp(target: impl Into<String>) -> Self {
        Self {
            name: None,
            protocol: Protocol::Tcp,
            target: target.into(),
            public: false,
            hub_port: None,
            pool: false,
            shared_all: false,
            metadata: BTreeMap::new(),
            proxy_protocol: None,
        }
    }
}

/// What the hub tells an agent about a tunnel it registered or resolved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TunnelInfo {
    pub id: TunnelId,
    pub name: TunnelName,
    pub protocol: Protocol,
    pub hub_port: Option<u16>,
    pub public_address: Option<String>,
    pub url: Option<String>,
    /// The tunnel leads to its agent's forward proxy ([`FORWARD_PROXY_TARGET`]).
    #[serde(default)]
    pub forward_proxy: bool,
}

/// Machine-readable reasons the hub refuses something; the agent maps them to exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseCode {
    /// Wrong credentials: the agent exits 2 at once, no retries.
    Unauthorized,
    /// Plain TCP agent on a hub without `--allow-plaintext`.
    PlaintextNotAllowed,
    /// The agent speaks a protocol version the hub does not.
    Version,
    /// The tunnel does not exist or this user may not reach it.
    NotFound,
    /// The request is well-formed but cannot be satisfied (port taken, range exhausted).
    Conflict,
    /// The request is malformed.
    BadRequest,
    /// Another user's public tunnel holds the public name asked for: `<name>.<domain>` is
    /// one namespace per hub.
    NameTaken,
}

impl RefuseCode {
    /// Refusals that retrying cannot fix end the agent with exit code 2.
    pub fn is_fatal(self) -> bool {
        !matches!(self, RefuseCode::Conflict)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    Hello(Hello),
    Register {
        spec: TunnelSpec,
    },
    Resolve {
        tunnel: String,
    },
    Ping,
    /// The agent is shutting down: send it no new connections, keep the running ones.
    Draining,
    /// The answer to [`HubMsg::Listen`] `request`.
    Listened {
        request: u64,
        outcome: ListenOutcome,
    },
}

/// What came of a [`HubMsg::Listen`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ListenOutcome {
    Listening {
        port: u16,
    },
    /// The port asked for is in use on the agent's host.
    Taken {
        message: String,
    },
    Failed {
        message: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMsg {
    Welcome {
        hub_version: String,
        /// Offered to plain-TCP `expose` agents: dial lanes with it (see [`ConnKind::Lane`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lane_token: Option<LaneToken>,
    },
    Refused {
        code: RefuseCode,
        message: String,
    },
    Registered {
        tunnel: TunnelInfo,
    },
    Resolved {
        tunnel: TunnelInfo,
    },
    StopTunnel {
        id: TunnelId,
        reason: String,
    },
    /// The hub placed another tunnel on this `expose` agent's connection: serve
    /// `spec.target` for streams naming `tunnel.id`, and register `spec` again on reconnect.
    Exposed {
        tunnel: TunnelInfo,
        spec: TunnelSpec,
    },
    /// For a `reach` agent: open a local listener (127.0.0.1) whose connections go to
    /// tunnel `tunnel`, on `port` (with `exact`, that port or nothing; else that port if
    /// free, any otherwise), for as long as this connection lasts; answer with
    /// [`AgentMsg::Listened`].
    Listen {
        request: u64,
        tunnel: TunnelId,
        port: u16,
        exact: bool,
    },
    /// The owner renamed tunnel `id` through the API: register it by `name` from now on.
    Renamed {
        id: TunnelId,
        name: TunnelName,
    },
    /// The hub is shutting down: it sends no new connections and closes this one once its
    /// running connections end. The agent reconnects promptly when it closes.
    GoingAway {
        reason: String,
    },
    Pong,
}

/// Encodes one control message as `u32 big-endian length | JSON`.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("control messages always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Length of the frame announced by a 4-byte prefix, refusing oversized ones before any
/// allocation happens.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(WireError::FrameTooLarge(len));
    }
    Ok(len)
}

pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    Ok(serde_json::from_slice(body)?)
}

/// What a data stream carries; the first byte of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// One TCP connection, relayed byte for byte in both directions.
    Tcp = 1,
    /// One UDP flow (one client address); datagrams framed on the stream or sent as QUIC
    /// DATAGRAM frames tagged with the header's flow id.
    Udp = 2,
    /// On a plain lane only: the connection of the multiplexed stream whose id is in `flow`
    /// goes on here (see `relay/moving.rs`).
    Moved = 3,
}

impl StreamKind {
    /// Whether the header carries `flow`.
    fn has_flow(self) -> bool {
        matches!(self, StreamKind::Udp | StreamKind::Moved)
    }
}

/// The tunnel a stream is for: by id (the hub toward exposing agents, and `reach` once it has
/// resolved a name), or by the name a `reach` user gives, which the hub resolves for that
/// user as it resolves `burrow reach NAME` (own names, `owner/name`, ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelRef {
    Id(TunnelId),
    Name(String),
}

impl From<TunnelId> for TunnelRef {
    fn from(id: TunnelId) -> Self {
        TunnelRef::Id(id)
    }
}

impl std::fmt::Display for TunnelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelRef::Id(id) => id.fmt(f),
            TunnelRef::Name(name) => f.write_str(name),
        }
    }
}

/// How far [`StreamHeader::decode`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderRead {
    /// The header, and the bytes it took.
    Complete(StreamHeader, usize),
    /// At least this many more bytes are needed.
    Need(usize),
}

/// Set in the kind byte when the tunnel is named rather than given by id.
const NAMED: u8 = 0x80;

/// The header written by whoever opens a data stream, before any payload.
///
/// Layout: `kind u8 | tunnel id [16] | peer len u8 | peer address (UTF-8) | visited len u8 |
/// visited address (UTF-8) | [flow u64 BE, UDP and moved streams only]`. A tunnel given by
/// name sets [`NAMED`] in the kind byte and replaces the id with `name len u8 | name
/// (UTF-8)`. Binary rather than JSON because one is written per forwarded connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    pub kind: StreamKind,
    pub tunnel: TunnelRef,
    /// The visitor's address as the hub saw it (or as a trusted proxy's PROXY header gave
    /// it), for logs and PROXY headers.
    pub peer: String,
    /// The address the visitor connected to (a public port, the main port), for the
    /// destination of PROXY headers; empty when there is none (`reach` visitors).
    pub visited: String,
    /// The UDP flow id its QUIC datagrams carry, or a moved connection's stream id (0 for
    /// TCP).
    pub flow: u64,
}

impl StreamHeader {
    /// A TCP connection's header for `tunnel`, on behalf of visitor `peer`.
    pub fn tcp(tunnel: impl Into<TunnelRef>, peer: impl Into<String>, visited: impl Into<String>) -> Self {
        Self {
            kind: StreamKind::Tcp,
            tunnel: tunnel.into(),
            peer: peer.into(),
            visited: visited.into(),
            flow: 0,
        }
    }

    /// The tunnel's id; `None` for a header that names it.
    pub fn tunnel_id(&self) -> Option<TunnelId> {
        match &self.tunnel {
            TunnelRef::Id(id) => Some(*id),
            TunnelRef::Name(_) => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        fn short(s: &str) -> &[u8] {
            &s.as_bytes()[..s.len().min(255)]
        }
        let (peer, visited) = (short(&self.peer), short(&self.visited));
        let mut out = Vec::with_capacity(1 + 16 + 2 + peer.len() + visited.len() + 8);
        match &self.tunnel {
            TunnelRef::Id(id) => {
                out.push(self.kind as u8);
                out.extend_from_slice(&id.0);
            }
            TunnelRef::Name(name) => {
                let name = &name.as_bytes()[..name.len().min(255)];
                out.push(self.kind as u8 | NAMED);
                out.push(name.len() as u8);
                out.extend_from_slice(name);
            }
        }
        for field in [peer, visited] {
            out.push(field.len() as u8);
            out.extend_from_slice(field);
        }
        if self.kind.has_flow() {
            out.extend_from_slice(&self.flow.to_be_bytes());
        }
        out
    }

    /// Decodes the kind byte: the stream's kind, and whether its tunnel is named.
    pub fn decode_kind(byte: u8) -> Result<(StreamKind, bool), WireError> {
        let kind = match byte & !NAMED {
            1 => StreamKind::Tcp,
            2 => StreamKind::Udp,
            3 => StreamKind::Moved,
            _ => return Err(WireError::UnknownStreamKind(byte)),
        };
        Ok((kind, byte & NAMED != 0))
    }

    /// Decodes a header at the start of `buf`: the header and its length, or how many more
    /// bytes it needs at least (a reader reads exactly that many, so it never takes payload).
    pub fn decode(buf: &[u8]) -> Result<HeaderRead, WireError> {
        let mut at = 1;
        let Some(&kind) = buf.first() else {
            return Ok(HeaderRead::Need(1));
        };
        let (kind, named) = Self::decode_kind(kind)?;
        // Each field in turn: how long it is once its length byte (if any) is known.
        let mut take = |len_byte: bool, fixed: usize| -> Result<&[u8], usize> {
            let len = if len_byte {
                let n = *buf.get(at).ok_or_else(|| at + 1 - buf.len())?;
                at += 1;
                usize::from(n)
            } else {
                fixed
            };
            let field = buf.get(at..at + len).ok_or_else(|| at + len - buf.len())?;
            at += len;
            Ok(field)
        };
        macro_rules! field {
            ($len_byte:expr, $fixed:expr) => {
                match take($len_byte, $fixed) {
                    Ok(field) => field,
                    Err(more) => return Ok(HeaderRead::Need(more)),
                }
            };
        }
        let tunnel = if named {
            let name = field!(true, 0);
            TunnelRef::Name(String::from_utf8(name.to_vec()).map_err(|_| WireError::BadTunnelName)?)
        } else {
            TunnelRef::Id(TunnelId(field!(false, 16).try_into().expect("16 bytes")))
        };
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadPeerAddr);
        let peer = text(field!(true, 0))?;
        let visited = text(field!(true, 0))?;
        let flow = if kind.has_flow() {
            u64::from_be_bytes(field!(false, 8).try_into().expect("8 bytes"))
        } else {
            0
        };
        Ok(HeaderRead::Complete(
            StreamHeader {
                kind,
                tunnel,
                peer,
                visited,
                flow,
            },
            at,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_kinds_have_distinct_bytes_that_read_back() {
        let kinds = [
            ConnKind::Agent(Role::Expose),
            ConnKind::Agent(Role::Reach),
            ConnKind::Lane,
        ];
        for kind in kinds {
            assert_eq!(ConnKind::from_byte(kind.byte()), Some(kind));
        }
        assert_eq!(ConnKind::from_byte(b'X'), None);
        assert_eq!(ConnKind::from_byte(0), None);
    }

    #[test]
    fn stream_header_layout_is_kind_id_peer_visited() {
        let h = StreamHeader::tcp(TunnelId::random(), "127.0.0.1:5555", "10.0.0.1:20001");
        let bytes = h.encode();
        assert_eq!(bytes[0], StreamKind::Tcp as u8);
        assert_eq!(Some(TunnelId(bytes[1..17].try_into().unwrap())), h.tunnel_id());
        assert_eq!(bytes[17] as usize, h.peer.len());
        assert_eq!(&bytes[18..32], h.peer.as_bytes());
        assert_eq!(bytes[32] as usize, h.visited.len());
        assert_eq!(&bytes[33..], h.visited.as_bytes());
        assert_eq!(
            StreamHeader::decode(&bytes).unwrap(),
            HeaderRead::Complete(h, bytes.len())
        );
    }

    /// Every cut of a header asks for more, never for more than the header still holds.
    #[test]
    fn decoding_a_cut_header_asks_for_what_is_missing() {
        let mut h = StreamHeader::tcp(TunnelRef::Name("db".into()), "127.0.0.1:5555", "");
        h.kind = StreamKind::Udp;
        h.flow = 42;
        let bytes = h.encode();
        for cut in 0..bytes.len() {
            match StreamHeader::decode(&bytes[..cut]).unwrap() {
                HeaderRead::Need(n) => assert!(n >= 1 && cut + n <= bytes.len(), "cut {cut} needs {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    /// A moved connection's header carries its stream id as UDP's carries its flow id, and
    /// reads back whole over a socket-like stream (a lane).
    #[tokio::test]
    async fn moved_and_udp_headers_carry_their_id_through_the_reader() {
        for (kind, flow, tunnel) in [
            (StreamKind::Moved, 0x1_0003u64, TunnelRef::Id(TunnelId::random())),
            (StreamKind::Udp, 7, TunnelRef::Id(TunnelId::random())),
            (StreamKind::Tcp, 0, TunnelRef::Id(TunnelId::random())),
            (StreamKind::Tcp, 0, TunnelRef::Name("alice/db".into())),
            (StreamKind::Udp, 9, TunnelRef::Name("dns".into())),
        ] {
            let sent = StreamHeader {
                kind,
                tunnel,
                peer: "127.0.0.1:40000".into(),
                visited: if kind == StreamKind::Tcp {
                    "10.1.2.3:443".into()
                } else {
                    String::new()
                },
                flow,
            };
            let mut bytes = sent.encode();
            bytes.extend_from_slice(b"payload");
            let mut reader = &bytes[..];
            let read = io::read_stream_header(&mut reader).await.unwrap();
            assert_eq!(read, sent);
            assert_eq!(reader, b"payload", "the header ends where it says");
        }
    }

    #[test]
    fn unknown_stream_kind_is_an_error() {
        for byte in [0, 9, 0x89, 0xff] {
            assert!(matches!(
                StreamHeader::decode_kind(byte),
                Err(WireError::UnknownStreamKind(b)) if b == byte
            ));
        }
        assert_eq!(StreamHeader::decode_kind(0x81).unwrap(), (StreamKind::Tcp, true));
    }

    /// Garbage after a kind byte, named or not, is an error or a short read, never a panic,
    /// and a name that is not UTF-8 is refused.
    #[tokio::test]
    async fn truncated_and_garbled_headers_are_errors() {
        let whole = StreamHeader::tcp(TunnelRef::Name("web".into()), "1.2.3.4:5", "5.6.7.8:9").encode();
        for end in 0..whole.len() {
            let mut reader = &whole[..end];
            assert!(io::read_stream_header(&mut reader).await.is_err(), "cut at {end}");
        }
        let mut bad_name = &[0x81u8, 2, 0xff, 0xfe, 0][..];
        assert!(matches!(
            io::read_stream_header(&mut bad_name).await,
            Err(WireError::BadTunnelName)
        ));
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        assert!(frame_len((MAX_CONTROL_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert_eq!(frame_len(10u32.to_be_bytes()).unwrap(), 10);
    }

    #[test]
    fn control_messages_round_trip_and_garbage_is_an_error() {
        let frame = encode_frame(&HubMsg::Refused {
            code: RefuseCode::Unauthorized,
            message: "no".into(),
        });
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        let msg: HubMsg = decode_body(&frame[4..4 + len]).unwrap();
        assert!(matches!(
            msg,
            HubMsg::Refused {
                code: RefuseCode::Unauthorized,
                ..
            }
        ));
        assert!(decode_body::<HubMsg>(b"\xff\x00garbage").is_err());
        assert!(decode_body::<AgentMsg>(br#"{"type":"hello"}"#).is_err());
    }
}
