#!/usr/bin/env bash
# Property-based API tests: schemathesis against the live server's /openapi.json.
#
# Starts a throwaway redis-server (free port, never 6379, no persistence, in a temp dir),
# seeds it with real failed RQ jobs (`retryguard demo`, and jobs run and failed by a real
# `rq worker --burst` when .venv-test/ has RQ), starts `target/release/retryguard serve` over
# it with bearer tokens and a temp audit directory, and runs schemathesis against every
# operation of /openapi.json with the admin token: no 5xx, and every response's status, content
# type, headers and body must match the document. Then shorter passes with a read-only token
# and with no token check the documented 403 and 401 answers. Exits non-zero on any failure;
# the server and Redis are stopped on exit.
#
#   scripts/schemathesis.sh
#   SCHEMATHESIS_MAX_EXAMPLES=100 scripts/schemathesis.sh   more cases per operation (default 20)
#   SCHEMATHESIS_SEED=7 scripts/schemathesis.sh             another (fixed) seed
#   SCHEMATHESIS_WORKERS=1 scripts/schemathesis.sh          concurrent schemathesis workers (default 2)
#   SCHEMATHESIS_AUTH_PASSES=0 scripts/schemathesis.sh      skip the read-only and no-token passes
#   SCHEMATHESIS_REPORT_DIR=DIR scripts/schemathesis.sh     keep JUnit reports and the server log in DIR
#
# Installs schemathesis (scripts/schemathesis-requirements.txt, pinned) into
# .venv-schemathesis/ when a pin differs; builds target/release/retryguard when missing.
# Needs redis-server and python3 (3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
SEED="${SCHEMATHESIS_SEED:-20261130}"
WORKERS="${SCHEMATHESIS_WORKERS:-2}"
AUTH_PASSES="${SCHEMATHESIS_AUTH_PASSES:-1}"
# The read-only and no-token passes only need each operation reached a few times.
AUTH_MAX_EXAMPLES="${SCHEMATHESIS_AUTH_MAX_EXAMPLES:-3}"
# Every check the issue asks for. The others schemathesis has are left out on purpose:
# negative_data_rejection/positive_data_acceptance judge input validation, not the document's
# answers (and this API treats e.g. empty filters as "unset"), use_after_free and
# ensure_resource_availability need stateful links the document does not declare, and the
# auth passes below test ignored_auth's concern (401 without a token) directly.
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"

step() { printf '\n==> %s\n' "$*"; }

step "schemathesis venv (.venv-schemathesis/)"
requirements=scripts/schemathesis-requirements.txt
if ! .venv-schemathesis/bin/python -c '' 2>/dev/null; then
  rm -rf .venv-schemathesis
  python3 -m venv .venv-schemathesis
fi
# pip only when an installed version differs from its pin, so reruns are fast.
if ! .venv-schemathesis/bin/python - "$requirements" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = [l.split("==") for l in open(sys.argv[1]).read().splitlines() if l and not l.startswith("#")]
try:
    sys.exit(any(version(name) != pinned for name, pinned in pins))
except PackageNotFoundError:
    sys.exit(1)
PY
then
  .venv-schemathesis/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
fi
schemathesis=.venv-schemathesis/bin/schemathesis

bin=target/release/retryguard
if [ ! -x "$bin" ]; then
  step "build $bin"
  cargo build --release --locked
