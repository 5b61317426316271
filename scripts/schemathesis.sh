#!/usr/bin/env bash
# schemathesis (PyPI) against the hub's own OpenAPI document, every check on: a hub with two
# users and one public http tunnel of alice's, then `st run` as alice. Its requests without
# credentials would spend the hub's failed-authentication budget, so it is raised.
# Usage: scripts/schemathesis.sh [BURROW] [ST]   (defaults: target/debug/burrow, st on PATH)
# Install: python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install schemathesis
# Ports: 29100 (hub), 29101 (API), 29102 (target).
set -euo pipefail
bin=${1:-target/debug/burrow}
st=${2:-st}
work=$(mktemp -d /tmp/burrow-schemathesis.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
python3 -m http.server 29102 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 & pids+=($!)
"$bin" hub --listen 127.0.0.1:29100 --api-address 127.0.0.1:29101 --data-dir "$work/hub" \
  --auth alice:alice-key --auth bob:bob-key --auth-failures-per-minute 100000 --log-level warn >/dev/null 2>"$work/hub.log" & pids+=($!)
for _ in $(seq 100); do [[ -f $work/hub/certs/ca.pem ]] && curl -sf http://127.0.0.1:29101/readyz >/dev/null && break; sleep 0.1; done
"$bin" expose 29102 --name web --public --protocol http --hub 127.0.0.1:29100 --ca "$work/hub/certs/ca.pem" \
  -u alice -k alice-key --log-level warn >/dev/null 2>"$work/expose.log" & pids+=($!)
sleep 1
"$st" run http://127.0.0.1:29101/api/v1/openapi.json --url http://127.0.0.1:29101 --checks all \
  -a alice:alice-key -n 100
