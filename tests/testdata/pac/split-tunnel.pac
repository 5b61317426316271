// A corporate split tunnel: internal names and networks through the tunnel, the CDN direct,
// everything else through the office proxy with a direct fallback.
function FindProxyForURL(url, host) {
  if (isPlainHostName(host) || dnsDomainIs(host, ".corp.example") ||
      localHostOrDomainIs(host, "wiki.corp.example")) {
    return "TUNNEL";
  }
  if (isInNet(host, "10.0.0.0", "255.0.0.0") || isInNet(host, "172.16.0.0", "255.240.0.0")) {
    return "TUNNEL corp";
  }
  if (shExpMatch(host, "*.cdn.example") || shExpMatch(url, "https://static.*")) {
    return "DIRECT";
  }
  if (url.substring(0, 4) == "ftp:") {
    return "SOCKS5 socks.example:1080";
  }
  alert("default route for " + host);
  return "PROXY proxy.example:3128; DIRECT";
}
