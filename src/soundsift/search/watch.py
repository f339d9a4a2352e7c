"""Keeping an index current while files arrive: ``soundsift index watch FOLDER --out INDEX``.

On start (and whenever the folder comes back after disappearing) a full scan brings the index up to date
(``build_index``: only changed files are embedded), so a crash or a restart loses nothing. Then
file-system events (watchdog: inotify, FSEvents, ReadDirectoryChangesW) name the paths that changed;
they are applied in batches (``update_index``: the touched paths only, no scan) once a path's last event
is ``debounce`` seconds old and its size and mtime are still what they were at that event (a file still
being copied in is waited out; one written again later is updated again).
Moves are a deletion and an addition (the embedding is reused by content). A folder that disappears or
becomes unreadable is reported; nothing is removed from the index, and watching resumes with a rescan
when it returns. An update that fails is reported and retried with the next batch; the index keeps its
last complete version throughout (every update is atomic).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundsift.errors import SoundsiftError, require


@dataclass(frozen=True)
class WatchOptions:
    """How ``Watcher`` batches events: seconds of quiet before a batch, seconds between looks at a
    missing folder, and the index's FAISS option."""

    debounce: float = 1.0
    poll: float = 2.0
    faiss: str = "auto"


class Watcher:
    """Watches ``folder`` and keeps the index ``out`` current (see the module docstring); ``report(line)``
    receives one line per update or problem. ``run(stop)`` returns when ``stop`` is set."""

    def __init__(self, folder: str | Path, out: str | Path, model: Any = None,
                 options: WatchOptions = WatchOptions(), report: Callable[[str], None] = print) -> None:
        require("watchdog", "the optional extra: pip install 'soundsift[watch]'", "soundsift index watch")
        self.folder, self.out = Path(folder).resolve(), Path(out).absolute()
        self.options, self.report = options, report
        self.model, self.recorded = self._model(model)
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}  # relative path -> time of its last event
        self._seen: dict[str, tuple[int, int] | None] = {}  # relative path -> (size, mtime_ns) at the last look
        self.updates = 0  # versions published since start (tests and the probe count them)

    def _model(self, model: Any) -> tuple[Any, Any]:
        from soundsift.search.embedding import load_build_model
        from soundsift.search.index_types import POINTER, read_manifest, version_dir

        if model is None and (self.out / POINTER).is_file():
            model = read_manifest(version_dir(self.out))["model"].get("path")
        return load_build_model(model or "zero-shot", None)

    # ------------------------------------------------------------------------------ events

    def note(self, path: str) -> None:
        """Record a changed absolute ``path`` (an event); paths outside the folder or in the index are ignored."""
        p = os.path.abspath(path)
        if p == str(self.out) or p.startswith(str(self.out) + os.sep):
            return
        try:
            rel = Path(p).relative_to(self.folder).as_posix()
        except ValueError:
            return
        if rel == "." or any(part.startswith(".") for part in rel.split("/")):
            return
        state = self._state(rel)
        with self._lock:
            self._pending[rel] = time.monotonic()
            self._seen[rel] = state

    def _state(self, rel: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of a file; None for a folder or a path that is gone."""
        try:
            st = os.stat(self.folder / rel)
        except OSError:
            return None
        return None if os.path.isdir(self.folder / rel) else (st.st_size, st.st_mtime_ns)

    def _handler(self):
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                watcher.note(os.fsdecode(event.src_path))
                dest = getattr(event, "dest_path", "")
                if dest:
                    watcher.note(os.fsdecode(dest))

        return Handler()

    def ready(self) -> list[str]:
        """Pending paths whose last event is ``debounce`` old and whose size and mtime are what they were
        at that event (a file still being written, even without events, stays pending)."""
        now, out = time.monotonic(), []
        with self._lock:
            due = [(rel, self._seen.get(rel)) for rel, t in self._pending.items() if now - t >= self.options.debounce]
        for rel, seen in due:
            state = self._state(rel)
            with self._lock:
                if state is not None and state != seen:  # changed since: look again one debounce later
                    self._pending[rel], self._seen[rel] = now, state
                    continue
                if self._pending.get(rel, now) <= now:
                    self._pending.pop(rel, None)
                    self._seen.pop(rel, None)
            out.append(rel)
        return out

    # ------------------------------------------------------------------------------ the loop

    def available(self) -> bool:
        return self.folder.is_dir() and os.access(self.folder, os.R_OK | os.X_OK)

    def rescan(self) -> None:
        """A full scan: the index catches up with whatever happened while nobody watched."""
        from soundsift.search.build import build_index
        from soundsift.search.index_types import POINTER, read_manifest, version_dir
        from soundsift.search.windows import window_setting

        window = hop = None
        if (self.out / POINTER).is_file():
            window, hop = window_setting(read_manifest(version_dir(self.out)))  # keep the index's setting
        report = build_index(self.folder, self.out, self.model, model_path=self.recorded, progress=False,
                             faiss=self.options.faiss, window=window, hop=hop)
        self.updates += 1
        self.report(f"rescan: {report.summary()}")

    def catch_up(self) -> bool:
        """``rescan``, reporting a failure (a folder with no audio yet, say) instead of raising it."""
        try:
            self.rescan()
        except (SoundsiftError, OSError) as exc:
            self.report(f"{exc}; watching for changes")
            return False
        return True

    def apply(self, paths: list[str]) -> None:
        from soundsift.search.build import update_index
        from soundsift.search.index_types import POINTER

        if not (self.out / POINTER).is_file():  # no index yet (the folder had no audio): build it
            self.catch_up()
            return
        try:
            report = update_index(self.out, paths, self.model, model_path=self.recorded, faiss=self.options.faiss)
        except (SoundsiftError, OSError) as exc:
            self.report(f"update failed ({exc}); retrying with the next change")
            with self._lock:
                for rel in paths:
                    self._pending.setdefault(rel, time.monotonic())
            return
        self.updates += 1
        self.report(report.summary())
        for s in report.skipped:
            self.report(f"  skipped {s['path']}: {s['reason']}")

    def run(self, stop: threading.Event | None = None) -> None:
        """Watch until ``stop`` is set (or forever); the folder may come and go."""
        from watchdog.observers import Observer

        stop = stop or threading.Event()
        while not stop.is_set():
            if not self.available():
                self.report(f"{self.folder}: folder missing or unreadable; waiting for it to return")
                while not self.available() and not stop.wait(self.options.poll):
                    pass
                if stop.is_set():
                    return
                self.report(f"{self.folder}: folder is back; catching up")
            observer = Observer()
            try:
                observer.schedule(self._handler(), str(self.folder), recursive=True)
                observer.start()
            except OSError as exc:  # inotify's watch limit, say (fs.inotify.max_user_watches)
                self.report(f"{self.folder}: cannot watch it ({exc}); trying again in {self.options.poll:g} s")
                stop.wait(self.options.poll)
                continue
            try:
                with self._lock:
                    self._pending.clear()
                self.catch_up()
                while not stop.wait(min(0.2, self.options.debounce / 2)):
                    if not self.available():
                        break
                    paths = self.ready()
                    if paths:
                        self.apply(paths)
            finally:
                observer.stop()
                observer.join(timeout=5)
