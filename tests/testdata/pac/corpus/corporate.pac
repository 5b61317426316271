// A corporate split tunnel: plain and internal names through the tunnel, private networks
// (literal addresses only: nothing here resolves names) through the tunnel, partner sites
// through the partner proxy, the rest through the office proxies with a direct fallback.
function FindProxyForURL(url, host) {
  var literal = /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host);
  if (isPlainHostName(host) || host == "localhost") {
    return "DIRECT";
  }
  if (dnsDomainIs(host, ".corp.example") || localHostOrDomainIs(host, "wiki.corp.example")) {
    return "TUNNEL";
  }
  if (literal && (isInNet(host, "10.0.0.0", "255.0.0.0") ||
                  isInNet(host, "172.16.0.0", "255.240.0.0") ||
                  isInNet(host, "192.168.0.0", "255.255.0.0"))) {
    return "TUNNEL corp";
  }
  if (shExpMatch(host, "*.partner?.example") || shExpMatch(url, "*://partners.example/*")) {
    return "PROXY partner-proxy.example:8080";
  }
  if (dnsDomainLevels(host) > 3) {
    return "PROXY deep.example:3128; DIRECT";
  }
  if (url.substring(0, 5) == "http:" && shExpMatch(url, "*/downloads/*")) {
    return "SOCKS5 socks.example:1080";
  }
  if (isInNet(myIpAddress(), "10.1.0.0", "255.255.0.0")) {
    return "PROXY office-a.example:3128; PROXY office-b.example:3128; DIRECT";
  }
  return "PROXY remote.example:3128; DIRECT";
}
