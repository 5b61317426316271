//! Where a proxied request goes: the domain lists, then the PAC, then the role's default, as
//! a pure function from the request's URL and host to an ordered list of routes; and the
//! window in which a route that failed to connect is skipped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use regex::{Regex, RegexSet};

use crate::pac::result::{self, Route};

/// Host patterns, each a regular expression matched against the whole host.
#[derive(Clone, Debug, Default)]
pub struct DomainList(Option<RegexSet>);

impl DomainList {
    /// Compiles `patterns` (anchored at both ends, case-insensitive as host names are).
    pub fn new(patterns: &[String]) -> Result<Self, regex::Error> {
        if patterns.is_empty() {
            return Ok(Self(None));
        }
        // Each pattern compiles alone first, so an error names it.
        for pattern in patterns {
            Regex::new(pattern)?;
        }
        let anchored = patterns.iter().map(|p| format!("(?i)^(?:{p})$"));
        RegexSet::new(anchored).map(|set| Self(Some(set)))
    }

    pub fn matches(&self, host: &str) -> bool {
        self.0.as_ref().is_some_and(|set| set.is_match(host))
    }
}

/// The domain lists of a forward proxy; `tunnel` only means something on `reach`.
#[derive(Clone, Debug, Default)]
pub struct DomainLists {
    pub deny: DomainList,
    pub direct: DomainList,
    pub tunnel: DomainList,
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Refuse it (403): the host is on `--deny-domains`.
    Deny,
    /// Try these routes in order.
    Routes(Vec<Route>),
    /// The PAC failed for this request (threw, timed out, returned garbage): 502 naming why.
    PacFailed(String),
}

/// Decides where the request for `host` goes. The lists come first (deny, then direct, then
/// tunnel); then the PAC's result, if `pac` is given, asked only when the lists say
/// nothing; else `default`.
pub fn decide(
    lists: &DomainLists,
    host: &str,
    pac: Option<&dyn Fn() -> Result<String, String>>,
    default: &[Route],
) -> Decision {
    by_lists(lists, host).unwrap_or_else(|| match pac {
        Some(pac) => from_pac(pac()),
        None => Decision::Routes(default.to_vec()),
    })
}

/// What the domain lists say of `host`, if any of them names it.
pub fn by_lists(lists: &DomainLists, host: &str) -> Option<Decision> {
    if lists.deny.matches(host) {
        Some(Decision::Deny)
    } else if lists.direct.matches(host) {
        Some(Decision::Routes(vec![Route::Direct]))
    } else if lists.tunnel.matches(host) {
        Some(Decision::Routes(vec![Route::Tunnel(None)]))
    } else {
        None
    }
}

/// The routes of a PAC's answer, or why there are none.
pub fn from_pac(answer: Result<String, String>) -> Decision {
    match answer.and_then(|answer| result::parse(&answer).map_err(|e| e.to_string())) {
        Ok(routes) => Decision::Routes(routes),
        Err(why) => Decision::PacFailed(why),
    }
}

/// The URL a PAC sees for a request: the URL as the client sent it with the host
/// lower-cased, and for CONNECT `https://HOST/` (with `:PORT` unless it is 443).
pub fn pac_url(connect: bool, authority: &str, url: &str) -> String {
    if connect {
        let (host, port) = split_authority(authority);
        let host = host.to_ascii_lowercase();
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        return match port {
            Some(443) | None => format!("https://{host}/"),
            Some(port) => format!("https://{host}:{port}/"),
        };
    }
    // Lower-case the host part only: paths and queries keep their case.
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    format!("{scheme}://{}{}", rest[..end].to_ascii_lowercase(), &rest[end..])
}

