"""File digests (``file_digest``): the standard library only, so that indexing and searching do not import
the network code of ``soundsift.downloader`` (which re-exports it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # bytes read at a time


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = CHUNK) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
