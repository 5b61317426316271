#!/usr/bin/env bash
# UDP through burrow beside rathole and direct, interleaved in rounds on loopback:
#   rr1   one client, sequential 64-byte request/response (latency-bound: wake-ups per hop)
#   rr16  sixteen such clients at once (CPU-bound: cost per datagram)
#   bulk  one sender blasting 1200-byte datagrams one way; what reaches the target, Mbit/s
# and, for the tunnels, the same per CPU-second the tunnel's processes used (rr16_cpu,
# bulk_cpu: steadier than the rates, which the load generator's own CPU use disturbs).
# Usage: scripts/udp-bench.sh [TRANSPORT] [ROUNDS] [SECS]   (defaults: tcp 3 3)
# Needs: cargo build --release; rathole on PATH for the comparison (skipped if missing).
# Env: BURROW_LANES (agent lanes, default 4); FLOOR=1 adds `floor`, two plain polling UDP
# relays chained (examples/floor.rs, as scripts/floor.sh), for rr1 only: about the best a hub + agent pair
# can do here. Prints medians per tool and ratios to direct.
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:-tcp}; rounds=${2:-3}; secs=${3:-3}
bin=${BURROW_BIN:-$PWD/target/release/burrow}  # BURROW_BIN: measure another build
cargo build --release --quiet --example udpload --example floor
load=$PWD/target/release/examples/udpload
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d /tmp/burrow-udp-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

ECHO=15453 SINK=15454
wait_line() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; exit 1; }

"$load" echo $ECHO & pids+=($!)

tools=(direct)
declare -A rr_addr=([direct]=127.0.0.1:$ECHO) bulk_addr=([direct]=127.0.0.1:$SINK) procs=([direct]="")

if command -v rathole >/dev/null; then
  cat >"$work/rathole-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:22400"
default_token = "bench-token"
[server.services.echo]
type = "udp"
bind_addr = "127.0.0.1:22453"
[server.services.sink]
type = "udp"
bind_addr = "127.0.0.1:22454"
EOF
  cat >"$work/rathole-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:22400"
default_token = "bench-token"
[client.services.echo]
type = "udp"
local_addr = "127.0.0.1:$ECHO"
[client.services.sink]
type = "udp"
local_addr = "127.0.0.1:$SINK"
EOF
  rathole "$work/rathole-server.toml" >"$work/rathole-server.log" 2>&1 & pids+=($!); procs[rathole]=$!
  rathole "$work/rathole-client.toml" >"$work/rathole-client.log" 2>&1 & pids+=($!); procs[rathole]+=" $!"
  wait_line "$work/rathole-client.log" "Control channel established"
  tools+=(rathole); rr_addr[rathole]=127.0.0.1:22453; bulk_addr[rathole]=127.0.0.1:22454
else
  echo "rathole not on PATH: comparing with direct only" >&2
fi

ca=(); [[ $transport != tcp ]] && ca=(--ca "$work/hub/certs/ca.pem")
"$bin" hub --listen 127.0.0.1:27453 --data-dir "$work/hub" --auth bench:bench-key --allow-plaintext \
  --port-range 26400-26499 --log-level warn >"$work/hub.out" 2>"$work/hub.err" & pids+=($!)
procs[burrow-$transport]=$!
wait_line "$work/hub.out" listening
for svc in echo:$ECHO:26453 sink:$SINK:26454; do
  IFS=: read -r name port public <<<"$svc"
  "$bin" expose --hub 127.0.0.1:27453 --transport "$transport" "${ca[@]}" -u bench -k bench-key --public \
    --log-level warn "127.0.0.1:$port" --protocol udp --name "$name" --hub-port "$public" \
    >"$work/expose-$name.out" 2>"$work/expose-$name.err" & pids+=($!); procs[burrow-$transport]+=" $!"
  wait_line "$work/expose-$name.out" ready
