#!/usr/bin/env bash
# The dashboard's browser tests (host/tests/ui/test_dashboard.py): headless Chromium from
# Debian, driven by Selenium (pinned in host/tests/ui/requirements.txt, installed into
# .venv-test/) through Debian's chromedriver, against a real `retryguard serve` over real
# RQ failures. The test starts its own redis-server, worker and server.
#
#   scripts/ui-test.sh                        run them
#   UI_SCREENSHOT_DIR=DIR scripts/ui-test.sh  where the screenshots go (default target/ui-screenshots)
#   UI_KEEP_LOGS=1 scripts/ui-test.sh         keep the server's log and Redis's dir
#
# Installs chromium and chromium-driver with apt-get when they are missing (as root), and
# Selenium when a pin differs; builds target/release/retryguard when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium and chromedriver are not on PATH (Debian: apt-get install -y chromium chromium-driver)" >&2
    exit 1
  fi
fi

requirements=host/tests/ui/requirements.txt
if ! .venv-test/bin/python -c '' 2>/dev/null; then
  python3 -m venv .venv-test
fi
if ! .venv-test/bin/python - "$requirements" host/tests/rq/requirements.txt <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
pins = [l.split("==") for f in sys.argv[1:] for l in open(f).read().splitlines() if l and not l.startswith("#")]
try:
    sys.exit(any(version(name) != pinned for name, pinned in pins))
except PackageNotFoundError:
    sys.exit(1)
PY
then
  .venv-test/bin/python -m pip install -q --disable-pip-version-check -r host/tests/rq/requirements.txt -r "$requirements"
fi

if [ ! -x target/release/retryguard ]; then
  cargo build --release --locked
fi
# Selenium must not look for drivers or browsers on the network: both are given.
export SE_AVOID_STATS=true SE_OFFLINE=true
exec .venv-test/bin/python -m unittest host/tests/ui/test_dashboard.py -v
