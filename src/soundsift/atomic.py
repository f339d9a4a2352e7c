"""Atomic file writes: write a temporary file beside the target, then rename it over the target.

An interrupted job never leaves a half-written result; the previous file stays until the new one is
complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_MODE: list[int] = []


def _file_mode() -> int:
    """The permissions a plain open() gives a new file (mkstemp's are 0600); read the umask once."""
    if not _MODE:
        umask = os.umask(0o022)
        os.umask(umask)
        _MODE.append(0o666 & ~umask)
    return _MODE[0]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, _file_mode())
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
