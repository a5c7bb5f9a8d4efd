#!/usr/bin/env bash
# HTTP load on loopback with wrk (Debian's `wrk` package): idempotency-guard begin+complete
# pairs on distinct keys at 32 connections, and GET /api/v1/jobs/failed?limit=100 over
# 10,000 real failed RQ jobs at 50 connections. Not run in CI.
#
#   scripts/bench/api_load.sh [SECONDS]      (default 20 s per run)
#
# Needs: wrk, redis-server, the release binary (cargo build --release) and the test venv
# (.venv-test/, made by scripts/test.sh) to make the failed jobs with real RQ workers.
# Starts its own redis-server and `retryguard serve` on free ports; removes them at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
bin=target/release/retryguard
python=.venv-test/bin/python
for need in wrk redis-server "$bin" "$python"; do
  command -v "$need" >/dev/null 2>&1 || [ -x "$need" ] || { echo "missing: $need" >&2; exit 1; }
done

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --dir "$work" --daemonize no \
  >"$work/redis.log" 2>&1 &
redis_pid=$!
api_port=$(free_port)
cleanup() { kill "$api_pid" "$redis_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
url="redis://127.0.0.1:$redis_port/0"

echo "== making 10,000 failed jobs with real RQ workers"
PYTHONPATH=host/tests/rq "$python" host/tests/rq/make_failed.py --redis-url "$url" \
  --queue bench --count 10000 --func jobs.count_and_fail --arg runs >/dev/null

env -u RETRYGUARD_CONFIG RETRYGUARD_REDIS_URL="$url" RETRYGUARD_LISTEN="127.0.0.1:$api_port" \
  RETRYGUARD_AUDIT_DIR="$work/audit" RETRYGUARD_POLICY_CACHE_DIR="$work/policy-cache" RETRYGUARD_LOG=warn "$bin" serve >"$work/serve.log" 2>&1 &
api_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break; sleep 0.1
done
base="http://127.0.0.1:$api_port"
echo "== cores: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== guard: begin+complete pairs on distinct keys, 32 connections, 2 threads, ${seconds}s"
wrk -t2 -c32 -d"${seconds}s" --latency -s scripts/bench/guard_pairs.lua "$base" | tail -n 4

echo "== list: GET /api/v1/jobs/failed?limit=100 over 10,000 failed jobs, 50 connections, ${seconds}s"
curl -fsS "$base/api/v1/jobs/failed?limit=100" >/dev/null
if [ -n "${PERF_OUT:-}" ]; then perf record -F 499 -g -p "$api_pid" -o "$PERF_OUT" -- sleep "$seconds" >/dev/null 2>&1 & fi
wrk -t2 -c50 -d"${seconds}s" --latency -s scripts/bench/list.lua \
  "$base/api/v1/jobs/failed?limit=100" | tail -n 2
