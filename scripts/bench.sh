#!/usr/bin/env bash
# The bench: one command, one table, every row elementd against a peer run
# in this same invocation (see README "Benchmarks"). Builds release
# binaries; installs Node's `ws` from npm into target/bench and, when
# missing, wrk and lighttpd from Debian.
#
#   scripts/bench.sh            # default sizes, a few minutes
#   BENCH_SCALE=2 scripts/bench.sh
#   BENCH_PG=1 scripts/bench.sh # elementd on PostgreSQL (127.0.0.1:5432)
#
# The cluster rows always need PostgreSQL at 127.0.0.1:5432 (user
# postgres, trust); without it they are skipped. Scratch databases are
# named elementd_bench_<pid>_* and dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/bench
mkdir -p "$work"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v lighttpd >/dev/null || missing+=(lighttpd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (apt-get)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "   not root: install ${missing[*]} yourself; their rows show —" >&2
  fi
fi
if [ ! -d "$work/node_modules/ws" ]; then
  echo "== installing ws (npm) into $work"
  (cd "$work" && npm install --silent --no-audit --no-fund ws@8 >/dev/null)
fi
cp scripts/bench/ws-peer.js scripts/bench/update.lua "$work/"

cargo build --release --quiet --bin elementd --example bench --example ws_relay
# Each node's data folder (its git repositories: thousands of small files
# a run) goes on a tmpfs where there is one; its SQLite database stays on
# disk under $work/sqlite. On an ext4 without a journal, as on the
# machines this was measured on, a file created within minutes of a mass
# delete makes the kernel scan past every inode the delete freed: the
# previous run's cleanup cut the next run's updates to a third.
# BENCH_TMPDIR chooses the folder; BENCH_TMPDIR= keeps the system's.
if [ -z "${BENCH_TMPDIR+set}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  BENCH_TMPDIR=/dev/shm
fi
if [ -n "${BENCH_TMPDIR:-}" ]; then
  export TMPDIR="$BENCH_TMPDIR"
fi
# The client side holds 10,000 sockets in one process.
ulimit -n 20000 2>/dev/null || true
# ...all from loopback, so the server raises its per-address cap, and
# leaves more of its descriptors to websockets than to HTTP (wrk holds 8).
export ELEMENTD_MAX_CONNECTIONS_PER_IP="${ELEMENTD_MAX_CONNECTIONS_PER_IP:-20000}"
export ELEMENTD_MAX_HTTP_CONNECTIONS="${ELEMENTD_MAX_HTTP_CONNECTIONS:-2048}"

export BENCH_DB_PREFIX="elementd_bench_$$"
drop_scratch() {
  pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null || return 0
  for db in $(psql -h 127.0.0.1 -U postgres -qAtc \
      "SELECT datname FROM pg_database WHERE datname LIKE '${BENCH_DB_PREFIX}\_%'"); do
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  done
}
trap drop_scratch EXIT
if [ -n "${BENCH_PG:-}" ] && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "BENCH_PG=1 needs PostgreSQL at 127.0.0.1:5432" >&2
  exit 1
fi

ELEMENTD_BIN=target/release/elementd RELAY_BIN=target/release/examples/ws_relay \
  BENCH_ASSETS="$work" target/release/examples/bench
