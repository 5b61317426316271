#!/usr/bin/env bash
# Memory and latency footprint of a hub + one expose agent on loopback (release build):
#   - added latency: sequential 64-byte round trips on one connection, direct vs through the tunnel
#   - memory per idle connection: hub + agent RSS with N connections held open (default 10000)
#   - memory per idle tunnel: hub RSS growth while K more agents (default 100) each hold a tunnel
# Usage: scripts/footprint.sh [TRANSPORT=tcp] [CONNS=10000] [TUNNELS=100]
# Ports used: 25007 (echo), 25443 (hub), 25100-25399 (public ports).
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:-tcp}; conns=${2:-10000}; tunnels=${3:-100}
bin=${BURROW_BIN:-$PWD/target/release/burrow}  # BURROW_BIN: measure another build
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"  # every process here holds at most CONNS + a few descriptors
work=$(mktemp -d); pids=()
cleanup() {  # agents are started inside $(...), so their pids are only in files
  kill "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
py=scripts/footprint.py

python3 $py echo 25007 & pids+=($!)
"$bin" hub --listen 127.0.0.1:25443 --data-dir "$work/hub" --auth fp:fp-key --allow-plaintext \
  --port-range 25100-25399 --json --log-level warn > "$work/hub.out" & hub=$!; pids+=($hub)
until grep -q ready "$work/hub.out" 2>/dev/null; do sleep 0.1; done
ca=(); [[ $transport != tcp ]] && ca=(--ca "$work/hub/certs/ca.pem")
expose() {  # NAME TARGET [extra...] ; prints the public address
  local name=$1 target=$2; shift 2
  "$bin" expose "$target" --hub 127.0.0.1:25443 --transport "$transport" "${ca[@]}" -u fp -k fp-key \
    --public --protocol tcp --name "$name" --json --log-level warn "$@" > "$work/$name.out" &
  echo $! > "$work/$name.pid"
  until grep -q ready "$work/$name.out" 2>/dev/null; do sleep 0.05; done
  sed -E 's/.*"public_address":"([^"]+)".*/\1/' "$work/$name.out"
}
public=$(expose echo 127.0.0.1:25007)
agent=$(cat "$work/echo.pid")
python3 $py hold "$public" 10 <<< "" >/dev/null   # warm up: lanes dialed, code paths faulted in

echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) transport=$transport"
direct=$(python3 $py rr 127.0.0.1:25007 20000)
tunnel=$(python3 $py rr "$public" 20000)
echo "latency direct: $direct"
echo "latency tunnel: $tunnel"
p99() { sed -E 's/.*p99_us=([0-9.]+).*/\1/' <<< "$1"; }
awk -v d="$(p99 "$direct")" -v t="$(p99 "$tunnel")" 'BEGIN {printf "added p99: %.1f us\n", t - d}'

hub_before=$(rss $hub)
for i in $(seq 1 "$tunnels"); do expose "t$i" 127.0.0.1:25007 --lanes 0 > /dev/null; done
hub_after=$(rss $hub)
awk -v b="$hub_before" -v a="$hub_after" -v n="$tunnels" \
  'BEGIN {printf "hub RSS: %d kB -> %d kB with %d more agents, one tunnel each: %.1f kB per tunnel (and its agent connection)\n", b, a, n, (a - b) / n}'

before=$(( $(rss $hub) + $(rss $agent) ))
exec 3> >(python3 $py hold "$public" "$conns" > "$work/hold.out")
until grep -q held "$work/hold.out" 2>/dev/null; do sleep 0.2; done
after=$(( $(rss $hub) + $(rss $agent) ))
echo "hub+agent RSS: ${before} kB idle, ${after} kB with $(cat "$work/hold.out")"
awk -v b="$before" -v a="$after" -v n="$conns" 'BEGIN {printf "per idle connection: %.2f kB\n", (a - b) / n}'
exec 3>&-
