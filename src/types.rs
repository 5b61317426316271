//! Newtypes for the identifiers and secrets that cross module boundaries.
//!
//! Each type validates on construction ("parse, don't validate"), so code holding one never
//! re-checks it, and secrets redact themselves wherever they are printed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a user-supplied identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidId {
    #[error("tunnel name must be 1-100 characters of [a-z0-9-], got {0:?}")]
    TunnelName(String),
    #[error("tunnel id must be 32 lowercase hex characters, got {0:?}")]
    TunnelId(String),
    #[error("user name must be 1-64 characters of [A-Za-z0-9._@-], got {0:?}")]
    UserName(String),
    #[error("agent id must be a UUID, got {0:?}")]
    AgentId(String),
}

/// A tunnel's stable identity: 16 random bytes shown as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub [u8; 16]);

impl TunnelId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelId({self})")
    }
}

impl FromStr for TunnelId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidId::TunnelId(s.to_string());
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl Serialize for TunnelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TunnelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! string_newtype {
    ($name:ident, $check:expr, $err:ident) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(InvalidId::$err(s.to_string()))
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

string_newtype!(
    TunnelName,
    |s| (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
    TunnelName
);

string_newtype!(
    UserName,
    |s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b)),
    UserName
);

impl TunnelName {
    /// A readable random name for tunnels exposed without `--name`.
    pub fn generate() -> Self {
        let suffix: u32 = rand::random();
        Self(format!("tunnel-{suffix:08x}"))
    }
}

/// An agent's identity: a UUID kept across restarts so leases can be resumed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub uuid::Uuid);

impl AgentId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl FromStr for AgentId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| InvalidId::AgentId(s.to_string()))
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({self})")
    }
}

/// A secret (access key): never printed, compared in constant time.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// 32 random bytes, hex encoded: the shape of generated access keys.
    pub fn generate() -> Self {
        Self(hex::encode(rand::random::<[u8; 24]>()))
    }

    /// The only way to see the secret; grep for it when auditing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("xxxxx")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("xxxxx")
    }
}

/// Admits a dedicated data connection (a lane) to one agent session: 16 random bytes the hub
/// hands out in its welcome. Whoever holds it can offer connections to that session, so it is
/// a secret: redacted in Debug and logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneToken(pub [u8; 16]);

impl LaneToken {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Debug for LaneToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LaneToken(xxxxx)")
    }
}

impl Serialize for LaneToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for LaneToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(&s, &mut bytes)
            .map_err(|e| serde::de::Error::custom(format!("a lane token is 32 hex digits: {e}")))?;
        Ok(Self(bytes))
    }
}

/// What a tunnel carries. `Auto` classifies each connection (TLS, HTTP or plain TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Auto,
    Tcp,
    Udp,
    Http,
    Https,
}

/// The port of a `HOST:PORT` target, if it has one (a forward-proxy tunnel's has none).
pub fn target_port(target: &str) -> Option<u16> {
    target.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

impl Protocol {
    /// How a client connects to a tunnel of this protocol to `target` at its public
    /// `address`: the scheme follows the protocol, or the target's well-known port.
    pub fn connection_string(self, target: &str, address: &str) -> String {
        let port = target_port(target);
        let scheme = match (self, port) {
            (Protocol::Http, _) => "http",
            (Protocol::Https, _) => "https",
            (Protocol::Udp, _) => "udp",
            (_, Some(5432)) => "postgresql",
            (_, Some(3306)) => "mysql",
            (_, Some(6379)) => "redis",
            (_, Some(27017)) => "mongodb",
            _ => "tcp",
        };
        format!("{scheme}://{address}")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as clap::ValueEnum>::from_str(s, true)
    }
}

/// How an agent reaches the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Auto,
    Quic,
    Tls,
    Tcp,
}

/// A block of addresses, `ADDR/PREFIX` or a single address (`--trusted-proxies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`, from a
    /// dual-stack socket) counts as the IPv4 address.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an address or ADDR/PREFIX block");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let network: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        let single: Cidr = "127.0.0.2".parse().unwrap();
        assert!(single.contains("127.0.0.2".parse().unwrap()));
        assert!(!single.contains("127.0.0.3".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tunnel_names_follow_the_spec() {
        assert!("web-1".parse::<TunnelName>().is_ok());
        assert!("a".repeat(100).parse::<TunnelName>().is_ok());
        for bad in ["", "Web", "a_b", "a.b", &"a".repeat(101)] {
            assert!(bad.parse::<TunnelName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tunnel_ids_round_trip_as_lowercase_hex() {
        let id = TunnelId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<TunnelId>().unwrap(), id);
        assert!(text.to_uppercase().parse::<TunnelId>().is_err());
        assert!("xyz".parse::<TunnelId>().is_err());
    }

    #[test]
    fn secrets_redact_themselves() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "xxxxx xxxxx");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn lane_tokens_round_trip_as_hex_and_redact_themselves() {
        let token = LaneToken::random();
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, format!("\"{}\"", hex::encode(token.0)));
        assert_eq!(serde_json::from_str::<LaneToken>(&json).unwrap(), token);
        assert!(serde_json::from_str::<LaneToken>("\"abcd\"").is_err(), "too short");
        assert!(serde_json::from_str::<LaneToken>(&format!("\"{}zz\"", &json[1..31])).is_err());
        assert_eq!(format!("{token:?}"), "LaneToken(xxxxx)");
    }
}
