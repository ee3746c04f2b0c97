#!/usr/bin/env bash
# Install exactly the locked dependencies, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
uv run --frozen ruff check .
uv run --frozen mypy
uv run --frozen pytest "$@"
