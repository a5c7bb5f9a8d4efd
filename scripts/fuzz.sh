#!/usr/bin/env bash
# Fuzzes every parser of outside data for a fixed time each (docs/fuzzing.md): builds the
# cargo-fuzz targets in fuzz/ once, then runs each over its committed corpus.
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (20) each
#   scripts/fuzz.sh traceback config     only these targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh     longer runs
# New inputs go to a temporary directory: the committed corpus (fuzz/corpus/<target>) is
# read, never grown, here. A crash, panic, timeout or OOM fails the script; the input is
# kept in fuzz/artifacts/<target>/ and the hint says how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
ALL_TARGETS=(rq_hash_fields rq_job traceback policy_bytes config)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${ALL_TARGETS[@]}"); fi

# Release only, no sanitizer (safe Rust; with `-s none` cargo-fuzz passes no nightly-only
# flag, so the stable toolchain builds it), no `cfg(fuzzing)` (the code under test behaves
# as in production), 16 codegen units (cargo-fuzz's default of 1 makes wasmtime's build far
# slower): one set of binaries for every target.
BUILD_FLAGS=(-O -s none --no-cfg-fuzzing --codegen-units 16)

step() { printf '\n==> %s\n' "$*"; }

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

step "build: every fuzz target, once"
started=$SECONDS
(cd fuzz && cargo fuzz build "${BUILD_FLAGS[@]}")
echo "built in $((SECONDS - started)) s"

bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  step "fuzz: $t for ${FUZZ_SECONDS} s"
  corpus=fuzz/corpus/$t
  [ -d "$corpus" ] || { echo "no corpus directory $corpus" >&2; exit 1; }
  artifacts=fuzz/artifacts/$t
  mkdir -p "$work/$t" "$artifacts"
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$artifacts/")
  [ -f "fuzz/dicts/$t.dict" ] && args+=(-dict="fuzz/dicts/$t.dict")
  # The first directory receives new inputs (temporary); the committed one is only read.
  log=$work/$t.log
  if "$bin_dir/$t" "${args[@]}" "$work/$t" "$corpus" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "$t: ok, ${execs:-?} inputs (${rate:-?}/s), $(find "$work/$t" -type f | wc -l) new"
  else
    status=$?
    failed+=("$t")
    tail -n 60 "$log"
    input=$(grep -o "Test unit written to .*" "$log" | tail -n 1 | sed 's/^Test unit written to //')
    echo "$t: FAILED (exit $status)"
    if [ -n "$input" ] && [ -f "$input" ]; then
      echo "the input is $input ($(wc -c <"$input") bytes); base64:"
      head -c 4096 "$input" | base64 -w 0; echo
      cat <<HINT
Reproduce:  (cd fuzz && cargo fuzz run ${BUILD_FLAGS[*]} $t ../$input)
Minimize:   (cd fuzz && cargo fuzz tmin ${BUILD_FLAGS[*]} $t ../$input)
Then fix the parser and add the input as a unit test in its module (docs/fuzzing.md).
HINT
    fi
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no crash"