fi
command -v redis-server >/dev/null || { echo "redis-server is not on PATH (Debian: apt-get install -y redis-server)" >&2; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/retryguard-schemathesis.XXXXXX")"
redis_pid=""
server_pid=""
cleanup() {
  local rc=$?
  for pid in "$server_pid" "$redis_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ] && [ -f "$tmp/serve.log" ]; then
    cp "$tmp/serve.log" "$SCHEMATHESIS_REPORT_DIR/serve.log" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nothing listens on now (the kernel's pick; never 6379).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "redis-server (throwaway, no persistence)"
redis_port="$(free_port)"
while [ "$redis_port" = 6379 ]; do redis_port="$(free_port)"; done
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" --save "" --appendonly no \
  --logfile "$tmp/redis.log" &
redis_pid=$!
redis_url="redis://127.0.0.1:$redis_port/0"
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  kill -0 "$redis_pid" 2>/dev/null || { cat "$tmp/redis.log" >&2; exit 1; }
  sleep 0.05
done
redis-cli -p "$redis_port" ping >/dev/null

step "seed failed RQ jobs"
"$bin" demo --redis-url "$redis_url" --queue demo --count-per-family 2 --yes >/dev/null
if .venv-test/bin/python -c 'import rq' 2>/dev/null; then
  # Jobs of host/tests/rq/jobs.py, each failing for real in a real forking `rq worker
  # --burst`: every failure family, a SIGKILLed work-horse (no traceback), and RQ's own
  # "max retries exceeded" (no exception text).
  PYTHONPATH=host/tests/rq .venv-test/bin/python - "$redis_url" <<'PY'
import sys

import redis
from rq import Queue, Retry

conn = redis.Redis.from_url(sys.argv[1])
families = ["network_error", "timeout", "rate_limit", "temporary_error", "database_lock",
            "validation_error", "logic_error", "data_not_found", "permission_error",
            "configuration_error", "custom_unknown"]
payments, reports = Queue("payments", connection=conn), Queue("reports.daily", connection=conn)
for n, family in enumerate(families):
    (payments if n % 2 else reports).enqueue(f"jobs.{family}")
    payments.enqueue(f"jobs.{family}")
payments.enqueue("jobs.killed_by_signal_9")
reports.enqueue("jobs.count_and_fail", "schemathesis:count")
reports.enqueue("jobs.return_retry", "schemathesis:retry", retry=Retry(max=1))
PY
  RQ_TEST_REDIS_URL="$redis_url" PYTHONPATH=host/tests/rq \
    .venv-test/bin/rq worker --burst --url "$redis_url" --logging_level CRITICAL \
    payments reports.daily >/dev/null 2>&1
else
  echo "note: .venv-test/ has no RQ (scripts/test.sh installs it): seeding with retryguard demo only" >&2
fi
failed=0
for q in $(redis-cli -p "$redis_port" smembers rq:queues | sed 's/^rq:queue://'); do
  failed=$((failed + $(redis-cli -p "$redis_port" zcard "rq:failed:$q")))
done
echo "failed jobs: $failed"
[ "$failed" -ge 20 ] || { echo "seeding made only $failed failed jobs" >&2; exit 1; }

step "retryguard serve"
token() { printf 'rg_%s' "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"; }
entry() { printf '%s:%s:%s' "$1" "$2" "$(printf '%s' "$3" | "$bin" auth hash-token)"; }
admin_token="$(token)"
read_token="$(token)"
tokens="$(entry schemathesis-admin admin "$admin_token"),$(entry schemathesis-read read "$read_token")"
port="$(free_port)"
base="http://127.0.0.1:$port"
# Only this run's settings: no ./retryguard.toml, no RETRYGUARD_* of the caller's shell.
printf '# written by scripts/schemathesis.sh\n' >"$tmp/retryguard.toml"
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^RETRYGUARD_' || true)
RETRYGUARD_CONFIG="$tmp/retryguard.toml" \
RETRYGUARD_REDIS_URL="$redis_url" \
RETRYGUARD_LISTEN="127.0.0.1:$port" \
RETRYGUARD_AUDIT_DIR="$tmp/audit" \
RETRYGUARD_POLICY_CACHE_DIR="$tmp/policy-cache" \
RETRYGUARD_AUDIT_FLUSH_INTERVAL_MS=200 \
RETRYGUARD_AUTH_TOKENS="$tokens" \
RETRYGUARD_SERVER_REQUEST_TIMEOUT_SECONDS=30 \
RETRYGUARD_SERVER_RETRY_ALL_WAIT_SECONDS=5 \
RETRYGUARD_LOG="${RETRYGUARD_LOG_FOR_TESTS:-warn}" \
  "$bin" serve >"$tmp/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }
  sleep 0.05
done
curl -fsS "$base/readyz" >/dev/null || { echo "the server never became ready" >&2; cat "$tmp/serve.log" >&2; exit 1; }

# Idempotency keys in each state, under names schemathesis generates first ("0", "00", …),
# so the key endpoints answer about held and completed keys too, not only absent ones.
post() {
  curl -fsS -X POST -H "Authorization: Bearer $admin_token" -H 'content-type: application/json' \
    "$base/api/v1/idempotency/$1" -d "$2"
}
for key in 0 A; do
  post "$key/begin" '{"fingerprint":"f1","lease_seconds":3600}' >/dev/null
done
for key in 00 a; do
  fence="$(post "$key/begin" '{"fingerprint":"f2"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
  post "$key/complete" "{\"token\":$fence,\"result\":{\"charged\":true}}" >/dev/null
done
# A retry-all that finished and wrote audit records, so the audit trail has pages.
curl -fsS -X POST -H "Authorization: Bearer $admin_token" \
  "$base/api/v1/jobs/failed/retry-all?dry_run=true&retry_only_retryable=false" >/dev/null

report_args=()
if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
  mkdir -p "$SCHEMATHESIS_REPORT_DIR"
fi
# One schemathesis run; $1 names it (and its JUnit report), the rest are extra arguments.
run() {
  local name=$1
  shift
  local cmd=("$schemathesis" run "$base/openapi.json"
    --checks "$CHECKS"
    --seed "$SEED"
    --generation-database none
    --workers "$WORKERS"
    --request-timeout 40
    --no-color
    "$@")
  if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
    cmd+=(--report junit --report-junit-path "$SCHEMATHESIS_REPORT_DIR/$name.xml")
  fi
  step "schemathesis: $name"
  # The command as run, tokens hidden.
  printf '%q ' "${cmd[@]}" | sed -E 's/rg_[0-9a-f]{64}/rg_…/g'
  echo
  "${cmd[@]}" || failed_passes+=("$name")
}
failed_passes=()

# Narrow exclusions, each inapplicable rather than failing:
# - POST /api/v1/policies (operationId `upload`) takes an `application/wasm` body, which
#   schemathesis cannot serialize (it errors out instead of testing); the policy tests
#   (host/tests/policy, host/tests/api/policies.rs) upload real and broken components.
# - The stateful phase: the document declares no OpenAPI links, and the links schemathesis
#   infers from the 202's `Location` point at the wrong operation (it reports them invalid).
exclusions=(--exclude-operation-id upload --phases examples,coverage,fuzzing)
start=$SECONDS
run admin --max-examples "$MAX_EXAMPLES" "${exclusions[@]}" -H "Authorization: Bearer $admin_token"
if [ "$AUTH_PASSES" != 0 ]; then
  # 403 on every POST and DELETE (and the admin-only DELETE), 200s on GETs.
  run read-token --max-examples "$AUTH_MAX_EXAMPLES" --exclude-operation-id upload --phases examples,fuzzing \
    -H "Authorization: Bearer $read_token"
  # 401 (with WWW-Authenticate) on every operation but the open ones.
  run no-token --max-examples "$AUTH_MAX_EXAMPLES" --exclude-operation-id upload --phases examples,fuzzing
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "the server died during the run:" >&2
  tail -50 "$tmp/serve.log" >&2
  exit 1
fi
if grep -q '"level":"ERROR"' "$tmp/serve.log"; then
  echo "the server logged errors:" >&2
  grep '"level":"ERROR"' "$tmp/serve.log" | head -20 >&2
  exit 1
fi
if [ "${#failed_passes[@]}" -gt 0 ]; then
  echo "schemathesis: failed passes: ${failed_passes[*]} (see above)" >&2
  exit 1
fi
echo "schemathesis: all passes green in $((SECONDS - start)) s"
