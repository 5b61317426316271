#!/usr/bin/env bash
# Sequential connections and sequential UDP round trips through burrow builds, alternated in
# rounds beside `direct`, so two builds (or busy-poll windows) are compared on the same
# minute of a noisy machine. The two latency-bound rows of peers.sh, without its bulk and
# HTTP phases: a round takes a few seconds, so a dozen rounds fit where peers.sh runs one.
#   conn  benchtool connrate 2000: connect, send a byte, read it back, close, one at a time
#   udp   benchtool udprr 20000: one 64-byte datagram and its echo at a time
# Usage: scripts/seq-ab.sh ROUNDS VARIANT...
#   VARIANT: direct | PATH (a burrow binary, its default polling) | PATH@US (that binary
#            busy-polling US µs: --busy-poll through BURROW_BUSY_POLL, and BURROW_BUSY_POLL_US for
#            builds from before the flag) | PATH+PROTOCOL[@US] (the echo tunnel exposed with
#            --protocol PROTOCOL instead of tcp, e.g. `+auto` to measure detection)
#            | floor | floor-tokio (two examples/floor.rs relays chained where the hub and the
#              agent stand; floor-tokio relays UDP on burrow's runtime, so the gap between
#              the two is the runtime's cost per datagram, and burrow's to floor-tokio its own)
#   e.g. scripts/seq-ab.sh 12 direct /tmp/burrow-before target/release/burrow
#        scripts/seq-ab.sh 8 direct floor floor-tokio target/release/burrow
# Prints each round, then per variant the median (and range) of both rates, and for each
# variant after the first the median of its per-round ratio to the first burrow variant.
# Needs rustc (builds peers.sh's benchtool). Ports: 15407/15453 (targets), 27445 (hub),
# 26507/26553 (public).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?usage: $0 ROUNDS VARIANT...}; shift
(($# > 0)) || { echo "usage: $0 ROUNDS VARIANT..." >&2; exit 2; }
work=$(mktemp -d /tmp/burrow-seq-ab.XXXXXX)
bt=$work/benchtool
rustc -O --edition 2021 -o "$bt" ../shared/bench/benchtool.rs
if [[ " $* " == *" floor"* ]]; then
  cargo build --release --quiet --example floor
fi
floor=$PWD/target/release/examples/floor
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bt" echo 15407 >/dev/null 2>&1 & pids+=($!)
"$bt" udpecho 15453 >/dev/null 2>&1 & pids+=($!)

listening() { [[ -n $(ss -Htuln "sport = :$1" 2>/dev/null) ]]; }
wait_port() { for _ in $(seq 100); do listening "$1" && return 0; sleep 0.05; done; echo "port $1 not listening" >&2; return 1; }
wait_port 15407; wait_port 15453

results=$work/results.txt
for round in $(seq "$rounds"); do
  for variant in "$@"; do
    tunnel=(); conn_port=15407; udp_port=15453
    if [[ $variant == floor || $variant == floor-tokio ]]; then
      udp_mode=udp; [[ $variant == floor-tokio ]] && udp_mode=udp-tokio
      "$floor" tcp 127.0.0.1:26508 127.0.0.1:15407 & tunnel+=($!)
      "$floor" tcp 127.0.0.1:26507 127.0.0.1:26508 & tunnel+=($!)
      "$floor" $udp_mode 127.0.0.1:26554 127.0.0.1:15453 & tunnel+=($!)
      "$floor" $udp_mode 127.0.0.1:26553 127.0.0.1:26554 & tunnel+=($!)
      conn_port=26507; udp_port=26553
      for port in 26507 26508 26553 26554; do wait_port $port; done
    elif [[ $variant != direct ]]; then
      bin=${variant%@*}; protocol=tcp; poll_env=()
      [[ $bin == *+* ]] && { protocol=${bin##*+}; bin=${bin%+*}; }
      [[ $variant == *@* ]] && poll_env=(BURROW_BUSY_POLL="${variant##*@}us" BURROW_BUSY_POLL_US="${variant##*@}")
      [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 2; }
      rm -rf "$work/hub"
      env "${poll_env[@]}" "$bin" hub --listen 127.0.0.1:27445 --data-dir "$work/hub" --auth bench:bench-key \
        --allow-plaintext --port-range 26500-26599 --log-level error >/dev/null & tunnel+=($!)
      wait_port 27445
      agent=("$bin" expose --hub 127.0.0.1:27445 --transport tcp -u bench -k bench-key --public --log-level error)
      env "${poll_env[@]}" "${agent[@]}" 15407 --protocol "$protocol" --name echo --hub-port 26507 >/dev/null & tunnel+=($!)
      env "${poll_env[@]}" "${agent[@]}" 15453 --protocol udp --name udp --hub-port 26553 >/dev/null & tunnel+=($!)
      conn_port=26507; udp_port=26553
      wait_port $conn_port; wait_port $udp_port
      # The echo tunnel is ready once a connection through it is answered.
      for _ in $(seq 50); do [[ $("$bt" connrate "127.0.0.1:$conn_port" 3 5 2>/dev/null) == ok=3* ]] && break; sleep 0.1; done
    fi
    "$bt" udprr "127.0.0.1:$udp_port" 3 5 >/dev/null 2>&1 || true  # flows open on the first datagram
    conn=$("$bt" connrate "127.0.0.1:$conn_port" 2000 15 2>&1 | sed -n 's/.*rate=\([0-9.]*\).*/\1/p')
    udp=$("$bt" udprr "127.0.0.1:$udp_port" 20000 20 2>&1 | sed -n 's/.*rate=\([0-9.]*\).*/\1/p')
    printf '%s round %d %s conn %s udp %s\n' "$(date -u +%T)" "$round" "$variant" "${conn:-FAIL}" "${udp:-FAIL}" | tee -a "$results"
    if ((${#tunnel[@]})); then kill "${tunnel[@]}" 2>/dev/null || true; wait "${tunnel[@]}" 2>/dev/null || true; fi
  done
done

python3 - "$results" "$@" <<'EOF'
import statistics, sys
path, variants = sys.argv[1], sys.argv[2:]
rows = {}
for line in open(path):
    f = line.split()
    if "FAIL" in (f[5], f[7]):
        continue
    rows.setdefault(f[3], {})[int(f[2])] = (float(f[5]), float(f[7]))
base = next((v for v in variants if v != "direct"), None)
for v in variants:
    got = rows.get(v, {})
    if not got:
        print(f"{v}: no successful rounds")
        continue
    conn = [c for c, _ in got.values()]
    udp = [u for _, u in got.values()]
    line = (f"{v}: conn/s median {statistics.median(conn):.0f} ({min(conn):.0f}-{max(conn):.0f}), "
            f"UDP round trips/s median {statistics.median(udp):.0f} ({min(udp):.0f}-{max(udp):.0f})")
    if base and v not in (base, "direct"):
        pairs = [(got[r], rows[base][r]) for r in got if r in rows.get(base, {})]
        if pairs:
            line += (f"; per round vs {base}: conn {statistics.median(a[0] / b[0] for a, b in pairs):.2f}, "
                     f"UDP {statistics.median(a[1] / b[1] for a, b in pairs):.2f}")
    print(line)
EOF
