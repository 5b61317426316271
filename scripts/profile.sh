#!/usr/bin/env bash
# Where a tunnel's CPU goes: perf profile of hub + agent during one bulk iperf3 stream.
# Usage: scripts/profile.sh [TRANSPORT=quic] [SECONDS=8]    (needs perf, iperf3, a release build)
# Prints the top symbols (self time) over both processes, and leaves perf.data in a temp dir.
# PERF_CALLGRAPH="--call-graph dwarf" records call stacks through libc (memmove callers).
# Ports used: 25201 (iperf3), 25443 (hub), 25400-25409 (public ports).
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:-quic}; secs=${2:-8}
bin=$PWD/target/release/burrow
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
iperf3 -s -B 127.0.0.1 -p 25201 >/dev/null 2>&1 & pids+=($!)
"$bin" hub --listen 127.0.0.1:25443 --data-dir "$work/hub" --auth p:p-key --allow-plaintext \
  --port-range 25400-25409 --json --log-level warn > "$work/hub.out" & hub=$!; pids+=($hub)
until grep -q ready "$work/hub.out" 2>/dev/null; do sleep 0.1; done
ca=(); [[ $transport != tcp ]] && ca=(--ca "$work/hub/certs/ca.pem")
"$bin" expose 127.0.0.1:25201 --hub 127.0.0.1:25443 --transport "$transport" "${ca[@]}" -u p -k p-key \
  --public --protocol tcp --hub-port 25400 --json --log-level warn > "$work/agent.out" & agent=$!; pids+=($agent)
until grep -q ready "$work/agent.out" 2>/dev/null; do sleep 0.1; done
iperf3 -c 127.0.0.1 -p 25400 -t $((secs + 3)) > "$work/iperf.txt" &
sleep 1.5  # past iperf3's start-up, into the steady state
perf record -F 999 ${PERF_CALLGRAPH:--g} -o "$work/perf.data" -p "$hub,$agent" -- sleep "$secs" 2> /dev/null
wait %iperf3 2>/dev/null || true
grep -E "sender|receiver" "$work/iperf.txt" || true
perf report -i "$work/perf.data" --no-children --sort comm,dso,symbol --stdio 2>/dev/null \
  | grep -E "^ +[0-9]" | head -30
echo "perf data: $work/perf.data"
