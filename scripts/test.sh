#!/usr/bin/env bash
# Installs what the tests need and runs every check CI runs. Safe to run again.
#   scripts/test.sh            everything (lint + tests)
#   SKIP_LINT=1 scripts/test.sh  tests only
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm target for the policies"
rustup target add wasm32-unknown-unknown

if [ -z "${SKIP_LINT:-}" ]; then
  step "format"
  cargo fmt --all -- --check
  (cd policies && cargo fmt --all -- --check)

  step "clippy: host (the policies are built, not linted, by host/build.rs)"
  cargo clippy --release --all-targets -- -D warnings

  step "clippy: policies, natively and for wasm32"
  (cd policies && cargo clippy --locked --all-targets -- -D warnings)
  (cd policies && cargo clippy --locked --release --target wasm32-unknown-unknown \
      --target-dir ../target/wasm-policies -- -D warnings)
fi

step "tests: policies (native unit tests of the default policy's logic)"
(cd policies && cargo test --locked)

step "tests: host (release profile: wasmtime is built once for tests and binary)"
cargo test --release --locked --workspace
