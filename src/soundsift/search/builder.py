"""One index build or update under the index's lock (``Build``), in named steps: read the live version,
plan the changes (a full scan of the library, or the given paths only), decode and embed what is new,
write it as one new segment (merged with small segments: ``changes.merge_plan``), publish the version.

Unchanged files stay where they are, in their segments: an update writes only the new and changed
files' rows, the deleted-row lists and a small manifest, whatever the size of the index.
"""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.audio import AUDIO_EXTENSIONS, load_audio
from soundsift.data.records import Problem
from soundsift.errors import ModelMismatchError, SearchIndexError
from soundsift.progress import progress_bar
from soundsift.search.changes import Base, ShaIndex, concat_rows, gather, live_windows, merge_plan
from soundsift.search.decoding import DEFAULT_TIMEOUT, ProcessDecoders, ThreadDecoders
from soundsift.search.embedding import Embedded, embed_with_windows, window_embedding
from soundsift.search.index_types import IndexEntry
from soundsift.search.reader import LiveVersion, read_live
from soundsift.search.scan import Decoded, Known, relative_reason, safe_sha, scan_audio_files
from soundsift.search.segments import Rows, write_segment
from soundsift.search.stats import StageTimes
from soundsift.search.store import publish_version
from soundsift.search.thumbnails import THUMB_HEIGHT, THUMB_WIDTH, make_thumbnail
from soundsift.search.version import BuildReport, VersionPlan, write_version
from soundsift.search.windows import window_embedding_of, window_setting
from soundsift.spans import PATCH_RULE

#: From this many files to decode on, ``processes="auto"`` decodes in worker processes (below it,
#: starting them costs more than the GIL does).
PROCESS_THRESHOLD = 50


@dataclass(frozen=True)
class BuildOptions:
    """How a build works (see ``build_index``); the outcome does not depend on them, except ``faiss``
    and ``rebuild``."""

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
    window_rule: str = PATCH_RULE  # how windows are pooled from patches (search.embedding.embed_with_windows)


@dataclass
class _Candidate:
    """A file to decode and embed (new or changed)."""

    path: str  # relative, POSIX
    size: int
    mtime_ns: int
    id: int  # -1 for a new file
    status: str  # "added" | "updated"


@dataclass
class _New:
    """The rows being added: path -> (entry, embedding), thumbnail, (sample rate, channels); skipped files."""

    kept: dict[str, tuple[IndexEntry, Embedded]] = field(default_factory=dict)
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)
    rates: dict[str, tuple[int, int]] = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(Problem(file=path, row=None, message=reason))


