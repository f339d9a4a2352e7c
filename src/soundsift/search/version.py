"""The files of one index version as a build writes them (``write_version``: the small manifest that
lists the segments, their deleted rows, ``report.json`` with the ``BuildReport``, ``skipped.txt``), and
the FAISS index a large segment stores (``write_faiss``). The layout is described in ``search.index``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.search.index_types import (
    INDEX_FORMAT,
    INDEX_VERSION,
    MANIFEST,
    REPORT,
    SKIPPED,
    THUMBNAILS,
)
from soundsift.search.segments import save_npy
from soundsift.search.store import write_json
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH


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
    segments: int = 0  # segments the version is made of
    merged: int = 0  # segments merged into one by this build (compaction)
    bytes_written: int = 0  # bytes of new segments and version files
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
class VersionPlan:
    """What one version lists: the model that embedded it (and how the manifest records it), the audio
    root, its segments (name, rows, sorted deleted local rows), the id counter, build number and
    window setting (window, hop seconds) with the count of live windows."""

    model: Any
    recorded_model: Any
    audio_root: Path
    segments: list[tuple[str, int, np.ndarray]]
    next_id: int
    build_no: int
    window_setting: tuple[float, float] = (0.0, 0.0)
    windows: int = 0
    items: int = 0
    window_embedding: str = "alone"  # how the window vectors were made (search.embedding.window_embedding)




def write_version(tmp: Path, plan: VersionPlan, report: BuildReport, t0: float) -> None:
    """Write the files of one index version into the (temporary) directory ``tmp``; ``report.seconds``
    counts from ``t0`` (``time.perf_counter``) and ``report.bytes_written`` adds these files."""
    from soundsift.search.reader import deleted_file

    model = plan.model
    written = 0
    for name, _, deleted in plan.segments:
        if len(deleted):
            written += save_npy(tmp / deleted_file(name), np.asarray(deleted, np.int64))
    manifest = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "build": plan.build_no,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"identity": model.identity, "path": plan.recorded_model, "embed_dim": model.embed_dim,
                  "sample_rate": model.sample_rate, "config": model.config,
                  "runtime": model.runtime, "quantize": model.quantize},
        "audio_root": str(plan.audio_root),
        "embed_dim": model.embed_dim,
        "next_id": plan.next_id,
        "items": plan.items,
        "faiss": None,  # FAISS indexes are stored per segment (segment.json)
        "windows": {"window": plan.window_setting[0], "hop": plan.window_setting[1], "count": plan.windows,
                    "faiss": None, "embedding": plan.window_embedding},
        "thumbnails": {"file": THUMBNAILS, "height": THUMB_HEIGHT, "width": THUMB_WIDTH, "kind": "spectrogram"},
        "segments": [{"name": name, "rows": rows, "deleted": len(deleted)} for name, rows, deleted in plan.segments],
    }
    write_json(tmp / MANIFEST, manifest)
    with open(tmp / SKIPPED, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.writelines(f"{s['path']}\t{s['reason']}\n" for s in report.skipped)
    report.seconds = round(time.perf_counter() - t0, 3)
    report.segments = len(plan.segments)
    report.bytes_written += written + sum((tmp / f).stat().st_size for f in (MANIFEST, SKIPPED)) + 2048  # report
    write_json(tmp / REPORT, asdict(report))
