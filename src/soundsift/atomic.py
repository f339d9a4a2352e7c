"""Atomic writes: a temporary file (or directory) beside the target, then a rename onto the target.

An interrupted job never leaves a half-written result; the previous file stays until the new one is
complete, and a new directory appears whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

_UMASK: list[int] = []


def _umask() -> int:
    """The process umask (read once: reading it means setting it)."""
    if not _UMASK:
        umask = os.umask(0o022)
        os.umask(umask)
        _UMASK.append(umask)
    return _UMASK[0]


def _file_mode() -> int:
    """The permissions a plain open() gives a new file (mkstemp's are 0600)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The result has the permissions a plain ``open()`` would give (0644 under umask 022), whatever mode
    the writer left on the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # after writing: some writers (safetensors) re-create the file with mode 0600
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry to disk (best effort; not all platforms allow opening directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_dir(dest: str | Path, fill: Callable[[Path], None], tmp_prefix: str | None = None) -> Path:
    """Call ``fill(tmp)`` on a new temporary directory beside ``dest``, then rename it to ``dest``.

    ``dest`` must not exist (the rename fails with an OSError otherwise, and nothing changes). The
    directory and its files get the permissions plain ``mkdir``/``open`` would give (mkdtemp and some
    writers make 0700/0600). The temporary directory is named ``{tmp_prefix}{32 hex digits}`` (default
    ``.{dest name}.``) so that a cleaner can recognise leftovers of a killed writer.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{tmp_prefix if tmp_prefix is not None else f'.{dest.name}.'}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        fill(tmp)
        for item in tmp.iterdir():
            if item.is_file():
                os.chmod(item, _file_mode())
        os.chmod(tmp, 0o777 & ~_umask())
        fsync_dir(tmp)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)
    return dest
