#!/usr/bin/env bash
# WebSocket benchmarks: elementd against Node's `ws` server, run side by
# side in one process tree on loopback, printed as one table with ratios.
# Builds release binaries; installs `ws` from npm into target/bench.
#
#   scripts/bench.sh            # default sizes
#   BENCH_SCALE=2 scripts/bench.sh
#   BENCH_PG=1 scripts/bench.sh # elementd on PostgreSQL (127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/bench
mkdir -p "$work"
if [ ! -d "$work/node_modules/ws" ]; then
  echo "== installing ws (npm) into $work"
  (cd "$work" && npm install --silent --no-audit --no-fund ws@8 >/dev/null)
fi
cp scripts/bench/ws-peer.js "$work/ws-peer.js"
cargo build --release --quiet --bin elementd --example bench
ulimit -n 20000 2>/dev/null || true
if [ -n "${BENCH_PG:-}" ]; then
  db="elementd_bench_$$"
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
  trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
  export BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
fi
ELEMENTD_BIN=target/release/elementd PEER_JS="$work/ws-peer.js" target/release/examples/bench
