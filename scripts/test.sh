#!/usr/bin/env bash
# The test command README.md gives, and the one .ci/run calls: installs
# what the suite needs (Chromium and chromedriver for the console's
# browser tests, openapi-spec-validator and openapi-python-client for the
# OpenAPI tests), starts the local PostgreSQL when it is installed and
# down, then runs the suite in
# tiers: unit and service tests (no HTTP), the API tests against the real
# server on SQLite, and again on PostgreSQL; it ends with each tier's time.
#   PG_URL          the PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
#   SKIP_POSTGRES=1 run the SQLite pass only, said loudly at the end
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  say "installing chromium and chromium-driver (the console's browser tests)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: chromium and chromium-driver are missing and this is not root;" >&2
    echo "install them (apt-get install chromium chromium-driver) and run again" >&2
    exit 1
  fi
  apt-get update -q && apt-get install -y -q chromium chromium-driver
fi

# A venv under target/ keeps the validator and the client generator (its
# version pinned: generated method names must not move under the test) out
# of the system.
venv=target/openapi-venv
generator_version=0.29.1
if [ ! -x "$venv/bin/openapi-spec-validator" ] ||
  ! "$venv/bin/openapi-python-client" --version 2>/dev/null | grep -q "$generator_version"; then
  say "installing openapi-spec-validator and openapi-python-client $generator_version into $venv"
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q openapi-spec-validator "openapi-python-client==$generator_version"
fi
export ELEMENTD_OPENAPI_VALIDATOR="$PWD/$venv/bin/openapi-spec-validator"
export ELEMENTD_OPENAPI_CLIENT_GENERATOR="$PWD/$venv/bin/openapi-python-client"

export PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_up() {
  command -v pg_isready >/dev/null && pg_isready -d "$PG_URL" -q 2>/dev/null
}
if [ "${SKIP_POSTGRES:-0}" != 1 ] && ! pg_up && [ -d /etc/postgresql ]; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi

tiers=()
# Runs one tier and notes how long it took.
tier() {
  local name=$1 t
  shift
  t=$(date +%s)
  say "$name"
  "$@"
  tiers+=("$name: $(( $(date +%s) - t ))s")
}

tier "build" cargo test --locked --no-run "$@"
tier "unit and service tests (no HTTP)" cargo test --locked --lib --bins "$@"
tier "API tests on SQLite (the two-node tests run on PostgreSQL)" \
  env ELEMENTD_TEST_SQLITE_PASS=1 cargo test --locked --test '*' "$@"

if [ "${SKIP_POSTGRES:-0}" = 1 ]; then
  say "SKIPPED: the PostgreSQL pass (SKIP_POSTGRES=1); two-node tests did not run"
elif ! pg_up; then
  echo "test.sh: PostgreSQL is not reachable at $PG_URL: the PostgreSQL pass and the" >&2
  echo "two-node tests cannot run. Start it, point PG_URL at one, or set SKIP_POSTGRES=1." >&2
  exit 1
else
  tier "API tests on PostgreSQL ($PG_URL)" \
    env TEST_DATABASE_URL="$PG_URL" cargo test --locked --test '*' "$@"
fi
say "took:"
printf '  %s\n' "${tiers[@]}"
