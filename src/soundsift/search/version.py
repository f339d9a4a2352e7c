"""The files of one index version as a build writes them (``write_version``: manifest, embeddings,
thumbnails, ``report.json`` with the ``BuildReport``, ``skipped.txt``), and the previous version's
thumbnails read back for reuse (``previous_thumbnails``). The layout is described in ``search.index``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.errors import SearchIndexError
from soundsift.search.backends import FaissIndex, faiss_available
from soundsift.search.index import (
    AUTO_FAISS_KIND,
    EMBEDDINGS,
    EXACT_LIMIT,
    INDEX_FORMAT,
    INDEX_VERSION,
    MANIFEST,
    REPORT,
    SKIPPED,
    THUMBNAILS,
    IndexEntry,
    version_dir,
)
from soundsift.search.store import write_json
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH
from soundsift.search.windows import WINDOW_EMBEDDINGS, WINDOW_SPANS


@dataclass
class BuildReport:
    """What a build did; saved as ``report.json`` in the index version it wrote."""

    index: str
    version: str
    audio_root: str
    files: int = 0  # audio files indexed in this version
    embedded: int = 0  # decoded and embedded in this build
    unchanged: int = 0  # same path, size and mtime as before: embedding kept
    reused: int = 0  # new or changed path, same content as an indexed file: embedding kept
    added: int = 0
    updated: int = 0
    removed: int = 0
    thumbnails: int = 0  # thumbnails drawn in this build (the rest are kept or reused)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (``index build --stats``)

    def summary(self) -> str:
        return (
            f"indexed {self.files} files in {self.index} ({self.version}): {self.added} added, "
            f"{self.updated} updated, {self.removed} removed, {self.unchanged} unchanged; embedded "
            f"{self.embedded}, reused {self.reused} by content; skipped {len(self.skipped)}; "
            f"{self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class VersionContents:
    """What one version holds: the model that embedded it (and how the manifest records it), the audio
    root, entries with their embeddings and thumbnails (rows aligned), the id counter and build number."""

    model: Any
    recorded_model: Any
    audio_root: Path
    entries: list[IndexEntry]
    embeddings: np.ndarray
    thumbnails: np.ndarray
    next_id: int
    build_no: int
    faiss: str
    windows: tuple[np.ndarray, np.ndarray] | None = None  # (W, 3) entry row, start, end; (W, D) embeddings
    window_setting: tuple[float, float] = (0.0, 0.0)  # (window, hop) seconds


def previous_thumbnails(out: Path, manifest: dict[str, Any], n: int) -> np.ndarray | None:
    """The thumbnails of the live version (read in full: publishing deletes it), or None."""
    if (manifest.get("thumbnails") or {}).get("file") != THUMBNAILS:
        return None  # built before thumbnails existed: they are drawn for every file
    try:
        thumbs = np.load(version_dir(out) / THUMBNAILS, allow_pickle=False)
    except (SearchIndexError, OSError, ValueError):
        return None
    return thumbs if thumbs.shape == (n, THUMB_HEIGHT, THUMB_WIDTH) and thumbs.dtype == np.uint8 else None


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def _write_faiss(tmp: Path, vectors: np.ndarray, faiss: str, name: str) -> dict[str, Any] | None:
    """Store a FAISS index of ``vectors`` as ``tmp/name`` (``{}``: its kind) when ``faiss`` asks for one
    ("auto": ``AUTO_FAISS_KIND`` above ``EXACT_LIMIT`` rows, if faiss is installed); its manifest record."""
    big = len(vectors) > EXACT_LIMIT and faiss_available()
    want = faiss if faiss != "auto" else (AUTO_FAISS_KIND if big else "none")
    if want == "none" or not len(vectors):
        return None
    index = FaissIndex(vectors, want)
    index.save(tmp / name.format(want))
    return {**index.params, "file": name.format(want)}


def write_version(tmp: Path, version: VersionContents, report: BuildReport, t0: float) -> None:
    """Write the files of one index version into the (temporary) directory ``tmp``; ``report.seconds``
    counts from ``t0`` (``time.perf_counter``)."""
    model, faiss, entries, emb = version.model, version.faiss, version.entries, version.embeddings
    _save_npy(tmp / EMBEDDINGS, emb)
    _save_npy(tmp / THUMBNAILS, version.thumbnails)
    faiss_info = _write_faiss(tmp, emb, faiss, "faiss-{}.index")
    spans, win_emb = version.windows if version.windows is not None else (np.zeros((0, 3)), emb[:0])
    windows_info = {"window": version.window_setting[0], "hop": version.window_setting[1], "count": len(spans)}
    if len(spans):
        _save_npy(tmp / WINDOW_SPANS, spans)
        _save_npy(tmp / WINDOW_EMBEDDINGS, win_emb)
        windows_info["faiss"] = _write_faiss(tmp, win_emb, faiss, "faiss-windows-{}.index")
    manifest = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "build": version.build_no,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"identity": model.identity, "path": version.recorded_model, "embed_dim": model.embed_dim,
                  "sample_rate": model.sample_rate, "config": model.config,
                  "runtime": model.runtime, "quantize": model.quantize},
        "audio_root": str(version.audio_root),
        "embed_dim": model.embed_dim,
        "next_id": version.next_id,
        "faiss": faiss_info,
        "windows": windows_info,
        "thumbnails": {"file": THUMBNAILS, "height": THUMB_HEIGHT, "width": THUMB_WIDTH, "kind": "spectrogram"},
        "entries": [asdict(e) for e in entries],
    }
    write_json(tmp / MANIFEST, manifest)
    with open(tmp / SKIPPED, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.writelines(f"{s['path']}\t{s['reason']}\n" for s in report.skipped)
    report.seconds = round(time.perf_counter() - t0, 3)
    write_json(tmp / REPORT, asdict(report))
