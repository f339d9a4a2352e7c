"""Estimated audio-caption correspondences (the paper's contribution, section 3).

Stage-1 models ("teachers") embed every clip and caption of the training split once; the embeddings
are stored as :class:`TeacherEmbeddings`. In stage 2, :class:`TeacherEnsemble` turns them into the
estimated correspondences ``C_hat = mean_m C^m`` for each batch, which :func:`soundsift.losses.
distillation_loss` uses as targets. Matrices are laid out ``(n_audio, n_caption)``.

Two on-disk forms, chosen by :meth:`TeacherEmbeddings.save` from the path:

- ``X.safetensors``: one file, read whole into memory (the original format; fine for ClothoV2).
- any other path: a *teacher store*, a directory of ``.npy`` files (float16 embeddings, UTF-8 string
  buffers with end offsets, the caption->clip index) and ``manifest.json`` (format tag and version,
  model identity, split identity as sha256 digests, counts, dim, dtype, size and sha256 of every file).
  It is published atomically (a temporary directory renamed into place) and opened lazily: opening
  reads the manifest and stats the files; the arrays are memory-mapped on first use, and a batch
  lookup touches only its own rows. Plain ``.npy`` (not one safetensors file) because a ``.npy`` can be
  written chunk by chunk with its checksum computed on the way (safetensors' writer needs every tensor
  in memory: 30 GB at WavCaps size), is memory-mapped by ``numpy.load(mmap_mode=...)`` with no custom
  offset arithmetic, and every file is checked on its own (a truncated file is named).

Clip ids and caption texts are kept as :class:`StringTable` (one UTF-8 buffer plus end offsets, decoded
one string at a time), so two million captions cost their bytes, not two million Python objects, and
alignment checks compare digests or bytes.
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

from soundsift.atomic import atomic_write, publish_dir
from soundsift.errors import AlignmentError, TeacherFileError

__all__ = [
    "AlignmentError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STORE_FORMAT",
    "STORE_VERSION",
    "StringTable",
    "TeacherEmbeddings",
    "TeacherEnsemble",
    "TeacherFileError",
    "correspondence_auc",
    "ensemble_similarity",
    "write_teacher_store",
]

FORMAT_NAME = "soundsift.teacher_embeddings"
FORMAT_VERSION = 1
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


def ensemble_similarity(audio_embs: Sequence[Tensor], caption_embs: Sequence[Tensor]) -> Tensor:
    """``C_hat = 1/M sum_m normalise(audio_m) @ normalise(caption_m).T``, float32 ``(n_audio, n_caption)``.

    Teachers may have different embedding sizes; each pair ``(audio_m, caption_m)`` shares one.
    """
    if len(audio_embs) != len(caption_embs) or len(audio_embs) == 0:
        raise ValueError(
            f"need one caption matrix per audio matrix and at least one teacher, got {len(audio_embs)} "
            f"audio and {len(caption_embs)} caption matrices"
        )
    shape = (audio_embs[0].shape[0], caption_embs[0].shape[0])
    total: Tensor | None = None
    for m, (a, c) in enumerate(zip(audio_embs, caption_embs)):
        if a.dim() != 2 or c.dim() != 2 or a.shape[1] != c.shape[1]:
            raise ValueError(
                f"teacher {m}: audio {tuple(a.shape)} and captions {tuple(c.shape)} must be (n, D)"
            )
        if (a.shape[0], c.shape[0]) != shape:
            raise ValueError(
                f"teacher {m} gives a {(a.shape[0], c.shape[0])} matrix, teacher 0 gives {shape}"
            )
        dtype = torch.promote_types(a.dtype, torch.float32)
        sim = F.normalize(a.to(dtype), dim=1) @ F.normalize(c.to(device=a.device, dtype=dtype), dim=1).T
        total = sim if total is None else total + sim.to(total.device)
    assert total is not None
    return total / len(audio_embs)

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


# --------------------------------------------------------------------------------------- a teacher
class TeacherEmbeddings:
    """One stage-1 model's embeddings of one training split.

    ``audio`` ``(n_clips, D)`` and ``captions`` ``(n_captions, D)`` are L2-normalised on construction
    (kept in their dtype, e.g. float16 to halve memory); ``caption_clip[j]`` is the index in
    ``clip_ids`` of caption ``j``'s clip. ``meta`` records the model identity, checkpoint path,
    creation time and soundsift version. ``source`` is the file or store it was loaded from, if any.
    ``clip_ids`` and ``caption_texts`` are :class:`StringTable` (sequences of str).

    Loaded from a teacher store, nothing is read until used: ``audio``/``captions`` are then tensors
    over memory-mapped float16 files, and :meth:`rows` reads only the rows asked for.
    """

    def __init__(
        self,
        clip_ids: Sequence[str],
        audio: Tensor,
        caption_texts: Sequence[str],
        caption_clip: Tensor | Sequence[int],
        captions: Tensor,
        meta: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        self.meta = dict(meta or {})
        self.source = source
        self._store: _Store | None = None
        self.clip_ids = clip_ids  # type: ignore[assignment]
        self.caption_texts = caption_texts  # type: ignore[assignment]
        self._caption_clip: Tensor | None = torch.as_tensor(caption_clip).long().reshape(-1)
        self._audio: Tensor | None = audio
        self._captions: Tensor | None = captions
        self._validate()
        self._audio = _normalised(self.audio)
        self._captions = _normalised(self.captions)

    def _validate(self) -> None:
        where = self.source or "teacher embeddings"
        n_clips, n_captions = len(self.clip_ids), len(self.caption_texts)
        for name, t, n in (("audio", self._audio, n_clips), ("captions", self._captions, n_captions)):
            if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[0] != n or not t.is_floating_point():
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise TeacherFileError(f"{where}: {name} must be a float ({n}, D) tensor, got {shape}")
        if self._audio.shape[1] != self._captions.shape[1]:
            raise TeacherFileError(
                f"{where}: audio dim {self._audio.shape[1]} != caption dim {self._captions.shape[1]}"
            )
        _check_caption_clip(self._caption_clip, n_clips, n_captions, where)
        for name, t in (("audio", self._audio), ("captions", self._captions)):
            finite = torch.isfinite(t).all(dim=1)
            if not bool(finite.all()):
                row = int((~finite).nonzero()[0])
                raise TeacherFileError(f"{where}: {name} row {row} contains NaN or inf (a diverged model?)")

    # -- the split's identity: string tables (assigning a list converts it)
    @property
    def clip_ids(self) -> StringTable:
        return self._clip_ids

    @clip_ids.setter
    def clip_ids(self, value: Sequence[str]) -> None:
        self._clip_ids = StringTable.from_strings(value)

    @property
    def caption_texts(self) -> StringTable:
        return self._caption_texts

    @caption_texts.setter
    def caption_texts(self, value: Sequence[str]) -> None:
        self._caption_texts = StringTable.from_strings(value)

    @property
    def caption_clip(self) -> Tensor:
        if self._caption_clip is None:
            assert self._store is not None
            values = self._store.tensor("caption_clip.npy")
            _check_caption_clip(values, len(self.clip_ids), len(self.caption_texts), str(self._store.path / "caption_clip.npy"))
            self._caption_clip = values
        return self._caption_clip

    @caption_clip.setter
    def caption_clip(self, value: Tensor | Sequence[int]) -> None:
        self._caption_clip = torch.as_tensor(value).long().reshape(-1)

    def _caption_clip_ref(self) -> _Ints:
        if self._caption_clip is None and self._store is not None:
            return _Ints(len(self.caption_texts), lambda: self.caption_clip.numpy(),
                         self._store.manifest["split"]["caption_clip"]["sha256"])
        return _Ints.of(self.caption_clip)

    # -- the embeddings
    @property
    def audio(self) -> Tensor:
        if self._audio is None:
            assert self._store is not None
            self._audio = self._store.tensor("audio.npy")
        return self._audio

    @audio.setter
    def audio(self, value: Tensor) -> None:
        self._audio = value

    @property
    def captions(self) -> Tensor:
        if self._captions is None:
            assert self._store is not None
            self._captions = self._store.tensor("captions.npy")
        return self._captions

    @captions.setter
    def captions(self, value: Tensor) -> None:
        self._captions = value

    @property
    def dim(self) -> int:
        if self._audio is None and self._store is not None:
            return int(self._store.manifest["dim"])
        return int(self.audio.shape[1])

    def rows(self, which: str, index: Tensor) -> Tensor:
        """Rows ``index`` of ``"audio"`` or ``"captions"`` in the stored dtype (a gather: from a store only
        these rows are read; a NaN/inf row there means a corrupted file and raises TeacherFileError)."""
        matrix = self.audio if which == "audio" else self.captions
        out = matrix[index.to(matrix.device)]
        if self._store is not None:
            finite = torch.isfinite(out).all(dim=1)
            if not bool(finite.all()):
                row = int(index[int((~finite).nonzero()[0])])
                raise TeacherFileError(
                    f"{self._store.path / f'{which}.npy'}: row {row} contains NaN or inf "
                    "(the file is corrupted; verify() checks every file)"
                )
        return out

    def similarity(self) -> Tensor:
        """This teacher's full ``(n_clips, n_captions)`` cosine similarity matrix, float32."""
        return ensemble_similarity([self.audio], [self.captions])

    def check_alignment(
        self, clip_ids: Sequence[str], caption_texts: Sequence[str], caption_clip: Sequence[int] | None = None
    ) -> None:
        """Raise :class:`AlignmentError` unless these embeddings were computed for exactly this split.

        Compares sha256 digests where one side knows its digest (a store's come from its manifest, so
        no embeddings and no strings are read), otherwise bytes; only a differing entry is decoded.
        """
        where = self.source or "teacher embeddings"
        checks: list[tuple[str, Any, Any, Callable[[Any, Any], int | None]]] = [
            ("clip_ids", self.clip_ids, StringTable.from_strings(clip_ids), _first_string_difference),
            ("caption_texts", self.caption_texts, StringTable.from_strings(caption_texts), _first_string_difference),
        ]
        if caption_clip is not None:
            checks.append(("caption_clip", self._caption_clip_ref(), _Ints.of(caption_clip), _first_int_difference))
        for name, mine, theirs, first_difference in checks:
            i = first_difference(mine, theirs)
            if i is None:
                continue
            n_mine, n_theirs = (len(mine), len(theirs)) if name != "caption_clip" else (mine.n, theirs.n)
            if n_mine != n_theirs and i == min(n_mine, n_theirs):
                detail = f"the teacher has {n_mine} entries, the split has {n_theirs}"
            else:
                a, b = (mine[i], theirs[i]) if name != "caption_clip" else (int(mine.values()[i]), int(theirs.values()[i]))
                detail = f"index {i} differs: teacher {a!r} vs split {b!r}"
            raise AlignmentError(
                f"{where} was computed for a different dataset or order ({name}: {detail}); "
                "recompute the teacher embeddings for this split"
            )

    def verify(self) -> None:
        """Check every data file of a store against its manifest sha256 (reads everything: ~1 GB/s).
        Embeddings read whole from a ``.safetensors`` file were checked on loading; nothing to do."""
        if self._store is not None:
            self._store.verify()

    # -- files
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write atomically: ``*.safetensors`` as one file (the original format, ``dtype`` as given or
        the tensors' own), any other path as a teacher store directory (float16 unless ``dtype`` is
        float32)."""
        path = Path(path)
        if path.suffix.lower() == ".safetensors":
            return self._save_safetensors(path, dtype)
        if path.is_file():
            raise TeacherFileError(
                f"{path}: a file; name a .safetensors file for the single-file format or a directory for a teacher store"
            )
        return write_teacher_store(
            path, self.clip_ids, self.caption_texts, self._caption_clip_ref(), self.audio, self.captions,
            self.meta, dtype or torch.float16,
        )

    def _save_safetensors(self, path: Path, dtype: torch.dtype | None) -> Path:
        from safetensors.torch import save_file

        from soundsift.version import __version__

        meta = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **self.meta}
        meta.setdefault("soundsift_version", __version__)
        store = dtype or self.audio.dtype
        if not store.is_floating_point:
            raise TeacherFileError(f"{path}: embeddings must be stored as a float dtype, got {store}")
        (clip_data, clip_ends), (text_data, text_ends) = self.clip_ids.buffers(), self.caption_texts.buffers()
        tensors = {
            "audio": self.audio.detach().to("cpu", store).contiguous(),
            "captions": self.captions.detach().to("cpu", store).contiguous(),
            "caption_clip": self.caption_clip.cpu().contiguous(),
            "clip_ids_utf8": _bytes_tensor(clip_data),
            "clip_ids_ends": torch.from_numpy(np.array(clip_ends, dtype=np.int64)),
            "caption_texts_utf8": _bytes_tensor(text_data),
            "caption_texts_ends": torch.from_numpy(np.array(text_ends, dtype=np.int64)),
        }
        header = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "meta": json.dumps(meta, default=str),
        }
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = False) -> TeacherEmbeddings:
        """Open a teacher store directory (lazily) or read a ``.safetensors`` file written by :meth:`save`.

        Format, version, shapes and (for a store) file sizes are checked; ``verify`` also checks every
        store file's sha256 (reads all of it)."""
        path = Path(path)
        if path.is_dir():
            store = _open_store(path)
            t = cls.__new__(cls)
            t.meta, t.source, t._store = dict(store.manifest.get("meta", {})), str(path), store
            t._clip_ids, t._caption_texts = store.strings("clip_ids"), store.strings("caption_texts")
            t._caption_clip = t._audio = t._captions = None
            if verify:
                store.verify()
            return t
        if not path.is_file():
            raise TeacherFileError(f"{path}: no such teacher-embedding file or store")
        return cls._load_safetensors(path)

    @classmethod
    def _load_safetensors(cls, path: Path) -> TeacherEmbeddings:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except Exception as err:  # safetensors raises its own error types
            raise TeacherFileError(f"{path}: not a readable safetensors file ({err})") from err
        if header.get("format") != FORMAT_NAME:
            raise TeacherFileError(
                f"{path}: not a soundsift teacher-embedding file (format={header.get('format')!r})"
            )
        try:
            version = int(header.get("format_version", ""))
        except ValueError:
            raise TeacherFileError(f"{path}: bad format_version {header.get('format_version')!r}") from None
        if version > FORMAT_VERSION:
            raise TeacherFileError(
                f"{path}: format version {version} is newer than this soundsift reads ({FORMAT_VERSION}); upgrade"
            )
        needed = (
            "audio",
            "captions",
            "caption_clip",
            "clip_ids_utf8",
            "clip_ids_ends",
            "caption_texts_utf8",
            "caption_texts_ends",
        )
        missing = [n for n in needed if n not in tensors]
        if missing:
            raise TeacherFileError(f"{path}: missing tensors {missing}")
        try:
            meta = json.loads(header.get("meta", "{}"))
            clip_ids = _table(tensors["clip_ids_utf8"], tensors["clip_ids_ends"], f"{path} (clip ids)")
            texts = _table(tensors["caption_texts_utf8"], tensors["caption_texts_ends"], f"{path} (caption texts)")
        except ValueError as err:
            raise TeacherFileError(f"{path}: corrupt string or metadata block ({err})") from err
        return cls(
            clip_ids,
            tensors["audio"],
            texts,
            tensors["caption_clip"],
            tensors["captions"],
            meta,
            source=str(path),
        )


