"""Segments: the immutable, append-only pieces an index version is made of (index format 2).

A segment directory ``INDEX/segments/sNNNNNN-<hex>/`` holds the rows of some indexed files, sorted by
path, as memory-mappable arrays (nothing is parsed at open, whatever the size)::

    entries.npy            structured (id, size, mtime_ns, duration, sample_rate, channels, sha256)
    paths.bin, path_offsets.npy   the UTF-8 relative paths, concatenated, and N + 1 offsets
    embeddings.npy         (N, D) float32, unit norm
    thumbnails.npy         (N, height, width) uint8
    window_spans.npy, window_embeddings.npy   (W, 3) local row, start, end; (W, D): long files only
    faiss-*.index          a FAISS index of the rows (or windows), for segments above ``EXACT_LIMIT``
    segment.json           counts and FAISS records (small)

A segment is written once (into a temporary directory, renamed whole) and never changed; versions list
the segments they use and which of their rows are deleted (``search.store``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import publish_dir
from soundsift.errors import SearchIndexError
from soundsift.search.backends import FaissIndex, faiss_available
from soundsift.search.index_types import AUTO_FAISS_KIND, EXACT_LIMIT, IndexEntry, safe_relative_path

ENTRY_DTYPE = np.dtype([("id", "<i8"), ("size", "<i8"), ("mtime_ns", "<i8"), ("duration", "<f8"),
                        ("sample_rate", "<i4"), ("channels", "<i4"), ("sha256", "V32")])
SEGMENT_META = "segment.json"
_ARRAYS = ("entries.npy", "path_offsets.npy", "embeddings.npy")


def sha_bytes(sha: str) -> bytes:
    """A hex sha256 as 32 bytes (32 zero bytes for none)."""
    return bytes.fromhex(sha) if sha else bytes(32)


def sha_hex(raw: bytes) -> str:
    return "" if raw == bytes(32) else raw.hex()


@dataclass
class Segment:
    """One segment's rows (arrays memory-mapped or in memory); ``name`` is None for rows read from a
    format-1 index (``store.read_legacy``)."""

    name: str | None
    entries: np.ndarray  # ENTRY_DTYPE, (N,)
    path_blob: bytes | np.ndarray
    path_offsets: np.ndarray  # (N + 1,) int64
    embeddings: np.ndarray  # (N, D)
    thumbnails: np.ndarray | None  # (N, H, W) uint8
    window_spans: np.ndarray  # (W, 3): local row, start, end
    window_embeddings: np.ndarray  # (W, D)
    faiss: dict[str, Any] | None = None
    windows_faiss: dict[str, Any] | None = None
    directory: Path | None = None
    _paths: list[str] | None = field(default=None, repr=False)
    backends: dict = field(default_factory=dict, repr=False)  # opened search backends (``sound_index``)

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, row: int) -> str:
        a, b = int(self.path_offsets[row]), int(self.path_offsets[row + 1])
        return bytes(self.path_blob[a:b]).decode("utf-8")

    def paths(self) -> list[str]:
        """Every row's path (decoded once, then kept)."""
        if self._paths is None:
            blob = bytes(self.path_blob).decode("utf-8")
            if len(blob) == len(self.path_blob):  # ASCII: byte offsets are character offsets
                off = self.path_offsets.tolist()
                self._paths = [blob[off[i]:off[i + 1]] for i in range(len(self))]
            else:
                self._paths = [self.path(i) for i in range(len(self))]
        return self._paths

    def entry(self, row: int) -> IndexEntry:
        r = self.entries[row]
        return IndexEntry(id=int(r["id"]), path=self.path(row), size=int(r["size"]), mtime_ns=int(r["mtime_ns"]),
                          sha256=sha_hex(bytes(r["sha256"])), duration=float(r["duration"]))

    def lower_bound(self, key: str) -> int:
        """The first row whose path is not below ``key`` (rows are sorted by path: a binary search)."""
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.path(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, rel: str) -> int | None:
        """The row of path ``rel``, or None."""
        lo = self.lower_bound(rel)
        return lo if lo < len(self) and self.path(lo) == rel else None

    def window_rows(self) -> np.ndarray:
        """(N + 1,) offsets of each row's windows (windows are grouped by row, in row order)."""
        owners = self.window_spans[:, 0].astype(np.int64) if len(self.window_spans) else np.zeros(0, np.int64)
        return np.searchsorted(owners, np.arange(len(self) + 1), side="left")


