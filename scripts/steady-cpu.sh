#!/usr/bin/env bash
# CPU a hub and one `expose` agent spend idle and under light steady load: the cost of the
# defaults on a laptop or a small VM, which peers.sh (always flat out) does not show.
#   idle    30 s with one tunnel up and no traffic
#   steady  20 s of 1,000 requests/s: a 64-byte request and its echo on one keep-alive
#           connection through the tunnel's public port, paced by the client
# Prints clock ticks (1/100 s) of each process over each phase and the share of one core.
# Usage: scripts/steady-cpu.sh [TRANSPORT]   (tcp default; BURROW_BIN picks a build,
#        BURROW_BUSY_POLL=50us turns polling on for the comparison). Ports: 27461 (hub),
#        26561 (public), 15461 (target).
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:-tcp}
bin=${BURROW_BIN:-$PWD/target/release/burrow}
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
python3 - <<'PY' & pids+=($!)
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 15461)); srv.listen(16)
def serve(c):
    while (b := c.recv(65536)):
        c.sendall(b)
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
"$bin" hub --listen 127.0.0.1:27461 --data-dir "$work/hub" --auth bench:bench-key --allow-plaintext \
  --port-range 26561-26561 --log-level error --json >"$work/hub.out" & hub=$!; pids+=($hub)
for _ in $(seq 100); do grep -q ready "$work/hub.out" 2>/dev/null && break; sleep 0.1; done
ca=(); [[ $transport != tcp ]] && ca=(--ca "$work/hub/certs/ca.pem")
"$bin" expose 15461 --hub 127.0.0.1:27461 --transport "$transport" "${ca[@]}" -u bench -k bench-key \
  --public --protocol tcp --name steady --log-level error --json >"$work/agent.out" & agent=$!; pids+=($agent)
for _ in $(seq 100); do grep -q ready "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
report() {  # PHASE SECONDS HUB_BEFORE AGENT_BEFORE
  local h=$(($(ticks $hub) - $3)) a=$(($(ticks $agent) - $4))
  printf '%-7s hub %4d ticks  agent %4d ticks over %2d s  (%.1f%% of a core together)\n' \
    "$1" "$h" "$a" "$2" "$(awk -v t=$((h + a)) -v s="$2" 'BEGIN { print t / s }')"
}
sleep 2
h0=$(ticks $hub); a0=$(ticks $agent); sleep 30; report idle 30 "$h0" "$a0"
h0=$(ticks $hub); a0=$(ticks $agent)
python3 - <<'PY'
import socket, time
s = socket.create_connection(("127.0.0.1", 26561)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64; start = time.monotonic(); n = 0
while (now := time.monotonic()) - start < 20:
    due = start + n / 1000
    if due > now:
        time.sleep(due - now)
    s.sendall(msg); got = b""
    while len(got) < 64:
        got += s.recv(64 - len(got))
    n += 1
print(f"steady  {n} requests in 20 s")
PY
report steady 20 "$h0" "$a0"
