// A dual-stack network: the Ex entry point, IPv6 and IPv4 prefixes for literal hosts, this
// host's addresses, and names that resolve locally only.
function FindProxyForURLEx(url, host) {
  var v6 = host.indexOf(":") >= 0;
  if (v6 && isInNetEx(host, "2001:db8:10::/48")) return "TUNNEL";
  if (v6 && isInNetEx(host, "fd00::/8")) return "TUNNEL corp";
  if (v6 && isInNetEx(host, "::1/128")) return "DIRECT";
  if (!v6 && /^[0-9.]+$/.test(host) && isInNetEx(host, "10.0.0.0/8")) return "TUNNEL v4";
  if (!v6 && /^[0-9.]+$/.test(host) && isInNetEx(host, "198.51.100.0/24")) return "PROXY [2001:db8::3128]:3128";
  if (host == "localhost") return "DIRECT " + isResolvableEx(host) + " " + isResolvable(host);
  if (isInNetEx(myIpAddressEx(), "10.1.0.0/16")) return "PROXY v4-office.example:3128; DIRECT";
  return "PROXY [2001:db8::1]:8080; DIRECT";
}

function FindProxyForURL(url, host) {
  return "PROXY legacy.example:3128";
}
