#!/usr/bin/env bash
# HTTP request rate through burrow builds, alternated round by round: wrk (50 keep-alive
# connections, 5 s) against nginx through a `--transport tcp`, `--protocol tcp` tunnel, and
# against nginx directly after each, so two builds are compared on the same minute of a
# noisy machine. peers.sh's HTTP row without its other phases.
# Usage: scripts/http-ab.sh ROUNDS BUILD...    e.g. scripts/http-ab.sh 6 /tmp/burrow-before target/release/burrow
# Needs nginx and wrk (Debian: nginx-light, wrk). Ports: 15080 (nginx), 27545 (hub), 26600.
# Prints each round, then per build the median rate and its per-round ratio to the first.
set -euo pipefail
rounds=${1:?usage: $0 ROUNDS BUILD...}; shift
(($# > 0)) || { echo "usage: $0 ROUNDS BUILD..." >&2; exit 2; }
work=$(mktemp -d /tmp/burrow-http-ab.XXXXXX)
mkdir -p "$work/html"; echo hello > "$work/html/index.html"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:15080; root $work/html; } }
CONF
nginx -c "$work/nginx.conf"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; }
trap cleanup EXIT
listening() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
for round in $(seq "$rounds"); do
  for bin in "$@"; do
    rm -rf "$work/hub"
    "$bin" hub --listen 127.0.0.1:27545 --data-dir "$work/hub" --auth b:bk --allow-plaintext \
      --port-range 26600-26609 --log-level error >/dev/null 2>&1 & pids=($!)
    for _ in $(seq 100); do listening 27545 && break; sleep 0.05; done
    "$bin" expose 15080 --hub 127.0.0.1:27545 --transport tcp -u b -k bk --public --protocol tcp \
      --hub-port 26600 --log-level error >/dev/null 2>&1 & pids+=($!)
    for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:26600/ && break; sleep 0.05; done
    rate=$(wrk -t1 -c50 -d5 http://127.0.0.1:26600/ | awk '/Requests\/sec/ {print $2}')
    direct=$(wrk -t1 -c50 -d2 http://127.0.0.1:15080/ | awk '/Requests\/sec/ {print $2}')
    echo "$round $bin ${rate:-FAIL} $direct" | tee -a "$work/results.txt"
    kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  done
done
python3 - "$work/results.txt" "$@" <<'PY'
import statistics, sys
path, builds = sys.argv[1], sys.argv[2:]
rows = {}
for line in open(path):
    r, b, rate, _ = line.split()
    if rate != "FAIL":
        rows.setdefault(b, {})[int(r)] = float(rate)
for b in builds:
    got = rows.get(b, {})
    line = f"{b}: HTTP req/s median {statistics.median(got.values()):.0f}"
    if b != builds[0]:
        ratios = [got[r] / rows[builds[0]][r] for r in got if r in rows[builds[0]]]
        line += f"; per round vs {builds[0]}: {statistics.median(ratios):.2f}"
    print(line)
PY
