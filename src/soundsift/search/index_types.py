"""The names and records shared by an index's readers and writers: file names, the format tag, ``IndexEntry``,
the ``CURRENT`` pointer (``version_dir``) and a version's manifest (``read_manifest``; format 1 listed
every entry in it, format 2 lists segments: ``search.segments``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from soundsift.errors import SearchIndexError, check_format
from soundsift.search.backends import FAISS_KINDS

INDEX_FORMAT = "soundsift-index"
INDEX_VERSION = 2  # 1: every entry in manifest.json (read, and migrated by the next build)
LEGACY_VERSION = 1
POINTER = "CURRENT"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
REPORT = "report.json"
SKIPPED = "skipped.txt"
THUMBNAILS = "thumbnails.npy"
EXACT_LIMIT = 100_000  # "auto" uses the exact backend up to this many items, FAISS above (if installed)
BACKENDS = ("auto", "exact", "faiss", *FAISS_KINDS)  # what a search may use
# The FAISS index built when none is asked for by name: IVF over 8-bit codes with the top candidates
# re-scored exactly from the float32 embeddings (benchmarks/search.py at 1M x 1024, structured
# vectors: p50 2 ms, recall@10 0.998, built in about 2 min; a quarter of plain IVF's memory).
AUTO_FAISS_KIND = "ivfsq"


@dataclass(frozen=True)
class IndexEntry:
    """One indexed audio file; ``path`` is relative to the index's audio root (POSIX separators)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    duration: float


def safe_relative_path(rel: str, where: str) -> str:
    """Check that a manifest path stays inside the audio root (no absolute path, '..', or NUL)."""
    p = PurePosixPath(rel)
    if not rel or "\x00" in rel or p.is_absolute() or ".." in p.parts or rel.startswith("\\"):
        raise SearchIndexError(f"{where}: unsafe file path {rel!r} in the index manifest")
    return rel


def version_dir(index_path: str | Path) -> Path:
    """The live version directory of the index at ``index_path``."""
    root = Path(index_path)
    pointer = root / POINTER
    if not root.is_dir():
        what = "is a file, not a soundsift index" if root.is_file() else "index directory not found"
        raise SearchIndexError(f"{root}: {what} (build one with `soundsift index build`)")
    if not pointer.is_file():
        raise SearchIndexError(f"{root}: not a soundsift index (no {POINTER} file); build it first")
    name = pointer.read_text(encoding="utf-8").strip()
    if not name or "/" in name or "\\" in name or name in (".", "..") or not (root / name).is_dir():
        raise SearchIndexError(f"{pointer}: points to a missing index version {name!r}")
    return root / name


def read_manifest(vdir: Path) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of one index version."""
    path = vdir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"{path}: cannot read the index manifest ({exc})") from exc
    if isinstance(manifest, dict) and manifest.get("version") == LEGACY_VERSION:
        check_format(manifest, path, INDEX_FORMAT, LEGACY_VERSION, SearchIndexError, "soundsift index manifest")
    else:
        check_format(manifest, path, INDEX_FORMAT, INDEX_VERSION, SearchIndexError, "soundsift index manifest",
                     "; rebuild the index")
    listed = "entries" if manifest["version"] == LEGACY_VERSION else "segments"
    for key in ("model", "audio_root", listed, "embed_dim"):
        if key not in manifest:
            raise SearchIndexError(f"{path}: index manifest has no {key!r}")
    return manifest


def entries_from_manifest(manifest: dict[str, Any], where: str) -> list[IndexEntry]:
    entries = []
    for row, e in enumerate(manifest["entries"]):
        try:
            entry = IndexEntry(
                id=int(e["id"]), path=str(e["path"]), size=int(e["size"]), mtime_ns=int(e["mtime_ns"]),
                sha256=str(e.get("sha256", "")), duration=float(e.get("duration", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchIndexError(f"{where}: entry {row} is malformed ({exc})") from exc
        safe_relative_path(entry.path, f"{where}: entry {row}")
        entries.append(entry)
    if len({e.id for e in entries}) != len(entries):
        raise SearchIndexError(f"{where}: duplicate ids in the index manifest")
    return entries
