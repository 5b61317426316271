#!/usr/bin/env bash
# Opt-in release build tuned for small resident memory on x86_64 Linux (docs/tuning.md):
# executables linked against the static glibc (link/cc), packed relative relocations (needs
# glibc >= 2.36 where it runs), and functions laid out in the order hub and agents execute
# them (a symbol list profiled from this very build, scripts/symbol-order.sh). A plain
# `cargo build --release` does none of this.
# Usage: scripts/release-tuned.sh     (REGENERATE=1 profiles again; needs libc6-dev, valgrind,
#                                      iperf3, curl and python3 for the first run)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=$PWD/link/cc
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-z,pack-relative-relocs"
order=$PWD/target/symbol-order.txt
if [[ ! -s $order || ${REGENERATE:-0} == 1 ]]; then
  scripts/symbol-order.sh "$order"
fi
BURROW_SYMBOL_ORDER=$order cargo build --release --locked
echo "built target/release/burrow (tuned)"
