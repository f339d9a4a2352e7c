"""The teacher store: teacher embeddings at WavCaps size as a directory of memory-mapped ``.npy`` files
with a manifest, and :class:`StringTable` (many strings as one UTF-8 buffer plus end offsets).

See :mod:`soundsift.correspondences` for what the files hold and how stage 2 uses them; this module
writes, checks and opens the files. It knows arrays and files, not models.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from soundsift.atomic import publish_dir
from soundsift.errors import TeacherFileError

STORE_FORMAT = "soundsift.teacher_store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
_STORE_FILES = (
    "audio.npy",
    "captions.npy",
    "caption_clip.npy",
    "clip_ids.utf8.npy",
    "clip_ids.ends.npy",
    "caption_texts.utf8.npy",
    "caption_texts.ends.npy",
)
_STORE_DTYPES = {torch.float16: "<f2", torch.float32: "<f4"}
_CHUNK_ROWS = 1 << 15


# ------------------------------------------------------------------------------------ string tables
def _strings_digest(data: np.ndarray, ends: np.ndarray) -> str:
    """sha256 of a string list in order: its end offsets (int64 little-endian), then its UTF-8 bytes."""
    h = hashlib.sha256(b"soundsift.strings/1\n")
    h.update(np.ascontiguousarray(ends, dtype="<i8").tobytes())
    h.update(memoryview(np.ascontiguousarray(data, dtype=np.uint8)))
    return h.hexdigest()


def _ints_digest(values: np.ndarray) -> str:
    return hashlib.sha256(b"soundsift.ints/1\n" + np.ascontiguousarray(values, dtype="<i8").tobytes()).hexdigest()


class StringTable(Sequence[str]):
    """An immutable list of strings stored as one UTF-8 buffer (uint8) and int64 end offsets.

    Strings are decoded one at a time when indexed; ``len`` and :attr:`digest` need no decoding (and,
    for a table opened from a teacher store, no reading at all). Compares equal to any sequence of the
    same strings in the same order.
    """

    __slots__ = ("_n", "_loader", "_data", "_ends", "_digest", "where")

    def __init__(self, data: np.ndarray, ends: np.ndarray, digest: str | None = None, where: str = "") -> None:
        self._data, self._ends = np.asarray(data, dtype=np.uint8).reshape(-1), np.asarray(ends).reshape(-1)
        self._n, self._loader, self._digest, self.where = len(self._ends), None, digest, where
        self._check()

    @classmethod
    def from_strings(cls, strings: Iterable[Any]) -> StringTable:
        if isinstance(strings, StringTable):
            return strings
        blobs = [str(s).encode("utf-8") for s in strings]
        ends = np.cumsum(np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)), dtype=np.int64)
        return cls(np.frombuffer(b"".join(blobs), dtype=np.uint8), ends)

    @classmethod
    def lazy(cls, n: int, loader: Callable[[], tuple[np.ndarray, np.ndarray]], digest: str, where: str) -> StringTable:
        """A table of ``n`` strings whose buffers ``loader()`` gives on first use (not before)."""
        table = cls.__new__(cls)
        table._n, table._loader, table._data, table._ends = n, loader, None, None
        table._digest, table.where = digest, where
        return table

    def _check(self) -> None:
        ends = self._ends
        if ends.dtype.kind not in "iu" or (
            len(ends)
            and (int(ends[0]) < 0 or bool((np.diff(ends) < 0).any()) or int(ends[-1]) != len(self._data))
        ):
            raise TeacherFileError(f"{self.where or 'string table'}: corrupt string block (offsets do not fit the bytes)")

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(utf8 uint8 bytes, int64 end offsets)``."""
        if self._data is None:
            data, ends = self._loader()
            self._data, self._ends = np.asarray(data).reshape(-1), np.asarray(ends).reshape(-1)
            if len(self._ends) != self._n:
                raise TeacherFileError(f"{self.where}: {len(self._ends)} string offsets, expected {self._n}")
            self._check()
        return self._data, self._ends

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = _strings_digest(*self.buffers())
        return self._digest

    def __len__(self) -> int:
        return self._n

    def _decode(self, data: np.ndarray, ends: np.ndarray, i: int) -> str:
        start = int(ends[i - 1]) if i else 0
        try:
            return data[start : int(ends[i])].tobytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise TeacherFileError(f"{self.where or 'string table'}: string {i} is not UTF-8 ({err})") from None

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"string index {i} out of range for {self._n} strings")
        return self._decode(*self.buffers(), i)

    def __iter__(self) -> Iterator[str]:
        data, ends = self.buffers()
        for i in range(self._n):
            yield self._decode(data, ends, i)

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, bytes)) or not isinstance(other, Sequence):
            return NotImplemented
        return _first_string_difference(self, StringTable.from_strings(other)) is None

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(s) for s in self[:3]) + (", ..." if self._n > 3 else "")
        return f"StringTable([{shown}], n={self._n})"