/// `HOST[:PORT]` (IPv6 in brackets) as the host without brackets and the port.
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').unwrap_or((v6, ""));
        return (host, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

/// Routes that failed to connect, skipped until their window (`--pac-retry`) has passed.
pub struct RetryWindow {
    window: Duration,
    failed: Mutex<HashMap<Route, Instant>>,
}

impl RetryWindow {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            failed: Mutex::default(),
        }
    }

    /// `routes` in the order to try them: those not in their window first, then, so that a
    /// request is never refused without an attempt, the ones that are.
    pub fn order(&self, routes: Vec<Route>) -> Vec<Route> {
        let now = Instant::now();
        let mut failed = self.failed.lock().expect("retry lock");
        failed.retain(|_, until| *until > now);
        let (skipped, fresh): (Vec<Route>, Vec<Route>) = routes.into_iter().partition(|r| failed.contains_key(r));
        fresh.into_iter().chain(skipped).collect()
    }

    pub fn failed(&self, route: &Route) {
        let until = Instant::now() + self.window;
        self.failed.lock().expect("retry lock").insert(route.clone(), until);
    }

    pub fn succeeded(&self, route: &Route) {
        self.failed.lock().expect("retry lock").remove(route);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(deny: &[&str], direct: &[&str], tunnel: &[&str]) -> DomainLists {
        let list = |p: &[&str]| DomainList::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        DomainLists {
            deny: list(deny),
            direct: list(direct),
            tunnel: list(tunnel),
        }
    }

    #[test]
    fn lists_come_before_the_pac_and_are_anchored() {
        let lists = lists(&[r".*\.ads\.example"], &[r"cdn\.example", r".*\.local"], &[r"intranet"]);
        let pac = || Ok::<_, String>("PROXY up:3128".to_string());
        let pac: &dyn Fn() -> Result<String, String> = &pac;
        let tunnel = [Route::Tunnel(None)];
        assert_eq!(decide(&lists, "x.ads.example", Some(pac), &tunnel), Decision::Deny);
        assert_eq!(decide(&lists, "X.ADS.example", Some(pac), &tunnel), Decision::Deny);
        assert_eq!(
            decide(&lists, "cdn.example", Some(pac), &tunnel),
            Decision::Routes(vec![Route::Direct])
        );
        // Anchored: a longer name is not on the list.
        assert_eq!(
            decide(&lists, "cdn.example.com", Some(pac), &tunnel),
            Decision::Routes(vec![Route::Http("up:3128".into())])
        );
        assert_eq!(
            decide(&lists, "intranet", Some(pac), &tunnel),
            Decision::Routes(vec![Route::Tunnel(None)])
        );
        assert_eq!(
            decide(&lists, "other", None, &tunnel),
            Decision::Routes(tunnel.to_vec())
        );
    }

    #[test]
    fn a_failing_pac_fails_that_request_only() {
        let lists = DomainLists::default();
        let threw: &dyn Fn() -> Result<String, String> = &|| Err("FindProxyForURL threw: x".to_string());
        assert!(matches!(decide(&lists, "h", Some(threw), &[]), Decision::PacFailed(m) if m.contains("threw")));
        let garbage: &dyn Fn() -> Result<String, String> = &|| Ok("FTP x:1".to_string());
        assert!(matches!(decide(&lists, "h", Some(garbage), &[]), Decision::PacFailed(m) if m.contains("FTP")));
        let empty: &dyn Fn() -> Result<String, String> = &|| Ok(String::new());
        assert_eq!(
            decide(&lists, "h", Some(empty), &[]),
            Decision::Routes(vec![Route::Direct])
        );
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        assert!(DomainList::new(&["(unclosed".to_string()]).is_err());
    }

    #[test]
    fn pac_urls_are_what_browsers_pass() {
        assert_eq!(pac_url(true, "Example.com:443", ""), "https://example.com/");
        assert_eq!(pac_url(true, "example.com:8443", ""), "https://example.com:8443/");
        assert_eq!(pac_url(true, "[::1]:443", ""), "https://[::1]/");
        assert_eq!(
            pac_url(false, "", "http://WWW.Example.com:8080/A?B"),
            "http://www.example.com:8080/A?B"
        );
        assert_eq!(split_authority("[2001:db8::1]:80"), ("2001:db8::1", Some(80)));
        assert_eq!(split_authority("host"), ("host", None));
    }

    #[test]
    fn failed_routes_wait_out_their_window_but_are_tried_last() {
        let window = RetryWindow::new(Duration::from_secs(60));
        let (a, b) = (Route::Http("a:1".into()), Route::Direct);
        window.failed(&a);
        assert_eq!(window.order(vec![a.clone(), b.clone()]), vec![b.clone(), a.clone()]);
        window.succeeded(&a);
        assert_eq!(window.order(vec![a.clone(), b.clone()]), vec![a.clone(), b.clone()]);
        let short = RetryWindow::new(Duration::ZERO);
        short.failed(&a);
        assert_eq!(short.order(vec![a.clone(), b.clone()]), vec![a, b]);
    }
}
