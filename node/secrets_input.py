"""Reading a local API key without it ever appearing in argv."""

import os
import stat
import sys
from pathlib import Path

ENV_KEY = "B3IQ_LOCAL_KEY"
ENV_KEY_FILE = "B3IQ_LOCAL_KEY_FILE"


def read_api_key(key_file: Path | None, from_stdin: bool) -> str:
    if from_stdin:
        key = sys.stdin.readline().strip()
    elif key_file is not None or os.environ.get(ENV_KEY_FILE):
        path = key_file or Path(os.environ[ENV_KEY_FILE])
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            print(f"warning: {path} is readable by others; chmod 600 it", file=sys.stderr)
        key = path.read_text().strip()
    else:
        key = os.environ.get(ENV_KEY, "").strip()
    if not key:
        raise SystemExit(
            f"no API key: use --api-key-file FILE, --api-key-stdin, {ENV_KEY} or {ENV_KEY_FILE}"
        )
    return key


def write_secret_file(path: Path, secret: str) -> None:
    """Create `path` with mode 0600 and the secret in it; never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
