"""A searchable index of a sound library: embeddings of every file plus the manifest that names them.

On disk an index is a directory::

    INDEX/CURRENT            one line: the name of the live version directory (replaced atomically)
    INDEX/v000003-1a2b3c4d/  manifest.json, embeddings.npy, thumbnails.npy, report.json, skipped.txt
                             [, faiss-*.index]

``thumbnails.npy`` holds one small grayscale spectrogram per entry (uint8, rows aligned with the
embeddings; served as PNG by ``SoundIndex.thumbnail_png``). A build writes a complete new version
directory, then atomically replaces ``CURRENT``; a build killed at any moment leaves the previous
version live (see ``index_build``). ``open_index`` loads the live version; ``TextSearcher`` embeds text
queries and example sounds with the index's model and ranks the files.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from soundsift.downloader import file_digest
from soundsift.errors import AudioError, ConfigError, ModelMismatchError, SearchIndexError, check_format
from soundsift.search.backends import FAISS_KINDS, open_backend
from soundsift.search.moments import Hit, cut_moment, parse_moment_spec
from soundsift.search.thumbnails import encode_png
from soundsift.search.windows import WindowTable, load_windows, rank_hits, window_setting

INDEX_FORMAT = "soundsift-index"
INDEX_VERSION = 1
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
    check_format(manifest, path, INDEX_FORMAT, INDEX_VERSION, SearchIndexError, "soundsift index manifest",
                 "; rebuild the index")
    for key in ("model", "audio_root", "entries", "embed_dim"):
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


class SoundIndex:
    """A loaded index: entries, their embeddings, and a vector backend to rank them."""

    def __init__(self, path: Path, vdir: Path, manifest: dict[str, Any], embeddings: np.ndarray,
                 backend: str = "auto", thumbnails: np.ndarray | None = None,
                 windows: WindowTable | None = None) -> None:
        self.path = path
        self.version_dir = vdir
        self.manifest = manifest
        self.entries = entries_from_manifest(manifest, str(vdir / MANIFEST))
        self.embeddings = embeddings
        if embeddings.ndim != 2 or embeddings.shape != (len(self.entries), int(manifest["embed_dim"])):
            raise SearchIndexError(
                f"{vdir / EMBEDDINGS}: shape {embeddings.shape} does not match the manifest "
                f"({len(self.entries)} entries x {manifest['embed_dim']})"
            )
        if thumbnails is not None and (thumbnails.ndim != 3 or len(thumbnails) != len(self.entries)
                                       or thumbnails.dtype != np.uint8):
            raise SearchIndexError(f"{vdir / THUMBNAILS}: shape {thumbnails.shape} ({thumbnails.dtype}) does not "
                                   f"match the manifest ({len(self.entries)} entries of uint8 images)")
        self.thumbnails = thumbnails  # (N, height, width) uint8, or None for an index built without them
        self.audio_root = Path(manifest["audio_root"])
        self._by_id = {e.id: i for i, e in enumerate(self.entries)}
        self.backend = self._make_backend(backend)
        self.windows = windows  # the long files' windows (``search.windows``), or None
        if windows is not None:
            windows.backend = open_backend(windows.embeddings, backend, (manifest.get("windows") or {}).get("faiss"),
                                           vdir, EXACT_LIMIT, AUTO_FAISS_KIND)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def model_identity(self) -> str:
        return str(self.manifest["model"].get("identity", ""))

    @property
    def model_path(self) -> str | list[str] | None:
        """What built the index: a model path or published name (a list of them: an ensemble)."""
        return self.manifest["model"].get("path")

    def _make_backend(self, backend: str):
        if backend not in BACKENDS:
            raise ConfigError(f"unknown search backend {backend!r}; use one of {', '.join(BACKENDS)}")
        return open_backend(self.embeddings, backend, self.manifest.get("faiss"), self.version_dir,
                            EXACT_LIMIT, AUTO_FAISS_KIND)

    def get(self, entry_id: int) -> IndexEntry | None:
        """The entry with this id, or None when no such id is indexed."""
        row = self._by_id.get(entry_id)
        return None if row is None else self.entries[row]

    def audio_file(self, entry_id: int) -> Path | None:
        """Absolute path of an indexed file (built from the manifest only), or None if not indexed."""
        entry = self.get(entry_id)
        return None if entry is None else self.audio_root.joinpath(*PurePosixPath(entry.path).parts)

    def vector(self, entry_id: int) -> np.ndarray:
        """The stored embedding of an indexed file (unit norm); SearchIndexError if not indexed."""
        row = self._by_id.get(entry_id)
        if row is None:
            raise SearchIndexError(f"no indexed sound has id {entry_id}")
        return np.asarray(self.embeddings[row], dtype=np.float32)

    def find_file(self, path: str | Path) -> int | None:
        """The id of an indexed item with the content of ``path`` (preferably the one at that path), or None."""
        sha, here = file_digest(path), Path(path).resolve()
        same = [e for e in self.entries if e.sha256 == sha]
        return next((e.id for e in same if self.audio_file(e.id).resolve() == here), same[0].id if same else None)

    def thumbnail_png(self, entry_id: int) -> bytes | None:
        """The spectrogram thumbnail of an indexed file as PNG bytes, or None (not indexed, or the
        index was built without thumbnails)."""
        row = self._by_id.get(entry_id)
        if row is None or self.thumbnails is None:
            return None
        return encode_png(np.asarray(self.thumbnails[row]))

    def search_vectors(self, queries: np.ndarray, k: int = 10, exclude: int | None = None,
                       rank: str = "moments", moments: int | None = None) -> list[list[Hit]]:
        """Rank the indexed files for each query vector (unit norm); best first, each with its best moment
        (``search.windows.rank_hits``). ``exclude``: an id left out of every ranking (the example of a
        more-like-this query); ``rank``: "moments" or "files"; ``moments``: up to N moments per hit."""
        return rank_hits(self, queries, k, exclude, rank, moments)

    def check_model(self, model) -> None:
        """Refuse a model whose identity differs from the one that built this index."""
        identity = model.identity
        if identity != self.model_identity:
            raise ModelMismatchError(
                f"{self.path}: the index was built with model {self.model_identity[:12]}... "
                f"({self.model_path}), but the query model is "
                f"{str(identity)[:12] + '...' if identity else 'unidentified'}; query with the model "
                "that built the index, or rebuild the index with this model"
            )


def open_index(path: str | Path, backend: str = "auto", mmap: bool = False) -> SoundIndex:
    """Load the live version of the index at ``path``.

    ``backend``: "exact" (matrix product), "faiss" (the FAISS index stored with the build, else IVF),
    "hnsw" or "ivf" (built in memory), or "auto" (exact up to ``EXACT_LIMIT`` items, FAISS above when
    installed). ``mmap`` maps the embeddings instead of reading them (fast start, lazy paging).
    """
    root = Path(path)
    vdir = version_dir(root)
    manifest = read_manifest(vdir)
    emb_path = vdir / EMBEDDINGS
    try:
        embeddings = np.load(emb_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"{emb_path}: cannot read the index embeddings ({exc})") from exc
    thumbnails = None
    if (manifest.get("thumbnails") or {}).get("file") == THUMBNAILS:  # absent in indexes built before them
        try:  # mapped, not read: a server touches only the rows it serves
            thumbnails = np.load(vdir / THUMBNAILS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SearchIndexError(f"{vdir / THUMBNAILS}: cannot read the thumbnails ({exc})") from exc
    windows = load_windows(vdir, manifest, len(manifest["entries"]), int(manifest["embed_dim"]), mmap)
    return SoundIndex(root, vdir, manifest, embeddings, backend, thumbnails, windows)


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
               exclude: int | None = None, rank: str = "moments", moments: int | None = None) -> list[Hit]:
        """The ``k`` best files for a text query, an example vector ``like`` (from ``embed_file`` or
        ``index.vector``), or both combined; best first. ``exclude``: an id never returned (the
        indexed example itself); ``rank`` and ``moments`` as in ``SoundIndex.search_vectors``."""
        if query is None:
            if like is None:
                raise ConfigError("give a text query, an example sound, or both")
            return self.index.search_vectors(combine_queries(like), k, exclude, rank, moments)[0]
        if not query.strip():
            raise ConfigError("empty search query")
        if like is None and exclude is None:
            return self.search_many([query], k, rank, moments)[0]
        vec = combine_queries(self.embed_queries([query])[0], like)
        return self.index.search_vectors(vec, k, exclude, rank, moments)[0]

    def search_many(self, queries: list[str], k: int = 10, rank: str = "moments",
                    moments: int | None = None) -> list[list[Hit]]:
        for q in queries:
            if not q.strip():
                raise ConfigError("empty search query")
        return self.index.search_vectors(self.embed_queries(list(queries)), k, rank=rank, moments=moments)


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
    total = sum(e.duration for e in index.entries)
    return {
        "items": len(index),
        "embed_dim": int(index.manifest["embed_dim"]),
        "model_identity": index.model_identity,
        "backend": index.backend.name,
        "version": index.version_dir.name,
        "created": index.manifest.get("created"),
        "total_hours": round(total / 3600, 3) if math.isfinite(total) else None,
        "skipped": len(report.get("skipped", [])),
        "thumbnails": index.thumbnails is not None,
        # long files are also indexed as overlapping windows (window, hop seconds; 0: whole files only)
        "windows": len(index.windows) if index.windows is not None else 0,
        "window_seconds": window_setting(index.manifest)[0],
        "hop_seconds": window_setting(index.manifest)[1],
    }
