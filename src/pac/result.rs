//! What `FindProxyForURL` returns, read: a `;`-separated list of routes tried in order.

/// One entry of a PAC result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Direct,
    /// `PROXY host:port` or `HTTP host:port`.
    Http(String),
    Https(String),
    /// `SOCKS host:port` or `SOCKS5 host:port`.
    Socks5(String),
    /// burrow's extension: through a tunnel; `None` is the one `reach` was given.
    Tunnel(Option<String>),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Direct => f.write_str("DIRECT"),
            Route::Http(a) => write!(f, "PROXY {a}"),
            Route::Https(a) => write!(f, "HTTPS {a}"),
            Route::Socks5(a) => write!(f, "SOCKS5 {a}"),
            Route::Tunnel(None) => f.write_str("TUNNEL"),
            Route::Tunnel(Some(name)) => write!(f, "TUNNEL {name}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("PAC result entry {entry:?}: {why}")]
pub struct BadEntry {
    pub entry: String,
    pub why: &'static str,
}

/// Parses a PAC result. Keywords are case-insensitive and surrounded by any whitespace; empty
/// entries are skipped, and a result with none at all means `DIRECT`.
pub fn parse(result: &str) -> Result<Vec<Route>, BadEntry> {
    let mut routes = Vec::new();
    for entry in result.split(';') {
        let mut words = entry.split_whitespace();
        let Some(keyword) = words.next() else { continue };
        let target = words.next();
        if words.next().is_some() {
            return Err(bad(entry, "more than a keyword and an address"));
        }
        let address = |kind: fn(String) -> Route| match target {
            Some(t) if valid_address(t) => Ok(kind(t.to_string())),
            Some(_) => Err(bad(entry, "the address is not HOST:PORT")),
            None => Err(bad(entry, "the address is missing")),
        };
        let route = match keyword.to_ascii_uppercase().as_str() {
            "DIRECT" if target.is_none() => Route::Direct,
            "DIRECT" => return Err(bad(entry, "DIRECT takes no address")),
            "PROXY" | "HTTP" => address(Route::Http)?,
            "HTTPS" => address(Route::Https)?,
            "SOCKS" | "SOCKS5" => address(Route::Socks5)?,
            "TUNNEL" => Route::Tunnel(target.map(str::to_string)),
            _ => return Err(bad(entry, "unknown keyword")),
        };
        routes.push(route);
    }
    if routes.is_empty() {
        routes.push(Route::Direct);
    }
    Ok(routes)
}

fn bad(entry: &str, why: &'static str) -> BadEntry {
    BadEntry {
        entry: entry.trim().to_string(),
        why,
    }
}

fn valid_address(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_in_order_whatever_their_case_and_spacing() {
        assert_eq!(
            parse(" proxy  a.example:3128 ;DIRECT;socks5 s:1080; HTTPS h:443 ;Tunnel; TUNNEL corp").unwrap(),
            vec![
                Route::Http("a.example:3128".into()),
                Route::Direct,
                Route::Socks5("s:1080".into()),
                Route::Https("h:443".into()),
                Route::Tunnel(None),
                Route::Tunnel(Some("corp".into())),
            ]
        );
        assert_eq!(parse("").unwrap(), vec![Route::Direct]);
        assert_eq!(parse(" ; ;").unwrap(), vec![Route::Direct]);
        assert_eq!(parse("SOCKS s:1").unwrap(), vec![Route::Socks5("s:1".into())]);
    }

    #[test]
    fn bad_entries_are_errors_naming_the_entry() {
        for bad in [
            "PROXY",
            "PROXY host",
            "PROXY host:0",
            "PROXY :80",
            "FTP h:21",
            "DIRECT x:1",
            "PROXY a:1 b:2",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.entry, bad.trim(), "{bad}");
        }
    }
}
