#!/usr/bin/env bash
# Writes a symbol list (default target/symbol-order.txt), the order in which a tuned release
# link lays out functions (scripts/release-tuned.sh, build.rs): every function a hub and its agents execute, grouped so that each process's
# code sits together instead of spread over the whole binary. A process's resident code is
# every 64 KiB window it touched once (the kernel maps pages around each fault), so packing
# the executed functions is what keeps hub and agent RSS small (docs/tuning.md).
#
# It runs a hub and agents under callgrind (valgrind), one round per transport (tcp, tls,
# quic), through every kind of traffic: TCP request/response and connections, UDP, bulk both
# ways (iperf3), HTTP by Host on the hub's main port, and a reach agent; then
# scripts/symbol-order.py turns the function lists into the ordering file.
#
# Usage: scripts/symbol-order.sh [OUT]  (needs valgrind, iperf3, curl, python3; about 4 minutes)
# It profiles the release build made with the environment it is given, so run it with the
# same linker settings as the build that will use the list (release-tuned.sh does).
# Ports used: 25443 (hub), 25100-25399 (public ports), 25007 25053 25201 25080 25009 (targets).
# The list is generated, never committed: symbol names change with every dependency bump.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$PWD/target/symbol-order.txt}
for tool in valgrind iperf3 curl python3; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
# A UDP echo target, then the binary to profile, built on its own: built in one command with
# the example, it would get the dev-dependencies' features, and half its symbol names (their
# hashes) would differ from those of a plain `cargo build --release`.
cargo build --release --example udpload
cargo build --release
work=$(mktemp -d); pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# A copy, so relinking while this runs cannot change the code under the profile.
bin=$work/burrow; cp target/release/burrow "$bin"
vg() {  # OUT-NAME CMD...: CMD under callgrind (exec'd: $! is valgrind), names mangled as the linker sees them
  local name=$1; shift
  exec valgrind --tool=callgrind --demangle=no --dump-instr=no --compress-strings=no \
    --callgrind-out-file="$work/profiles/$name.%p" "$@"
}
ready() { for _ in $(seq 600); do grep -q ready "$1" 2>/dev/null && return; sleep 0.1; done; echo "no ready line in $1" >&2; exit 1; }
mkdir -p "$work/profiles"

python3 scripts/footprint.py echo 25007 & pids+=($!)
target/release/examples/udpload echo 25053 & pids+=($!)
python3 -m http.server 25080 --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)

for transport in tcp tls quic; do
  rm -rf "$work/hub"
  # An iperf3 server per round: one that lost a client mid-test under the profiler's slowness
  # sometimes exited, and the next round's bulk traffic then found nothing to connect to.
  iperf3 -s -p 25201 >/dev/null 2>&1 & iperf=$!; pids+=($iperf)
  vg "hub-$transport" "$bin" hub --listen 127.0.0.1:25443 --data-dir "$work/hub" --auth so:so-key \
    --allow-plaintext --port-range 25100-25399 --json --log-level warn > "$work/hub.out" 2>&1 &
  hub=$!; pids+=($hub)
  ready "$work/hub.out"
  ca=(); [[ $transport == tcp ]] || ca=(--ca "$work/hub/certs/ca.pem")
  common=(--hub 127.0.0.1:25443 --transport "$transport" "${ca[@]}" -u so -k so-key --json --log-level warn)
  agents=()
  start() {  # NAME ARGS...
    local name=$1; shift
    vg "agent-$transport-$name" "$bin" "$@" "${common[@]}" > "$work/$name.out" 2>&1 &
    agents+=($!); pids+=($!)
  }
  start echo expose 25007 --protocol tcp --name echo --public --hub-port 25107
  start udp expose 25053 --protocol udp --name udp --public --hub-port 25153
  start bulk expose 25201 --protocol tcp --name bulk --public --hub-port 25120
  start web expose 25080 --protocol http --name web --public --hub-port 25180
  for name in echo udp bulk web; do ready "$work/$name.out"; done
  start reach reach echo --local 127.0.0.1:25009
  ready "$work/reach.out"

  python3 scripts/footprint.py rr 127.0.0.1:25107 300 64
  python3 scripts/footprint.py rr 127.0.0.1:25009 300 64
  for _ in $(seq 20); do python3 scripts/footprint.py rr 127.0.0.1:25107 1 64 >/dev/null; done
  target/release/examples/udpload rr 127.0.0.1:25153 2 1
  iperf3 -c 127.0.0.1 -p 25120 -t 1 -P 2 >/dev/null
  iperf3 -c 127.0.0.1 -p 25120 -t 1 -R >/dev/null
  for _ in 1 2 3; do
    curl -fsS -m 60 -o /dev/null http://127.0.0.1:25180/
    curl -fsS -m 60 -o /dev/null -H 'Host: web.localhost' http://127.0.0.1:25443/
  done
  kill -TERM "${agents[@]}"; wait "${agents[@]}" || true
  kill -TERM $hub; wait $hub || true
  kill $iperf; wait $iperf || true
  echo "$transport: profiled"
done

python3 scripts/symbol-order.py target/release/burrow "$work"/profiles/* > "$out"
wc -l "$out"
