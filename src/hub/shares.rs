//! Shares: capability links to one tunnel, used at `<token>.<domain>` on the main port or
//! with `reach --share`, each with an expiry, the HTTP methods it allows and a per-minute
//! rate limit. The rules (what a request or connection may do now) are pure functions of a
//! [`Moment`], so tests drive them on a fixed clock; [`ShareBook`] is the hub's index of
//! them by token digest, loaded from the store at start-up and written through.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::store::{ShareRecord, TokenDigest};
use crate::types::{Secret, TunnelId, UserName};

/// The window of the per-share rate limit.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The rate limit's bounds, as `rateLimitPerMin` takes them.
pub const RATE_LIMITS: std::ops::RangeInclusive<u32> = 1..=1000;

/// A share's token: 128 random bits as 32 lowercase hex characters, the first label of its
/// host. Only its SHA-256 digest is stored, so the hub's database does not hold live links.
#[derive(Clone)]
pub struct ShareToken(Secret);

impl ShareToken {
    pub fn generate() -> Self {
        Self(Secret::new(hex::encode(rand::random::<[u8; 16]>())))
    }

    /// The token in a host's first label (`<token>.<domain>`), if it has the token's shape.
    pub fn from_label(label: &str) -> Option<Self> {
        let shaped = label.len() == 32 && label.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        shaped.then(|| Self(Secret::new(label)))
    }

    /// The token of a share URL: `scheme://<token>.<domain>[:port][/...]`, and the hub's
    /// address the URL names (`<domain>:<port>`).
    pub fn from_url(url: &str) -> Option<(Self, String)> {
        let uri: http::Uri = url.parse().ok()?;
        let host = uri.host()?;
        let (label, domain) = host.split_once('.')?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        Some((Self::from_label(label)?, format!("{domain}:{port}")))
    }

    pub fn digest(&self) -> TokenDigest {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.expose().as_bytes());
        TokenDigest(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for ShareToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareToken(xxxxx)")
    }
}

/// How long a share lasts, as `expiresIn` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Hour,
    Day,
    Week,
    Month,
    Never,
}

impl Expiry {
    pub const NAMES: &'static str = "1h, 24h, 7d, 30d or never";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "1h" => Self::Hour,
            "24h" => Self::Day,
            "7d" => Self::Week,
            "30d" => Self::Month,
            "never" => Self::Never,
            _ => return None,
        })
    }

    /// When a share made at `now` (Unix seconds) expires.
    pub fn at(self, now: u64) -> Option<u64> {
        let hours = match self {
            Self::Hour => 1,
            Self::Day => 24,
            Self::Week => 24 * 7,
            Self::Month => 24 * 30,
            Self::Never => return None,
        };
        Some(now + hours * 3600)
    }
}

/// A point in time, both ways the rules need it: wall-clock seconds for expiry (which must
/// hold across restarts) and a monotonic instant for the rate window.
#[derive(Clone, Copy, Debug)]
pub struct Moment {
    pub unix: u64,
    pub mono: Instant,
}

impl Moment {
    pub fn now() -> Self {
        Self {
            unix: crate::store::unix_now(),
            mono: Instant::now(),
        }
    }
}

/// Why a share turned a request or a connection away.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this share was revoked by its owner")]
    Revoked,
    #[error("this share expired")]
    Expired,
    #[error("this share allows only {allowed}")]
    Method { allowed: String },
    #[error("this share allows {limit} requests a minute; try again in {retry_after} s")]
    RateLimited { limit: u32, retry_after: u64 },
}

