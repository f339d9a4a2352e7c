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

import json
import math
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
from soundsift.errors import AlignmentError, ConfigError, TeacherFileError
from soundsift.teacher_store import (
    STORE_FORMAT,
    STORE_VERSION,
    StringTable,
    _first_int_difference,
    _first_string_difference,
    _Ints,
    _open_store,
    _Store,
    write_teacher_store,
)

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


def ensemble_similarity(
    audio_embs: Sequence[Tensor], caption_embs: Sequence[Tensor], weights: Sequence[float] | None = None
) -> Tensor:
    """``C_hat = 1/M sum_m normalise(audio_m) @ normalise(caption_m).T``, float32 ``(n_audio, n_caption)``.

    Teachers may have different embedding sizes; each pair ``(audio_m, caption_m)`` shares one. With
    ``weights`` (one per teacher, > 0) the mean is weighted: ``sum_m w_m C^m / sum_m w_m``.
    """
    if len(audio_embs) != len(caption_embs) or len(audio_embs) == 0:
        raise ValueError(
            f"need one caption matrix per audio matrix and at least one teacher, got {len(audio_embs)} "
            f"audio and {len(caption_embs)} caption matrices"
        )
    if weights is not None:
        weights = _checked_weights(weights, len(audio_embs))
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
        if weights is not None:
            sim = sim * weights[m]
        total = sim if total is None else total + sim.to(total.device)
    assert total is not None
    return total / (len(audio_embs) if weights is None else sum(weights))


def _checked_weights(weights: Sequence[float], n: int) -> list[float]:
    values = [float(w) for w in weights]
    if len(values) != n or not all(math.isfinite(w) and w > 0 for w in values):
        raise ConfigError(f"ensemble weights must be {n} finite numbers > 0 (one per teacher), got {values}")
    return values

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
    """M aligned teachers; gives ``C_hat`` for any set of clips and captions of the split: their mean
    similarity (the paper), or with ``weights`` (one per teacher, > 0) their weighted mean."""

    def __init__(self, teachers: Sequence[TeacherEmbeddings], weights: Sequence[float] | None = None) -> None:
        if len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        self.teachers = list(teachers)
        self.weights = None if weights is None else _checked_weights(weights, len(self.teachers))
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
        return ensemble_similarity(audio, captions, self.weights)

    def full_similarity(self, device: torch.device | str | None = None) -> Tensor:
        """``C_hat`` over the whole split, ``(n_clips, n_captions)`` float32 (for small splits)."""
        return ensemble_similarity(
            [t.audio.to(device) for t in self.teachers], [t.captions.to(device) for t in self.teachers], self.weights
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
