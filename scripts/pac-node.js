// The same PAC file on node (V8 and its JIT) for comparison with `cargo bench --bench pac`:
// the hot helpers are written in JavaScript here so the JIT can inline them, the best case
// for a JIT engine. Usage: node scripts/pac-node.js PAC URLS INDEX... (INDEX: a line of URLS,
// from 0). Prints microseconds per call and the result.
"use strict";
const fs = require("fs");
const [pacPath, urlsPath, ...picks] = process.argv.slice(2);

globalThis.isPlainHostName = (host) => host.indexOf(".") < 0;
globalThis.dnsDomainIs = (host, domain) =>
  host.length >= domain.length && host.substring(host.length - domain.length) === domain;
// A glob with `*` and `?`, backtracking to the last star.
globalThis.shExpMatch = (text, pattern) => {
  let t = 0, p = 0, star = -1, resume = 0;
  while (t < text.length) {
    const c = pattern.charCodeAt(p);
    if (p < pattern.length && (c === 63 || c === text.charCodeAt(t))) { t++; p++; }
    else if (p < pattern.length && c === 42) { star = p++; resume = t; }
    else if (star >= 0) { p = star + 1; t = ++resume; }
    else return false;
  }
  while (pattern.charCodeAt(p) === 42) p++;
  return p === pattern.length;
};
const address = (dotted) => dotted.split(".").reduce((a, octet) => a * 256 + (octet & 255), 0);
globalThis.isInNet = (host, network, mask) => {
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(host)) return false;
  const m = address(mask);
  return (address(host) & m) === (address(network) & m);
};

(0, eval)(fs.readFileSync(pacPath, "utf8"));
const urls = fs.readFileSync(urlsPath, "utf8").split("\n").filter(Boolean);
for (const pick of picks) {
  const url = urls[Number(pick)];
  const host = new URL(url).hostname;
  let result;
  for (let i = 0; i < 20000; i++) result = FindProxyForURL(url, host);
  const calls = 20000;
  const start = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) result = FindProxyForURL(url, host);
  const micros = Number(process.hrtime.bigint() - start) / calls / 1000;
  console.log(`${url} ${micros.toFixed(3)} us ${result}`);
}
