# Sourced by ops/dev.sh and ops/test.sh: make sure uv exists and the venv matches uv.lock.
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --user "uv==0.13.9"
    export PATH="$HOME/.local/bin:$PATH"
fi
# llama-cpp-python compiles from source on first install (~5 min on 2 cores, then cached):
# a portable build that does not depend on this CPU's exact instruction set.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
# Offline first: uv revalidates the sdist's HTTP cache entry online and may then build
# again, while the cache already holds the wheel it built last time.
uv sync --frozen --python 3.11 --offline --quiet 2>/dev/null || uv sync --frozen --python 3.11