def _bytes_tensor(data: np.ndarray) -> Tensor:
    # safetensors has no zero-length tensors of this kind in old files: keep one padding byte, as before
    return torch.from_numpy(np.array(data, dtype=np.uint8)) if len(data) else torch.zeros(1, dtype=torch.uint8)


def _table(data: Tensor, ends: Tensor, where: str) -> StringTable:
    ends_np = ends.numpy().astype(np.int64, copy=False)
    raw = data.numpy()
    used = int(ends_np[-1]) if len(ends_np) else 0
    if used > len(raw):
        raise TeacherFileError(f"{where}: corrupt string block (offsets do not fit the bytes)")
    return StringTable(raw[:used], ends_np, where=where)


def _check_caption_clip(values: Tensor, n_clips: int, n_captions: int, where: str) -> None:
    if values.numel() != n_captions:
        raise TeacherFileError(f"{where}: caption_clip has {values.numel()} entries for {n_captions} captions")
    if n_captions and (int(values.min()) < 0 or int(values.max()) >= n_clips):
        bad = int(((values < 0) | (values >= n_clips)).nonzero()[0])
        raise TeacherFileError(
            f"{where}: caption_clip[{bad}] = {int(values[bad])} is not a clip index in [0, {n_clips})"
        )


def _normalised(x: Tensor) -> Tensor:
    """L2-normalise rows in (at least) float32, keeping the stored dtype; rows already of unit norm
    (within 1e-4) are left untouched, so a save/load round trip is exact."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    if x.numel() == 0 or float((wide.norm(dim=1) - 1).abs().max()) <= 1e-4:
        return x
    return F.normalize(wide, dim=1).to(x.dtype)


class TeacherEnsemble:
    """M aligned teachers; gives ``C_hat`` for any set of clips and captions of the split."""

    def __init__(self, teachers: Sequence[TeacherEmbeddings]) -> None:
        if len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        self.teachers = list(teachers)
        first = self.teachers[0]
        for t in self.teachers[1:]:
            try:
                t.check_alignment(first.clip_ids, first.caption_texts, first._caption_clip_ref())
            except AlignmentError as err:
                raise AlignmentError(f"{err} (compared with {first.source or 'teacher 0'})") from None

    @property
    def clip_ids(self) -> StringTable:
        return self.teachers[0].clip_ids

    @property
    def caption_texts(self) -> StringTable:
        return self.teachers[0].caption_texts

    @property
    def caption_clip(self) -> Tensor:
        return self.teachers[0].caption_clip

    def __len__(self) -> int:
        return len(self.teachers)

    def batch_similarity(
        self, clip_index: Tensor, caption_index: Tensor, device: torch.device | str | None = None
    ) -> Tensor:
        """``C_hat`` for a batch, float32 ``(len(clip_index), len(caption_index))`` on ``device``.

        For a batch of B pairs pass each pair's clip index and caption index (global indices in the
        split): row i is the audio of pair i, column j the caption of pair j.
        """
        clips = _index(clip_index, len(self.clip_ids), "clip_index")
        caps = _index(caption_index, len(self.caption_texts), "caption_index")
        audio = [t.rows("audio", clips).to(device) for t in self.teachers]
        captions = [t.rows("captions", caps).to(device) for t in self.teachers]
        return ensemble_similarity(audio, captions)

    def full_similarity(self, device: torch.device | str | None = None) -> Tensor:
        """``C_hat`` over the whole split, ``(n_clips, n_captions)`` float32 (for small splits)."""
        return ensemble_similarity(
            [t.audio.to(device) for t in self.teachers], [t.captions.to(device) for t in self.teachers]
        )


def _index(index: Tensor | Sequence[int], n: int, name: str) -> Tensor:
    idx = torch.as_tensor(index)
    if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, got {idx.dtype} {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{name} has values outside [0, {n})")
    return idx


def correspondence_auc(similarity: Tensor, holds: Tensor) -> float:
    """ROC AUC of ``similarity`` as a score for the bool ground truth ``holds`` (same shape).

    Pooled over all entries, rank based: the probability that a random true pair scores higher than a
    random false pair, ties counting one half.
    """
    scores = torch.as_tensor(similarity).detach().reshape(-1).cpu().double()
    truth = torch.as_tensor(holds).reshape(-1).cpu().bool()
    if scores.numel() != truth.numel():
        raise ValueError(f"similarity has {scores.numel()} entries, holds has {truth.numel()}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("similarity contains NaN")
    n_pos = int(truth.sum())
    n_neg = truth.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs true and false pairs, got {n_pos} true and {n_neg} false")
    _, group, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    pos = torch.bincount(group, weights=truth.double(), minlength=counts.numel())
    neg = counts.double() - pos
    neg_below = torch.cumsum(neg, 0) - neg  # false pairs with a strictly lower score
    wins = (pos * neg_below).sum() + 0.5 * (pos * neg).sum()
    return float(wins / (float(n_pos) * float(n_neg)))
