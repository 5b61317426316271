#!/usr/bin/env bash
# Where a tunnel's CPU goes: perf profile of hub + agent during one bulk iperf3 stream, or
# during small keep-alive HTTP requests (wrk -t2 -c50 against nginx, as peers.sh does).
# Usage: scripts/profile.sh [TRANSPORT=quic] [SECONDS=8] [WORKLOAD=stream|http]
#   (needs perf, iperf3 or wrk + nginx, a release build)
# Prints the top symbols (self time) over both processes, and leaves perf.data in a temp dir.
# PERF_CALLGRAPH="--call-graph dwarf" records call stacks through libc (memmove callers).
# BURROW_LANES=0 profiles the multiplexed path. SYSCALLS=1 counts system calls instead (perf
# stat on syscall tracepoints), per HTTP request or per MB moved, for hub and agent apart.
# Ports used: 25201 (iperf3), 25280 (nginx),
# 25443 (hub), 25400-25409 (public ports).
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:-quic}; secs=${2:-8}; workload=${3:-stream}
bin=${BURROW_BIN:-$PWD/target/release/burrow}  # BURROW_BIN: measure another build
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
if [[ $workload == http ]]; then
  mkdir -p "$work/nginx/logs"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/tmp;
  server { listen 127.0.0.1:25280; location / { default_type text/plain; return 200 "ok\n"; } }
}
CONF
  nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
  target=127.0.0.1:25280
else
  iperf3 -s -B 127.0.0.1 -p 25201 >/dev/null 2>&1 & pids+=($!)
  target=127.0.0.1:25201
fi
"$bin" hub --listen 127.0.0.1:25443 --data-dir "$work/hub" --auth p:p-key --allow-plaintext \
  --port-range 25400-25409 --json --log-level warn > "$work/hub.out" & hub=$!; pids+=($hub)
until grep -q ready "$work/hub.out" 2>/dev/null; do sleep 0.1; done
ca=(); [[ $transport != tcp ]] && ca=(--ca "$work/hub/certs/ca.pem")
"$bin" expose "$target" --hub 127.0.0.1:25443 --transport "$transport" "${ca[@]}" -u p -k p-key \
  --public --protocol tcp --hub-port 25400 --json --log-level warn > "$work/agent.out" & agent=$!; pids+=($agent)
until grep -q ready "$work/agent.out" 2>/dev/null; do sleep 0.1; done
if [[ $workload == http ]]; then
  wrk -t2 -c50 -d $((secs + 3))s http://127.0.0.1:25400/ > "$work/load.txt" &
else
  iperf3 -c 127.0.0.1 -p 25400 -t $((secs + 3)) > "$work/load.txt" &
fi
load=$!
sleep 1.5  # past the load's start-up, into the steady state
if [[ ${SYSCALLS:-0} == 1 ]]; then
  calls=sendto,recvfrom,sendmsg,recvmsg,writev,readv,write,read,splice,epoll_wait,sched_yield
  events=$(sed -E 's/([a-z_]+)/syscalls:sys_enter_\1/g' <<< "$calls"),context-switches
  perf stat -x, -e "$events" -o "$work/hub.stat" -p "$hub" -- sleep "$secs" 2> /dev/null & counting=$!
  perf stat -x, -e "$events" -o "$work/agent.stat" -p "$agent" -- sleep "$secs" 2> /dev/null
  wait $counting 2>/dev/null || true
  wait $load 2>/dev/null || true
  grep -E "sender|receiver|Requests/sec" "$work/load.txt" || true
  if [[ $workload == http ]]; then  # requests during the counted seconds, from wrk's rate
    per=$(awk -v s="$secs" '/^Requests\/sec/ {print $2 * s}' "$work/load.txt"); unit=request
  else
    per=$(awk -v s="$secs" '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1) * 125 * s}' "$work/load.txt"); unit=MB
  fi
  for who in hub agent; do
    awk -F, -v n="$per" -v who="$who" -v unit="$unit" '$1 ~ /^[0-9]+$/ && $1 > 0 {
        sub("syscalls:sys_enter_", "", $3); line = line sprintf(" %s=%.2f", $3, $1 / n) }
      END { printf "%s, per %s:%s\n", who, unit, line }' "$work/$who.stat"
  done
  exit 0
fi
perf record -F 999 ${PERF_CALLGRAPH:--g} -o "$work/perf.data" -p "$hub,$agent" -- sleep "$secs" 2> /dev/null
wait $load 2>/dev/null || true
grep -E "sender|receiver|Requests/sec" "$work/load.txt" || true
perf report -i "$work/perf.data" --no-children --sort comm,dso,symbol --stdio 2>/dev/null \
  | grep -E "^ +[0-9]" | head -30
echo "perf data: $work/perf.data"
