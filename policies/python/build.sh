#!/usr/bin/env bash
# Builds the Python example policy (policies/python/app.py) into a `retry-policy` component
# with componentize-py:
#
#   policies/python/build.sh [OUT.wasm]      # default: target/python-policy/policy.wasm
#
# Creates (or reuses) the virtualenv .venv-componentize/ at the repository root with the
# pinned componentize-py (requirements.txt; PYTHON=python3.11 by default), regenerates the
# default policy's tables as a Python module (gen_rules.py, from policies/default/src/rules.rs)
# under target/python-policy/gen/, checks the port natively on the contract table
# (check_native.py), then runs
#
#   componentize-py -d wit -w retry-policy componentize app -p policies/python \
#       -p target/python-policy/gen -o OUT.wasm
#
# The component imports WASI (CPython's runtime does), so the host loads it only with the WASI
# opt-in and limits of its own; try it with
#
#   retryguard policy check --allow-wasi --fuel 20000000 --deadline-ms 500 \
#       --memory-bytes 33554432 target/python-policy/policy.wasm
#
# Nothing built here is committed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/python-policy/policy.wasm}"
venv="$root/.venv-componentize"
gen="$root/target/python-policy/gen"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

# The venv is reused while it has the pinned version (pip runs only when it differs).
pinned="$(sed -n 's/^componentize-py==//p' "$here/requirements.txt")"
installed="$("$venv/bin/python" -c \
  'from importlib.metadata import version; print(version("componentize-py"))' 2>/dev/null || true)"
if [[ "$installed" != "$pinned" || ! -x "$venv/bin/componentize-py" ]]; then
  echo "build.sh: installing componentize-py $pinned into $venv" >&2
  "$venv/bin/python" -c '' 2>/dev/null || { rm -rf "$venv"; "$python" -m venv "$venv"; }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

mkdir -p "$gen" "$(dirname "$out")"
"$venv/bin/python" "$here/gen_rules.py" "$root/policies/default/src/rules.rs" "$gen/default_rules.py"

# A native check of the port first (about a second), then the component (about 30 s).
bindings="$root/target/python-policy/bindings"
rm -rf "$bindings"
"$venv/bin/componentize-py" -d "$root/wit" -w retry-policy bindings "$bindings"
"$venv/bin/python" "$here/check_native.py" "$bindings" "$gen"

started=$(date +%s)
"$venv/bin/componentize-py" -d "$root/wit" -w retry-policy componentize app \
  -p "$here" -p "$gen" -o "$out"
echo "build.sh: $out ($(stat -c %s "$out") bytes) in $(( $(date +%s) - started )) s" >&2
