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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.audio import load_audio
from soundsift.data.records import Problem
from soundsift.errors import ConfigError, ModelMismatchError, SearchIndexError
from soundsift.search.backends import FAISS_KINDS
from soundsift.search.decoding import DEFAULT_TIMEOUT, ProcessDecoders, ThreadDecoders
from soundsift.search.embedding import Embedded, build_windows, embed_with_windows
from soundsift.search.embedding import load_build_model as _load_model
from soundsift.search.index import IndexEntry, version_dir
from soundsift.search.scan import Decoded, Known, relative_reason, safe_sha, scan_audio_files
from soundsift.search.stats import StageTimes
from soundsift.search.store import BuildLock, check_out_dir, publish_version, read_previous
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH, make_thumbnail
from soundsift.search.version import BuildReport, VersionContents, previous_thumbnails, write_version
from soundsift.search.windows import WindowTable, load_windows, window_setting

FAISS_CHOICES = ("auto", "none", *FAISS_KINDS)  # what a build may store beside the exact vectors
#: From this many files to decode on, ``processes="auto"`` decodes in worker processes (below it,
#: starting them costs more than the GIL does).
PROCESS_THRESHOLD = 50


@dataclass(frozen=True)
class BuildOptions:
    """How ``build_index`` works (see its docstring); the outcome does not depend on them, except
    ``faiss`` and ``rebuild``."""

    batch_size: int = 16
    chunk_files: int = 32
    chunk_samples: int | None = None
    workers: int = 2
    processes: bool | str = "auto"
    checksum: bool = False
    faiss: str = "auto"
    progress: bool = True
    rebuild: bool = False
    window: float = 0.0  # seconds; 0: whole files only
    hop: float = 0.0
    decode_timeout: float | None = DEFAULT_TIMEOUT  # seconds per file; None: no limit


@dataclass
class _Candidate:
    """A file to decode and embed (new or changed)."""

    path: str  # relative, POSIX
    size: int
    mtime_ns: int
    id: int  # -1 for a new file
    status: str  # "added" | "updated"


@dataclass
class _Previous:
    """What the live version offers a build: ids to keep, and rows whose embeddings may be reused."""

    entries: list[IndexEntry] = field(default_factory=list)
    embeddings: np.ndarray | None = None
    thumbnails: np.ndarray | None = None
    windows: WindowTable | None = None
    ids: dict[str, int] = field(default_factory=dict)  # path -> id: stable while the audio root is the same
    rows: dict[str, int] = field(default_factory=dict)  # path -> row: embedding reusable if unchanged
    by_sha: dict[str, int] = field(default_factory=dict)  # content -> row: embedding reusable
    next_id: int = 0
    build_no: int = 1