impl Refusal {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Revoked | Self::Expired => 410,
            Self::Method { .. } => 405,
            Self::RateLimited { .. } => 429,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Method { .. } => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

/// One share, live in the hub.
pub struct Share {
    pub record: ShareRecord,
    /// Unix seconds of revocation; 0 while it stands.
    revoked: AtomicU64,
    /// When the requests (or connections) of the last minute came, oldest first; never
    /// longer than the limit.
    window: Mutex<VecDeque<Instant>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Share {
    pub fn new(record: ShareRecord) -> Self {
        Self {
            revoked: AtomicU64::new(record.revoked.unwrap_or(0)),
            record,
            window: Mutex::default(),
        }
    }

    pub fn revoked_at(&self) -> Option<u64> {
        Some(self.revoked.load(Ordering::Relaxed)).filter(|at| *at != 0)
    }

    /// Whether the share can still be used at all (neither revoked nor expired).
    pub fn standing(&self, now: u64) -> Result<(), Refusal> {
        if self.revoked_at().is_some() {
            return Err(Refusal::Revoked);
        }
        if self.record.expires.is_some_and(|at| now >= at) {
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    /// Whether the share limits HTTP methods (it can then only be used where the hub reads
    /// the requests, not with `reach`).
    pub fn limits_methods(&self) -> bool {
        self.record.methods.is_some()
    }

    /// Admits one request (`method`) or one connection (`None`) at `now`, counting it
    /// against the rate limit if it is admitted. A request refused for its method does not
    /// count.
    pub fn admit(&self, now: Moment, method: Option<&str>) -> Result<(), Refusal> {
        self.standing(now.unix)?;
        if let (Some(allowed), Some(method)) = (&self.record.methods, method) {
            if !allowed.iter().any(|m| m == method) {
                return Err(Refusal::Method {
                    allowed: allowed.join(", "),
                });
            }
        }
        let Some(limit) = self.record.rate_per_min else {
            return Ok(());
        };
        let mut window = self.window.lock().expect("share window lock");
        while window
            .front()
            .is_some_and(|at| now.mono.saturating_duration_since(*at) >= RATE_WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            let oldest = window.front().copied().unwrap_or(now.mono);
            let free_at = oldest + RATE_WINDOW;
            let wait = free_at.saturating_duration_since(now.mono);
            // Rounded up, so a client that waits as told is admitted.
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Refusal::RateLimited {
                limit,
                retry_after: retry_after.max(1),
            });
        }
        window.push_back(now.mono);
        Ok(())
    }

    /// Marks the share revoked at `now`; false if it already was.
    pub fn revoke(&self, now: u64) -> bool {
        self.revoked
            .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Every share the hub knows, revoked and expired ones included (they answer 410, not 404).
#[derive(Default)]
pub struct ShareBook {
    by_digest: Mutex<HashMap<TokenDigest, Arc<Share>>>,
}

impl ShareBook {
    pub fn insert(&self, share: Arc<Share>) {
        let mut shares = self.by_digest.lock().expect("share book lock");
        shares.insert(share.record.digest, share);
    }

    /// The share a token opens.
    pub fn find(&self, token: &ShareToken) -> Option<Arc<Share>> {
        let shares = self.by_digest.lock().expect("share book lock");
        shares.get(&token.digest()).cloned()
    }

    /// The share a host names (`<token>.<domain>`).
    pub fn find_by_host(&self, host: &str, domain: &str) -> Option<Arc<Share>> {
        let label = host.strip_suffix(domain)?.strip_suffix('.')?;
        self.find(&ShareToken::from_label(label)?)
    }

    /// `owner`'s share `id`.
    pub fn by_id(&self, owner: &UserName, id: &str) -> Option<Arc<Share>> {
        let shares = self.by_digest.lock().expect("share book lock");
        shares
            .values()
            .find(|s| s.record.id == id && &s.record.owner == owner)
            .cloned()
    }

    /// The shares of a tunnel, oldest first.
    pub fn of_tunnel(&self, tunnel: TunnelId) -> Vec<Arc<Share>> {
        let shares = self.by_digest.lock().expect("share book lock");
        let mut found: Vec<Arc<Share>> = shares.values().filter(|s| s.record.tunnel == tunnel).cloned().collect();
        found.sort_by(|a, b| (a.record.created, &a.record.id).cmp(&(b.record.created, &b.record.id)));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(methods: Option<&[&str]>, rate: Option<u32>, expires: Option<u64>) -> ShareRecord {
        ShareRecord {
            id: "0".repeat(32),
            tunnel: TunnelId([7; 16]),
            owner: "alice".parse().unwrap(),
            name: "demo".into(),
            description: None,
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            rate_per_min: rate,
            created: 1_000,
            expires,
            revoked: None,
            digest: ShareToken::generate().digest(),
        }
    }

    fn at(start: Instant, unix: u64, after: Duration) -> Moment {
        Moment {
            unix: unix + after.as_secs(),
            mono: start + after,
        }
    }

    #[test]
    fn methods_outside_the_list_are_refused_and_not_counted() {
        let share = Share::new(record(Some(&["GET", "HEAD"]), Some(1), None));
        let start = Instant::now();
        let refused = share.admit(at(start, 1_000, Duration::ZERO), Some("POST"));
        assert_eq!(refused.unwrap_err().status(), 405);
        assert_eq!(share.admit(at(start, 1_000, Duration::ZERO), Some("GET")), Ok(()));
        // A connection (no method) is never refused for a method.
        let window_full = share.admit(at(start, 1_000, Duration::ZERO), None);
        assert!(matches!(window_full, Err(Refusal::RateLimited { .. })));
    }

    #[test]
    fn the_rate_limit_is_a_sliding_minute_with_retry_after_rounded_up() {
        let share = Share::new(record(None, Some(3), None));
        let start = Instant::now();
        for second in [0, 10, 20] {
            let now = at(start, 1_000, Duration::from_secs(second));
            assert_eq!(share.admit(now, Some("GET")), Ok(()));
        }
        let refused = share.admit(at(start, 1_000, Duration::from_millis(30_500)), Some("GET"));
        assert_eq!(
            refused,
            Err(Refusal::RateLimited {
                limit: 3,
                retry_after: 30
            })
        );
        // The first request leaves the window a minute after it came.
        assert_eq!(
            share.admit(at(start, 1_000, Duration::from_secs(60)), Some("GET")),
            Ok(())
        );
        let refused = share.admit(at(start, 1_000, Duration::from_secs(61)), Some("GET"));
        assert_eq!(
            refused,
            Err(Refusal::RateLimited {
                limit: 3,
                retry_after: 9
            })
        );
    }

    #[test]
    fn an_expired_or_revoked_share_is_gone() {
        let share = Share::new(record(None, None, Expiry::Hour.at(1_000)));
        let start = Instant::now();
        assert_eq!(share.admit(at(start, 1_000, Duration::from_secs(3599)), None), Ok(()));
        let expired = share.admit(at(start, 1_000, Duration::from_secs(3600)), None);
        assert_eq!(expired, Err(Refusal::Expired));
        assert_eq!(expired.unwrap_err().status(), 410);

        let share = Share::new(record(None, None, None));
        assert!(share.revoke(2_000));
        assert!(!share.revoke(2_001), "revoked once");
        assert_eq!(share.revoked_at(), Some(2_000));
        assert_eq!(
            share.admit(at(start, 2_000, Duration::ZERO), Some("GET")),
            Err(Refusal::Revoked)
        );
    }

    #[test]
    fn expiry_names_and_times() {
        assert_eq!(Expiry::parse("1h").unwrap().at(0), Some(3600));
        assert_eq!(Expiry::parse("24h").unwrap().at(0), Some(86_400));
        assert_eq!(Expiry::parse("7d").unwrap().at(0), Some(604_800));
        assert_eq!(Expiry::parse("30d").unwrap().at(0), Some(2_592_000));
        assert_eq!(Expiry::parse("never").unwrap().at(0), None);
        assert_eq!(Expiry::parse("2h"), None);
    }

    #[test]
    fn tokens_are_found_by_host_and_url_and_never_printed() {
        let book = ShareBook::default();
        let token = ShareToken::generate();
        assert_eq!(token.expose().len(), 32);
        let mut shared = record(None, None, None);
        shared.digest = token.digest();
        book.insert(Arc::new(Share::new(shared)));
        let host = format!("{}.hub.example", token.expose());
        assert!(book.find_by_host(&host, "hub.example").is_some());
        assert!(book.find_by_host(&host, "other.example").is_none());
        assert!(book.find_by_host("web.hub.example", "hub.example").is_none());
        let (parsed, hub) = ShareToken::from_url(&format!("tcp://{host}:7443")).unwrap();
        assert_eq!(parsed.digest(), token.digest());
        assert_eq!(hub, "hub.example:7443");
        assert!(ShareToken::from_label(&token.expose().to_uppercase()).is_none());
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