def _first_string_difference(a: StringTable, b: StringTable) -> int | None:
    """Index of the first string that differs (or ``min(len)`` if one is a prefix); ``None`` if equal.
    Equal digests decide without reading; otherwise offsets and bytes are compared vectorised."""
    if len(a) == len(b) and (a._digest is not None or b._digest is not None) and a.digest == b.digest:
        return None  # a store's digest comes from its manifest: no reading
    (da, ea), (db, eb) = a.buffers(), b.buffers()
    n = min(len(ea), len(eb))
    mismatch = np.flatnonzero(ea[:n] != eb[:n])
    k = int(mismatch[0]) if len(mismatch) else n  # strings before k have the same boundaries
    limit = int(ea[k - 1]) if k else 0
    diff = np.flatnonzero(da[:limit] != db[:limit])
    i = int(np.searchsorted(ea[:k], int(diff[0]), side="right")) if len(diff) else k
    return None if i == n and len(ea) == len(eb) else i


class _Ints:
    """The caption->clip index as compared by alignment checks: a digest, and the values on demand."""

    def __init__(self, n: int, load: Callable[[], np.ndarray], digest: str | None = None) -> None:
        self.n, self._load, self._values, self._digest = n, load, None, digest

    @classmethod
    def of(cls, values: Any) -> _Ints:
        if isinstance(values, _Ints):
            return values
        arr = torch.as_tensor(values).reshape(-1).long().cpu().numpy()
        return cls(len(arr), lambda: arr)

    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.asarray(self._load()).reshape(-1)
        return self._values

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = _ints_digest(self.values())
        return self._digest


def _first_int_difference(a: _Ints, b: _Ints) -> int | None:
    if a.n == b.n and (a._digest is not None or b._digest is not None) and a.digest == b.digest:
        return None
    va, vb = a.values(), b.values()
    n = min(len(va), len(vb))
    mismatch = np.flatnonzero(va[:n] != vb[:n])
    if len(mismatch):
        return int(mismatch[0])
    return None if len(va) == len(vb) else n


# -------------------------------------------------------------------------------------- store files
def _npy_header(descr: str, shape: Sequence[int]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


class _NpyWriter:
    """Writes one ``.npy`` file chunk by chunk, hashing what it writes; :meth:`close` gives its manifest entry."""

    def __init__(self, path: Path, descr: str, shape: Sequence[int]) -> None:
        self.path, self.descr, self.shape, self.rows = path, descr, [int(s) for s in shape], 0
        self.hash, self.bytes = hashlib.sha256(), 0
        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._put(_npy_header(descr, shape))

    def _put(self, blob: bytes | memoryview) -> None:
        self.hash.update(blob)
        self.file.write(blob)
        self.bytes += len(blob)

    def write(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.dtype(self.descr))
        if list(array.shape[1:]) != self.shape[1:]:
            raise ValueError(f"{self.path.name}: chunk of shape {array.shape}, rows of {self.shape[1:]} expected")
        self.rows += len(array)
        self._put(memoryview(array).cast("B"))

    def close(self) -> dict[str, Any]:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} rows written, {self.shape[0]} declared")
        return {"shape": self.shape, "dtype": self.descr, "bytes": self.bytes, "sha256": self.hash.hexdigest()}


def _write_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    descr = np.lib.format.dtype_to_descr(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype)
    w = _NpyWriter(path, descr, array.shape)
    w.write(array)
    return w.close()


def _row_chunks(x: Tensor | Iterable[Tensor]) -> Iterator[Tensor]:
    if isinstance(x, Tensor):
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            yield x[start : start + _CHUNK_ROWS]
    else:
        yield from x


