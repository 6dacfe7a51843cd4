"""Files that hold a secret (the AppRole secret id): one check, one wording, wherever read.

A secret file must be a regular file that only its owner can read or write. The check runs on
the open descriptor, so the file checked is the file read; a symbolic link, as Kubernetes
secret volumes use, is judged by its target. `config.load_config()` checks at start-up (a
`ConfigError`, exit 2) and `vault.read_secret_id()` again as it reads (a `CredentialError`):
the same sentences either way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def open_secret_file(path: Path, name: str, error: type[Exception]) -> int:
    """An open, read-only descriptor on the secret file `path` (set by variable `name`), checked;
    anything wrong raises `error` with one line naming the variable and what to do."""
    shown = f"{name}={str(path)!r}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise error(f"{shown} {_why(err)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{shown} is not a regular file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error(
                f"{shown} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_secret_file(path: Path, name: str, error: type[Exception]) -> None:
    """open_secret_file, for a start-up check that reads nothing."""
    os.close(open_secret_file(path, name, error))


def read_error(path: Path, name: str, err: OSError) -> str:
    """The line for a secret file that opened but could not be read."""
    return f"{name}={str(path)!r} {_why(err)}"


def _why(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "does not exist"
    return f"cannot be read: {err.strerror or type(err).__name__}"
