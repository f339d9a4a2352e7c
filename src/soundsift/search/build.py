"""Build or update an index of an audio folder: incremental, atomic, and reporting every skipped file.

Incremental: a file whose relative path, size and mtime are unchanged keeps its id and embedding; a
new or changed file whose content (sha256) matches an indexed one (renamed, touched) reuses that
embedding; only the rest are decoded and embedded. Files that have disappeared are dropped. Ids are
never reused. Nothing is reused across a change of model or audio root. Each file also gets a small
spectrogram thumbnail (``make_thumbnail``), made from the audio decoded for embedding and kept or reused
exactly like its embedding: an incremental build draws only the new and changed files.

Atomic: everything is written into ``INDEX/.tmp-*``, renamed to a fresh ``INDEX/vNNNNNN-*`` directory,
and only then is ``INDEX/CURRENT`` replaced (``os.replace`` of a file, atomic on POSIX and Windows).
Killed at any moment, the previous version stays live; leftovers are removed by the next build.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.audio import load_audio
from soundsift.errors import ConfigError, ModelMismatchError, SearchIndexError
from soundsift.search.backends import FAISS_KINDS, FaissIndex, faiss_available
from soundsift.search.index import (
    AUTO_FAISS_KIND,
    EMBEDDINGS,
    EXACT_LIMIT,
    INDEX_FORMAT,
    INDEX_VERSION,
    MANIFEST,
    REPORT,
    SKIPPED,
    THUMBNAILS,
    IndexEntry,
    version_dir,
)
from soundsift.search.scan import decode_file, decoder_pool, relative_reason, safe_sha, scan_audio_files
from soundsift.search.store import BuildLock, check_out_dir, publish_version, read_previous, write_json
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH, make_thumbnail

FAISS_CHOICES = ("auto", "none", *FAISS_KINDS)  # what a build may store beside the exact vectors
#: From this many files to decode on, ``processes="auto"`` decodes in worker processes (below it,
#: starting them costs more than the GIL does).
PROCESS_THRESHOLD = 50


@dataclass
class BuildReport:
    """What a build did; saved as ``report.json`` in the index version it wrote."""

    index: str
    version: str
    audio_root: str
    files: int = 0  # audio files indexed in this version
    embedded: int = 0  # decoded and embedded in this build
    unchanged: int = 0  # same path, size and mtime as before: embedding kept
    reused: int = 0  # new or changed path, same content as an indexed file: embedding kept
    added: int = 0
    updated: int = 0
    removed: int = 0
    thumbnails: int = 0  # thumbnails drawn in this build (the rest are kept or reused)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.files} files in {self.index} ({self.version}): {self.added} added, "
            f"{self.updated} updated, {self.removed} removed, {self.unchanged} unchanged; embedded "
            f"{self.embedded}, reused {self.reused} by content; skipped {len(self.skipped)}; "
            f"{self.seconds:.1f} s"
        )


@dataclass
class _Candidate:
    path: str  # relative, POSIX
    size: int
    mtime_ns: int
    id: int  # -1 for a new file
    status: str  # "added" | "updated"


def _previous_thumbnails(out: Path, manifest: dict[str, Any], n: int) -> np.ndarray | None:
    """The thumbnails of the live version (read in full: publishing deletes it), or None."""
    if (manifest.get("thumbnails") or {}).get("file") != THUMBNAILS:
        return None  # built before thumbnails existed: they are drawn for every file
    try:
        thumbs = np.load(version_dir(out) / THUMBNAILS, allow_pickle=False)
    except (SearchIndexError, OSError, ValueError):
        return None
    return thumbs if thumbs.shape == (n, THUMB_HEIGHT, THUMB_WIDTH) and thumbs.dtype == np.uint8 else None


def _load_model(model, model_path):
    """(loaded model, what the manifest records to load it again: a path, a published name, or a list
    of those for an ensemble)."""
    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.ensemble import ModelEnsemble
    from soundsift.checkpoints.load import PUBLISHED

    if isinstance(model, (list, tuple)):  # several models: a system ensemble
        if len(model) == 1:
            return _load_model(model[0], model_path)
        loaded = [_load_model(m, None) for m in model]
        recorded = [r for _, r in loaded]
        return (ModelEnsemble([m for m, _ in loaded], names=[str(m) for m in model]),
                recorded if all(recorded) else None)

    if isinstance(model, (str, Path)) and str(model) in PUBLISHED:  # a published model: recorded by name
        return load_model(str(model)), str(model)
    if isinstance(model, (str, Path)):
        model_path = Path(model).resolve()
        model = load_model(model_path)
    if not model.identity:
        raise ValueError("the model has no identity (sha256 of its file): load it with soundsift.load_model")
    if model_path is not None and str(model_path) in PUBLISHED:
        return model, str(model_path)
    return model, (str(Path(model_path).resolve()) if model_path else None)


def build_index(
    audio_dir: str | Path,
    out: str | Path,
    model,
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
) -> BuildReport:
    """Index every audio file under ``audio_dir`` into the index directory ``out`` (created or updated).

    ``model`` is a model file path, a published name, a list of those (a system ensemble: the mean of
    their similarities, ``ModelEnsemble``) or a loaded model (then pass ``model_path`` so searches can
    find it).
    Decoded audio is embedded in chunks of at most ``chunk_files`` files or ``chunk_samples`` samples
    (default: ten minutes of audio), which bounds memory on libraries of long recordings. ``workers``
    decode ahead of the model: threads, or worker processes with ``processes=True`` (``"auto"``: when
    more than ``PROCESS_THRESHOLD`` files are to be decoded and ``workers`` > 1). The progress bar
    shows files/s and the time left.
    ``checksum`` also re-hashes files whose size and mtime are unchanged. ``faiss``: "auto" stores an
    ``AUTO_FAISS_KIND`` index (IVF over 8-bit codes, re-ranked exactly) when there are more than
    ``EXACT_LIMIT`` files and faiss is installed; a kind of ``FAISS_KINDS``
    always; "none" never. Unreadable files are skipped and listed in the report with the reason.
    An index built with another model is refused (ModelMismatchError) unless ``rebuild``: then every
    file is embedded again with ``model``.
    """
    t0 = time.perf_counter()
    root = Path(audio_dir).resolve()
    if not root.is_dir():
        raise SearchIndexError(f"{audio_dir}: audio folder not found")
    if faiss not in FAISS_CHOICES:
        raise ConfigError(f"unknown faiss option {faiss!r}; use one of {', '.join(FAISS_CHOICES)}")
    out = Path(out).absolute()
    check_out_dir(out)
    model, recorded_model = _load_model(model, model_path)
    out.mkdir(parents=True, exist_ok=True)
    with BuildLock(out):
        return _build_locked(root, out, model, recorded_model, batch_size, chunk_files, chunk_samples,
                             workers, processes, checksum, faiss, progress, t0, rebuild)


def _build_locked(root, out, model, recorded_model, batch_size, chunk_files, chunk_samples, workers,
                  processes, checksum, faiss, progress, t0, rebuild=False) -> BuildReport:
    from tqdm.auto import tqdm

    prev = read_previous(out)
    prev_ids: dict[str, int] = {}  # path -> id: ids stay stable while the audio root is the same
    prev_rows: dict[str, tuple[int, IndexEntry]] = {}  # path -> (row, entry): embeddings reusable
    prev_by_sha: dict[str, int] = {}
    next_id, build_no, prev_emb, prev_list, prev_thumbs = 0, 1, None, [], None
    if prev is not None:
        manifest, prev_list, prev_emb = prev
        prev_thumbs = _previous_thumbnails(out, manifest, len(prev_list))
        next_id = int(manifest.get("next_id", max((e.id for e in prev_list), default=-1) + 1))
        build_no = int(manifest.get("build", 0)) + 1
        if manifest["audio_root"] == str(root):
            prev_ids = {e.path: e.id for e in prev_list}
        same_model = manifest["model"].get("identity") == model.identity
        if not same_model and not rebuild:
            built_with = manifest["model"].get("path") or f"sha256 {str(manifest['model'].get('identity'))[:12]}"
            raise ModelMismatchError(
                f"{out} was built with another model ({built_with}): pass --rebuild to re-embed every file "
                "with this one, or choose another --out"
            )
        if same_model and int(manifest["embed_dim"]) == model.embed_dim:
            prev_by_sha = {e.sha256: row for row, e in enumerate(prev_list) if e.sha256}
            if prev_ids:
                prev_rows = {e.path: (row, e) for row, e in enumerate(prev_list)}
    name = f"v{build_no:06d}-{uuid.uuid4().hex[:8]}"
    report = BuildReport(index=str(out), version=name, audio_root=str(root))

    kept: dict[str, tuple[IndexEntry, np.ndarray]] = {}
    thumbs: dict[str, np.ndarray] = {}  # path -> thumbnail
    no_thumb: list[str] = []  # unchanged files whose previous version has no thumbnail
    todo: list[_Candidate] = []
    seen: set[str] = set()
    for rel, st in scan_audio_files(root, exclude=out):
        seen.add(rel)
        if isinstance(st, Exception):
            report.skipped.append({"path": rel, "reason": str(st)})
            continue
        old = prev_rows.get(rel)
        if old is not None:
            row, e = old
            unchanged = e.size == st.st_size and e.mtime_ns == st.st_mtime_ns
            if unchanged and (not checksum or safe_sha(root / rel) == e.sha256):
                kept[rel] = (e, prev_emb[row])
                if prev_thumbs is not None:
                    thumbs[rel] = prev_thumbs[row]
                else:
                    no_thumb.append(rel)
                report.unchanged += 1
                continue
        if rel in prev_ids:
            todo.append(_Candidate(rel, st.st_size, st.st_mtime_ns, prev_ids[rel], "updated"))
        else:
            todo.append(_Candidate(rel, st.st_size, st.st_mtime_ns, -1, "added"))  # id assigned at the end
    report.removed = len(prev_list) - len(set(prev_ids) & seen)

    def thumbnail(rel: str) -> np.ndarray:
        """The thumbnail of a file whose embedding is kept (decoded for it alone; blank if that fails)."""
        try:
            wave = load_audio(root / rel, model.sample_rate)
        except Exception:
            return np.zeros((THUMB_HEIGHT, THUMB_WIDTH), np.uint8)
        return make_thumbnail(wave, model.sample_rate)

    def load(c: _Candidate, sha: str, wave: Any, error: Any, thumb: Any) -> tuple[str, Any, Any, np.ndarray | None]:
        """(sha256, waveform or None, reused row or error, thumbnail) of a decoded file."""
        if error is None and wave is None and sha in prev_by_sha:
            row = prev_by_sha[sha]
            return sha, None, row, (prev_thumbs[row] if prev_thumbs is not None else thumbnail(c.path))
        return sha, wave, error, thumb

    def flush(waves: list[tuple[_Candidate, str, np.ndarray]]) -> None:
        for (c, sha, wave), vec in zip(waves, _embed(model, waves, batch_size, report, bar)):
            if vec is not None:
                kept[c.path] = (_entry(c, sha, len(wave) / model.sample_rate), vec)
                report.embedded += 1
                _count(report, c)
        waves.clear()

    # Decode a few files ahead (threads or processes); embed in chunks bounded by file count and samples.
    max_samples = chunk_samples or 600 * model.sample_rate
    workers = max(1, int(workers))
    if processes == "auto":
        processes = workers > 1 and len(todo) > PROCESS_THRESHOLD
    known = frozenset(prev_by_sha)
    with tqdm(total=len(todo), desc="embedding", unit="file", disable=not progress, dynamic_ncols=True) as bar, \
            decoder_pool(workers, bool(processes), known) as pool:
        ahead = workers * (4 if processes else 2)

        def submit(c: _Candidate):
            path = root / c.path
            if processes:
                return pool.submit(decode_file, path, model.sample_rate)
            return pool.submit(decode_file, path, model.sample_rate, known)

        futures = [submit(c) for c in todo[:ahead]]
        waves: list[tuple[_Candidate, str, np.ndarray]] = []
        for i, c in enumerate(todo):
            sha, wave, extra, thumb = load(c, *futures[i].result())
            futures[i] = None  # type: ignore[call-overload]  # drop the reference: bounded memory
            if i + ahead < len(todo):
                futures.append(submit(todo[i + ahead]))
            if isinstance(extra, str):
                report.skipped.append({"path": c.path, "reason": relative_reason(extra, root, c.path)})
                bar.update(1)
            elif wave is None:
                kept[c.path] = (_entry(c, sha, prev_list[extra].duration), prev_emb[extra])
                thumbs[c.path] = thumb
                report.reused += 1
                _count(report, c)
                bar.update(1)
            else:
                thumbs[c.path] = thumb
                report.thumbnails += 1
                waves.append((c, sha, wave))
                if len(waves) >= chunk_files or sum(len(w) for _, _, w in waves) >= max_samples:
                    flush(waves)
        flush(waves)
    if no_thumb:
        with ThreadPoolExecutor(max_workers=workers) as threads:
            for rel, thumb in zip(no_thumb, threads.map(thumbnail, no_thumb)):
                thumbs[rel] = thumb
                report.thumbnails += 1

    paths = sorted(kept)
    entries = []
    for p in paths:  # new files get fresh ids in path order; ids of deleted files are never reused
        e = kept[p][0]
        if e.id < 0:
            e = replace(e, id=next_id)
            next_id += 1
        entries.append(e)
    emb = np.stack([kept[p][1] for p in paths]).astype(np.float32) if paths else \
        np.zeros((0, model.embed_dim), np.float32)
    thumb_array = np.stack([thumbs[p] for p in paths]).astype(np.uint8) if paths else \
        np.zeros((0, THUMB_HEIGHT, THUMB_WIDTH), np.uint8)
    report.files = len(entries)
    report.skipped.sort(key=lambda s: s["path"])
    publish_version(out, name, lambda tmp: _fill_version(tmp, root, model, recorded_model, entries, emb,
                                                         thumb_array, next_id, build_no, faiss, report, t0))
    return report


def _entry(c: _Candidate, sha: str, duration: float) -> IndexEntry:
    return IndexEntry(id=c.id, path=c.path, size=c.size, mtime_ns=c.mtime_ns, sha256=sha,
                      duration=round(float(duration), 3))


def _count(report: BuildReport, c: _Candidate) -> None:
    if c.status == "added":
        report.added += 1
    else:
        report.updated += 1


def _embed(model, waves, batch_size: int, report: BuildReport, bar) -> list[np.ndarray | None]:
    """Embed a chunk; if the model fails on it, retry file by file and skip the files that fail."""
    if not waves:
        return []
    done = [0]  # files the bar was advanced by before a failure (they are redone one by one)

    def advance(n: int) -> None:
        done[0] += n
        bar.update(n)

    try:  # clips of different lengths share batches (padded), each still embedded as it would be alone
        return list(model.embed_waveforms([w for _, _, w in waves], batch_size, progress=advance))
    except Exception:
        if done[0]:
            bar.update(-done[0])
    out: list[np.ndarray | None] = []
    for c, _, w in waves:
        try:
            out.append(model.embed_waveforms([w], 1)[0])
        except Exception as exc:
            report.skipped.append({"path": c.path, "reason": f"the model cannot embed it: {exc}"})
            out.append(None)
        bar.update(1)
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def _fill_version(tmp: Path, root: Path, model, recorded_model: str | None, entries: list[IndexEntry],
                  emb: np.ndarray, thumbs: np.ndarray, next_id: int, build_no: int, faiss: str,
                  report: BuildReport, t0: float) -> None:
    """Write the files of one index version into the (temporary) directory ``tmp``."""
    _save_npy(tmp / EMBEDDINGS, emb)
    _save_npy(tmp / THUMBNAILS, thumbs)
    faiss_info = None
    big = len(entries) > EXACT_LIMIT and faiss_available()
    want = faiss if faiss != "auto" else (AUTO_FAISS_KIND if big else "none")
    if want != "none" and len(entries):
        index = FaissIndex(emb, want)
        index.save(tmp / f"faiss-{want}.index")
        faiss_info = {**index.params, "file": f"faiss-{want}.index"}
    manifest = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "build": build_no,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"identity": model.identity, "path": recorded_model, "embed_dim": model.embed_dim,
                  "sample_rate": model.sample_rate, "config": model.config},
        "audio_root": str(root),
        "embed_dim": model.embed_dim,
        "next_id": next_id,
        "faiss": faiss_info,
        "thumbnails": {"file": THUMBNAILS, "height": THUMB_HEIGHT, "width": THUMB_WIDTH, "kind": "spectrogram"},
        "entries": [asdict(e) for e in entries],
    }
    write_json(tmp / MANIFEST, manifest)
    with open(tmp / SKIPPED, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.writelines(f"{s['path']}\t{s['reason']}\n" for s in report.skipped)
    report.seconds = round(time.perf_counter() - t0, 3)
    write_json(tmp / REPORT, asdict(report))
