"""One stage-1 model's embeddings of one training split (:class:`TeacherEmbeddings`) and its two
file forms: one ``.safetensors`` file, or a teacher store (:mod:`soundsift.teacher_store`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from soundsift.atomic import atomic_write
from soundsift.correspondences.similarity import ensemble_similarity
from soundsift.errors import AlignmentError, TeacherFileError
from soundsift.string_table import StringTable, _first_int_difference, _first_string_difference, _Ints
from soundsift.teacher_store import _open_store, _Store, write_teacher_store

FORMAT_NAME = "soundsift.teacher_embeddings"
FORMAT_VERSION = 1


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
