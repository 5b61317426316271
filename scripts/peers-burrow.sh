#!/usr/bin/env bash
# Runs ../shared/bench/peers.sh with burrow slotted in as the "extra" tool.
# Usage: scripts/peers-burrow.sh TRANSPORT [peers.sh options...]   (TRANSPORT: tcp | tls | quic)
# Needs a release build (cargo build --release). The hub listens on 127.0.0.1:27443; the
# agents expose the benchmark's iperf3, HTTP, echo and UDP echo targets on hub ports 26201,
# 26280, 26207 and 26253. The client command execs the last agent (the others are its
# children), so peers.sh's peak_rss counts the hub and the four agents, not a shell as well.
# BURROW_AGENT_FLAGS: more flags for every agent (e.g. `--lanes 0`). BURROW_DIAL: where the
# agents dial the hub (default 127.0.0.1:27443; e.g. a scripts/delay-proxy.py in front of it).
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:?usage: $0 tcp|tls|quic [peers.sh options]}; shift
bin=${BURROW_BIN:-$PWD/target/release/burrow}  # BURROW_BIN: compare another build
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 2; }
ca_flag='--ca $BENCH_WORK/hub/certs/ca.pem'
[[ $transport == tcp ]] && ca_flag=''
agent="$bin expose --hub ${BURROW_DIAL:-127.0.0.1:27443} --transport $transport $ca_flag -u bench -k bench-key --public --log-level warn ${BURROW_AGENT_FLAGS:-}"
exec ../shared/bench/peers.sh "$@" \
  --extra "burrow-$transport" \
  --extra-server "exec $bin hub --listen 127.0.0.1:27443 --data-dir \$BENCH_WORK/hub --auth bench:bench-key --allow-plaintext --port-range 26200-26299 --log-level warn" \
  --extra-client "$agent \$TGT_IPERF_PORT --protocol tcp --name iperf --hub-port 26201 & $agent \$TGT_HTTP_PORT --protocol tcp --name http --hub-port 26280 & $agent \$TGT_ECHO_PORT --protocol tcp --name echo --hub-port 26207 & exec $agent \$TGT_UDP_PORT --protocol udp --name udp --hub-port 26253" \
  --extra-ports 26201,26280,26207,26253
