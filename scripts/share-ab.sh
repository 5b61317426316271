#!/usr/bin/env bash
# What a share costs per request: wrk (GETs of a 1 KiB file from nginx, 32 keep-alive
# connections, 5 s) to the hub's main port by the tunnel's public name (`Host: web.<domain>`,
# relayed as bytes) and by a share's name (`Host: <token>.<domain>`, every request read and
# checked), alternated round by round on the same minute of a noisy machine, and straight
# to nginx. The share has no rate limit (so none refuses) and allows GET only. Each row also
# gives the CPU time the hub and the agent spent per request (µs, from /proc/PID/stat).
# Usage: scripts/share-ab.sh ROUNDS [BURROW]   (default target/release/burrow)
# Needs nginx, wrk and curl (Debian: nginx-light, wrk, curl).
# Ports: 15082 (nginx), 27565 (hub), 27566 (hub's API).
set -euo pipefail
rounds=${1:?usage: $0 ROUNDS [BURROW]}
bin=${2:-target/release/burrow}
work=$(mktemp -d /tmp/burrow-share-ab.XXXXXX)
mkdir -p "$work/html"; head -c 1024 /dev/zero | tr '\0' x > "$work/html/1k"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:15082; root $work/html; } }
CONF
nginx -c "$work/nginx.conf"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT
listening() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
wait_port() { for _ in $(seq 200); do listening "$1" && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

"$bin" hub --listen 127.0.0.1:27565 --api-address 127.0.0.1:27566 --data-dir "$work/hub" --auth b:bk \
  --port-range 27570-27579 --log-level error >/dev/null 2>&1 & pids+=($!); hub_pid=$!
wait_port 27565
"$bin" expose 127.0.0.1:15082 --name web --public --protocol http --hub 127.0.0.1:27565 \
  --ca "$work/hub/certs/ca.pem" -u b -k bk --json --log-level error >"$work/expose.json" 2>/dev/null & pids+=($!); agent_pid=$!
for _ in $(seq 200); do [[ -s $work/expose.json ]] && break; sleep 0.05; done
tunnel=$(sed -n 's/.*"tunnel_id":"\([0-9a-f]*\)".*/\1/p' "$work/expose.json")
share=$(curl -sS -u b:bk -H 'Content-Type: application/json' \
  -d '{"name":"bench","expiresIn":"1h","allowedMethods":["GET"]}' \
  "http://127.0.0.1:27566/api/v1/tunnels/$tunnel/shares")
host=$(sed -n 's|.*"shareUrl":"http://\([^"/]*\)".*|\1|p' <<<"$share")
[[ -n $host ]] || { echo "no share: $share" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_request() { # CPU ticks spent since $2, as µs per request of $3
  echo $(( ($(ticks "$1") - $2) * 1000000 / $(getconf CLK_TCK) / $3 ))
}
run() { # label, wrk args; prints "label req/s p99 hub-µs/req agent-µs/req"
  local hub0 agent0 out requests
  hub0=$(ticks "$hub_pid"); agent0=$(ticks "$agent_pid")
  out=$(wrk -t1 -c32 -d5 --latency "${@:2}")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$1 $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")" \
    "$(per_request "$hub_pid" "$hub0" "$requests") $(per_request "$agent_pid" "$agent0" "$requests")"
}
echo "round label req/s p99 hub-us/req agent-us/req"
for round in $(seq "$rounds"); do
  echo "$round $(run by-name -H 'Host: web.localhost:27565' http://127.0.0.1:27565/1k)"
  echo "$round $(run share -H "Host: $host" http://127.0.0.1:27565/1k)"
  echo "$round $(run direct http://127.0.0.1:15082/1k)"
done
