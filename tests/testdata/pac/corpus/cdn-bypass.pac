// CDN and update hosts go direct (they are large and public); social sites are blocked by
// sending them to a proxy that does not exist; everything else goes through the tunnel.
var DIRECT_SUFFIXES = [".cdn.example", ".akamai.example", ".fastly.example", ".cloudfront.example",
                       ".windowsupdate.example", ".apple-cdn.example", "static.example"];
var BLOCKED = ["*.social.example", "social.example", "*.video.example/live/*"];

function endsWithAny(host, suffixes) {
  for (var i = 0; i < suffixes.length; i++) {
    if (dnsDomainIs(host, suffixes[i])) return true;
  }
  return false;
}

function FindProxyForURL(url, host) {
  host = host.toLowerCase();
  if (endsWithAny(host, DIRECT_SUFFIXES)) return "DIRECT";
  for (var i = 0; i < BLOCKED.length; i++) {
    if (shExpMatch(host, BLOCKED[i]) || shExpMatch(url, "*://" + BLOCKED[i])) {
      return "PROXY 127.0.0.1:9";
    }
  }
  if (/\.(js|css|png|jpg|woff2?)(\?|$)/.test(url)) return "DIRECT; TUNNEL";
  // Exported rule lists carry regular-expression characters into shExpMatch patterns.
  if (shExpMatch(host, "edge[0-9]+.mirror.example")) return "DIRECT";
  if (shExpMatch(host, "(eu|us)-*.region.example")) return "TUNNEL region";
  // Case matters to dnsDomainIs and localHostOrDomainIs, as the hosts arrive lower-cased.
  if (dnsDomainIs(host, ".Mixed.example")) return "PROXY never.example:1";
  if (localHostOrDomainIs(host, "build.ci.example")) return "TUNNEL ci";
  if (url.indexOf("https:") == 0) return "TUNNEL; DIRECT";
  return "TUNNEL";
}
