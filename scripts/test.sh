#!/usr/bin/env bash
# Installs what the tests need and runs every check CI runs. Safe to run again.
#   scripts/test.sh            everything (lint + tests)
#   SKIP_LINT=1 scripts/test.sh  tests only
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm targets for the policies (wasip2: the WASI probe fixture)"
rustup target add wasm32-unknown-unknown wasm32-wasip2

if [ -z "${SKIP_LINT:-}" ]; then
  step "format"
  cargo fmt --all -- --check
  (cd policies && cargo fmt --all -- --check)

  step "layering: no cycle between host/src's top-level modules, no source file over 700 lines"
  python3 scripts/module-graph.py >/dev/null || python3 scripts/module-graph.py -v

  step "clippy: host (the policies are built, not linted, by host/build.rs)"
  cargo clippy --release --all-targets -- -D warnings

  step "clippy: policies, natively and for wasm32"
  (cd policies && cargo clippy --locked --all-targets -- -D warnings)
  (cd policies && cargo clippy --locked --release --target wasm32-unknown-unknown \
      --target-dir ../target/wasm-policies -- -D warnings)
  (cd policies && cargo clippy --locked --release --target wasm32-wasip2 \
      -p retryguard-policy-wasi-probe --target-dir ../target/wasm-policies -- -D warnings)
fi

step "tests: policies (native unit tests of the default and payments policies)"
(cd policies && cargo test --locked)

step "real-parts test harness: redis-server and the RQ venv (.venv-test/)"
# The RQ tests (host/tests/rq) start their own redis-server on free ports; never 6379.
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is not on PATH: install it (Debian: apt-get install -y redis-server)" >&2
    exit 1
  fi
fi
# The TLS tests (host/tests/rq/connectivity.rs, host/tests/api) make their certificates with
# the openssl command.
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "openssl is not on PATH: install it (Debian: apt-get install -y openssl)" >&2
    exit 1
  fi
fi
rq_requirements=host/tests/rq/requirements.txt
if ! .venv-test/bin/python -c '' 2>/dev/null; then
  rm -rf .venv-test
  python3 -m venv .venv-test
fi
# pip only when an installed version differs from its pin, so reruns are fast.
if ! .venv-test/bin/python - "$rq_requirements" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = [l.split("==") for l in open(sys.argv[1]).read().splitlines() if l and not l.startswith("#")]
try:
    sys.exit(any(version(name) != pinned for name, pinned in pins))
except PackageNotFoundError:
    sys.exit(1)
PY
then
  .venv-test/bin/python -m pip install -q --disable-pip-version-check -r "$rq_requirements"
fi
export RETRYGUARD_TEST_PYTHON="$PWD/.venv-test/bin/python"

step "python policy: componentize-py build (the host's python tests load it; CI fails without it)"
policies/python/build.sh

step "tests: host (release profile: wasmtime is built once for tests and binary)"
cargo test --release --locked --workspace

step "schemathesis: the live API against its own /openapi.json (scripts/schemathesis.sh)"
scripts/schemathesis.sh

step "dashboard: headless Chromium against a live serve (scripts/ui-test.sh)"
scripts/ui-test.sh

step "fuzzing: every parser of outside data for FUZZ_SECONDS each (scripts/fuzz.sh)"
scripts/fuzz.sh
