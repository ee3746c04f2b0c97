#!/usr/bin/env bash
# Install exactly the locked dependencies, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
# The setup page is tested in headless Chromium (Debian's package); without it that test
# is skipped, so install it where we can.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
        || echo "could not install chromium; the browser test will be skipped" >&2
fi
uv run --frozen ruff check .
uv run --frozen mypy
uv run --frozen pytest "$@"