@dataclass
class Rows:
    """Rows to write as a new segment, in any order (``write_segment`` sorts them by path)."""

    entries: list[IndexEntry]
    rates: list[tuple[int, int]]  # (sample rate, channels) of each file as stored; (0, 0): unknown
    embeddings: np.ndarray
    thumbnails: np.ndarray
    windows: list[tuple[np.ndarray, np.ndarray]]  # per row: (W, 2) spans, (W, D) embeddings


def write_faiss(tmp: Path, vectors: np.ndarray, faiss: str, name: str) -> dict[str, Any] | None:
    """Store a FAISS index of ``vectors`` as ``tmp/name`` (``{}``: its kind) when ``faiss`` asks for one
    ("auto": ``AUTO_FAISS_KIND`` above ``EXACT_LIMIT`` rows, if faiss is installed); its manifest record."""
    big = len(vectors) > EXACT_LIMIT and faiss_available()
    want = faiss if faiss != "auto" else (AUTO_FAISS_KIND if big else "none")
    if want == "none" or not len(vectors):
        return None
    index = FaissIndex(vectors, want)
    index.save(tmp / name.format(want))
    return {**index.params, "file": name.format(want)}


def memory_segment(entries: list[IndexEntry], embeddings: np.ndarray, thumbnails: np.ndarray | None = None,
                   window_spans: np.ndarray | None = None, window_embeddings: np.ndarray | None = None,
                   faiss: dict[str, Any] | None = None, windows_faiss: dict[str, Any] | None = None,
                   directory: Path | None = None) -> Segment:
    """A segment held in memory (a format-1 version as read, or rows made up by a benchmark); the
    windows' spans are (W, 3): owning row, start, end."""
    table = np.zeros(len(entries), ENTRY_DTYPE)
    for i, e in enumerate(entries):
        table[i] = (e.id, e.size, e.mtime_ns, e.duration, 0, 0, sha_bytes(e.sha256))
    encoded = [e.path.encode("utf-8") for e in entries]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in encoded], dtype=np.int64)]).astype(np.int64)
    dim = embeddings.shape[1]
    spans = np.zeros((0, 3)) if window_spans is None else window_spans
    w_emb = np.zeros((0, dim), np.float32) if window_embeddings is None else window_embeddings
    return Segment(None, table, b"".join(encoded), offsets, embeddings, thumbnails, spans, w_emb, faiss,
                   windows_faiss, directory)


