#!/usr/bin/env bash
# The local forward proxy against tinyproxy, alternated round by round on the same minute of
# a noisy machine: wrk (absolute-form GETs of a 1 KiB file from nginx, 32 keep-alive
# connections, 5 s) through `burrow reach --http-proxy` with a PAC that answers DIRECT,
# through tinyproxy, and straight to nginx; requests/s and p99 latency of each.
# Usage: scripts/proxy-ab.sh ROUNDS [BURROW]   (default target/release/burrow)
# Needs nginx, wrk and tinyproxy (Debian: nginx-light, wrk, tinyproxy).
# Ports: 15081 (nginx), 27555 (hub), 27556 (burrow's proxy), 27557 (tinyproxy).
set -euo pipefail
rounds=${1:?usage: $0 ROUNDS [BURROW]}
bin=${2:-target/release/burrow}
work=$(mktemp -d /tmp/burrow-proxy-ab.XXXXXX)
mkdir -p "$work/html"; head -c 1024 /dev/zero | tr '\0' x > "$work/html/1k"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:15081; root $work/html; } }
CONF
cat > "$work/tinyproxy.conf" <<CONF
Port 27557
Listen 127.0.0.1
Timeout 60
MaxClients 1024
LogLevel Critical
LogFile "$work/tinyproxy.log"
PidFile "$work/tinyproxy.pid"
Allow 127.0.0.1
DisableViaHeader Yes
CONF
cat > "$work/absolute.lua" <<'LUA'
wrk.path = "http://127.0.0.1:15081/1k"
wrk.headers["Host"] = "127.0.0.1:15081"
LUA
nginx -c "$work/nginx.conf"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [[ -f $work/tinyproxy.pid ]] && kill "$(cat "$work/tinyproxy.pid")" 2>/dev/null || true
  nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT
listening() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
wait_port() { for _ in $(seq 200); do listening "$1" && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

"$bin" hub --listen 127.0.0.1:27555 --data-dir "$work/hub" --auth b:bk --log-level error >/dev/null 2>&1 & pids+=($!)
wait_port 27555
"$bin" expose --forward-proxy --name office --hub 127.0.0.1:27555 --ca "$work/hub/certs/ca.pem" -u b -k bk \
  --log-level error >/dev/null 2>&1 & pids+=($!)
sleep 1
"$bin" reach office --http-proxy 127.0.0.1:27556 --hub 127.0.0.1:27555 --ca "$work/hub/certs/ca.pem" -u b -k bk \
  --pac 'data:,function FindProxyForURL(url, host) { return "DIRECT"; }' --log-level error >/dev/null 2>&1 & pids+=($!)
wait_port 27556
tinyproxy -c "$work/tinyproxy.conf"
wait_port 27557

run() { # label, wrk target; prints "label req/s p99"
  local out; out=$(wrk -t1 -c32 -d5 --latency "${@:2}")
  echo "$1 $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")"
}
echo "round label req/s p99"
for round in $(seq "$rounds"); do
  for proxy in burrow tinyproxy; do
    port=$([[ $proxy == burrow ]] && echo 27556 || echo 27557)
    echo "$round $(run "$proxy" -s "$work/absolute.lua" "http://127.0.0.1:$port")"
  done
  echo "$round $(run direct http://127.0.0.1:15081/1k)"
done
