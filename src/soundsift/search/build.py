"""Build or update an index of an audio folder: incremental, atomic, and reporting every skipped file.

Incremental: a file whose relative path, size and mtime are unchanged keeps its id and embedding; a
new or changed file whose content (sha256) matches an indexed one (renamed, touched) reuses that
embedding; only the rest are decoded and embedded. Files that have disappeared are dropped. Ids are
never reused. Nothing is reused across a change of model or audio root. Each file also gets a small
spectrogram thumbnail (``make_thumbnail``), made from the audio decoded for embedding and kept or reused
exactly like its embedding: an incremental build draws only the new and changed files.

Proportional: unchanged files stay in the segments that hold them; a build writes one segment of the new
and changed files (``search.builder``; ``update_index`` looks at given paths only, without a scan).

Atomic: segments and the version are written into ``.tmp-*`` directories, renamed to fresh names, and
only then is ``INDEX/CURRENT`` replaced (``os.replace`` of a file, atomic on POSIX and Windows).
Killed at any moment, the previous version stays live; leftovers are removed by the next build.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from soundsift.errors import ConfigError, SearchIndexError
from soundsift.search.backends import FAISS_KINDS
from soundsift.search.builder import PROCESS_THRESHOLD, Build, BuildOptions  # noqa: F401  (re-exported)
from soundsift.search.decoding import DEFAULT_TIMEOUT
from soundsift.search.embedding import build_windows
from soundsift.search.embedding import load_build_model as _load_model
from soundsift.search.store import BuildLock, check_out_dir
from soundsift.search.version import BuildReport
from soundsift.spans import PATCH_RULE, PATCH_RULES, WINDOWS_ALONE

FAISS_CHOICES = ("auto", "none", *FAISS_KINDS)  # what a build may store beside the exact vectors


def build_index(
    audio_dir: str | Path,
    out: str | Path,
    model: Any = "zero-shot",
    *,
    model_path: str | Path | None = None,
    batch_size: int = 16,
    chunk_files: int = 32,
    chunk_samples: int | None = None,
    workers: int = 2,
    processes: bool | str = "auto",
    checksum: bool = False,
    faiss: str = "auto",
    progress: bool = True,
    rebuild: bool = False,
    window: float | None = None,
    hop: float | None = None,
    runtime: str = "torch",
    quantize: str | None = None,
    decode_timeout: float | None = DEFAULT_TIMEOUT,
    window_rule: str = PATCH_RULE,
) -> BuildReport:
    """Index every audio file under ``audio_dir`` into the index directory ``out`` (created or updated).

    ``model`` is a model file path, a published name (default ``"zero-shot"``: offline), a list of
    those (a system ensemble: the mean of their similarities, ``ModelEnsemble``) or a loaded model (then
    pass ``model_path`` so searches can find it).
    Decoded audio is embedded in chunks of at most ``chunk_files`` files or ``chunk_samples`` samples
    (default: ten minutes of audio), which bounds memory on libraries of long recordings. ``workers``
    decode ahead of the model: threads, or worker processes with ``processes=True`` (``"auto"``: when
    more than ``PROCESS_THRESHOLD`` files are to be decoded and ``workers`` > 1). The progress bar
    shows files/s and the time left.
    ``checksum`` also re-hashes files whose size and mtime are unchanged. ``faiss``: "auto" stores an
    ``AUTO_FAISS_KIND`` index (IVF over 8-bit codes, re-ranked exactly) when there are more than
    ``EXACT_LIMIT`` files and faiss is installed; a kind of ``FAISS_KINDS``
    always; "none" never. Unreadable files are skipped and listed in the report with the reason; a
    folder with no audio file at all is refused (SearchIndexError), and an existing index left as it was.
    An index built with another model is refused (ModelMismatchError) unless ``rebuild``: then every
    file is embedded again with ``model``.
    ``window``/``hop`` (seconds): files longer than ``window`` are also embedded as windows every ``hop``
    seconds (``search.moments``); default: the model's input length (``DEFAULT_WINDOW`` for models
    without one), hop half of it; 0: whole files only. A changed setting re-embeds every file.
    ``runtime``: ``"torch"`` or ``"onnx"`` (ONNX Runtime, ``quantize`` None or ``"int8"``; recorded in
    the index, whose searches then use it too). ``decode_timeout``: seconds after which a file's decoding
    is given up (its worker killed and replaced when decoding runs in processes) and the file reported;
    a decoding process that dies is replaced and its file reported too (``search.decoding``). The
    report's ``stages`` hold the seconds spent per stage (``index build --stats``). ``window_rule``: how a
    model whose audio tower pools patches (the zero-shot model) makes a window's vector from the file's
    own patches (``spans.patch_ranges``), or ``"alone"``: each window embedded on its own, as other
    models' are; recorded in the index, and a changed rule re-embeds every file.
    """
    from soundsift.search.scan import check_library

    t0 = time.perf_counter()
    options = BuildOptions(batch_size, chunk_files, chunk_samples, workers, processes, checksum, faiss,
                           progress, rebuild, decode_timeout=decode_timeout, window_rule=window_rule)
    if window_rule not in (*PATCH_RULES, WINDOWS_ALONE):
        raise ConfigError(f"unknown window rule {window_rule!r}; use one of {', '.join((*PATCH_RULES, WINDOWS_ALONE))}")
    if decode_timeout is not None and not decode_timeout > 0:
        raise ConfigError(f"--decode-timeout must be > 0 seconds, got {decode_timeout}")
    root, out = Path(audio_dir).resolve(), Path(out).absolute()
    check_library(root, audio_dir, exclude=out)
    if faiss not in FAISS_CHOICES:
        raise ConfigError(f"unknown faiss option {faiss!r}; use one of {', '.join(FAISS_CHOICES)}")
    check_out_dir(out)
    model, recorded_model = _load_model(model, model_path, runtime, quantize)
    options = replace(options, **dict(zip(("window", "hop"), build_windows(model, window, hop))))
    out.mkdir(parents=True, exist_ok=True)
    with BuildLock(out):
        return Build(root, out, model, recorded_model, options, t0).run(None)




def update_index(
    index: str | Path,
    paths: Iterable[str | Path],
    model: Any = None,
    *,
    model_path: str | Path | None = None,
    batch_size: int = 16,
    workers: int = 2,
    faiss: str = "auto",
    progress: bool = False,
) -> BuildReport:
    """Bring the index at ``index`` up to date for ``paths`` only (files or folders under its audio root,
    absolute or relative to it): existing audio files are added or re-embedded if changed, folders are
    scanned, and rows of paths that no longer exist (a deleted or moved file or folder) are deleted.
    The cost is that of the change, not of the index (``index watch`` and the update benchmark use it).
    ``model``: the one that built the index (default: the recorded one) or a loaded model with
    ``model_path``; window setting and FAISS option as in ``build_index``.
    """
    from soundsift.search.index_types import read_manifest, version_dir
    from soundsift.search.windows import rule_of, window_embedding_of, window_setting

    t0 = time.perf_counter()
    out = Path(index).absolute()
    manifest = read_manifest(version_dir(out))
    root = Path(manifest["audio_root"])
    rels = []
    for p in paths:
        p = Path(p)
        if p.is_absolute():
            try:
                p = p.relative_to(root)
            except ValueError:
                raise SearchIndexError(f"{p}: not under the index's audio folder {root}") from None
        rel = p.as_posix()
        if rel in ("", ".") or ".." in p.parts:
            raise SearchIndexError(f"{p}: give a file or folder inside the index's audio folder {root}")
        rels.append(rel)
    if model is None:
        model = manifest["model"].get("path")
        if not model:
            raise SearchIndexError(f"{out}: the index records no model; pass the model that built it")
    built = manifest["model"]  # the runtime (and int8 setting) the index was built with
    model, recorded = _load_model(model, model_path, built.get("runtime") or "torch", built.get("quantize"))
    window, hop = window_setting(manifest)
    options = BuildOptions(batch_size=batch_size, workers=workers, processes=False, faiss=faiss, progress=progress,
                           window=window, hop=hop, window_rule=rule_of(window_embedding_of(manifest)))
    with BuildLock(out):
        return Build(root, out, model, recorded, options, t0).run(rels)
