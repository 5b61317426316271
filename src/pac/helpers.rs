//! The standard PAC helpers as plain Rust functions over strings, as Netscape defined them
//! and browsers and pacparser implement them; `engine.rs` exposes them to scripts. Name
//! resolution goes through [`Resolver`], so tests and the sandbox decide what DNS is.

use std::net::{IpAddr, Ipv4Addr};

/// Name resolution for `dnsResolve`, `isResolvable`, `isInNet` and their `Ex` variants.
pub trait Resolver {
    /// Every address of `host`, IPv4 and IPv6 (empty when it does not resolve).
    fn resolve(&self, host: &str) -> Vec<IpAddr>;
}

/// `isPlainHostName(host)`: no dot in it.
pub fn is_plain_host_name(host: &str) -> bool {
    !host.contains('.')
}

/// `dnsDomainIs(host, domain)`: `host` ends with `domain`, as a case-sensitive string, as
/// the reference implementations compare it (hosts reach scripts lower-cased).
pub fn dns_domain_is(host: &str, domain: &str) -> bool {
    host.ends_with(domain)
}

/// `localHostOrDomainIs(host, hostdom)`: the exact name, or `hostdom` starting with `host`
/// and a dot (the reference implementations do not check that `host` has no domain).
pub fn local_host_or_domain_is(host: &str, hostdom: &str) -> bool {
    host == hostdom
        || (hostdom.len() > host.len() && hostdom.starts_with(host) && hostdom.as_bytes()[host.len()] == b'.')
}

/// `dnsDomainLevels(host)`: the number of dots.
pub fn dns_domain_levels(host: &str) -> usize {
    host.matches('.').count()
}

/// `shExpMatch(str, shexp)`: a shell glob, `*` any run, `?` one character, anchored at both
/// ends. The reference implementations turn the pattern into a regular expression (dots
/// escaped, `*` → `.*`, `?` → `.`), so other regular-expression characters keep their
/// meaning there: a pattern with any of them is matched the same way (compiled once per
/// thread, linear-time); one that is not a valid expression matches nothing.
pub fn sh_exp_match(text: &str, pattern: &str) -> bool {
    const REGEX_ONLY: &[char] = &['\\', '^', '$', '|', '+', '(', ')', '[', ']', '{', '}'];
    if pattern.contains(REGEX_ONLY) {
        return sh_exp_regex_match(text, pattern);
    }
    glob_match(text, pattern)
}

fn sh_exp_regex_match(text: &str, pattern: &str) -> bool {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static COMPILED: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::default();
    }
    COMPILED.with(|compiled| {
        let mut compiled = compiled.borrow_mut();
        if compiled.len() >= 1024 {
            compiled.clear();
        }
        compiled
            .entry(pattern.to_string())
            .or_insert_with(|| {
                let translated = pattern.replace('.', "\\.").replace('*', ".*").replace('?', ".");
                regex::Regex::new(&format!("^{translated}$")).ok()
            })
            .as_ref()
            .is_some_and(|re| re.is_match(text))
    })
}

/// A glob of `*` and `?` with every other character literal: over bytes when both are
/// ASCII (host names and URLs are), else over characters, so that `?` is one character.
fn glob_match(text: &str, pattern: &str) -> bool {
    if text.is_ascii() && pattern.is_ascii() {
        return glob(text.as_bytes(), pattern.as_bytes(), b'*', b'?');
    }
    let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
    glob(&t, &p, '*', '?')
}

fn glob<T: PartialEq>(t: &[T], p: &[T], any_run: T, any_one: T) -> bool {
    // Iterative matching with one backtrack point: linear in practice, no recursion.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any_one || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == any_run {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == any_run)
}

/// `isInNet(host, pattern, mask)`: the host's IPv4 address (itself when it is one, else its
/// first IPv4 by DNS) masked equals the pattern masked. A malformed pattern or mask is
/// false, as are names that do not resolve.
pub fn is_in_net(resolver: &dyn Resolver, host: &str, pattern: &str, mask: &str) -> bool {
    let (Ok(pattern), Ok(mask)) = (pattern.parse::<Ipv4Addr>(), mask.parse::<Ipv4Addr>()) else {
        return false;
    };
    let address = match host.parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip),
        Err(_) => first_v4(resolver, host),
    };
    address.is_some_and(|ip| u32::from(ip) & u32::from(mask) == u32::from(pattern) & u32::from(mask))
}

