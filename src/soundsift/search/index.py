"""A searchable index of a sound library: embeddings of every file plus the manifest that names them.

On disk an index is a directory::

    INDEX/CURRENT            one line: the name of the live version directory (replaced atomically)
    INDEX/v000003-1a2b3c4d/  manifest.json (small: the segments it uses), deleted-<segment>.npy,
                             report.json, skipped.txt
    INDEX/segments/s000002-9f8e7d6c/   one immutable segment of rows (``search.segments``)

Each segment holds some files' entries, embeddings, windows and spectrogram thumbnails (uint8, served as
PNG by ``SoundIndex.thumbnail_png``). An update writes a segment of the new and changed files only and a
new small version directory that lists the segments and their deleted rows, then atomically replaces
``CURRENT`` (``search.store``); a build killed at any moment leaves the previous version live. ``open_index`` loads the live version; ``TextSearcher`` embeds text
queries and example sounds with the index's model and ranks the files.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.errors import AudioError, ConfigError, SearchIndexError
from soundsift.search.index_types import (  # noqa: F401  (re-exported: the index's names)
    AUTO_FAISS_KIND,
    BACKENDS,
    EMBEDDINGS,
    EXACT_LIMIT,
    INDEX_FORMAT,
    INDEX_VERSION,
    MANIFEST,
    POINTER,
    REPORT,
    SKIPPED,
    THUMBNAILS,
    IndexEntry,
    entries_from_manifest,
    read_manifest,
    safe_relative_path,
    version_dir,
)
from soundsift.search.moments import Hit, cut_moment, parse_moment_spec
from soundsift.search.sound_index import SoundIndex, open_index  # noqa: F401  (re-exported)
from soundsift.search.windows import window_setting


def resolve_model_path(index: SoundIndex, model_path: str | Path | list | None) -> Path | list[Path]:
    """The model to query ``index`` with: ``model_path`` if given, else the one recorded at build (a
    list of them for an ensemble)."""
    if model_path is not None:
        if isinstance(model_path, (list, tuple)):
            return [Path(p) for p in model_path] if len(model_path) > 1 else Path(model_path[0])
        return Path(model_path)
    if not index.model_path:
        raise SearchIndexError(f"{index.path}: the index records no model path; pass --model")
    if isinstance(index.model_path, list):
        return [_recorded_model(index, p) for p in index.model_path]
    return _recorded_model(index, index.model_path)


def _recorded_model(index: SoundIndex, path: str) -> Path:
    from soundsift.checkpoints.names import PUBLISHED_NAMES

    if path in PUBLISHED_NAMES:  # a published model, recorded by name ("zero-shot")
        return Path(path)
    recorded = Path(path)
    if not recorded.exists():  # a model file, or a model folder (Hugging Face layout)
        raise SearchIndexError(
            f"{index.path}: the model that built the index, {recorded}, no longer exists; pass --model "
            "with a copy of that model"
        )
    return recorded


def combine_queries(*vectors: np.ndarray | None) -> np.ndarray:
    """One query vector from a text query and/or an example sound: the sum of the given vectors, each
    L2-normalised first (equal weight), renormalised. (A text and an example that cancel out exactly
    give the example alone.)"""
    given = [np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors if v is not None]
    if not given:
        raise ConfigError("give a text query, an example sound, or both")
    units = [v / max(float(np.linalg.norm(v)), 1e-12) for v in given]
    total = np.sum(units, axis=0)
    norm = float(np.linalg.norm(total))
    return (total / norm if norm > 1e-6 else units[-1]).astype(np.float32)


class TextSearcher:
    """Search over an index with the model that built it (checked by identity): by text, by an example
    sound (a file, or an indexed item's stored embedding), or both combined (``combine_queries``).

    Thread-safe; recent query embeddings are cached so repeated queries skip the text encoder.
    """

    def __init__(self, index: SoundIndex, model, cache_size: int = 256) -> None:
        index.check_model(model)
        self.index = index
        self.model = model
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        from soundsift.errors import CaptionError

        out = np.zeros((len(queries), self.index.embeddings.shape[1]), np.float32)
        with self._lock:
            todo = [q for q in dict.fromkeys(queries) if q not in self._cache]
            if todo:
                try:
                    vectors = self.model.embed_texts(todo)
                except CaptionError as exc:  # nothing left once normalised: "!!!"
                    raise exc.as_input("search query") from exc
                self._cache.update(zip(todo, vectors))
            for i, q in enumerate(queries):
                self._cache.move_to_end(q)
                out[i] = self._cache[q]
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def embed_file(self, path: str | Path) -> np.ndarray:
        """The embedding of an audio file, or of a moment ``FILE@START-END`` (seconds), as the build makes
        it (the example of a query by example). AudioError naming the file when it is missing or not
        audio; ConfigError naming the moment when it is empty or leaves the file."""
        from soundsift.audio import load_audio

        file, start, end = parse_moment_spec(path)
        wave = load_audio(file, self.model.sample_rate)
        if not len(wave):
            raise AudioError(f"{file}: holds no audio samples")
        if start is not None and end is not None:
            wave = cut_moment(wave, self.model.sample_rate, str(path), start, end)
        return self.model.embed_waveforms([wave], 1)[0]

    def search(self, query: str | None, k: int = 10, *, like: np.ndarray | None = None,
               exclude: int | None = None, rank: str = "moments", moments: int | None = None,
               where: Any = None, exclude_span: tuple[float, float] | None = None) -> list[Hit]:
        """The ``k`` best files for a text query, an example vector ``like`` (from ``embed_file`` or
        ``index.vector``), or both combined; best first. ``exclude``: an id never returned (the
        indexed example itself; with ``exclude_span``, only its windows overlapping that example
        moment); ``rank``, ``moments`` and ``where`` (a filter every result matches) as
        in ``SoundIndex.search_vectors``."""
        if query is None:
            if like is None:
                raise ConfigError("give a text query, an example sound, or both")
            return self.index.search_vectors(combine_queries(like), k, exclude, rank, moments, where, exclude_span)[0]
        if not query.strip():
            raise ConfigError("empty search query")
        if like is None and exclude is None:
            return self.search_many([query], k, rank, moments, where)[0]
        vec = combine_queries(self.embed_queries([query])[0], like)
        return self.index.search_vectors(vec, k, exclude, rank, moments, where, exclude_span)[0]

    def search_many(self, queries: list[str], k: int = 10, rank: str = "moments",
                    moments: int | None = None, where: Any = None) -> list[list[Hit]]:
        for q in queries:
            if not q.strip():
                raise ConfigError("empty search query")
        return self.index.search_vectors(self.embed_queries(list(queries)), k, rank=rank, moments=moments,
                                         where=where)


def load_searcher(index_path: str | Path, model_path: str | Path | None = None, backend: str = "auto",
                  device: str = "cpu", runtime: str | None = None) -> TextSearcher:
    """Open an index and its model (the recorded one unless ``model_path`` is given), run by ``runtime``
    (default: the one recorded at build)."""
    from soundsift.checkpoints.runtime import load_index_model

    index = open_index(index_path, backend=backend)
    return TextSearcher(index, load_index_model(resolve_model_path(index, model_path), index.manifest, runtime, device))


def describe(index: SoundIndex) -> dict[str, Any]:
    """A summary of an index for `index info` and `GET /api/info` (no absolute paths)."""
    report = {}
    try:
        report = json.loads((index.version_dir / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    total = float(index.column("duration").sum())
    return {
        "items": len(index),
        "embed_dim": int(index.manifest["embed_dim"]),
        "model_identity": index.model_identity,
        "backend": index.backend.name,
        "version": index.version_dir.name,
        "segments": len(index.segments),  # immutable pieces of the index (merged as updates add more)
        "created": index.manifest.get("created"),
        "total_hours": round(total / 3600, 3) if math.isfinite(total) else None,
        "skipped": len(report.get("skipped", [])),
        "thumbnails": index.thumbnails is not None,
        # long files are also indexed as overlapping windows (window, hop seconds; 0: whole files only)
        "windows": len(index.windows) if index.windows is not None else 0,
        "window_seconds": window_setting(index.manifest)[0],
        "hop_seconds": window_setting(index.manifest)[1],
    }
