"""The teacher store: teacher embeddings at WavCaps size as a directory of memory-mapped ``.npy`` files
with a manifest. Its string columns are :class:`~soundsift.string_table.StringTable` (re-exported here).

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
from soundsift.string_table import StringTable, _Ints

__all__ = ["MANIFEST", "STORE_FORMAT", "STORE_VERSION", "StringTable", "write_teacher_store"]

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