/// `isInNetEx(host, prefix)`: the host's address (any family) in the CIDR `prefix`.
pub fn is_in_net_ex(resolver: &dyn Resolver, host: &str, prefix: &str) -> bool {
    let Ok(block) = prefix.parse::<crate::types::Cidr>() else {
        return false;
    };
    if !prefix.contains('/') {
        return false;
    }
    let addresses = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver.resolve(host),
    };
    addresses.into_iter().any(|ip| block.contains(ip))
}

/// `dnsResolve(host)`: its first IPv4 address, or `None` (JavaScript `null`).
pub fn dns_resolve(resolver: &dyn Resolver, host: &str) -> Option<String> {
    match host.parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => first_v4(resolver, host).map(|ip| ip.to_string()),
    }
}

/// `dnsResolveEx(host)`: every address, `;`-separated (empty when none).
pub fn dns_resolve_ex(resolver: &dyn Resolver, host: &str) -> String {
    let addresses = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver.resolve(host),
    };
    addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(";")
}

fn first_v4(resolver: &dyn Resolver, host: &str) -> Option<Ipv4Addr> {
    resolver.resolve(host).into_iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })
}

/// `sortIpAddressList(list)`: `;`-separated addresses sorted, IPv6 before IPv4 as RFC 3484
/// orders them for Chrome's implementation, each family in numeric order, stable, each
/// address kept as written; blanks around entries and empty entries are ignored. `None`
/// (false) if any entry is not an address or there is none.
pub fn sort_ip_address_list(list: &str) -> Option<String> {
    let mut addresses: Vec<(IpAddr, &str)> = list
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().ok().map(|ip| (ip, a)))
        .collect::<Option<Vec<_>>>()?;
    if addresses.is_empty() {
        return None;
    }
    addresses.sort_by_key(|(ip, _)| match ip {
        IpAddr::V6(v6) => (0u8, u128::from(*v6)),
        IpAddr::V4(v4) => (1u8, u128::from(u32::from(*v4))),
    });
    Some(addresses.iter().map(|(_, text)| *text).collect::<Vec<_>>().join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed resolver, as the helper vectors of Chromium's tests use.
    struct Table;

    impl Resolver for Table {
        fn resolve(&self, host: &str) -> Vec<IpAddr> {
            match host {
                "www.example.com" => vec![
                    "93.184.216.34".parse().unwrap(),
                    "2606:2800:220:1::248".parse().unwrap(),
                ],
                "intranet.corp" => vec!["10.1.2.3".parse().unwrap()],
                "v6only.example" => vec!["2001:db8::5".parse().unwrap()],
                _ => Vec::new(),
            }
        }
    }

    #[test]
    fn host_name_helpers_follow_the_netscape_definitions() {
        assert!(is_plain_host_name("www"));
        assert!(!is_plain_host_name("www.netscape.com"));
        assert!(dns_domain_is("www.netscape.com", ".netscape.com"));
        assert!(
            !dns_domain_is("www.netscape.com", ".NETSCAPE.com"),
            "case-sensitive, as pacparser"
        );
        assert!(local_host_or_domain_is("www.corp", "www.corp.example"), "as pacparser");
        assert!(!local_host_or_domain_is("WWW", "www.netscape.com"));
        assert!(!dns_domain_is("www", ".netscape.com"));
        assert!(!dns_domain_is("www.mcom.com", ".netscape.com"));
        assert!(local_host_or_domain_is("www.netscape.com", "www.netscape.com"));
        assert!(local_host_or_domain_is("www", "www.netscape.com"));
        assert!(!local_host_or_domain_is("www.mcom.com", "www.netscape.com"));
        assert!(!local_host_or_domain_is("home.netscape.com", "www.netscape.com"));
        assert_eq!(dns_domain_levels("www"), 0);
        assert_eq!(dns_domain_levels("www.netscape.com"), 2);
    }

    #[test]
    fn shell_expressions_match_whole_strings() {
        assert!(sh_exp_match(
            "http://home.netscape.com/people/ari/index.html",
            "*/ari/*"
        ));
        assert!(!sh_exp_match(
            "http://home.netscape.com/people/montulli/index.html",
            "*/ari/*"
        ));
        assert!(sh_exp_match("foo.bar", "foo.*"));
        assert!(!sh_exp_match("fooXbar", "foo.*"), "a dot is a dot, not a regex");
        assert!(sh_exp_match("abc", "a?c"));
        assert!(!sh_exp_match("abbc", "a?c"));
        assert!(sh_exp_match("", "*"));
        assert!(sh_exp_match("a.b.c", "*.*.*"));
        assert!(!sh_exp_match("ab", "a"));
        assert!(sh_exp_match("café.example", "caf?.example"), "? is one character");
        // Regular-expression characters mean what they mean to pacparser and Chromium.
        assert!(sh_exp_match("www.partner7.example", "*.partner[0-9].example"));
        assert!(!sh_exp_match("www.partnerX.example", "*.partner[0-9].example"));
        assert!(sh_exp_match("b.example", "(a|b).example"));
        assert!(!sh_exp_match("anything", "*(unclosed"));
        // Many stars on a long miss stay fast (no exponential backtracking).
        let long = "a".repeat(10_000);
        assert!(!sh_exp_match(&long, &format!("{}b", "*a".repeat(50))));
    }

    #[test]
    fn network_helpers_resolve_through_the_resolver() {
        assert!(is_in_net(&Table, "198.95.249.79", "198.95.249.79", "255.255.255.255"));
        assert!(is_in_net(&Table, "198.95.6.8", "198.95.0.0", "255.255.0.0"));
        assert!(is_in_net(&Table, "intranet.corp", "10.0.0.0", "255.0.0.0"));
        assert!(!is_in_net(&Table, "nowhere.invalid", "0.0.0.0", "0.0.0.0"));
        assert!(!is_in_net(&Table, "10.1.1.1", "10.0.0.0", "not-a-mask"));
        assert!(is_in_net_ex(&Table, "v6only.example", "2001:db8::/32"));
        assert!(is_in_net_ex(&Table, "10.1.1.1", "10.0.0.0/8"));
        assert!(
            !is_in_net_ex(&Table, "10.1.1.1", "10.0.0.0"),
            "a prefix needs its length"
        );
        assert_eq!(dns_resolve(&Table, "www.example.com").as_deref(), Some("93.184.216.34"));
        assert_eq!(dns_resolve(&Table, "v6only.example"), None);
        assert_eq!(dns_resolve(&Table, "1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(
            dns_resolve_ex(&Table, "www.example.com"),
            "93.184.216.34;2606:2800:220:1::248"
        );
        assert_eq!(dns_resolve_ex(&Table, "nowhere.invalid"), "");
    }

    /// The vectors of Chromium's `pac_library_unittest.js` for the helpers that do not read
    /// the clock (the clock's are in `clock.rs`), where pacparser agrees with them.
    #[test]
    fn chromium_pac_library_vectors() {
        assert!(dns_domain_is("google.com", ".com"));
        assert!(dns_domain_is("google.co.uk", ".co.uk"));
        assert!(!dns_domain_is("google.com", ".co.uk"));
        assert!(!dns_domain_is("www.adobe.com", ".ad"));
        assert_eq!(dns_domain_levels("www"), 0);
        assert_eq!(dns_domain_levels("www.google.com"), 2);
        assert_eq!(dns_domain_levels("192.168.1.1"), 3);
        assert!(is_in_net(&Table, "192.89.132.25", "192.89.132.25", "255.255.255.255"));
        assert!(!is_in_net(&Table, "193.89.132.25", "192.89.132.25", "255.255.255.255"));
        assert!(is_in_net(&Table, "192.89.132.25", "192.89.0.0", "255.255.0.0"));
        assert!(!is_in_net(&Table, "193.89.132.25", "192.89.0.0", "255.255.0.0"));
        assert!(!is_in_net(&Table, "192.89.132.a", "192.89.0.0", "255.255.0.0"));
        assert!(is_plain_host_name("google"));
        assert!(!is_plain_host_name("google.com"));
        assert!(!is_plain_host_name("192.168.1.1"));
        assert!(!is_plain_host_name("."));
        assert!(local_host_or_domain_is("www.google.com", "www.google.com"));
        assert!(local_host_or_domain_is("www", "www.google.com"));
        assert!(!local_host_or_domain_is("maps.google.com", "www.google.com"));
        assert!(sh_exp_match("foo.jpg", "*.jpg"));
        assert!(sh_exp_match("foo5.jpg", "*o?.jpg"));
        assert!(!sh_exp_match("foo.jpg", ".jpg"));
        assert!(!sh_exp_match("foo.jpg", "foo"));

        let sorted = |list: &str| sort_ip_address_list(list);
        assert_eq!(sorted("::2;::3;::1").as_deref(), Some("::1;::2;::3"));
        assert_eq!(
            sorted("157.59.139.22;2001:4898:28:3:201:2ff:feea:fc14;fe80::5efe:157:9d3b:8b16").as_deref(),
            Some("2001:4898:28:3:201:2ff:feea:fc14;fe80::5efe:157:9d3b:8b16;157.59.139.22")
        );
        assert_eq!(sorted("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(sorted("::1").as_deref(), Some("::1"));
        assert_eq!(sorted("192.168.1.1;0:0::1").as_deref(), Some("0:0::1;192.168.1.1"));
        assert_eq!(sorted("::1;192.168.1.3").as_deref(), Some("::1;192.168.1.3"));
        assert_eq!(sorted("0::1;::1;0:0::1").as_deref(), Some("0::1;::1;0:0::1"));
        assert_eq!(sorted(";127.0.0.1;").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            sorted("192.168.0.1; 192.168.0.2").as_deref(),
            Some("192.168.0.1;192.168.0.2")
        );
        assert_eq!(
            sorted("127.0.0.1;\t127.0.0.2;\t 127.0.0.0").as_deref(),
            Some("127.0.0.0;127.0.0.1;127.0.0.2")
        );
        for empty in ["", " ", ";", ";;", " ;  ; "] {
            assert_eq!(sorted(empty), None, "{empty:?}");
        }
        assert_eq!(sorted("256.0.0.1"), None);
        assert_eq!(sorted("192.168.1.1;0:0:0:1;127.0.0.1"), None);

        assert!(is_in_net_ex(&Table, "198.95.249.79", "198.95.249.79/32"));
        assert!(is_in_net_ex(&Table, "198.95.115.10", "198.95.0.0/16"));
        assert!(is_in_net_ex(&Table, "198.95.1.1", "198.95.0.0/16"));
        assert!(is_in_net_ex(&Table, "198.95.1.1", "198.95.3.3/16"));
        assert!(is_in_net_ex(&Table, "0:0:0:0:0:0:7f00:1", "0:0:0:0:0:0:7f00:1/32"));
        assert!(is_in_net_ex(
            &Table,
            "3ffe:8311:ffff:abcd:1234:dead:beef:101",
            "3ffe:8311:ffff::/48"
        ));
        assert!(!is_in_net_ex(&Table, "127.0.0.1", "0:0:0:0:0:0:7f00:1/16"));
        assert!(!is_in_net_ex(&Table, "192.168.24.3", "fe80:0:0:0:0:0:c0a8:1803/32"));
        assert!(!is_in_net_ex(&Table, "198.95.249.78", "198.95.249.79/32"));
        assert!(!is_in_net_ex(&Table, "198.96.115.10", "198.95.0.0/16"));
        assert!(!is_in_net_ex(
            &Table,
            "3fff:8311:ffff:abcd:1234:dead:beef:101",
            "3ffe:8311:ffff::/48"
        ));
        assert!(!is_in_net_ex(&Table, "256.0.0.1", "198.95.249.79"));
        assert!(!is_in_net_ex(&Table, "127.0.0.1 ", "127.0.0.1/32"));
        assert!(!is_in_net_ex(&Table, "198.95.115.10", "198.95.0.0/34"));
        assert!(!is_in_net_ex(&Table, "127.0.0.1", "127.0.0.1"));
    }

    #[test]
    fn address_lists_sort_v6_first_then_numerically() {
        assert_eq!(
            sort_ip_address_list("10.2.3.9;2001:4898:28:3:201:2ff:feea:fc14;::1;127.0.0.1;::9").as_deref(),
            Some("::1;::9;2001:4898:28:3:201:2ff:feea:fc14;10.2.3.9;127.0.0.1")
        );
        assert_eq!(sort_ip_address_list("10.2.3.9;foo"), None);
        assert_eq!(sort_ip_address_list(""), None);
    }
}