done
tools+=("burrow-$transport"); rr_addr[burrow-$transport]=127.0.0.1:26453; bulk_addr[burrow-$transport]=127.0.0.1:26454
if [[ ${FLOOR:-} == 1 ]]; then
  floor=$PWD/target/release/examples/floor
  "$floor" udp 127.0.0.1:26455 127.0.0.1:26456 & pids+=($!)
  "$floor" udp 127.0.0.1:26456 127.0.0.1:$ECHO & pids+=($!)
  tools+=(floor); rr_addr[floor]=127.0.0.1:26455; procs[floor]=""
fi
sleep 1 # let agents dial their lanes

value() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
# measure TOOL METRIC VALUE-KEY CMD...: records the value, and for a tunnel also value per CPU-second.
measure() {
  local tool=$1 metric=$2 key=$3; shift 3
  local t0 t1 v; t0=$(ticks ${procs[$tool]})
  v=$("$@" | value "$key"); t1=$(ticks ${procs[$tool]})
  echo -e "$round\t$tool\t$metric\t$v" >>"$results"
  if [[ -n ${procs[$tool]} && $metric != rr1 ]]; then
    awk -v v="$v" -v s="$secs" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v r="$round" -v tool="$tool" -v m="$metric" \
      'BEGIN{ if (t > 0) printf "%s\t%s\t%s_cpu\t%.1f\n", r, tool, m, v * s / (t / hz) }' >>"$results"
  fi
}
results=$work/results.tsv
for round in $(seq "$rounds"); do
  for tool in "${tools[@]}"; do
    "$load" rr "${rr_addr[$tool]}" 1 1 >/dev/null # warm-up: opens the flow
    measure "$tool" rr1 rate "$load" rr "${rr_addr[$tool]}" 1 "$secs"
    [[ $tool == floor ]] && continue # one client only
    measure "$tool" rr16 rate "$load" rr "${rr_addr[$tool]}" 16 "$secs"
    measure "$tool" bulk mbit_s "$load" bulk "${bulk_addr[$tool]}" $SINK "$secs" 1200
  done
  echo "round $round done" >&2
done

echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) transport=$transport rounds=$rounds secs=$secs lanes=${BURROW_LANES:-4}"
python3 - "$results" <<'EOF'
import sys, statistics as st, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(list)        # (tool, metric) -> values
ratio = collections.defaultdict(list)     # (tool, metric) -> value / direct, per round
direct = {(r, m): float(v) for r, t, m, v in rows if t == "direct"}
for r, t, m, v in rows:
    by[(t, m)].append(float(v))
    if direct.get((r, m)):
        ratio[(t, m)].append(float(v) / direct[(r, m)])
units = {"rr1": "req/s", "rr16": "req/s", "bulk": "Mbit/s", "rr16_cpu": "req/cpu-s", "bulk_cpu": "Mbit/cpu-s"}
tools = list(dict.fromkeys(t for _, t, _, _ in rows))
print(f"{'tool':<12} {'metric':<8} {'median':>10} {'unit':<10} {'vs direct':>9}   per round")
for t in tools:
    for m in units:
        vals = by[(t, m)]
        if not vals:
            continue
        vs = f"{st.median(ratio[(t, m)]):>9.2f}" if ratio[(t, m)] else f"{'-':>9}"
        print(f"{t:<12} {m:<8} {st.median(vals):>10.0f} {units[m]:<10} {vs}   " + " ".join(f"{v:.0f}" for v in vals))
if "rathole" in tools:
    b = [t for t in tools if t.startswith("burrow")][0]
    if "floor" in tools:
        for name in ("rathole", b):
            per_round = [x / y for x, y in zip(by[(name, "rr1")], by[("floor", "rr1")]) if y]
            print(f"{name} / floor rr1: median {st.median(per_round):.2f}")
    for m in units:
        if not by[(b, m)] or not by[("rathole", m)]:
            continue
        per_round = [x / y for x, y in zip(by[(b, m)], by[("rathole", m)]) if y]
        print(f"{b} / rathole {m}: median {st.median(per_round):.2f} (rounds: "
              + " ".join(f"{x:.2f}" for x in per_round) + ")")
EOF
