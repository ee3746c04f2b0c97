"""Private keys on disk: created once with mode 0600, refused if anyone else can read them."""

import os
import secrets
import stat
from pathlib import Path

from domain.signing import Signer


class KeyFileError(Exception):
    pass


def load_or_create_signer(path: Path) -> Signer:
    if path.exists():
        return load_signer(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = Signer.generate()
    # Written aside, then linked into place: a process starting beside us finds no key or
    # a whole one, never a half-written file, and link() refuses if one got there first.
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(signer.seed)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(aside, path)
    except FileExistsError:
        return load_signer(path)
    finally:
        aside.unlink(missing_ok=True)
    return signer


def load_signer(path: Path) -> Signer:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    seed = path.read_bytes()
    if len(seed) != 32:
        raise KeyFileError(f"{path} is not a 32-byte Ed25519 seed")
    return Signer(seed)