def save_npy(path: Path, array: np.ndarray) -> int:
    """``array`` written to ``path`` as .npy and synced; the bytes written."""
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def write_segment(root: Path, name: str, rows: Rows, faiss: str) -> tuple[Segment, int]:
    """Write ``rows`` (sorted by path) as the segment ``root/segments/name``; (it, opened; bytes written).
    ``faiss``: the build's FAISS option (an index is stored for segments above ``EXACT_LIMIT`` rows)."""
    order = sorted(range(len(rows.entries)), key=lambda i: rows.entries[i].path)
    n, dim = len(order), rows.embeddings.shape[1]
    table = np.zeros(n, ENTRY_DTYPE)
    encoded = [rows.entries[i].path.encode("utf-8") for i in order]
    for j, i in enumerate(order):
        e = rows.entries[i]
        table[j] = (e.id, e.size, e.mtime_ns, e.duration, rows.rates[i][0], rows.rates[i][1], sha_bytes(e.sha256))
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in encoded]) if n else []
    emb = np.ascontiguousarray(rows.embeddings[order], dtype=np.float32).reshape(n, dim)
    spans = [np.column_stack([np.full(len(rows.windows[i][0]), j), rows.windows[i][0]]) for j, i in enumerate(order)]
    w_spans = np.concatenate([np.zeros((0, 3)), *spans]).astype(np.float64)
    w_emb = np.concatenate([np.zeros((0, dim), np.float32), *(rows.windows[i][1] for i in order)]).astype(np.float32)
    written = [0]

    def fill(tmp: Path) -> None:
        meta: dict[str, Any] = {"rows": n, "windows": len(w_spans), "embed_dim": dim}
        written[0] += save_npy(tmp / "entries.npy", table) + save_npy(tmp / "path_offsets.npy", offsets)
        with open(tmp / "paths.bin", "wb") as f:
            f.write(b"".join(encoded))
            f.flush()
            os.fsync(f.fileno())
        written[0] += int(offsets[-1])
        written[0] += save_npy(tmp / "embeddings.npy", emb)
        written[0] += save_npy(tmp / "thumbnails.npy", np.ascontiguousarray(rows.thumbnails[order], np.uint8))
        meta["faiss"] = write_faiss(tmp, emb, faiss, "faiss-{}.index")
        if len(w_spans):
            written[0] += save_npy(tmp / "window_spans.npy", w_spans) + save_npy(tmp / "window_embeddings.npy", w_emb)
            meta["windows_faiss"] = write_faiss(tmp, w_emb, faiss, "faiss-windows-{}.index")
        written[0] += sum((tmp / m["file"]).stat().st_size for m in (meta["faiss"], meta.get("windows_faiss")) if m)
        text = json.dumps(meta, indent=1)
        (tmp / SEGMENT_META).write_text(text, encoding="utf-8")
        written[0] += len(text)

    (root / "segments").mkdir(exist_ok=True)
    publish_dir(root / "segments" / name, fill, tmp_prefix=".tmp-")
    return open_segment(root / "segments" / name, mmap=True), written[0]


def open_segment(directory: Path, mmap: bool = False) -> Segment:
    """Open a segment directory (arrays mapped; embeddings read unless ``mmap``); SearchIndexError naming
    the file that is missing or does not match."""
    try:
        meta = json.loads((directory / SEGMENT_META).read_text(encoding="utf-8"))
        n, windows, dim = int(meta["rows"]), int(meta["windows"]), int(meta["embed_dim"])
        entries, offsets = (np.load(directory / a, mmap_mode="r", allow_pickle=False) for a in _ARRAYS[:2])
        emb = np.load(directory / "embeddings.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        thumbs = np.load(directory / "thumbnails.npy", mmap_mode="r", allow_pickle=False)
        blob = np.memmap(directory / "paths.bin", np.uint8, mode="r") if offsets[-1] else b""
        if windows:
            w_spans = np.load(directory / "window_spans.npy", allow_pickle=False)
            w_emb = np.load(directory / "window_embeddings.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            w_spans, w_emb = np.zeros((0, 3)), np.zeros((0, dim), np.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SearchIndexError(f"{directory}: cannot read the index segment ({exc})") from exc
    if (entries.dtype != ENTRY_DTYPE or entries.shape != (n,) or offsets.shape != (n + 1,) or emb.shape != (n, dim)
            or thumbs.shape[0] != n or len(blob) != int(offsets[-1]) or w_spans.shape != (windows, 3)
            or w_emb.shape != (windows, dim)):
        raise SearchIndexError(f"{directory}: the segment's arrays do not match its {SEGMENT_META}")
    seg = Segment(directory.name, entries, blob, offsets, emb, thumbs, w_spans, w_emb, meta.get("faiss"),
                  meta.get("windows_faiss"), directory)
    if n:
        safe_relative_path(seg.path(0), str(directory))
    return seg