def _write_embeddings(w: _NpyWriter, name: str, chunks: Iterable[Tensor], where: Path) -> None:
    """Rows are checked finite and L2-normalised in float32 (rows already of unit norm are kept as they
    are, so a float16 teacher round-trips exactly), then stored in the store's dtype."""
    for chunk in chunks:
        chunk = torch.as_tensor(chunk).detach().cpu()
        if chunk.dim() != 2 or chunk.shape[1] != w.shape[1] or not chunk.is_floating_point():
            raise TeacherFileError(f"{where}: {name} chunk must be a float (rows, {w.shape[1]}) tensor, got {tuple(chunk.shape)}")
        wide = chunk.to(torch.promote_types(chunk.dtype, torch.float32))
        finite = torch.isfinite(wide).all(dim=1)
        if not bool(finite.all()):
            row = w.rows + int((~finite).nonzero()[0])
            raise TeacherFileError(f"{where}: {name} row {row} contains NaN or inf (a diverged model?)")
        if chunk.numel() and float((wide.norm(dim=1) - 1).abs().max()) > 1e-4:
            chunk = F.normalize(wide, dim=1)
        store_dtype = torch.float16 if w.descr == "<f2" else torch.float32
        w.write(chunk.to(store_dtype).numpy())


def write_teacher_store(
    path: str | os.PathLike,
    clip_ids: Sequence[str],
    caption_texts: Sequence[str],
    caption_clip: Tensor | Sequence[int],
    audio: Tensor | Iterable[Tensor],
    captions: Tensor | Iterable[Tensor],
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
    dim: int | None = None,
) -> Path:
    """Write a teacher store directory at ``path`` atomically (see the module docstring).

    ``audio`` / ``captions`` are ``(n, D)`` tensors or iterables of row chunks (so a split larger than
    memory can be written); with chunks, ``dim`` gives D. An existing store at ``path`` is replaced as a
    whole (two renames); anything else at ``path`` is refused.
    """
    from soundsift.version import __version__

    path = Path(path)
    if dtype not in _STORE_DTYPES:
        raise TeacherFileError(f"{path}: a teacher store holds float16 or float32 embeddings, not {dtype}")
    clips, texts = StringTable.from_strings(clip_ids), StringTable.from_strings(caption_texts)
    index = _Ints.of(caption_clip)
    n_clips, n_captions = len(clips), len(texts)
    if index.n != n_captions:
        raise TeacherFileError(f"{path}: caption_clip has {index.n} entries for {n_captions} captions")
    values = index.values()
    if n_captions and (int(values.min()) < 0 or int(values.max()) >= n_clips):
        raise TeacherFileError(f"{path}: caption_clip holds values outside [0, {n_clips})")
    if dim is None:
        if not isinstance(audio, Tensor):
            raise TeacherFileError(f"{path}: give dim when the embeddings come as chunks")
        dim = int(audio.shape[1])
    meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(meta or {})}
    meta.setdefault("soundsift_version", __version__)
    descr = _STORE_DTYPES[dtype]

    def fill(tmp: Path) -> None:
        files: dict[str, Any] = {}
        for name, rows, n in (("audio", audio, n_clips), ("captions", captions, n_captions)):
            w = _NpyWriter(tmp / f"{name}.npy", descr, (n, dim))
            try:
                _write_embeddings(w, name, _row_chunks(rows), path)
                files[f"{name}.npy"] = w.close()
            except ValueError as err:
                w.file.close()
                raise TeacherFileError(f"{path}: {err}") from None
        files["caption_clip.npy"] = _write_npy(tmp / "caption_clip.npy", values.astype("<i8"))
        for name, table in (("clip_ids", clips), ("caption_texts", texts)):
            data, ends = table.buffers()
            files[f"{name}.utf8.npy"] = _write_npy(tmp / f"{name}.utf8.npy", data)
            files[f"{name}.ends.npy"] = _write_npy(tmp / f"{name}.ends.npy", np.asarray(ends, dtype="<i8"))
        split = {
            "clip_ids": {"count": n_clips, "sha256": clips.digest},
            "caption_texts": {"count": n_captions, "sha256": texts.digest},
            "caption_clip": {"count": n_captions, "sha256": index.digest},
        }
        split["sha256"] = hashlib.sha256(
            "\n".join(split[k]["sha256"] for k in ("clip_ids", "caption_texts", "caption_clip")).encode()
        ).hexdigest()
        manifest = {
            "format": STORE_FORMAT,
            "format_version": STORE_VERSION,
            "model_identity": meta.get("model_identity"),
            "split": split,
            "n_clips": n_clips,
            "n_captions": n_captions,
            "dim": dim,
            "dtype": str(dtype).removeprefix("torch."),
            "files": files,
            "meta": meta,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")

    return _publish(path, fill)


def _publish(dest: Path, fill: Callable[[Path], None]) -> Path:
    """publish_dir, also over an existing store: the new one is complete before the old one is moved away."""
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    if not dest.exists():
        return publish_dir(dest, fill)
    if not (dest.is_dir() and (dest / MANIFEST).is_file()):
        raise TeacherFileError(
            f"{dest}: exists and is not a teacher store; refusing to replace it "
            "(a .safetensors path writes the single-file format)"
        )
    tag = uuid.uuid4().hex
    staged = publish_dir(dest.parent / f".{dest.name}.new-{tag}", fill)
    old = dest.parent / f".{dest.name}.old-{tag}"
    os.rename(dest, old)
    os.rename(staged, dest)
    shutil.rmtree(old, ignore_errors=True)  # readers that mapped the old files keep them until they close
    return dest


def _open_array(path: Path, entry: dict[str, Any]) -> np.ndarray:
    """Memory-map one data file of a store (copy-on-write: torch can wrap it; the file never changes).
    The only place that reads a store's data files."""
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise TeacherFileError(f"{path}: not a readable .npy file ({err})") from None
    if np.lib.format.dtype_to_descr(arr.dtype) != entry["dtype"] or list(arr.shape) != list(entry["shape"]):
        raise TeacherFileError(
            f"{path}: holds {arr.dtype.str} {list(arr.shape)}, the manifest says {entry['dtype']} {entry['shape']}"
        )
    return arr


class _Store:
    """An opened store: the manifest and the data files, each mapped on first use."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path, self.manifest, self._arrays = path, manifest, {}

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = _open_array(self.path / name, self.manifest["files"][name])
        return self._arrays[name]

    def tensor(self, name: str) -> Tensor:
        return torch.from_numpy(self.array(name))

    def strings(self, name: str) -> StringTable:
        split = self.manifest["split"][name]
        where = str(self.path / f"{name}.utf8.npy")
        return StringTable.lazy(
            split["count"],
            lambda: (self.array(f"{name}.utf8.npy"), self.array(f"{name}.ends.npy")),
            split["sha256"],
            where,
        )

    def verify(self) -> None:
        for name, entry in self.manifest["files"].items():
            h = hashlib.sha256()
            with open(self.path / name, "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
            if h.hexdigest() != entry["sha256"]:
                raise TeacherFileError(
                    f"{self.path / name}: checksum mismatch (the file is corrupted); rewrite the teacher store"
                )


def _open_store(path: Path) -> _Store:
    """Read and check the manifest; stat every data file (sizes catch truncation). Reads no data."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise TeacherFileError(f"{path}: a directory without {MANIFEST}: not a teacher store")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TeacherFileError(f"{mpath}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise TeacherFileError(f"{mpath}: not a soundsift teacher store (format={fmt!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise TeacherFileError(f"{mpath}: bad format_version {version!r}")
    if version > STORE_VERSION:
        raise TeacherFileError(f"{mpath}: format version {version} is newer than this soundsift reads ({STORE_VERSION}); upgrade")
    try:
        n, m, dim, files = manifest["n_clips"], manifest["n_captions"], manifest["dim"], manifest["files"]
        expected = {"audio.npy": [n, dim], "captions.npy": [m, dim], "caption_clip.npy": [m]}
        for name in _STORE_FILES:
            entry = files[name]
            if name in expected and list(entry["shape"]) != expected[name]:
                raise TeacherFileError(f"{mpath}: {name} has shape {entry['shape']}, expected {expected[name]}")
            try:
                size = (path / name).stat().st_size
            except FileNotFoundError:
                raise TeacherFileError(f"{path / name}: missing from the teacher store") from None
            if size != entry["bytes"]:
                raise TeacherFileError(
                    f"{path / name}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced); "
                    "rewrite the teacher store"
                )
        for name, count in (("clip_ids", n), ("caption_texts", m), ("caption_clip", m)):
            if manifest["split"][name]["count"] != count or not isinstance(manifest["split"][name]["sha256"], str):
                raise TeacherFileError(f"{mpath}: split.{name} does not match the counts")
        if not isinstance(manifest.get("meta", {}), dict):
            raise TeacherFileError(f"{mpath}: meta must be an object")
    except (KeyError, TypeError) as err:
        raise TeacherFileError(f"{mpath}: malformed manifest (missing or bad {err})") from None
    return _Store(path, manifest)
