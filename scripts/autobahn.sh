#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client against a websocket element with
# on_message echo. Installs the suite (it needs Python 2.7: pyenv's
# 2.7.18) into target/autobahn, starts elementd on a free loopback port,
# creates the element over REST, runs every case and fails unless each is
# OK, NON-STRICT or INFORMATIONAL (compression, 12.* and 13.*, may be
# UNIMPLEMENTED).
#
#   scripts/autobahn.sh                 # release build
#   AUTOBAHN_PROFILE=debug scripts/autobahn.sh
#   ELEMENTD_BIN=/path/to/elementd scripts/autobahn.sh
#   AUTOBAHN_CASES='["1.*","5.*"]' scripts/autobahn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work="${AUTOBAHN_DIR:-$root/target/autobahn}"
py27="${AUTOBAHN_PYTHON:-$HOME/.pyenv/versions/2.7.18/bin/python}"
cases="${AUTOBAHN_CASES:-[\"*\"]}"
mkdir -p "$work"

if [ ! -x "$work/venv/bin/wstest" ]; then
  echo "== installing autobahntestsuite into $work"
  "$py27" -m pip install --quiet --disable-pip-version-check --target "$work/scratch" 'virtualenv<20.22'
  PYTHONPATH="$work/scratch" "$py27" -m virtualenv --quiet "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check autobahntestsuite==25.10.1
fi

bin="${ELEMENTD_BIN:-}"
if [ -z "$bin" ]; then
  profile="${AUTOBAHN_PROFILE:-release}"
  if [ "$profile" = release ]; then
    cargo build --release --quiet --bin elementd
  else
    cargo build --quiet --bin elementd
  fi
  bin="$root/target/$profile/elementd"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
# The suite sends messages up to 16 MiB (past the default ceiling) and
# bursts it reads back late.
ELEMENTD_MAX_WS_MESSAGE_BYTES=16777216 ELEMENTD_MAX_WS_BUFFER_BYTES=67108864 \
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fs "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(cat "$data/admin.token")
api() {
  curl -fsS -XPOST "$base$1" -H "Authorization: Bearer $token" -H 'content-type: application/json' -d "$2" >/dev/null
}
api /api/ops/create '{"element_type":"circle","slug":"autobahn"}'
# Large limits: the suite sends messages up to 16 MiB and bursts of 1000.
api /api/autobahn/ops/create '{"element_type":"websocket","slug":"echo","spec":{
  "path":"/echo","on_message":"echo",
  "connection":{"max_message_bytes":16777216,"send_queue":4096,"idle_timeout_ms":0,"max_connections":1000},
  "heartbeat":{"interval_ms":300000,"timeout_ms":600000}}}'

rm -rf "$work/reports"
cat >"$work/spec.json" <<JSON
{"outdir": "$work/reports",
 "servers": [{"agent": "elementd", "url": "ws://127.0.0.1:$port/ws/autobahn/echo"}],
 "cases": $cases, "exclude-cases": [], "exclude-agent-cases": {}}
JSON
echo "== wstest -m fuzzingclient against ws://127.0.0.1:$port/ws/autobahn/echo"
start=$(date +%s)
(cd "$work" && ./venv/bin/wstest -m fuzzingclient -s spec.json >"$work/wstest.log" 2>&1)
echo "== suite took $(( $(date +%s) - start ))s; reports in $work/reports"

python3 - "$work/reports/index.json" <<'PY'
import collections, json, sys
results = json.load(open(sys.argv[1]))["elementd"]
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts, bad = collections.Counter(), []
for case, r in results.items():
    b = r["behavior"]
    counts[b] += 1
    compression = case.split(".")[0] in ("12", "13")
    if b not in ok and not (compression and b == "UNIMPLEMENTED"):
        bad.append("%s %s (close: %s)" % (case, b, r.get("behaviorClose")))
print("autobahn: %d cases: %s" % (len(results), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
for line in sorted(bad):
    print("  FAILED", line)
sys.exit(1 if bad else 0)
PY