@dataclass
class _Version:
    """The version being assembled: path -> (entry, embedding), path -> thumbnail, skipped files."""

    kept: dict[str, tuple[IndexEntry, Embedded]] = field(default_factory=dict)
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(Problem(file=path, row=None, message=reason))


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
    report's ``stages`` hold the seconds spent per stage (``index build --stats``).
    """
    from soundsift.search.scan import check_library

    t0 = time.perf_counter()
    options = BuildOptions(batch_size, chunk_files, chunk_samples, workers, processes, checksum, faiss,
                           progress, rebuild, decode_timeout=decode_timeout)
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
        return _Build(root, out, model, recorded_model, options, t0).run()


class _Build:
    """One build under the index's lock, in named steps: read what the live version offers, plan the
    changes, decode and embed what is new, reuse what is unchanged, assemble and publish the version."""

    def __init__(self, root: Path, out: Path, model: Any, recorded_model: Any, options: BuildOptions,
                 t0: float) -> None:
        self.root, self.out, self.model, self.recorded_model = root, out, model, recorded_model
        self.options, self.t0 = options, t0
        self.prev = _Previous()
        self.version = _Version()
        self.report = BuildReport(index=str(out), version="", audio_root=str(root))
        self.stages = StageTimes()

    def run(self) -> BuildReport:
        self.prev = self.read_live_version()
        self.report.version = name = f"v{self.prev.build_no:06d}-{uuid.uuid4().hex[:8]}"
        with self.stages.timing("listing"):
            todo, no_thumb = self.plan()
        self.decode_and_embed(todo)
        self.draw_thumbnails(no_thumb)
        with self.stages.timing("writing"):
            contents = self.assemble()
            self.report.stages = self.stages.as_dict()
            publish_version(self.out, name, lambda tmp: write_version(tmp, contents, self.report, self.t0))
        self.report.stages = self.stages.as_dict()
        return self.report

    def read_live_version(self) -> _Previous:
        """What the live version (if any) offers; refuses one built with another model unless ``rebuild``."""
        found = read_previous(self.out)
        if found is None:
            return _Previous()
        manifest, entries, emb = found
        prev = _Previous(entries=entries, embeddings=emb,
                         thumbnails=previous_thumbnails(self.out, manifest, len(entries)),
                         next_id=int(manifest.get("next_id", max((e.id for e in entries), default=-1) + 1)),
                         build_no=int(manifest.get("build", 0)) + 1)
        if manifest["audio_root"] == str(self.root):
            prev.ids = {e.path: e.id for e in entries}
        same_model = manifest["model"].get("identity") == self.model.identity
        if not same_model and not self.options.rebuild:
            built_with = manifest["model"].get("path") or f"sha256 {str(manifest['model'].get('identity'))[:12]}"
            raise ModelMismatchError(
                f"{self.out} was built with another model ({built_with}): pass --rebuild to re-embed every file "
                "with this one, or choose another --out"
            )
        same_windows = window_setting(manifest) == (self.options.window, self.options.hop)
        if same_model and same_windows and int(manifest["embed_dim"]) == self.model.embed_dim:
            try:
                prev.windows = load_windows(version_dir(self.out), manifest, len(entries), self.model.embed_dim)
            except SearchIndexError:  # unreadable windows: every file is embedded again
                return prev
            prev.by_sha = {e.sha256: row for row, e in enumerate(entries) if e.sha256}
            if prev.ids:
                prev.rows = {e.path: row for row, e in enumerate(entries)}
        return prev

    def plan(self) -> tuple[list[_Candidate], list[str]]:
        """Keep the unchanged files; (files to decode, kept files that still need a thumbnail)."""
        prev, version, report = self.prev, self.version, self.report
        todo: list[_Candidate] = []
        no_thumb: list[str] = []  # unchanged files whose previous version has no thumbnail
        seen: set[str] = set()
        for rel, st in scan_audio_files(self.root, exclude=self.out):
            seen.add(rel)
            if isinstance(st, Exception):
                version.skip(rel, str(st))
                continue
            row = prev.rows.get(rel)
            if row is not None and self._unchanged(prev.entries[row], st):
                version.kept[rel] = (prev.entries[row], self._previous_vectors(row))
                if prev.thumbnails is not None:
                    version.thumbs[rel] = prev.thumbnails[row]
                else:
                    no_thumb.append(rel)
                report.unchanged += 1
                continue
            status, old_id = ("updated", prev.ids[rel]) if rel in prev.ids else ("added", -1)  # new: id at the end
            todo.append(_Candidate(rel, st.st_size, st.st_mtime_ns, old_id, status))
        report.removed = len(prev.entries) - len(set(prev.ids) & seen)
        return todo, no_thumb

    def _unchanged(self, entry: IndexEntry, st: os.stat_result) -> bool:
        same = entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns
        return same and (not self.options.checksum or safe_sha(self.root / entry.path) == entry.sha256)

    def decode_and_embed(self, todo: list[_Candidate]) -> None:
        """Decode a few files ahead (threads or processes); embed in chunks bounded by file count and
        samples; reuse the embedding of a content already indexed; skip what fails."""
        from tqdm.auto import tqdm

        opts, rate = self.options, self.model.sample_rate
        max_samples = opts.chunk_samples or 600 * rate
        workers = max(1, int(opts.workers))
        processes = opts.processes
        if processes == "auto":
            processes = workers > 1 and len(todo) > PROCESS_THRESHOLD
        known = frozenset(self.prev.by_sha)
        pool_type = ProcessDecoders if processes else ThreadDecoders
        with tqdm(total=len(todo), desc="embedding", unit="file", disable=not opts.progress,
                  dynamic_ncols=True) as bar, pool_type(workers, rate, known, opts.decode_timeout) as pool:
            waves: list[tuple[_Candidate, Decoded]] = []
            for c, result in zip(todo, pool.map([self.root / c.path for c in todo])):
                if isinstance(result, Decoded):
                    self.stages.add_decoded(result.times)
                    self.version.thumbs[c.path] = result.thumbnail
                    self.report.thumbnails += 1
                    waves.append((c, result))
                    if len(waves) >= opts.chunk_files or sum(len(d.wave) for _, d in waves) >= max_samples:
                        self.embed(waves, bar)
                    continue
                if isinstance(result, Known):
                    self.reuse(c, result.sha256)
                else:
                    self.version.skip(c.path, relative_reason(result.reason, self.root, c.path))
                bar.update(1)
            self.embed(waves, bar)

    def reuse(self, c: _Candidate, sha: str) -> None:
        """A new or changed file with the content of an indexed one: its embedding and thumbnail kept."""
        row = self.prev.by_sha[sha]
        self.version.kept[c.path] = (_entry(c, sha, self.prev.entries[row].duration), self._previous_vectors(row))
        self.version.thumbs[c.path] = (self.prev.thumbnails[row] if self.prev.thumbnails is not None
                                       else self.thumbnail(c.path))
        self.report.reused += 1
        _count(self.report, c)

    def _previous_vectors(self, row: int) -> Embedded:
        """The live version's embedding of entry ``row`` and of its windows."""
        prev, dim = self.prev, self.model.embed_dim
        if prev.windows is None:
            return prev.embeddings[row], np.zeros((0, 2)), np.zeros((0, dim), np.float32)
        rows = prev.windows.rows_of(row)
        return prev.embeddings[row], prev.windows.spans[rows], np.asarray(prev.windows.embeddings[rows])

    def embed(self, waves: list[tuple[_Candidate, Decoded]], bar) -> None:
        """Embed a chunk of decoded files; if the model fails on it, retry file by file and skip the
        files that fail. Empties ``waves``."""
        if not waves:
            return
        done = [0]  # files the bar was advanced by before a failure (they are redone one by one)

        def advance(n: int) -> None:
            done[0] += n
            bar.update(n)

        batch_size, model, window, hop = self.options.batch_size, self.model, self.options.window, self.options.hop
        try:  # clips of different lengths share batches (padded), each still embedded as it would be alone
            with self.stages.timing("model"):
                vectors: list[Embedded | None] = list(
                    embed_with_windows(model, [d.wave for _, d in waves], batch_size, window, hop, progress=advance))
        except Exception:
            bar.update(-done[0])
            vectors = []
            for c, d in waves:
                try:
                    vectors.append(embed_with_windows(model, [d.wave], 1, window, hop)[0])
                except Exception as exc:
                    self.version.skip(c.path, f"the model cannot embed it: {exc}")
                    vectors.append(None)
                bar.update(1)
        for (c, d), vec in zip(waves, vectors):
            if vec is not None:
                self.version.kept[c.path] = (_entry(c, d.sha256, len(d.wave) / model.sample_rate), vec)
                self.report.embedded += 1
                _count(self.report, c)
        waves.clear()

    def thumbnail(self, rel: str) -> np.ndarray:
        """The thumbnail of a file whose embedding is kept (decoded for it alone; blank if that fails)."""
        try:
            wave = load_audio(self.root / rel, self.model.sample_rate)
        except Exception:
            return np.zeros((THUMB_HEIGHT, THUMB_WIDTH), np.uint8)
        return make_thumbnail(wave, self.model.sample_rate)

    def draw_thumbnails(self, paths: list[str]) -> None:
        """Thumbnails of kept files whose previous version had none (built before thumbnails existed)."""
        if not paths:
            return
        with ThreadPoolExecutor(max_workers=max(1, int(self.options.workers))) as threads:
            for rel, thumb in zip(paths, threads.map(self.thumbnail, paths)):
                self.version.thumbs[rel] = thumb
                self.report.thumbnails += 1

    def assemble(self) -> VersionContents:
        """The version's contents in path order; new files get fresh ids in path
        order, and ids of deleted files are never reused. Fills the report's file count and skips."""
        kept, next_id = self.version.kept, self.prev.next_id
        paths = sorted(kept)
        entries = []
        for p in paths:
            e = kept[p][0]
            if e.id < 0:
                e = replace(e, id=next_id)
                next_id += 1
            entries.append(e)
        emb = np.stack([kept[p][1][0] for p in paths]).astype(np.float32) if paths else \
            np.zeros((0, self.model.embed_dim), np.float32)
        spans = [np.column_stack([np.full(len(kept[p][1][1]), row), kept[p][1][1]]) for row, p in enumerate(paths)]
        windows = (np.concatenate([np.zeros((0, 3)), *spans]).astype(np.float64),
                   np.concatenate([np.zeros((0, self.model.embed_dim)), *(kept[p][1][2] for p in paths)]
                                  ).astype(np.float32))
        thumbs = np.stack([self.version.thumbs[p] for p in paths]).astype(np.uint8) if paths else \
            np.zeros((0, THUMB_HEIGHT, THUMB_WIDTH), np.uint8)
        self.report.files = len(entries)
        self.report.skipped = [{"path": p.file, "reason": p.message}
                               for p in sorted(self.version.skipped, key=lambda p: p.file)]
        return VersionContents(self.model, self.recorded_model, self.root, entries, emb, thumbs, next_id,
                               self.prev.build_no, self.options.faiss, windows,
                               (self.options.window, self.options.hop))


def _entry(c: _Candidate, sha: str, duration: float) -> IndexEntry:
    return IndexEntry(id=c.id, path=c.path, size=c.size, mtime_ns=c.mtime_ns, sha256=sha,
                      duration=round(float(duration), 3))


def _count(report: BuildReport, c: _Candidate) -> None:
    if c.status == "added":
        report.added += 1
    else:
        report.updated += 1
