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

The package: :mod:`~soundsift.correspondences.teacher` (one teacher and its files),
:mod:`~soundsift.correspondences.ensemble` (the ensemble, AUC), :mod:`~soundsift.correspondences.similarity`
(C_hat from embeddings). Every public name is re-exported here.
"""

from __future__ import annotations

from soundsift.correspondences.ensemble import TeacherEnsemble, correspondence_auc
from soundsift.correspondences.similarity import ensemble_similarity
from soundsift.correspondences.teacher import FORMAT_NAME, FORMAT_VERSION, TeacherEmbeddings
from soundsift.errors import AlignmentError, TeacherFileError
from soundsift.string_table import StringTable
from soundsift.teacher_store import STORE_FORMAT, STORE_VERSION, write_teacher_store

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