class Build:
    """One build or update; ``run(None)`` scans the whole library, ``run(paths)`` looks at those paths
    only (relative to the audio root: files added, changed or gone, and folders)."""

    def __init__(self, root: Path, out: Path, model: Any, recorded_model: Any, options: BuildOptions,
                 t0: float) -> None:
        self.root, self.out, self.model, self.recorded_model = root, out, model, recorded_model
        self.options, self.t0 = options, t0
        self.base = Base([], [])
        self.reusable = False  # the live version's vectors were made by this model and window setting
        self.same_root = False
        self.shas = ShaIndex([], [])
        self.next_id, self.build_no = 0, 1
        self.new = _New()
        self.report = BuildReport(index=str(out), version="", audio_root=str(root))
        self.stages = StageTimes()

    def run(self, paths: list[str] | None) -> BuildReport:
        self.read_live_version()
        self.report.version = name = f"v{self.build_no:06d}-{uuid.uuid4().hex[:8]}"
        with self.stages.timing("listing"):
            todo = self.plan_all() if paths is None else self.plan_paths(paths)
        self.decode_and_embed(todo)
        with self.stages.timing("writing"):
            plan = self.assemble()
            self.report.stages = self.stages.as_dict()
            publish_version(self.out, name, lambda tmp: write_version(tmp, plan, self.report, self.t0),
                            segments={s for s, _, _ in plan.segments})
        self.report.stages = self.stages.as_dict()
        return self.report

    # ------------------------------------------------------------------------------ the live version

    def read_live_version(self) -> None:
        """What the live version (if any) offers; refuses one built with another model unless ``rebuild``;
        a format-1 version is migrated to a segment first (once, said in one line)."""
        live = self._read()
        if live is None:
            return
        manifest = live.manifest
        self.next_id = max(self.next_id, int(manifest.get("next_id", 0)))  # ids are never reused
        self.build_no = int(manifest.get("build", 0)) + 1
        same_model = manifest["model"].get("identity") == self.model.identity
        if not same_model and not self.options.rebuild:
            built_with = manifest["model"].get("path") or f"sha256 {str(manifest['model'].get('identity'))[:12]}"
            raise ModelMismatchError(
                f"{self.out} was built with another model ({built_with}): pass --rebuild to re-embed every file "
                "with this one, or choose another --out"
            )
        self.base = Base(live.segments, [set(d.tolist()) for d in live.deleted])
        if live.legacy:
            self.migrate(live)
        self.same_root = manifest["audio_root"] == str(self.root)
        same_windows = window_setting(manifest) == (self.options.window, self.options.hop) and (
            not self.options.window or window_embedding_of(manifest) == self._window_embedding)
        self.reusable = same_model and same_windows and int(manifest["embed_dim"]) == self.model.embed_dim
        if self.reusable:
            self.shas = ShaIndex(self.base.segments, self.base.keeps())
        if not self.same_root:  # ids and rows are per audio root: every file is new (vectors still reusable)
            for _, where in self.base.paths():
                self.base.delete(where)
                self.report.removed += 1

    def _read(self) -> LiveVersion | None:
        from soundsift.search.index_types import POINTER

        if not (self.out / POINTER).is_file():
            return None
        try:
            live = read_live(self.out, mmap=True)
        except SearchIndexError as exc:
            warnings.warn(f"ignoring the unreadable previous index ({exc}); rebuilding from scratch", stacklevel=4)
            return None
        ids = [s.entries["id"] for s in live.segments]
        self.next_id = max([0, *(int(i.max()) + 1 for i in ids if len(i))])
        return live

    def migrate(self, live: LiveVersion) -> None:
        """Write a format-1 version's rows as the first segment (its thumbnails drawn if it had none)."""
        warnings.warn(f"{self.out}: index format 1 (one JSON manifest of every entry) is migrated once to format 2 "
                      f"(segments) by this build", stacklevel=5)
        seg = live.segments[0]
        if seg.thumbnails is None:
            seg.thumbnails = np.stack([self.thumbnail(p) for p in seg.paths()]) if len(seg) else \
                np.zeros((0, THUMB_HEIGHT, THUMB_WIDTH), np.uint8)
            self.report.thumbnails += len(seg)
        migrated, written = write_segment(self.out, self._segment_name(), gather(self.base, [0]), self.options.faiss)
        self.report.bytes_written += written
        self.base = Base([migrated], [set()])

    def _segment_name(self) -> str:
        return f"s{self.build_no:06d}-{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------------------ planning

    def plan_all(self) -> list[_Candidate]:
        """A full scan: unchanged files stay; changed and new ones are to embed; missing ones are deleted."""
        self.base.index_paths()
        todo: list[_Candidate] = []
        seen: set[str] = set()
        for rel, st in scan_audio_files(self.root, exclude=self.out):
            seen.add(rel)
            self._plan_file(rel, st, todo)
        for path, where in self.base.paths():
            if path not in seen:
                self.base.delete(where)
                self.report.removed += 1
        return todo

    def plan_paths(self, paths: list[str]) -> list[_Candidate]:
        """Only ``paths`` (relative): existing files are added or updated, folders scanned, and rows of
        paths that are gone (files, or whole folders) deleted."""
        todo: list[_Candidate] = []
        for rel in dict.fromkeys(p.strip("/") for p in paths):
            full = self.root / rel
            if full.is_dir():
                on_disk = set()
                for sub, st in scan_audio_files(full, exclude=self.out):
                    on_disk.add(f"{rel}/{sub}")
                    self._plan_file(f"{rel}/{sub}", st, todo)
                for where in self.base.under(rel):
                    if self.base.segments[where[0]].path(where[1]) not in on_disk:
                        self.base.delete(where)
                        self.report.removed += 1
            elif full.is_file() and full.name.lower().endswith(AUDIO_EXTENSIONS) and not full.name.startswith("."):
                try:
                    st: os.stat_result | Exception = os.stat(full)
                except OSError as exc:
                    st = OSError(f"cannot stat: {exc.strerror or exc}")
                self._plan_file(rel, st, todo)
            else:
                for where in [w for w in [self.base.find(rel)] if w] + self.base.under(rel):
                    self.base.delete(where)
                    self.report.removed += 1
        return todo

    def _plan_file(self, rel: str, st: os.stat_result | Exception, todo: list[_Candidate]) -> None:
        if isinstance(st, Exception):
            self.new.skip(rel, str(st))
            return
        where = self.base.find(rel) if self.same_root or not self.base.segments else None
        if where is not None and self.reusable and self._unchanged(where, st):
            return
        old_id = -1
        if where is not None:
            old_id = int(self.base.segments[where[0]].entries["id"][where[1]])
            self.base.delete(where)  # replaced by the row embedded now
        todo.append(_Candidate(rel, st.st_size, st.st_mtime_ns, old_id, "updated" if where else "added"))

    def _unchanged(self, where: tuple[int, int], st: os.stat_result) -> bool:
        row = self.base.segments[where[0]].entries[where[1]]
        same = int(row["size"]) == st.st_size and int(row["mtime_ns"]) == st.st_mtime_ns
        if not same or not self.options.checksum:
            return same
        return safe_sha(self.root / self.base.segments[where[0]].path(where[1])) == bytes(row["sha256"]).hex()

    # ------------------------------------------------------------------------------ embedding

    def decode_and_embed(self, todo: list[_Candidate]) -> None:
        """Decode a few files ahead (threads or processes); embed in chunks bounded by file count and
        samples; reuse the embedding of a content already indexed; skip what fails."""
        opts, rate = self.options, self.model.sample_rate
        max_samples = opts.chunk_samples or 600 * rate
        workers = max(1, int(opts.workers))
        processes = opts.processes
        if processes == "auto":
            processes = workers > 1 and len(todo) > PROCESS_THRESHOLD
        pool_type = ProcessDecoders if processes else ThreadDecoders
        with progress_bar(len(todo), opts.progress, desc="embedding", unit="file",
                          dynamic_ncols=True) as bar, pool_type(workers, rate, self.shas, opts.decode_timeout) as pool:
            waves: list[tuple[_Candidate, Decoded]] = []
            for c, result in zip(todo, pool.map([self.root / c.path for c in todo])):
                if isinstance(result, Decoded):
                    self.stages.add_decoded(result.times)
                    self.new.thumbs[c.path] = result.thumbnail
                    self.new.rates[c.path] = result.rate
                    self.report.thumbnails += 1
                    waves.append((c, result))
                    if len(waves) >= opts.chunk_files or sum(len(d.wave) for _, d in waves) >= max_samples:
                        self.embed(waves, bar)
                    continue
                if isinstance(result, Known):
                    self.reuse(c, result.sha256)
                else:
                    self.new.skip(c.path, relative_reason(result.reason, self.root, c.path))
                bar.update(1)
            self.embed(waves, bar)

    def reuse(self, c: _Candidate, sha: str) -> None:
        """A new or changed file with the content of an indexed one: its embedding and thumbnail kept."""
        where = self.shas.find(sha)
        assert where is not None
        seg = self.base.segments[where[0]]
        self.new.kept[c.path] = (_entry(c, sha, float(seg.entries["duration"][where[1]])), self.base.vectors(where))
        self.new.thumbs[c.path] = np.asarray(seg.thumbnails[where[1]])
        self.new.rates[c.path] = self.base.rate(where)
        self.report.reused += 1
        _count(self.report, c)

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
        rule = self.options.window_rule
        try:  # clips of different lengths share batches (padded), each still embedded as it would be alone
            with self.stages.timing("model"):
                vectors: list[Embedded | None] = list(
                    embed_with_windows(model, [d.wave for _, d in waves], batch_size, window, hop, advance, rule))
        except Exception:
            bar.update(-done[0])
            vectors = []
            for c, d in waves:
                try:
                    vectors.append(embed_with_windows(model, [d.wave], 1, window, hop, rule=rule)[0])
                except Exception as exc:
                    self.new.skip(c.path, f"the model cannot embed it: {exc}")
                    vectors.append(None)
                bar.update(1)
        for (c, d), vec in zip(waves, vectors):
            if vec is not None:
                self.new.kept[c.path] = (_entry(c, d.sha256, len(d.wave) / model.sample_rate), vec)
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

    # ------------------------------------------------------------------------------ the new version

    def assemble(self) -> VersionPlan:
        """The new rows as one segment (new files get fresh ids in path order; ids are never reused),
        merged with the newest segments when ``merge_plan`` says so; the version that lists them."""
        new = self.new
        paths = sorted(new.kept)
        entries = []
        for p in paths:
            e = new.kept[p][0]
            if e.id < 0:
                e = IndexEntry(self.next_id, e.path, e.size, e.mtime_ns, e.sha256, e.duration)
                self.next_id += 1
            entries.append(e)
        dim = self.model.embed_dim
        rows = Rows(entries, [new.rates.get(p, (0, 0)) for p in paths],
                    np.stack([new.kept[p][1][0] for p in paths]).astype(np.float32) if paths else np.zeros((0, dim), np.float32),
                    np.stack([new.thumbs[p] for p in paths]).astype(np.uint8) if paths else
                    np.zeros((0, THUMB_HEIGHT, THUMB_WIDTH), np.uint8),
                    [(new.kept[p][1][1], new.kept[p][1][2]) for p in paths])
        base = self.base
        alive = [p for p, seg in enumerate(base.segments) if len(seg) > len(base.deleted[p])]
        sizes = [(len(base.segments[p]) - len(base.deleted[p]), len(base.segments[p])) for p in alive]
        sizes += [(len(paths), len(paths))] if paths else []
        merge = merge_plan([a for a, _ in sizes], [b for _, b in sizes])
        n_old = merge - (1 if paths and merge else 0)
        tail = alive[len(alive) - n_old:] if n_old > 0 else []
        if tail:
            rows = concat_rows(gather(base, tail), rows)
            self.report.merged = merge
        keep = [p for p in alive if p not in tail]
        listed: list[tuple[str, int, np.ndarray]] = [
            (str(base.segments[p].name), len(base.segments[p]), np.array(sorted(base.deleted[p]), np.int64)) for p in keep]
        windows = sum(live_windows(base.segments[p], base.deleted[p]) for p in keep)
        if len(rows.entries):
            seg, written = write_segment(self.out, self._segment_name(), rows, self.options.faiss)
            self.report.bytes_written += written
            listed.append((str(seg.name), len(seg), np.zeros(0, np.int64)))
            windows += len(seg.window_spans)
        self.report.files = sum(n - len(d) for _, n, d in listed)
        self.report.unchanged = self.report.files - self.report.added - self.report.updated
        self.report.skipped = [{"path": p.file, "reason": p.message} for p in sorted(new.skipped, key=lambda p: p.file)]
        return VersionPlan(self.model, self.recorded_model, self.root, listed, self.next_id, self.build_no,
                           (self.options.window, self.options.hop), windows, self.report.files,
                           self._window_embedding)

    @property
    def _window_embedding(self) -> str:
        return window_embedding(self.model, self.options.window_rule)


def _entry(c: _Candidate, sha: str, duration: float) -> IndexEntry:
    return IndexEntry(id=c.id, path=c.path, size=c.size, mtime_ns=c.mtime_ns, sha256=sha,
                      duration=round(float(duration), 3))


def _count(report: BuildReport, c: _Candidate) -> None:
    if c.status == "added":
        report.added += 1
    else:
        report.updated += 1
