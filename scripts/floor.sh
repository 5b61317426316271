#!/usr/bin/env bash
# The floor a machine sets for tunnel ratios: ../shared/bench/peers.sh with the plainest relay
# chain (examples/floor.rs) in the "extra" slot, measured against `direct` in the same run.
# A hub and an agent do at least what this chain does per message, so a tunnel's ratio to
# `direct` cannot be expected above the chain's by much (burrow's multiplexer batches HTTP,
# which the chain cannot); compare the ratios, not the absolute rates.
#   HOPS=2 (default): hub-like relay on the public ports -> agent-like relay -> targets
#   HOPS=1: one relay between the public ports and the targets
# TCP (iperf3, HTTP, connections/s): a connection per visitor, one epoll thread per relay.
# UDP: one client, a busy-polling thread per relay (as burrow's runtime polls);
#   FLOOR_UDP=udp-tokio runs the same relay as two tasks on burrow's runtime instead.
# Usage: scripts/floor.sh [peers.sh options...]   e.g. scripts/floor.sh --skip-install
# Ports: public 26301,26380,26307,26353 (iperf3, HTTP, echo, UDP); between hops 26401-26453.
set -euo pipefail
cd "$(dirname "$0")/.."
hops=${HOPS:-2}
udp=${FLOOR_UDP:-udp}
cargo build --release --quiet --example floor
floor=$PWD/target/release/examples/floor
# Each relay as "LISTEN_PORT TARGET" with TARGET a peers.sh variable, one line per relay.
if [[ $hops == 1 ]]; then
  server="$floor tcp 127.0.0.1:26301 127.0.0.1:\$TGT_IPERF_PORT & $floor tcp 127.0.0.1:26380 127.0.0.1:\$TGT_HTTP_PORT & $floor $udp 127.0.0.1:26353 127.0.0.1:\$TGT_UDP_PORT & exec $floor tcp 127.0.0.1:26307 127.0.0.1:\$TGT_ECHO_PORT"
  client="exec sleep 3600"
else
  server="$floor tcp 127.0.0.1:26301 127.0.0.1:26401 & $floor tcp 127.0.0.1:26380 127.0.0.1:26480 & $floor $udp 127.0.0.1:26353 127.0.0.1:26453 & exec $floor tcp 127.0.0.1:26307 127.0.0.1:26407"
  client="$floor tcp 127.0.0.1:26401 127.0.0.1:\$TGT_IPERF_PORT & $floor tcp 127.0.0.1:26480 127.0.0.1:\$TGT_HTTP_PORT & $floor $udp 127.0.0.1:26453 127.0.0.1:\$TGT_UDP_PORT & exec $floor tcp 127.0.0.1:26407 127.0.0.1:\$TGT_ECHO_PORT"
fi
exec ../shared/bench/peers.sh --only direct,extra "$@" \
  --extra "floor-${hops}hop${FLOOR_UDP:+-$udp}" --extra-server "$server" --extra-client "$client" \
  --extra-ports 26301,26380,26307,26353
