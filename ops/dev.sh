#!/usr/bin/env bash
# Install exactly the locked dependencies, then start the whole stack (b3iq dev).
set -euo pipefail
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
exec uv run --frozen b3iq dev "$@"
