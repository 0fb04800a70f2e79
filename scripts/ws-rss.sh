#!/usr/bin/env bash
# Memory of the server holding N (default 5000) idle WebSocket connections:
# starts a release elementd on a free loopback port, creates an endpoint,
# and runs examples/ws_idle.rs, which prints RSS before, after and per
# connection.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-5000}"
cargo build --release --quiet --bin elementd --example ws_idle
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
ulimit -n 20000 2>/dev/null || true
# Every client comes from loopback: raise the per-address cap.
ELEMENTD_MAX_CONNECTIONS_PER_IP=20000 RUST_LOG=warn target/release/elementd serve --listen "127.0.0.1:$port" --data-dir "$data" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(cat "$data/admin.token")
api() { curl -fsS -XPOST "$base$1" -H "Authorization: Bearer $token" -d "$2" >/dev/null; }
api /api/ops/create '{"element_type":"circle","slug":"acme"}'
api /api/acme/ops/create '{"element_type":"websocket","slug":"chat","spec":{"connection":{"max_connections":10000}}}'
target/release/examples/ws_idle "ws://127.0.0.1:$port/ws/acme/ws" "$pid" "$n" "$base/api/acme/chat" "$token"
